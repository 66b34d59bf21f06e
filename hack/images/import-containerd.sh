#!/usr/bin/env bash
# Imports the project's images into containerd's k8s.io namespace, where a kubelet finds them without a registry
# (pods then use imagePullPolicy IfNotPresent or Never). Builds what is missing first (hack/images/build.sh) and
# imports only images containerd does not have with the same digest, so a warm call takes seconds.
#
# Usage: hack/images/import-containerd.sh ADDRESS [IMAGE...]
#   ADDRESS  containerd's socket; IMAGE as for build.sh (default: operator runtime-cpu)
# Each archive carries the image's full name (docker.io/slm-operator/operator:0.1.0 for slm-operator/operator:
# 0.1.0), the name the kubelet asks containerd for.
# shellcheck source=hack/images/lib.sh
source "$(dirname "$0")/lib.sh"

[ $# -ge 1 ] || die "usage: $0 CONTAINERD_ADDRESS [IMAGE...]"
address=$1
shift
command -v ctr >/dev/null || die "ctr is not installed (Debian: apt-get install containerd)"
[ -S "$address" ] || die "no containerd socket at $address"
ctr_() { ctr --address "$address" --namespace k8s.io "$@"; }

mapfile -t archives < <("$ROOT/hack/images/build.sh" "$@")
for archive in "${archives[@]}"; do
    # The archive's name and manifest digest, from its index.json, against what containerd holds.
    read -r name digest < <(tar -xOf "$archive" index.json | python3 -c '
import json, sys
m = json.load(sys.stdin)["manifests"][0]
print(m["annotations"]["org.opencontainers.image.ref.name"], m["digest"])')
    if ctr_ images ls "name==$name" 2>/dev/null | grep -q "$digest"; then
        log "containerd has $name ($digest)"
        continue
    fi
    start=$(date +%s)
    log "importing $name into containerd (k8s.io) from $archive"
    ctr_ images import "$archive" >&2
    log "imported $name in $(since "$start")"
done
