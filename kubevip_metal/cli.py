"""The `kube-vip-metal` command: `manager`, `manifest pod|daemonset|rbac`, `version`.

Bad input never produces a traceback: every rejected flag, variable or combination ends the program with
exit status 2 and exactly one line on stderr (`kube-vip-metal: error: --localAS "abc": not an AS number ...`).
Heavy libraries are imported only by the manager, so generating a manifest stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from kubevip_metal import __version__
from kubevip_metal.config import Command, ConfigError, Given, build_config, given_from_env
from kubevip_metal.options import OPTIONS, Availability, Group

PROG = "kube-vip-metal"


class UsageError(Exception):
    """The command line itself is malformed (unknown flag, missing value)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message.replace("\n", " "))


class _LabRequested(Exception):
    """`lab` takes none of the daemon's options; parsing hands it over from here."""

    def __init__(self, keep: bool, timers: str, metal: bool, bgp: bool = False) -> None:
        self.keep, self.timers, self.metal, self.bgp = keep, timers, metal, bgp


def _run_lab(request: _LabRequested) -> int:
    from kubevip_metal.parsers import parse_seconds

    try:
        lease, renew, retry = (parse_seconds(part) for part in request.timers.split(","))
    except ValueError:
        raise UsageError(f'--timers "{request.timers}": expected three durations, e.g. 5,3,1') from None
    from generic.election import TimerError, Timers

    try:
        Timers(lease, renew, retry)
    except TimerError as exc:
        raise UsageError(f'--timers "{request.timers}": {exc}') from None
    try:  # the lab is the test bed's, a distribution of its own: a node running the daemon does not have it
        from kubevip_testbed.lab.cluster import LabError
        from kubevip_testbed.lab.run import run_lab
        from kubevip_testbed.rig import prerequisites_missing
    except ModuleNotFoundError as exc:
        what = "is not installed" if (exc.name or "").split(".")[0] == "kubevip_testbed" else f"lacks {exc.name}"
        raise UsageError(f"lab: the test bed {what} (pip install ./testbed from a checkout)") from None
    missing = prerequisites_missing()
    if request.bgp:
        from kubevip_testbed import bird

        missing += bird.missing()  # names `apt-get install bird2`
    if missing:
        raise UsageError("lab: " + "; ".join(missing))
    try:
        return run_lab(keep=request.keep, timers=(lease, renew, retry), metal=request.metal, bgp=request.bgp)
    except LabError as exc:  # the rig could not be built or the lab could not start; nothing is left behind
        print(f"{PROG}: error: lab: {one_line(str(exc))}", file=sys.stderr)
        return 1


_LISTS = {"bgppeers"}  # options that may be given more than once, each adding to the list


class _StoreGiven(argparse.Action):
    """Record the value with the spelling the user typed, so errors name the flag as written."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        text = "true" if self.nargs == 0 else str(values)
        earlier = getattr(namespace, self.dest, None)
        if self.dest in _LISTS and isinstance(earlier, Given) and earlier.text:  # kube-vip's StringSlice: adds up
            text = f"{earlier.text},{text}" if text else earlier.text
        setattr(namespace, self.dest, Given(option_string or self.dest, text))


def _add_options(parser: argparse.ArgumentParser, manifest: bool) -> dict[str, str]:
    """Add every option, grouped as kube-vip's flag reference does; returns bool option string -> name."""
    booleans: dict[str, str] = {}
    groups = {group: parser.add_argument_group(group.value) for group in Group}
    for option in OPTIONS:
        if option.manifest_only and not manifest:
            continue
        env = f" [env {', '.join(option.env)}]" if option.env else ""
        default = f" (default {option.default})" if option.default not in (None, "") and not option.secret else ""
        later = " (not available yet: the manager refuses it)" if option.available is Availability.NOT_YET else ""
        kwargs: dict[str, Any] = {"dest": option.name, "action": _StoreGiven, "default": None,
                                  "help": f"{option.help}{later}{default}{env}".replace("%", "%%")}
        if option.boolean:
            kwargs["nargs"] = 0
            booleans.update({flag: option.name for flag in option.flags})
        else:
            kwargs["metavar"] = option.metavar
        groups[option.group].add_argument(*option.flags, **kwargs)
    return booleans


def _parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    root = _Parser(prog=PROG, description="Highly available VIPs for Kubernetes: control plane and LoadBalancer "
                   "Services, over ARP/NDP, BGP or Equinix Metal Elastic IPs.", allow_abbrev=False)
    commands = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    manager = commands.add_parser("manager", help="run the daemon", allow_abbrev=False,
                                  description="Run the daemon. Environment variables override flags.")
    booleans = _add_options(manager, manifest=False)
    manifest = commands.add_parser("manifest", help="print a Kubernetes manifest", allow_abbrev=False)
    kinds = manifest.add_subparsers(dest="kind", metavar="KIND", parser_class=_Parser)
    for kind, text in (("pod", "a static Pod (kubeadm)"), ("daemonset", "a DaemonSet (k3s and friends)"),
                       ("rbac", "ServiceAccount, ClusterRole and binding")):
        sub = kinds.add_parser(kind, help=text, allow_abbrev=False,
                               description=f"Print {text}. Reads flags only, never the environment.")
        booleans.update(_add_options(sub, manifest=True))
    lab = commands.add_parser("lab", help="watch a failover on a namespaced test network (needs root)",
                              allow_abbrev=False, description="Build a three-node network in namespaces on this "
                              "machine, run a real manager per node and a probing client, crash and stop leaders, "
                              "and print the outages the client saw.")
    lab.add_argument("--keep", action="store_true",
                     help="leave the lab running afterwards (Ctrl-C, SIGTERM or SIGHUP removes it all)")
    lab.add_argument("--metal", action="store_true", help="the Elastic IP mode against the Metal API emulator; with "
                     "--bgp, Metal's BGP mode: peers from the Metal API, both of Metal's routers")
    lab.add_argument("--bgp", action="store_true",
                     help="the VIP by BGP to a BIRD 2 router (apt-get install bird2), the client behind the router")
    lab.add_argument("--timers", default="5,3,1", metavar="LEASE,RENEW,RETRY", help="election timers in seconds")
    commands.add_parser("version", help="print the version")
    return root, booleans


def _split_boolean_assignments(argv: Sequence[str], booleans: dict[str, str]) -> tuple[list[str], dict[str, Given]]:
    """Take out `--flag=value` for boolean flags (cobra accepts `--arp=false`; argparse cannot)."""
    rest: list[str] = []
    explicit: dict[str, Given] = {}
    for token in argv:
        flag, sep, value = token.partition("=")
        if sep and flag in booleans:
            explicit[booleans[flag]] = Given(flag, value)
        else:
            rest.append(token)
    return rest, explicit


def parse_command_line(argv: Sequence[str]) -> tuple[Command | None, dict[str, Given]]:
    """The command and the flags given on the command line (no environment)."""
    parser, booleans = _parser()
    tokens, explicit = _split_boolean_assignments(argv, booleans)
    if "--" in tokens:
        raise UsageError("unexpected '--'")
    namespace = parser.parse_args(tokens)
    if namespace.command is None:
        raise UsageError("a command is required: manager, manifest or version (see --help)")
    if namespace.command == "version":
        return None, {}
    if namespace.command == "lab":
        raise _LabRequested(namespace.keep, namespace.timers, namespace.metal, namespace.bgp)
    if namespace.command == "manifest" and namespace.kind is None:
        raise UsageError("manifest needs a kind: pod, daemonset or rbac")
    given = {name: value for name, value in vars(namespace).items() if isinstance(value, Given)}
    given.update(explicit)
    command = Command.MANAGER if namespace.command == "manager" else Command(f"manifest {namespace.kind}")
    return command, given


def one_line(text: str) -> str:
    """Escape anything that a terminal or `splitlines` could treat as a line break or a control."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _kubevip_settings(flags: dict[str, str], command: Command) -> list[str]:
    """kube-vip's own flags and variables for features this project does not have: the first that would change
    what the cluster gets is refused by name (a kube-vip manifest moved over says what it loses); the harmless
    ones come back as warnings. `manifest` never reads the environment, so only the manager scans it."""
    from kubevip_metal import kubevip_compat

    findings = kubevip_compat.scan_flags(flags)
    if command is Command.MANAGER:
        findings += kubevip_compat.scan_environment(os.environ)
    refused = [f for f in findings if f.disposition is kubevip_compat.Disposition.REFUSE]
    if refused:
        raise UsageError(refused[0].message)
    return [f.message for f in findings]


def main(argv: Sequence[str] | None = None, stop: threading.Event | None = None) -> int:
    """`stop`: set by SIGTERM/SIGINT from the process's first moment (kubevip_metal/entrypoint.py)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from kubevip_metal.kubevip_compat import split_flags

        args, kubevip_flags = split_flags(args)
        lab: _LabRequested | None = None
        try:
            command, given = parse_command_line(args)
        except _LabRequested as requested:
            lab = requested
        if lab is not None:  # outside the handler, so nothing the lab raises is chained to _LabRequested
            return _run_lab(lab)
        if command is None:
            print(f"{PROG} {__version__}")
            return 0
        foreign_warnings = _kubevip_settings(kubevip_flags, command)
        if command is Command.MANAGER:
            given.update(given_from_env())
        config = build_config(given, command)
        config = dataclasses.replace(config, warnings=config.warnings + tuple(foreign_warnings))
        if command.is_manifest:
            from kubevip_metal.manifests import render

            text = render(config)
            for warning in config.warnings:
                print(f"{PROG}: warning: {one_line(warning)}", file=sys.stderr)
            sys.stdout.write(text)
            return 0
    except (ConfigError, UsageError) as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    from kubevip_metal.manager import run

    return run(config, stop)


if __name__ == "__main__":
    raise SystemExit(main())
