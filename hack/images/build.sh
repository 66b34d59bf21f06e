#!/usr/bin/env bash
# Builds the project's images with a daemonless builder (buildah, or podman) where no container registry is
# reachable, and saves each as an oci-archive that `ctr images import` or `podman load` takes. Idempotent: an
# image is built only when its inputs changed (its Dockerfile, .dockerignore, pyproject.toml, README.md, the
# source of operator/, runtime/ and gateway/, the variant, the extras, the base image and these scripts); a warm call
# takes seconds. Prints the archives' paths, one a line, in the order asked; progress goes to stderr.
#
# Usage: hack/images/build.sh [IMAGE...]      IMAGE: operator | runtime-<variant> | <variant>
#                                              default: operator runtime-cpu
#   variants: cpu openvino intel (build here, from the local Debian bases); cuda rocm (vendor base images)
# Env:   CONTAINER_TOOL   buildah (default) | podman
#        PYTHON_IMAGE     base of the Python images; default: the local Debian base that hack/images/base.sh
#                         makes with debootstrap (set it to a python:3.11 image where a registry is reachable)
#        INTEL_PYTHON_IMAGE  the same for the intel variant (default: the local Debian trixie base)
#        BASE_SUITE       Debian suite of the local PYTHON_IMAGE base (default bookworm)
#        OPERATOR_IMAGE   default slm-operator/operator:<version>
#        RUNTIME_IMAGE    default slm-operator/slm-runtime:<version>; variants get "-<variant>"
#        EXTRAS           extras installed into the runtime image (default runtime,models)
#        SLM_CACHE_HOME   cache root (default ~/.cache/slm-operator): images/ and wheels/ below it
#        SLM_IMAGES_STORE storage root of the builder (default $SLM_CACHE_HOME/images/store-<driver>;
#                         "system" for the builder's own default store)
#        SLM_STORAGE_DRIVER overlay | vfs (default: overlay where it works)
#        SLM_IMAGES_STORE_MAX_GB  past this size the store drops untagged images after a build (default 20)
# Archives are named after the images: in each, the image carries its full name (slm-operator/operator:0.1.0
# becomes docker.io/slm-operator/operator:0.1.0, the name a kubelet resolves the short name to).
# shellcheck source=hack/images/lib.sh
source "$(dirname "$0")/lib.sh"

version=${IMAGE_VERSION:-$(project_version)}
operator_image=${OPERATOR_IMAGE:-slm-operator/operator:$version}
runtime_image=${RUNTIME_IMAGE:-slm-operator/slm-runtime:$version}
extras=${EXTRAS:-runtime,models}
llama=$(llama_version)
[ -n "$llama" ] || die "no llama-cpp-python==<version> pin in pyproject.toml"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(operator runtime-cpu)

# Never reach for a registry: every base must already be in the store (a missing one is an error, not a pull).
# --force-rm: a failed step leaves no working container behind.
build_flags=(--layers --force-rm --network host --pull=never --isolation "$isolation")
# The host's CA bundle replaces the image's during RUN steps only (not committed): pip and apt then trust what
# the host trusts, e.g. a TLS-inspecting proxy's CA. Debian's pip reads this path (the local base's pip is
# Debian's). SLM_BUILD_CA_BUNDLE="" turns it off.
ca_bundle=${SLM_BUILD_CA_BUNDLE-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
run_mounts=()
if [ -n "$ca_bundle" ] && [ -f "$ca_bundle" ]; then
    run_mounts=(-v "$(readlink -f "$ca_bundle"):/etc/ssl/certs/ca-certificates.crt:ro")
fi

# The bases of an image as build arguments (base_flags) and as cache-key input (base_word): PYTHON_IMAGE for all,
# INTEL_PYTHON_IMAGE too for intel (its Vulkan headers must be newer than bookworm's). Each is the image given in
# the environment (it must be in the store already) or else the local Debian base of its suite.
base_flags=()
base_word=""
add_base() {
    local arg=$1 suite=$2 image archive
    if [ -n "${!arg:-}" ]; then
        image=${!arg}
        base_word+="$image@$(tool inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null \
            || die "$arg=$image is not in the builder's store (pull or load it first)") "
    else
        archive=$(BASE_SUITE=$suite "$ROOT/hack/images/base.sh")
        image=localhost/slm-operator/base-python:$suite
        base_word+="$(basename "$archive") "
    fi
    base_flags+=(--build-arg "$arg=$image")
}
resolve_bases() {
    base_flags=()
    base_word=""
    add_base PYTHON_IMAGE "${BASE_SUITE:-bookworm}"
    if [ "$1" = intel ]; then add_base INTEL_PYTHON_IMAGE trixie; fi
}

# llama-cpp-python wheels built once per version and flavour, then mounted at /wheels for the image build:
#   portable  GGML_NATIVE=OFF (cpu, openvino)      vulkan  GGML_VULKAN=on (intel)
# The cuda and rocm stages compile in the build (their toolkits live only in the vendor images).
wheel_flavour() {
    case $1 in
        cpu | openvino) echo portable ;;
        intel) echo vulkan ;;
        *) echo "" ;;
    esac
}
wheel_stage() { case $1 in portable) echo build-cpu ;; vulkan) echo build-intel ;; esac; }

# The wheel is compiled in the Dockerfile's own build stage (its compilers and CMAKE_ARGS, the image's
# glibc and python), once: the host's `make install` wheel is built with GGML_NATIVE=ON for this CPU only.
ensure_wheel() {
    local flavour=$1 dir="$CACHE/wheels/llama-cpp-python-$llama-$1" stage builder start
    lock "wheel-$flavour"
    if ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        unlock "wheel-$flavour"
        echo "$dir"
        return
    fi
    stage=$(wheel_stage "$flavour")
    builder=localhost/slm-operator/llama-wheel-builder:$flavour
    start=$(date +%s)
    log "llama-cpp-python $llama ($flavour): preparing the compile container (stage $stage of runtime/Dockerfile)"
    # --no-cache: a cached stage layer from a build that had /wheels mounted lacks the compilers.
    tool build "${build_flags[@]}" "${run_mounts[@]}" --no-cache --quiet -f "$ROOT/runtime/Dockerfile" --target "$stage" \
        "${base_flags[@]}" -t "$builder" "$ROOT" >/dev/null
    log "llama-cpp-python $llama ($flavour): compiling llama.cpp into $dir (once per version: 10-30 min on 2 cores)"
    rm -rf "$dir.partial"
    mkdir -p "$dir.partial"
    local pip=(/opt/venv/bin/pip wheel --no-deps --progress-bar off -w /out "llama-cpp-python==$llama")
    if [ "$TOOL" = buildah ]; then
        local ctr
        ctr=$(tool from --quiet --pull=never "$builder")
        tool run --isolation "$isolation" --network host "${run_mounts[@]}" -v "$dir.partial:/out" "$ctr" -- "${pip[@]}" >&2 \
            || { tool rm "$ctr" >/dev/null; die "the llama-cpp-python $flavour wheel did not build"; }
        tool rm "$ctr" >/dev/null
    else
        tool run --rm --isolation "$isolation" --network host "${run_mounts[@]}" -v "$dir.partial:/out" "$builder" "${pip[@]}" >&2 \
            || die "the llama-cpp-python $flavour wheel did not build"
    fi
    tool rmi "$builder" >/dev/null 2>&1 || true
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    log "llama-cpp-python $llama ($flavour): wheel built in $(since "$start"): $(ls "$dir")"
    unlock "wheel-$flavour"
    echo "$dir"
}

# build NAME DOCKERFILE VARIANT: prints the archive of the image.
build() {
    local name=$1 dockerfile=$2 variant=$3 full key archive label flavour wheels="" start
    full=$(qualify "$name")
    resolve_bases "$variant"
    label=$(basename "${name%%:*}")-${name##*:}
    flavour=""
    if [ "$dockerfile" = runtime/Dockerfile ]; then flavour=$(wheel_flavour "$variant"); fi
    key=$(hash_inputs "$dockerfile" .dockerignore pyproject.toml README.md operator/slm_operator \
        runtime/slm_runtime gateway/slm_gateway hack/images/build.sh hack/images/lib.sh "$full" "variant=$variant" \
        "extras=$extras" "base=$base_word" "wheel=${flavour:-none}")
    archive="$IMAGES_DIR/$label-$key.oci.tar"
    [ -f "$archive" ] || lock "$label"
    if [ -f "$archive" ]; then
        ensure_loaded "$full" "$archive"
        log "$full is current ($archive)"
        unlock "$label"
        echo "$archive"
        return
    fi
    local args=(-f "$ROOT/$dockerfile" "${base_flags[@]}" -t "$full")
    if [ "$dockerfile" = runtime/Dockerfile ]; then
        args+=(--build-arg VARIANT="$variant" --build-arg EXTRAS="$extras")
        if [ -n "$flavour" ]; then
            wheels=$(ensure_wheel "$flavour")
            args+=(-v "$wheels:/wheels:ro")
        fi
    fi
    start=$(date +%s)
    log "building $full from $dockerfile (variant $variant${wheels:+, llama-cpp-python from $wheels})"
    # Layer output goes to stderr, stdout is for the archive paths.
    tool build "${build_flags[@]}" "${run_mounts[@]}" "${args[@]}" "$ROOT" >&2 || die "$full did not build"
    log "saving $full to $archive"
    tool push --quiet "$full" "oci-archive:$archive.partial:$full" >&2
    mv "$archive.partial" "$archive"
    prune_archives "$archive" "$label"
    built=1
    log "$full built in $(since "$start"): $archive ($(du -h "$archive" | cut -f1))"
    unlock "$label"
    echo "$archive"
}

# Every rebuild leaves the previous image and its intermediate layers (the layer cache) in the store. Past
# SLM_IMAGES_STORE_MAX_GB (default 20) the untagged ones go, after a build only (a warm call never waits on it);
# the next source edit then reinstalls the Python dependencies once (a minute or two, no compile).
built=0
prune_store() {
    local root max=${SLM_IMAGES_STORE_MAX_GB:-20} size
    [ "$built" = 1 ] && [ "${storage_args[0]:-}" = --root ] || return 0
    root=${storage_args[1]}
    size=$(du -s --block-size=1G "$root" 2>/dev/null | cut -f1)
    if [ "${size:-0}" -gt "$max" ]; then
        log "the builder's store holds ${size} GB (> SLM_IMAGES_STORE_MAX_GB=$max): removing untagged images"
        tool rmi --prune >/dev/null 2>&1 || true
    fi
}

for target in "${targets[@]}"; do
    case $target in
        operator) build "$operator_image" operator/Dockerfile cpu ;;
        runtime-cpu | cpu) build "$runtime_image" runtime/Dockerfile cpu ;;
        runtime-* | openvino | intel | cuda | rocm)
            variant=${target#runtime-}
            grep -q "AS build-$variant\$" "$ROOT/runtime/Dockerfile" \
                || die "runtime/Dockerfile has no stage build-$variant"
            build "$runtime_image-$variant" runtime/Dockerfile "$variant"
            ;;
        *) die "unknown image '$target' (operator, runtime-<variant>)" ;;
    esac
done
prune_store
