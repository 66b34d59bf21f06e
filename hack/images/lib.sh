# shellcheck shell=bash
# Shared by hack/images/*.sh (sourced, not run): the cache layout, the daemonless builder with its private
# storage, input hashing and the image names. Everything lands under $SLM_CACHE_HOME (default
# ~/.cache/slm-operator):
#   images/store-<driver>/        the builder's own storage root (images, layers, layer cache), kept apart from
#                                 the system-wide /var/lib/containers; SLM_IMAGES_STORE=system uses that instead
#   images/*.oci.tar              oci-archives of the built images, named <name>-<key>.oci.tar by their inputs
#   wheels/llama-cpp-python-<version>-portable/   the llama.cpp wheel for the cpu images (GGML_NATIVE=OFF)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${SLM_CACHE_HOME:-$HOME/.cache/slm-operator}
IMAGES_DIR="$CACHE/images"
# buildah (default) or podman: both take the same build/push/run flags used here.
CONTAINER_TOOL=${CONTAINER_TOOL:-buildah}
TOOL=$(basename "$CONTAINER_TOOL")
mkdir -p "$IMAGES_DIR"

log() { printf '%s images: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$TOOL" in
    buildah | podman) ;;
    *) die "CONTAINER_TOOL=$CONTAINER_TOOL: hack/images/ drives buildah or podman (docker: plain 'make images')" ;;
esac
command -v "$CONTAINER_TOOL" >/dev/null \
    || die "$CONTAINER_TOOL is not installed (Debian: apt-get install buildah debootstrap)"

# The storage driver: overlay where the kernel and filesystem allow it (fast, shares layers), else vfs (copies
# every layer, always works). SLM_STORAGE_DRIVER forces one. Each driver gets its own store, because a store
# cannot change driver.
storage_args=()
select_storage() {
    if [ "${SLM_IMAGES_STORE:-}" = system ]; then
        return
    fi
    local driver=${SLM_STORAGE_DRIVER:-} base=${SLM_IMAGES_STORE:-$IMAGES_DIR/store}
    # runroot holds the store's locks and mount state, which a reboot invalidates: in /run (else /tmp), one per
    # store (two stores must never share one), the same for every caller whatever its TMPDIR.
    local run tmp=/run
    [ -w "$tmp" ] || tmp=/tmp
    run="$tmp/slm-operator-$TOOL-$(printf '%s' "$base" | sha256sum | cut -c1-12)"
    if [ -z "$driver" ]; then
        driver=vfs
        if "$CONTAINER_TOOL" --root "$base-overlay" --runroot "$run-overlay" --storage-driver overlay \
            info >/dev/null 2>&1; then
            driver=overlay
        fi
    fi
    storage_args=(--root "$base-$driver" --runroot "$run-$driver" --storage-driver "$driver")
}
select_storage

# How RUN steps are isolated: chroot needs no OCI runtime and no cgroups (Debian's crun refuses this machine's
# hybrid cgroup v1/v2 layout: "cgroups in hybrid mode not supported"); SLM_BUILD_ISOLATION=oci uses the runtime.
# shellcheck disable=SC2034  # used by the scripts that source this file
isolation=${SLM_BUILD_ISOLATION:-chroot}

# The builder with the private storage: `tool images`, `tool build ...`
tool() { "$CONTAINER_TOOL" "${storage_args[@]}" "$@"; }

# The full name a container runtime resolves a short name to (docker's rules, which the kubelet and containerd
# follow): slm-operator/operator:0.1.0 -> docker.io/slm-operator/operator:0.1.0. An archive carries this name so
# that `ctr images import` puts it exactly where a pod's image: slm-operator/operator:0.1.0 looks.
qualify() {
    local name=$1 first=${1%%/*}
    if [[ $name != */* ]]; then
        echo "docker.io/library/$name"
    elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then
        echo "$name"
    else
        echo "docker.io/$name"
    fi
}

# sha256 of files (paths relative to ROOT, directories walked as the build context sees them: no __pycache__,
# no *.pyc, no *.egg-info), of their names too, and of extra words.
hash_inputs() {
    local words=() paths=()
    for item in "$@"; do
        if [ -e "$ROOT/$item" ]; then paths+=("$item"); else words+=("$item"); fi
    done
    {
        printf '%s\n' "${words[@]}"
        (cd "$ROOT" && find "${paths[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
            ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -c1-16
}

# The project's version and pinned llama-cpp-python version, read from pyproject.toml like the Makefile does.
project_version() { sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml"; }
llama_version() { sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml"; }

# One builder per image at a time (the pytest fixture and `make images` may race; builds of different images
# go on side by side): lock NAME takes $IMAGES_DIR/.lock-NAME, waiting with a message; unlock NAME releases it.
declare -A LOCKS=()
lock() {
    local fd
    exec {fd}>"$IMAGES_DIR/.lock-$1"
    if ! flock -n "$fd"; then
        log "another build of $1 is running: waiting for it"
        flock "$fd"
    fi
    LOCKS[$1]=$fd
}
unlock() {
    local fd=${LOCKS[$1]:-}
    [ -z "$fd" ] || exec {fd}>&-
    unset "LOCKS[$1]"
}

# Seconds since a start time, for the log.
since() { echo "$(($(date +%s) - $1))s"; }

# Drop every archive of a name but the current one (<prefix>-<16 hex digits of the key>.oci.tar).
prune_archives() {
    local keep=$1 prefix=$2
    for old in "$IMAGES_DIR/$prefix"-????????????????.oci.tar; do
        [ -e "$old" ] && [ "$old" != "$keep" ] && rm -f "$old"
    done
    return 0
}

# Is an image of this name in the store?
have_image() { tool inspect --type image "$1" >/dev/null 2>&1; }

# The archive of an image built earlier is the cache: load it back into the store when the store lost it.
ensure_loaded() {
    local name=$1 archive=$2
    if ! have_image "$name"; then
        log "loading $name from $archive"
        local id
        id=$(tool pull --quiet "oci-archive:$archive" | tail -n 1)
        tool tag "$id" "$name"
    fi
}
