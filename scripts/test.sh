#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). As root on a fresh Debian machine.
#   1. the whole suite on this machine (tests needing vlan/ipvlan/dummy/vrf/bridge VLAN filtering
#      skip here with the reason), then
#   2. those kernel(kind) tests in a throw-away QEMU guest booting Debian's kernel
#      (tests/guest/run: ~35 s here under software emulation; GUEST_TIMEOUT bounds it).
# Arguments go to both pytest runs (the guest adds its own -m kernel). Fails when either fails.
# GUEST_RUN=0 leaves out the guest part.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

host=0 guest=0
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || host=$?
if [ "${GUEST_RUN:-1}" != 0 ]; then
    echo "test: kernel tests in the guest (tests/guest/run)"
    tests/guest/run "$@" || guest=$?
fi
if [ $host != 0 ] || [ $guest != 0 ]; then
    echo "test: FAILED (host pytest exit $host, guest exit $guest)" >&2
    exit 1
fi
