#!/usr/bin/env bash
# The local Python base image, made from Debian's packages alone: for machines that reach a Debian mirror and
# PyPI but no container registry. debootstrap (minbase) installs python3 + venv into a root filesystem that
# becomes a one-layer image, localhost/slm-operator/base-python:<suite>, passed to the Dockerfiles as
# PYTHON_IMAGE. With docker and the public python image elsewhere none of this is needed.
#
# Usage: hack/images/base.sh      prints the oci-archive's path; builds it only when its inputs changed
# Env:   BASE_SUITE (bookworm), SLM_DEBIAN_MIRROR (default: the host's apt source for the suite, else
#        debootstrap's own default), CONTAINER_TOOL (buildah | podman), SLM_CACHE_HOME
# Needs root (debootstrap chroots) and the Debian packages debootstrap and buildah (or podman).
# shellcheck source=hack/images/lib.sh
source "$(dirname "$0")/lib.sh"

suite=${BASE_SUITE:-bookworm}
# passwd: useradd/groupadd for the images' uid 65532 (minbase lacks it); libgomp1: llama.cpp's OpenMP runtime.
packages=python3,python3-venv,ca-certificates,libgomp1,passwd
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
name=localhost/slm-operator/base-python:$suite
key=$(hash_inputs hack/images/base.sh "$suite" "$packages" "$arch")
archive="$IMAGES_DIR/base-python-$suite-$key.oci.tar"

[ -f "$archive" ] || lock "base-python-$suite"
if [ -f "$archive" ]; then
    ensure_loaded "$name" "$archive"
    log "base image $name is current ($archive)"
    echo "$archive"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root: run as root, or build with docker and the public python image"
command -v debootstrap >/dev/null || die "debootstrap is not installed (Debian: apt-get install debootstrap)"

# The mirror this host's apt already uses for the suite (deb822 .sources or one-line .list), so that a machine
# behind its own Debian mirror keeps using it; nothing found: debootstrap's default.
host_mirror() {
    local files=() f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    awk -v suite="$suite" '
        /^deb / { for (i = 2; i <= NF; i++) if ($i ~ /^(http|https|file):/) { if ($(i + 1) == suite) { print $i; exit } } }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri != "") { print uri; exit } }
        /^$/ { uri = "" }
    ' "${files[@]}" | head -n 1
}
mirror=${SLM_DEBIAN_MIRROR:-$(host_mirror || true)}

work=$(mktemp -d "$IMAGES_DIR/.base.XXXXXX")
ctr=""
cleanup() {
    [ -n "$ctr" ] && tool rm "$ctr" >/dev/null 2>&1
    # debootstrap mounts proc and sys inside the target while it runs; never delete through a mount.
    awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n 1 umount -l
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

start=$(date +%s)
log "debootstrap --variant=minbase $suite (${mirror:-debootstrap default mirror}) with $packages: about 90 s"
debootstrap --variant=minbase --include="$packages" --arch="$arch" "$suite" "$work/rootfs" ${mirror:+"$mirror"} \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
log "debootstrap done in $(since "$start"); trimming docs, apt lists and caches"
rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/var/cache/apt/*.bin "$work/rootfs"/var/cache/apt/archives/*.deb \
    "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* "$work/rootfs"/usr/share/info/* \
    "$work/rootfs"/var/log/* "$work/rootfs"/dev/*
tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/rootfs.tar" .

log "importing the root filesystem as $name"
ctr=$(tool from --quiet scratch)
tool add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
tool config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 \
    --label org.opencontainers.image.title=base-python \
    --label "org.opencontainers.image.description=Debian $suite minbase with $packages (debootstrap, built locally)" \
    "$ctr"
tool commit --quiet --rm "$ctr" "$name" >/dev/null
ctr=""
tool push --quiet "$name" "oci-archive:$archive.partial:$name"
mv "$archive.partial" "$archive"
prune_archives "$archive" "base-python-$suite"
log "base image $name built in $(since "$start"): $archive ($(du -h "$archive" | cut -f1))"
echo "$archive"
