#!/usr/bin/env bash
# Check the frozen build, as root (needs `ip netns`):
#   1. dist/cni-plugins/cni-plugins (build/build.sh first): install makes the links (and a
#      cnitool link that runs cnitool), --help lists the types, VERSION and a loopback ADD/DEL
#      in a throw-away netns work by symlink.
#   2. a check build (same spec + a hook reporting sys.modules at exit, in build/work/check-dist):
#      VERSION and a request error import neither pydantic nor pyroute2, and a loopback ADD
#      loads pyroute2's rtnl message modules; a bridge ADD/DEL with ipMasq (nftables) and Go's
#      host-local, run inside a throw-away "host" netns, loads pyroute2's nfnetlink modules.
# build/check.sh --no-rebuild reuses an existing check build.
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=dist/cni-plugins/cni-plugins
CHECK=build/work/check-dist/cni-plugins/cni-plugins
[ -x "$DIST" ] || { echo "check: $DIST missing; run build/build.sh" >&2; exit 1; }
if [ "${1:-}" != "--no-rebuild" ] || [ ! -x "$CHECK" ]; then
    CNI_PLUGINS_CHECK_BUILD=1 .venv/bin/pyinstaller --noconfirm --log-level WARN \
        --distpath build/work/check-dist --workpath build/work/check build/cni-plugins.spec
fi

TMP=$(mktemp -d /tmp/cni-plugins-check.XXXXXX)
NETNS=cnitest-build-$$-$RANDOM
HOSTNS=$NETNS-host
cleanup() {
    ip netns del "$NETNS" 2>/dev/null || true
    ip netns del "$HOSTNS" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

fail() { echo "check: FAIL: $*" >&2; exit 1; }
CONF='{"cniVersion":"1.1.0","name":"check","type":"loopback"}'

# request BIN_DIR VERB [extra env...]: runs loopback through the symlink, stdout in $TMP/out
request() {
    local dir=$1 verb=$2; shift 2
    echo "$CONF" | env CNI_COMMAND="$verb" CNI_CONTAINERID=check1 CNI_NETNS="/var/run/netns/$NETNS" \
        CNI_IFNAME=eth0 CNI_PATH="$dir" "$@" "$dir/loopback" >"$TMP/out" || true
}

ip netns add "$NETNS"
for bin in "$DIST" "$CHECK"; do
    dir=$TMP/bin-dist; [ "$bin" = "$CHECK" ] && dir=$TMP/bin-check
    "$bin" install --dir "$dir" --cnitool "$dir-tool/cnitool" >/dev/null
    NETCONFPATH="$TMP/none" "$dir-tool/cnitool" list | grep -q "no network configurations" \
        || fail "$bin: cnitool by its link"
    for t in $("$bin" --help | sed -n 's/^  \([a-z-]*\)$/\1/p'); do
        [ "$(readlink -f "$dir/$t")" = "$(readlink -f "$bin")" ] || fail "$dir/$t is not a link to $bin"
    done
    [ -L "$dir/loopback" ] || fail "no loopback link from $bin install"
    CNI_COMMAND=VERSION "$dir/loopback" | grep -q '"supportedVersions"' || fail "$bin VERSION"
    request "$dir" ADD
    grep -q '"127.0.0.1/8"' "$TMP/out" || fail "$bin loopback ADD: $(cat "$TMP/out")"
    ip -n "$NETNS" link show lo | grep -q 'LOOPBACK,UP' || fail "$bin ADD left lo down"
    request "$dir" DEL
    [ ! -s "$TMP/out" ] || fail "$bin loopback DEL: $(cat "$TMP/out")"
    ip -n "$NETNS" link show lo | grep -q 'LOOPBACK,UP' && fail "$bin DEL left lo up"
    echo "check: $bin: install, cnitool link, --help, VERSION, loopback ADD/DEL by symlink: ok"
done

dir=$TMP/bin-check
report=$TMP/modules
has() { grep -qx "$1" "$report"; }
CNI_PLUGINS_IMPORT_REPORT=$report CNI_COMMAND=VERSION "$dir/loopback" >/dev/null
for m in pydantic pyroute2 click netaddr; do has "$m" && fail "VERSION imported $m"; done
request "$dir" ADD CNI_IFNAME= CNI_PLUGINS_IMPORT_REPORT="$report"
grep -q '"code": 4' "$TMP/out" || fail "missing CNI_IFNAME: $(cat "$TMP/out")"
for m in pydantic pyroute2 click netaddr; do has "$m" && fail "an env error imported $m"; done
echo "check: VERSION and an env error import no pydantic, pyroute2, click, netaddr: ok"
request "$dir" ADD CNI_PLUGINS_IMPORT_REPORT="$report"
grep -q '"127.0.0.1/8"' "$TMP/out" || fail "check build loopback ADD: $(cat "$TMP/out")"
has pyroute2.netlink.rtnl.ifinfmsg || fail "ADD did not load pyroute2.netlink.rtnl.ifinfmsg"
echo "check: loopback ADD loads $(grep -c '^pyroute2' "$report") pyroute2 modules: ok"

if [ -x /usr/lib/cni/host-local ]; then
    ip netns add "$HOSTNS"
    CONF='{"cniVersion":"1.0.0","name":"check","type":"bridge","bridge":"cnichk0","isGateway":true,
           "ipMasq":true,"ipMasqBackend":"nftables",
           "ipam":{"type":"host-local","subnet":"10.222.0.0/24","dataDir":"'$TMP/ipam'"}}'
    for verb in ADD DEL; do
        echo "$CONF" | ip netns exec "$HOSTNS" env CNI_COMMAND=$verb CNI_CONTAINERID=check1 \
            CNI_NETNS="/var/run/netns/$NETNS" CNI_IFNAME=eth0 CNI_PATH="$dir:/usr/lib/cni" \
            CNI_PLUGINS_IMPORT_REPORT="$report.$verb" "$dir/bridge" >"$TMP/out" || true
        case $verb in
            ADD) grep -q '"10.222.0.2/24"' "$TMP/out" || fail "bridge ADD: $(cat "$TMP/out")"
                 ip netns exec "$HOSTNS" nft list table inet cni_plugins_masquerade >/dev/null \
                     || fail "bridge ADD made no cni_plugins_masquerade table" ;;
            DEL) [ ! -s "$TMP/out" ] || fail "bridge DEL: $(cat "$TMP/out")" ;;
        esac
        report_v=$report.$verb
        grep -q '^pyroute2.netlink.nfnetlink' "$report_v" || fail "bridge $verb loaded no nfnetlink module"
    done
    echo "check: bridge+host-local(Go)+ipMasq ADD/DEL in a throw-away host netns, nfnetlink loaded: ok"
else
    echo "check: /usr/lib/cni/host-local missing: bridge check skipped"
fi
