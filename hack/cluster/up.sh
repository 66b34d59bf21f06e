#!/usr/bin/env bash
# Start the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok nodes; with
# --real-node also the real kubelet node and its metrics pipeline), building the pinned binaries first when they are
# missing. Prints the kubeconfig.
# Usage: hack/cluster/up.sh [--state-dir DIR] [--timeout SECONDS] [--real-node [--no-metrics-pipeline]]
#   (PY selects the Python, default .venv)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
"$here/build-bins.sh"
cd "$root"
PYTHONPATH="$root/tests${PYTHONPATH:+:$PYTHONPATH}" exec "${PY:-$root/.venv/bin/python}" -m cluster up "$@"
