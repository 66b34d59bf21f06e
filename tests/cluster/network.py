"""The address ranges of the test cluster, in one place so they cannot overlap.

None of them may overlap the host's own routes; the real node adds routes for them while it runs
(see :mod:`cluster.realnode`) so that no cluster traffic follows the host's default route.
"""

from __future__ import annotations

__all__ = ["KWOK_POD_CIDR", "NODE_IP", "POD_CIDR", "SERVICE_CIDR"]

SERVICE_CIDR = "10.0.0.0/24"
"""ClusterIPs (the apiserver's serving certificate names 10.0.0.1, the `kubernetes` Service)."""

KWOK_POD_CIDR = "10.244.0.0/16"
"""Addresses kwok gives its simulated pods (and its nodes: 10.244.255.254); nothing answers there."""

POD_CIDR = "10.245.0.0/24"
"""The real node's pod network: a bridge on this machine (CNI bridge + host-local)."""

NODE_IP = "10.245.0.1"
"""The real node's address, on its bridge: the pods' gateway, the kubelet's address, the node's InternalIP."""
