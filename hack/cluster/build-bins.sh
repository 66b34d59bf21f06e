#!/usr/bin/env bash
# Build the pinned control-plane binaries (and the real node's kubelet and kube-proxy, and its autoscaling
# metrics pipeline) from Go modules into a cache keyed by version:
#   ${SLM_CACHE_HOME:-$HOME/.cache/slm-operator}/bin/<component>-<version>/<binary>
# Components already present are skipped, so a warm run does nothing and takes well under a second.
# Usage: hack/cluster/build-bins.sh [component ...]
#   (default: all; components: etcd kubernetes kwok helm metrics-server keda prometheus)
# kubernetes = kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy;
# keda = keda-operator, keda-adapter and the KEDA CRDs (crds/); the metrics pipeline is tests/cluster/metrics.py.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${SLM_CACHE_HOME:-$HOME/.cache/slm-operator}/bin"
mkdir -p "$cache"

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

# One build at a time per cache: a second caller waits, then finds everything present.
if command -v flock >/dev/null; then
    exec 9>"$cache/.build.lock"
    flock 9
fi
tmps=()
trap 'rm -rf "${tmps[@]}"' EXIT
new_tmp() { # new_tmp <var>: a scratch directory in the cache (same filesystem, so the final mv is a rename)
    local dir
    dir="$(mktemp -d "$cache/.build.XXXXXX")"
    tmps+=("$dir")
    printf -v "$1" '%s' "$dir"
}

log() { printf '[cluster-bins %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

present() { # present <component> <version>: the binary exists and is executable
    [[ -x "$cache/$1-$2/$1" ]]
}

need_go() { # only called when something must be built: a warm run needs no Go toolchain at all
    command -v go >/dev/null || { log "go is not installed (Go >= 1.26 builds the control-plane binaries)"; exit 1; }
}

install_into() { # install_into <component> <version> <built file>: atomic rename into the cache
    local dir="$cache/$1-$2"
    mkdir -p "$dir"
    mv -f "$3" "$dir/$1"
}

pinned() { # pinned <wrapper module> <module path> <version>: versions.env and the wrapper go.mod agree
    grep -Eq "^[[:space:]]*(require[[:space:]]+)?$2[[:space:]]+$3([[:space:]]|$)" "$here/modules/$1/go.mod" || {
        log "modules/$1/go.mod does not require $2 $3 (versions.env); update both together"
        exit 1
    }
}

built() { # built <what> <start seconds>
    log "$1 built in $((SECONDS - $2))s"
}

build_etcd() {
    present etcd "$ETCD_VERSION" && return 0
    need_go
    pinned etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
    log "building etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3)"
    local tmp start=$SECONDS
    new_tmp tmp
    (cd "$here/modules/etcd" && go build -mod=readonly -trimpath -ldflags='-s -w' -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
    install_into etcd "$ETCD_VERSION" "$tmp/etcd"
    built "etcd $ETCD_VERSION" "$start"
}

build_kubernetes() {
    # kubelet and kube-proxy run the real test node (tests/cluster/realnode.py); same module, same build.
    local components=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy) missing=() c
    for c in "${components[@]}"; do
        present "$c" "$KUBERNETES_VERSION" || missing+=("$c")
    done
    ((${#missing[@]})) || return 0
    need_go
    pinned kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION"
    log "building ${missing[*]} $KUBERNETES_VERSION (k8s.io/kubernetes; the cold build takes 10-30 minutes)"
    local v="$KUBERNETES_VERSION" minor tmp pkgs=() start=$SECONDS
    minor="${v#v1.}"
    minor="${minor%%.*}"
    local ldflags="-s -w"
    local pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
        ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    new_tmp tmp
    (cd "$here/modules/kubernetes" && go build -mod=readonly -trimpath -ldflags="$ldflags" -o "$tmp/" "${pkgs[@]}")
    for c in "${missing[@]}"; do install_into "$c" "$v" "$tmp/$c"; done
    built "${missing[*]} $v" "$start"
}

build_kwok() {
    local dir="$cache/kwok-$KWOK_VERSION"
    if ! present kwok "$KWOK_VERSION"; then
        need_go
        log "building kwok $KWOK_VERSION (sigs.k8s.io/kwok/cmd/kwok)"
        local tmp start=$SECONDS
        new_tmp tmp
        GOBIN="$tmp" go install -trimpath -ldflags='-s -w' "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
        install_into kwok "$KWOK_VERSION" "$tmp/kwok"
            built "kwok $KWOK_VERSION" "$start"
    fi
    # Stage files (node/pod lifecycle simulation) ship in the module source, not in the binary.
    if [[ ! -d "$dir/stages" ]]; then
        need_go
        local src
        src="$(cd "$here" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/kustomize/stage"
        [[ -d "$src" ]] || { log "kwok stage files not found at $src"; exit 1; }
        rm -rf "$dir/.stages.partial"
        mkdir -p "$dir/.stages.partial"
        cp -R "$src/." "$dir/.stages.partial/"
        chmod -R u+w "$dir/.stages.partial"
        mv "$dir/.stages.partial" "$dir/stages"
    fi
}

build_helm() {
    present helm "$HELM_VERSION" && return 0
    need_go
    log "building helm $HELM_VERSION (helm.sh/helm/v3/cmd/helm)"
    local tmp start=$SECONDS
    new_tmp tmp
    GOBIN="$tmp" go install -trimpath -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    install_into helm "$HELM_VERSION" "$tmp/helm"
    built "helm $HELM_VERSION" "$start"
}

module_dir() { # module_dir <module path> <version>: the module's source in the module cache (downloaded if needed)
    (cd "$here" && go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}

build_metrics_server() {
    present metrics-server "$METRICS_SERVER_VERSION" && return 0
    need_go
    pinned metrics-server sigs.k8s.io/metrics-server "$METRICS_SERVER_VERSION"
    log "building metrics-server $METRICS_SERVER_VERSION (sigs.k8s.io/metrics-server/cmd/metrics-server)"
    local tmp start=$SECONDS pkg=k8s.io/client-go/pkg/version
    new_tmp tmp
    (cd "$here/modules/metrics-server" && go build -mod=readonly -trimpath \
        -ldflags="-s -w -X $pkg.gitVersion=$METRICS_SERVER_VERSION -X $pkg.buildDate=1970-01-01T00:00:00Z" \
        -o "$tmp/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server)
    install_into metrics-server "$METRICS_SERVER_VERSION" "$tmp/metrics-server"
    built "metrics-server $METRICS_SERVER_VERSION" "$start"
}

build_keda() {
    # Two binaries from one build (they share most packages): cmd/operator -> keda-operator, cmd/adapter ->
    # keda-adapter (the external metrics API server). The admission webhooks are not built.
    local dir="$cache/keda-$KEDA_VERSION"
    if [[ ! -x "$dir/keda-operator" || ! -x "$dir/keda-adapter" ]]; then
        need_go
        pinned keda github.com/kedacore/keda/v2 "$KEDA_VERSION"
        log "building keda-operator and keda-adapter $KEDA_VERSION (github.com/kedacore/keda/v2; 5-15 minutes cold)"
        local tmp start=$SECONDS mod=github.com/kedacore/keda/v2
        new_tmp tmp
        (cd "$here/modules/keda" && go build -mod=readonly -trimpath \
            -ldflags="-s -w -X $mod/version.Version=$KEDA_VERSION" -o "$tmp/" "$mod/cmd/operator" "$mod/cmd/adapter")
        mkdir -p "$dir"
        mv -f "$tmp/operator" "$dir/keda-operator"
        mv -f "$tmp/adapter" "$dir/keda-adapter"
        built "keda $KEDA_VERSION" "$start"
    fi
    # The CRDs (ScaledObject, ScaledJob, [Cluster]TriggerAuthentication, [Cluster]CloudEventSource) ship in
    # the module source, not in the binaries; the operator watches all of them.
    if [[ ! -d "$dir/crds" ]]; then
        need_go
        local src
        src="$(module_dir github.com/kedacore/keda/v2 "$KEDA_VERSION")/config/crd/bases"
        [[ -f "$src/keda.sh_scaledobjects.yaml" ]] || { log "KEDA CRDs not found at $src"; exit 1; }
        rm -rf "$dir/.crds.partial"
        mkdir -p "$dir/.crds.partial"
        cp "$src"/*.yaml "$dir/.crds.partial/"
        chmod -R u+w "$dir/.crds.partial"
        mv "$dir/.crds.partial" "$dir/crds"
    fi
}

build_prometheus() {
    # Debian's prometheus package is built without Kubernetes service discovery, so the pipeline's Prometheus
    # is built here: upstream's build tags keep only the Kubernetes SD; without `builtinassets` there is no
    # web UI (the HTTP API is all the tests use). Prometheus 3.x.y is the Go module version v0.3xx.y.
    present prometheus "$PROMETHEUS_VERSION" && return 0
    need_go
    local v="${PROMETHEUS_VERSION#v}" major minor patch module_version
    IFS=. read -r major minor patch <<<"$v"
    module_version="v0.$major$(printf '%02d' "$minor").$patch"
    log "building prometheus $PROMETHEUS_VERSION (github.com/prometheus/prometheus/cmd/prometheus@$module_version)"
    local tmp start=$SECONDS pkg=github.com/prometheus/common/version
    new_tmp tmp
    GOBIN="$tmp" go install -trimpath -tags remove_all_sd,enable_kubernetes_sd \
        -ldflags="-s -w -X $pkg.Version=$v -X $pkg.Branch=release -X $pkg.BuildDate=19700101-00:00:00" \
        "github.com/prometheus/prometheus/cmd/prometheus@$module_version"
    install_into prometheus "$PROMETHEUS_VERSION" "$tmp/prometheus"
    built "prometheus $PROMETHEUS_VERSION" "$start"
}

all=(etcd kubernetes kwok helm metrics-server keda prometheus)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
start=$SECONDS
for t in "${targets[@]}"; do
    case "$t" in
        etcd | kubernetes | kwok | helm | keda | prometheus) "build_$t" ;;
        metrics-server) build_metrics_server ;;
        *) log "unknown component '$t' (${all[*]})"; exit 2 ;;
    esac
done
log "binaries ready under $cache ($((SECONDS - start))s)"
