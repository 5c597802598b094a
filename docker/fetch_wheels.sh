#!/usr/bin/env bash
# Build every wheel the image needs on this host, into the build context (docker/wheels/).
#
# For builders whose containers cannot reach PyPI (TLS interception, no network): the
# Dockerfile installs from docker/wheels/ with --no-index when it holds wheels. The host's
# Python must match the base image's (3.11 for Debian bookworm, 3.10 for Ubuntu 22.04).
#
# Usage: docker/fetch_wheels.sh [DEST]        (default docker/wheels)
# Env:   PYTHON      interpreter whose pip resolves the wheels (default python3)
#        CPU_TORCH=1 refuse anything but a CPU torch build (CI: never download CUDA wheels;
#                    put torch-2.13.0+cpu in a --find-links folder such as /opt/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-docker/wheels}"
PY="${PYTHON:-python3}"
mkdir -p "$DEST"
# Skip when the wheels were built from the same pins (the stamp is their checksum).
STAMP="$DEST/.pins.sha256"
PINS="$(cat docker/requirements.txt docker/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PINS" ]; then
    echo "wheels in $DEST are up to date"
    exit 0
fi
EXTRA=()
if [ "${CPU_TORCH:-0}" = 1 ]; then
    # Resolve torch from local wheel folders only, so pip can never pick a CUDA build.
    TORCH_WHEEL="$(ls /opt/wheels/torch-2.13.0+cpu-*.whl "$DEST"/torch-2.13.0+cpu-*.whl 2>/dev/null | head -1 || true)"
    [ -n "$TORCH_WHEEL" ] || { echo "CPU_TORCH=1 but no torch-2.13.0+cpu wheel in /opt/wheels or $DEST" >&2; exit 2; }
    cp -n "$TORCH_WHEEL" "$DEST"/ 2>/dev/null || true
    EXTRA+=(--find-links "$DEST")
fi
"$PY" -m pip wheel -q --wheel-dir "$DEST" "${EXTRA[@]}" \
    -r docker/requirements.txt -c docker/constraints.txt
if [ "${CPU_TORCH:-0}" = 1 ]; then
    if ls "$DEST" | grep -E '^(nvidia_|triton-)|^torch-2\.13\.0-' >/dev/null; then
        echo "CUDA wheels found in $DEST; remove them and rerun" >&2; exit 2
    fi
fi
echo "$PINS" > "$STAMP"
echo "wheels in $DEST: $(ls "$DEST"/*.whl | wc -l)"
