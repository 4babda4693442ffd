#!/bin/sh
# uninstall.sh MANIFEST - remove every file the last `make install` wrote
# (CMake lists them in install_manifest.txt), then the directories that
# only closewise had created and are now empty.
set -eu
manifest=$1
if [ ! -f "$manifest" ]; then
    echo "closewise: nothing to uninstall: $manifest not found (run make install first)" >&2
    exit 1
fi
n=0
while IFS= read -r f || [ -n "$f" ]; do
    if [ -e "$f" ] || [ -L "$f" ]; then
        rm -f -- "$f"
        n=$((n + 1))
    fi
done < "$manifest"
while IFS= read -r f || [ -n "$f" ]; do
    case "$f" in
    */include/closewise/*|*/cmake/closewise/*) rmdir -- "$(dirname "$f")" 2>/dev/null || true ;;
    esac
done < "$manifest"
echo "closewise: removed $n files"
