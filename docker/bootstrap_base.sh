#!/usr/bin/env bash
# Build a minimal Debian base image without any image registry and `docker import` it.
#
# For machines that reach Debian's package mirrors but no image registry (CI, air-gapped
# organizer hosts). The result replaces the CUDA base: build the e2lmc image with
#   docker build --build-arg BASE_IMAGE=e2lmc-base:bookworm -f docker/Dockerfile .
#
# Usage: docker/bootstrap_base.sh [TAG] [CACHE_DIR]
#   TAG        image tag to create (default e2lmc-base:bookworm)
#   CACHE_DIR  where the root-filesystem tarball is kept between runs
#              (default ${XDG_CACHE_HOME:-~/.cache}/e2lmc/base)
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), SUITE (default bookworm).
# Idempotent: an existing image is kept; an existing tarball is imported without rebuilding.
set -euo pipefail

TAG="${1:-e2lmc-base:bookworm}"
SUITE="${SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE_DIR="${2:-${XDG_CACHE_HOME:-$HOME/.cache}/e2lmc/base}"
TARBALL="$CACHE_DIR/debian-$SUITE-python.tar"
# Python with venv support and libseccomp (the task process's seccomp filter) are all the
# e2lmc image needs from the base.
PACKAGES="python3,python3-venv,python3-pip,ca-certificates,git,patch,libseccomp2"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG already present"
    exit 0
fi

if [ ! -s "$TARBALL" ]; then
    command -v debootstrap >/dev/null || { echo "debootstrap not found: apt-get install debootstrap" >&2; exit 2; }
    mkdir -p "$CACHE_DIR"
    ROOTFS="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
    trap 'rm -rf "$ROOTFS"' EXIT
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR"
    # Keep the image small: package caches and lists are not needed at run time.
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
fi

docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    "$TARBALL" "$TAG"
echo "imported $TARBALL as $TAG"
