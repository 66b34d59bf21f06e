#!/usr/bin/env bash
# tmux for tests/e2e/local/test_local_run_tmux.py, which drives `slm run` in a real terminal (send-keys,
# capture-pane). Idempotent; meant to be called from hack/install-test-tools.sh.
# Usage: hack/install-tmux.sh
set -euo pipefail

if command -v tmux >/dev/null; then
    exit 0
fi
echo "install-tmux: apt-get install tmux"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends tmux >/dev/null
