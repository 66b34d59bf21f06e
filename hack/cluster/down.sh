#!/usr/bin/env bash
# Stop the local control plane started by up.sh, and its real node (its pods, containers, mounts, links and
# iptables rules go). Logs stay under the state dir; --purge deletes it all.
# Usage: hack/cluster/down.sh [--state-dir DIR] [--purge]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
PYTHONPATH="$root/tests${PYTHONPATH:+:$PYTHONPATH}" exec "${PY:-$root/.venv/bin/python}" -m cluster down "$@"
