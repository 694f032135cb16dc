#!/usr/bin/env bash
# Build the multi-call binary as a PyInstaller ONEDIR bundle (never onefile).
#   build/build.sh              -> dist/cni-plugins/cni-plugins (+ _internal/)
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
# Smoke test: the frozen binary answers VERSION through a plugin name.
out=$(CNI_COMMAND=VERSION "$BIN" loopback)
case "$out" in
    *supportedVersions*) ;;
    *) echo "build: smoke test failed: $BIN loopback VERSION printed: $out" >&2; exit 1 ;;
esac
# Bytecode only: a bundle of .py sources would compile on every exec.
if [ -n "$(find "$DISTPATH/cni-plugins/_internal" -name '*.py' -print -quit)" ]; then
    echo "build: .py sources in $DISTPATH/cni-plugins/_internal (expected .pyc only)" >&2; exit 1
fi
echo "build: ok: $BIN ($(du -sh "$DISTPATH/cni-plugins" | cut -f1) in $DISTPATH/cni-plugins/)"
