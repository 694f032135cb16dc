#!/usr/bin/env bash
# Build the multi-call binary as a PyInstaller ONEDIR bundle (never onefile).
#   build/build.sh              -> dist/cni-plugins/cni-plugins (+ _internal/), and
#                                  dist/cni-plugins/cni-shim (the exec'd file, build/shim/)
#   dist/cni-plugins/cni-plugins install --dir /opt/cni/bin [--force]
# Needs the project venv with the build extra (scripts/setup.sh makes it:
# pip install -e '.[test,build]'). Work files go to build/work/ (gitignored).
# DISTPATH and WORKPATH move the output and work dirs (tests build a private copy there).
set -euo pipefail
cd "$(dirname "$0")/.."

PYINSTALLER=${PYINSTALLER:-.venv/bin/pyinstaller}
if [ ! -x "$PYINSTALLER" ]; then
    echo "build: $PYINSTALLER not found; run scripts/setup.sh (or pip install -e '.[build]')" >&2
    exit 1
fi

DISTPATH=${DISTPATH:-dist}
"$PYINSTALLER" --noconfirm --clean --log-level "${PYI_LOG_LEVEL:-WARN}" \
    --distpath "$DISTPATH" --workpath "${WORKPATH:-build/work}" build/cni-plugins.spec

BIN=$DISTPATH/cni-plugins/cni-plugins
# The native shim the plugin links point at (it runs $BIN standalone when no server answers).
build/shim/build.sh "$DISTPATH/cni-plugins/cni-shim"
# Smoke test: the frozen binary answers VERSION through a plugin name, by way of the shim
# (no server on that socket: the shim execs the bundle).
out=$(CNI_COMMAND=VERSION CNI_PLUGINS_SOCKET=/nonexistent/build.sock \
      "$DISTPATH/cni-plugins/cni-shim" loopback)
case "$out" in
    *supportedVersions*) ;;
    *) echo "build: smoke test failed: $BIN loopback VERSION printed: $out" >&2; exit 1 ;;
esac
# Bytecode only: a bundle of .py sources would compile on every exec.
if [ -n "$(find "$DISTPATH/cni-plugins/_internal" -name '*.py' -print -quit)" ]; then
    echo "build: .py sources in $DISTPATH/cni-plugins/_internal (expected .pyc only)" >&2; exit 1
fi
echo "build: ok: $BIN ($(du -sh "$DISTPATH/cni-plugins" | cut -f1) in $DISTPATH/cni-plugins/)"
