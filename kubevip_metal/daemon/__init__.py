"""The daemon: a composition root (`Daemon`) given its dependencies, the controllers it starts (the control plane
now, Services later), the VIP controller they share, and the table of announcement modes.

Data flow: Config -> Daemon -> electors -> VIP controller -> announcers -> kernel / network / Metal API
(docs/ARCHITECTURE.md)."""
