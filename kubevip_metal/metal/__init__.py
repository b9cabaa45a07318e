"""Equinix Metal: the API client, finding this node's device, and the Elastic IP that follows the leader."""
