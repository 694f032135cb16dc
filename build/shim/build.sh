#!/usr/bin/env bash
# Build the native exec shim (cni-shim.c): build/shim/build.sh OUT
# Static, so that an exec costs no dynamic loader; CC picks the compiler (default cc).
# The version compiled in must be the server's (cni_plugins/__init__.py), or every request
# is answered "mismatch" and runs standalone.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
init=$here/../../cni_plugins/__init__.py
version=$(sed -n 's/^__version__ = "\([0-9A-Za-z.+-]*\)"$/\1/p' "$init")
if [ -z "$version" ]; then
    echo "shim: no __version__ = \"...\" in $init" >&2
    exit 1
fi
"${CC:-cc}" -std=c11 -O2 -Wall -Wextra -Werror -static \
    -DCNI_PLUGINS_VERSION="\"$version\"" -o "$1" "$here/cni-shim.c"
echo "shim: ok: $1"
