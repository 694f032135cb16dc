#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). As root on a fresh Debian machine.
#   1. the whole suite on this machine (tests needing vlan/ipvlan/dummy/vrf/bridge VLAN filtering
#      skip here with the reason); exec'd plugins go through links to the native shim, which
#      finds no server and execs the standalone cni-plugins (the fallback), then
#   2. the plugin integration tests again, every exec'd plugin call served through the shims
#      by one `cni-plugins serve` (CNI_PLUGINS_TEST_SERVE=1: the same results),
#   3. those kernel(kind) tests in a throw-away QEMU guest booting Debian's kernel
#      (tests/guest/run: ~35 s here under software emulation; GUEST_TIMEOUT bounds it).
# Arguments go to every pytest run (the guest adds its own -m kernel). Fails when one fails.
# SERVE_RUN=0 leaves out the server pass, GUEST_RUN=0 the guest part.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

host=0 served=0 guest=0
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || host=$?
if [ "${SERVE_RUN:-1}" != 0 ]; then
    echo "test: the integration tests through cni-plugins serve"
    CNI_PLUGINS_TEST_SERVE=1 .venv/bin/python -m pytest -q -p no:cacheprovider \
        tests/integration "$@" || served=$?
fi
if [ "${GUEST_RUN:-1}" != 0 ]; then
    echo "test: kernel tests in the guest (tests/guest/run)"
    tests/guest/run "$@" || guest=$?
fi
if [ $host != 0 ] || [ $served != 0 ] || [ $guest != 0 ]; then
    echo "test: FAILED (host pytest exit $host, served $served, guest exit $guest)" >&2
    exit 1
fi
