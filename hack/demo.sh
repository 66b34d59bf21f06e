#!/usr/bin/env bash
# `make cluster-demo`: the operator's story in one command. Starts the local control plane with its
# simulated CPU/GPU/NPU nodes, installs the CRD, runs the operator in the background, applies the examples
# and prints `kubectl get slm -o wide`. `make cluster-demo-down` stops the operator and the control plane.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
state="${CLUSTER_STATE_DIR:-.state/cluster/dev}"
py="${PY:-.venv/bin/python}"
PY="$py" hack/cluster/up.sh --state-dir "$state" >/dev/null
export KUBECONFIG="$state/kubeconfig"
kubectl="$(PYTHONPATH=tests "$py" -c 'from cluster import binaries; print(binaries().kubectl)')"

"$py" -m slm_operator.cli crd | "$kubectl" apply --server-side -f - >/dev/null
"$kubectl" wait --for=condition=Established crd/slmdeployments.slm-operator.io --timeout=60s >/dev/null

pidfile="$state/operator.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo ">> operator already running (pid $(cat "$pidfile"))"
else
  SLM_OPERATOR_METRICS_PORT=0 nohup "$py" -m slm_operator.cli operator run >"$state/logs/operator.log" 2>&1 &
  echo $! >"$pidfile"
  echo ">> operator started (pid $!, log $state/logs/operator.log)"
fi

for file in examples/*.yaml; do
  namespace="$("$py" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["metadata"].get("namespace", "default"))' "$file")"
  "$kubectl" create namespace "$namespace" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
  "$kubectl" apply -f "$file"
done

echo ">> waiting for the SLMDeployments (kwok simulates the nodes and the pods)"
for _ in $(seq 1 60); do
  pending="$("$kubectl" get slm -A -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -cv '^Ready$' || true)"
  [ "$pending" = "0" ] && break
  sleep 2
done
"$kubectl" get slm -A -o wide
echo
echo "export KUBECONFIG=$KUBECONFIG   # then: $kubectl get slm,deploy,svc,pods -A"
