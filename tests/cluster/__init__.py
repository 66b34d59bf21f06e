"""A real Kubernetes control plane for tests and local development.

etcd, kube-apiserver (RBAC and PodSecurity admission on), kube-controller-manager, kube-scheduler and kwok run
as plain processes built from Go modules by hack/cluster/build-bins.sh. kwok simulates the nodes, labelled and
sized from the operator's hardware profiles (see :mod:`cluster.nodes`).

Import it as ``cluster`` with the tests/ folder on ``sys.path`` (tests/integration/conftest.py does this), or
run it as ``python -m cluster up|down|status`` with ``PYTHONPATH=tests``.
"""

from cluster.controlplane import ClientLimits, Cluster, ControlPlane, ControlPlaneError
from cluster.nodes import TEST_NODES, TestNode, node_manifests
from cluster.paths import Binaries, Versions, binaries, load_versions
from cluster.waiting import WaitTimeoutError, wait_until

__all__ = [
    "TEST_NODES",
    "Binaries",
    "ClientLimits",
    "Cluster",
    "ControlPlane",
    "ControlPlaneError",
    "TestNode",
    "Versions",
    "WaitTimeoutError",
    "binaries",
    "load_versions",
    "node_manifests",
    "wait_until",
]
