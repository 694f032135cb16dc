#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). As root on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
