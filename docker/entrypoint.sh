#!/bin/sh
# Entry point of the e2lmc image: run the worker's command unchanged.
#
# Codabench passes each program's metadata.yaml `command` (no shell involved); this script
# only makes the caches writable for whichever user the container runs as, then execs it.
set -e
for var in HF_HOME MPLCONFIGDIR; do
    eval dir="\${$var:-}"
    if [ -n "$dir" ] && ! { mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ]; }; then
        # Read-only or foreign cache (non-root user): fall back to a private temp folder.
        eval "export $var=\"\${TMPDIR:-/tmp}/e2lmc-$(id -u)/$var\""
        eval mkdir -p "\"\$$var\""
    fi
done
if [ "$#" -eq 0 ]; then
    set -- e2lmc --help
fi
exec "$@"
