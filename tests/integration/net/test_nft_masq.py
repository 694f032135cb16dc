"""ipMasq over nftables (firewall.setup_masq/teardown_masq/check_masq/gc) in throw-away
netns: the ruleset read back with the nft CLI is the Go plugins' layout, rules written by
the Go plugins (through nft) are found and removed by ours, and real traffic leaves the
"host" with the host's address."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from cni_plugins.errors import CNIError, Code
from cni_plugins.net import firewall, nft
from cni_plugins.net.firewall import masq, names
from tests.integration.net.conftest import inside, nft_cli, nft_json, nft_text

T = "cni_plugins_masquerade"
TABLE_COMMENT = "Masquerading for plugins from github.com/containernetworking/plugins"
CHECKS_COMMENT = ("Masquerade traffic from certain IPs to any (non-multicast) IP outside "
                  "their subnet")


def go_setup_script(rules: list[tuple[str, str]]) -> str:
    """What the Go plugins' nftables ipmasq backend hands to `nft -f -` (via knftables)
    for an ADD: [(rule text, comment)]."""
    lines = [f'add table inet {T} {{ comment "{TABLE_COMMENT}" ; }}',
             f'add chain inet {T} masq_checks {{ comment "{CHECKS_COMMENT}" ; }}',
             f"add chain inet {T} postrouting {{ type nat hook postrouting priority 100 ; }}",
             f"flush chain inet {T} postrouting",
             f"add rule inet {T} postrouting ip daddr == 224.0.0.0/4  return",
             f"add rule inet {T} postrouting ip6 daddr == ff00::/8  return",
             f"add rule inet {T} postrouting goto masq_checks"]
    lines += [f'add rule inet {T} masq_checks {text} comment "{comment}"'
              for text, comment in rules]
    return "\n".join(lines) + "\n"


def match(proto: str, field: str, op: str, right: object) -> dict:
    return {"match": {"op": op, "left": {"payload": {"protocol": proto, "field": field}},
                      "right": right}}


def masq_json(ip: str, net: str, plen: int) -> list[dict]:
    proto = "ip6" if ":" in ip else "ip"
    return [match(proto, "saddr", "==", ip),
            match(proto, "daddr", "!=", {"prefix": {"addr": net, "len": plen}}),
            {"masquerade": None}]


def rules_of(ruleset: list[dict], chain: str) -> list[dict]:
    return [o["rule"] for o in ruleset if "rule" in o and o["rule"]["chain"] == chain]


# -- names and backend selection (no root needed) ------------------------------------------

def test_names_are_the_go_plugins():
    # the values the Go plugins' own unit test expects (pkg/ip/ipmasq_nftables_linux_test.go)
    assert names.masq_comment("unit-test", "eth0", "one") == \
        "6fd94d501e58f0aa-287fc69eff0574a2, net: unit-test, if: eth0, id: one"
    assert names.masq_comment("unit-test", "eth0", "four") == \
        "6fd94d501e58f0aa-e766de567ef6c543, net: unit-test, if: eth0, id: four"
    assert names.masq_comment("alternate", "net1", "three") == \
        "82783ef24bdc7036-acb19d111858e348, net: alternate, if: net1, id: three"
    assert names.masq_comment('q"net', "eth0", 'c"1').endswith('net: qnet, if: eth0, id: c1')
    long = names.masq_comment("n" * 200, "eth0", "x")
    assert len(long.encode()) == 128 and long.startswith(names.masq_instance("n" * 200, "eth0",
                                                                             "x"))
    assert len(names.masq_comment("ü" * 100, "eth0", "x").encode()) <= 128
    chain = names.chain_name("mynet", "ctr1")
    assert chain.startswith("CNI-") and len(chain) == 28
    assert names.format_comment("mynet", "ctr1") == 'name: "mynet" id: "ctr1"'
    assert names.format_comment('a"b', "c\n") == 'name: "a\\"b" id: "c\\n"'


def test_select_backend():
    assert firewall.select(None).name == "nftables"
    assert firewall.select("nftables") is firewall.select(None)
    with pytest.raises(CNIError) as e:
        firewall.select("iptables")
    assert e.value.code == Code.UNSUPPORTED_FIELD == 2
    assert "ipMasqBackend" in e.value.msg and '"nftables"' in e.value.msg
    with pytest.raises(CNIError) as e:
        firewall.select("ebtables")
    assert e.value.code == Code.INVALID_NETWORK_CONFIG and "ipMasqBackend" in e.value.msg


def test_bad_address_is_a_config_error():
    with pytest.raises(CNIError) as e:
        masq.setup_masq("n", "eth0", "c", ["10.1.0.300/24"])
    assert e.value.code == Code.INVALID_NETWORK_CONFIG and "10.1.0.300/24" in e.value.msg


# -- the ruleset ---------------------------------------------------------------------------

@pytest.mark.root
def test_v4_and_v6_layout_is_the_go_layout(nsx):
    firewall.setup_masq("mynet", "eth0", "ctr1", ["10.88.0.7/16", "fd00:88::7/64"])
    comment = names.masq_comment("mynet", "eth0", "ctr1")
    ruleset = nft_json(nsx)
    tables = [o["table"] for o in ruleset if "table" in o]
    assert [(t["family"], t["name"]) for t in tables] == [("inet", T)]
    chains = {o["chain"]["name"]: o["chain"] for o in ruleset if "chain" in o}
    assert set(chains) == {"masq_checks", "postrouting"}
    post = chains["postrouting"]
    assert (post["type"], post["hook"], post["prio"], post["policy"]) == \
        ("nat", "postrouting", 100, "accept")
    assert "hook" not in chains["masq_checks"]
    assert [r["expr"] for r in rules_of(ruleset, "postrouting")] == [
        [match("ip", "daddr", "==", {"prefix": {"addr": "224.0.0.0", "len": 4}}),
         {"return": None}],
        [match("ip6", "daddr", "==", {"prefix": {"addr": "ff00::", "len": 8}}),
         {"return": None}],
        [{"goto": {"target": "masq_checks"}}]]
    checks = rules_of(ruleset, "masq_checks")
    assert [r["expr"] for r in checks] == [masq_json("10.88.0.7", "10.88.0.0", 16),
                                           masq_json("fd00:88::7", "fd00:88::", 64)]
    assert [r.get("comment") for r in checks] == [comment, comment]
    assert comment == "d23676b4f2d9fe04-7883a6f9ce71eedb, net: mynet, if: eth0, id: ctr1"
    # table and chain comments (nft 1.0.6 prints them only in the text form)
    text = nft_text(nsx)
    assert f'comment "{TABLE_COMMENT}"' in text and f'comment "{CHECKS_COMMENT}"' in text
    assert "type nat hook postrouting priority srcnat; policy accept;" in text


@pytest.mark.root
def test_same_bytes_as_the_go_plugins_through_nft(make_netns):
    go, ours = make_netns(), make_netns()
    attachments = [("unit-test", "eth0", "one", "192.168.1.1/24", "ip", "192.168.1.0/24"),
                   ("unit-test", "eth0", "two", "192.168.1.2/24", "ip", "192.168.1.0/24"),
                   ("alternate", "net1", "three", "10.0.0.5/20", "ip", "10.0.0.0/20"),
                   ("v6", "eth0", "six", "fd00:1::5/64", "ip6", "fd00:1::/64"),
                   ("v6", "eth0", "seven", "fd00:2::5/60", "ip6", "fd00:2::/60")]
    for net, ifname, cid, cidr, proto, subnet in attachments:
        ip = cidr.split("/")[0]
        nft_cli(go, go_setup_script([(f"{proto} saddr == {ip} {proto} daddr != {subnet} "
                                      "masquerade", names.masq_comment(net, ifname, cid))]))
        with inside(ours):
            firewall.setup_masq(net, ifname, cid, [cidr])
    assert nft_text(go) == nft_text(ours)
    dumps = []
    for ns in (go, ours):
        with inside(ns), nft.NFT() as sock:
            dumps.append([(r.chain, r.comment, r.raw) for chain in ("postrouting", "masq_checks")
                          for r in sock.rules("inet", T, chain)])
    assert dumps[0] == dumps[1]


@pytest.mark.root
def test_we_tear_down_what_the_go_plugins_set_up(nsx):
    comment = names.masq_comment("gonet", "eth0", "goctr")
    nft_cli(nsx, go_setup_script([
        ("ip saddr == 10.5.0.9 ip daddr != 10.5.0.0/24 masquerade", comment),
        ("ip6 saddr == fd05::9 ip6 daddr != fd05::/64 masquerade", comment),
        ("ip saddr == 10.5.0.10 ip daddr != 10.5.0.0/24 masquerade",
         names.masq_comment("gonet", "eth0", "other"))]))
    firewall.check_masq("gonet", "eth0", "goctr", ["10.5.0.9/24", "fd05::9/64"])
    firewall.teardown_masq("gonet", "eth0", "goctr")
    left = rules_of(nft_json(nsx), "masq_checks")
    assert [r["comment"] for r in left] == [names.masq_comment("gonet", "eth0", "other")]


@pytest.mark.root
def test_go_unit_scenario_reused_address(nsx):
    """The Go plugins' own scenario: four attachments, a fifth reusing the first one's
    address, then DEL of the first removes its rule and not the newcomer's."""
    for net, ifname, cid, cidr in [("unit-test", "eth0", "one", "192.168.1.1/24"),
                                   ("unit-test", "eth0", "two", "192.168.1.2/24"),
                                   ("unit-test", "eth0", "three", "192.168.99.5/24"),
                                   ("alternate", "net1", "three", "10.0.0.5/24"),
                                   ("unit-test", "eth0", "four", "192.168.1.1/24")]:
        firewall.setup_masq(net, ifname, cid, [cidr])
    firewall.teardown_masq("unit-test", "eth0", "one")
    checks = rules_of(nft_json(nsx), "masq_checks")
    assert [(r["expr"][0]["match"]["right"], r["comment"]) for r in checks] == [
        ("192.168.1.2", "6fd94d501e58f0aa-d750b2c8f0f25d5f, net: unit-test, if: eth0, id: two"),
        ("192.168.99.5",
         "6fd94d501e58f0aa-a4d4adb82b669cfe, net: unit-test, if: eth0, id: three"),
        ("10.0.0.5", "82783ef24bdc7036-acb19d111858e348, net: alternate, if: net1, id: three"),
        ("192.168.1.1", "6fd94d501e58f0aa-e766de567ef6c543, net: unit-test, if: eth0, id: four")]
    assert len(rules_of(nft_json(nsx), "postrouting")) == 3
    # GC keeps the listed attachments of a network and no others
    masq.gc_masq("unit-test", [("eth0", "two"), ("eth0", "three"), ("eth0", "one")])
    masq.gc_masq("alternate", [("net1", "three")])
    assert [r["comment"].split(", id: ")[1] for r in rules_of(nft_json(nsx), "masq_checks")] \
        == ["two", "three", "three"]
    masq.gc_masq("unit-test", [])
    masq.gc_masq("alternate", [])
    assert rules_of(nft_json(nsx), "masq_checks") == []
    assert len(rules_of(nft_json(nsx), "postrouting")) == 3


@pytest.mark.root
def test_teardown_of_one_container_leaves_the_other(nsx):
    firewall.setup_masq("net", "eth0", "a", ["10.1.0.2/24", "fd01::2/64"])
    firewall.setup_masq("net", "eth0", "b", ["10.1.0.3/24", "fd01::3/64"])
    firewall.teardown_masq("net", "eth0", "a")
    left = rules_of(nft_json(nsx), "masq_checks")
    assert [r["expr"][0]["match"]["right"] for r in left] == ["10.1.0.3", "fd01::3"]
    assert {r["comment"] for r in left} == {names.masq_comment("net", "eth0", "b")}
    firewall.check_masq("net", "eth0", "b", ["10.1.0.3/24", "fd01::3/64"])
    # same container ID on another interface or network is another attachment
    firewall.setup_masq("net", "net1", "b", ["10.2.0.3/24"])
    firewall.setup_masq("other", "eth0", "b", ["10.3.0.3/24"])
    firewall.teardown_masq("net", "eth0", "b")
    assert [r["expr"][0]["match"]["right"] for r in rules_of(nft_json(nsx), "masq_checks")] \
        == ["10.2.0.3", "10.3.0.3"]


@pytest.mark.root
def test_teardown_twice_and_on_nothing(nsx):
    firewall.teardown_masq("net", "eth0", "never")          # no table at all
    assert nft_json(nsx) == []                              # and it created none
    nft_cli(nsx, f"add table inet {T}\n")                   # table, no chains
    firewall.teardown_masq("net", "eth0", "never")
    firewall.setup_masq("net", "eth0", "a", ["10.1.0.2/24"])
    firewall.teardown_masq("net", "eth0", "a")
    firewall.teardown_masq("net", "eth0", "a")
    assert rules_of(nft_json(nsx), "masq_checks") == []
    assert len(rules_of(nft_json(nsx), "postrouting")) == 3  # the shared chains stay


@pytest.mark.root
def test_setup_again_replaces_the_attachments_rules(nsx):
    firewall.setup_masq("net", "eth0", "a", ["10.1.0.2/24", "fd01::2/64"])
    firewall.setup_masq("net", "eth0", "a", ["10.1.0.9/24"])
    checks = rules_of(nft_json(nsx), "masq_checks")
    assert [r["expr"][0]["match"]["right"] for r in checks] == ["10.1.0.9"]
    assert len(rules_of(nft_json(nsx), "postrouting")) == 3


@pytest.mark.root
def test_setup_repairs_the_postrouting_chain(nsx):
    firewall.setup_masq("net", "eth0", "a", ["10.1.0.2/24"])
    nsx.sh("nft", "flush", "chain", "inet", T, "postrouting")
    with pytest.raises(CNIError, match="postrouting"):
        firewall.check_masq("net", "eth0", "a", ["10.1.0.2/24"])
    firewall.setup_masq("net", "eth0", "b", ["10.1.0.3/24"])
    firewall.check_masq("net", "eth0", "a", ["10.1.0.2/24"])


@pytest.mark.root
def test_check_fails_when_a_rule_is_removed_or_changed(nsx):
    firewall.setup_masq("net", "eth0", "a", ["10.1.0.2/24", "fd01::2/64"])
    firewall.check_masq("net", "eth0", "a", ["10.1.0.2/24", "fd01::2/64"])
    with pytest.raises(CNIError, match="no masquerade rule for 10.1.0.4/24"):
        firewall.check_masq("net", "eth0", "a", ["10.1.0.4/24", "fd01::2/64"])
    with pytest.raises(CNIError, match="no masquerade rule for 10.1.0.2/16"):
        firewall.check_masq("net", "eth0", "a", ["10.1.0.2/16", "fd01::2/64"])
    with pytest.raises(CNIError, match="unexpected"):
        firewall.check_masq("net", "eth0", "a", ["10.1.0.2/24"])
    with nft.NFT() as sock:                                 # nsx: already inside
        v6 = [r for r in sock.rules("inet", T, "masq_checks")
              if r.exprs()[1][1]["NFTA_CMP_DATA"]["NFTA_DATA_VALUE"] == b"\x0a"]  # ipv6
    nsx.sh("nft", "delete", "rule", "inet", T, "masq_checks", "handle", str(v6[0].handle))
    with pytest.raises(CNIError) as e:
        firewall.check_masq("net", "eth0", "a", ["10.1.0.2/24", "fd01::2/64"])
    assert "no masquerade rule for fd01::2/64" in e.value.msg
    nsx.sh("nft", "delete", "table", "inet", T)
    nft_cli(nsx, f"add table inet {T}\n"
                 f"add chain inet {T} postrouting {{ type nat hook postrouting priority 100 ; }}\n")
    with pytest.raises(CNIError, match="chain masq_checks of inet cni_plugins_masquerade is "
                                       "missing"):
        firewall.check_masq("net", "eth0", "a", ["10.1.0.2/24"])


@pytest.mark.root
def test_check_on_an_empty_netns_fails(nsx):
    with pytest.raises(CNIError, match="chain postrouting of inet cni_plugins_masquerade is "
                                       "missing"):
        firewall.check_masq("net", "eth0", "a", ["10.1.0.2/24"])


# -- concurrency ---------------------------------------------------------------------------

@pytest.mark.root
def test_sixteen_threads_all_land(netns):
    errors: list[BaseException] = []

    def one(i: int, fn, *args) -> None:
        try:
            with inside(netns):
                fn("net", "eth0", f"ctr{i}", *args)
        except BaseException as e:          # noqa: B036 - reported below
            errors.append(e)

    for fn, extra in ((firewall.setup_masq, lambda i: ([f"10.4.0.{i + 2}/24",
                                                        f"fd04::{i + 2}/64"],)),
                      (firewall.teardown_masq, lambda i: ())):
        threads = [threading.Thread(target=one, args=(i, fn, *extra(i))) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        ruleset = nft_json(netns)
        assert len(rules_of(ruleset, "postrouting")) == 3
        checks = rules_of(ruleset, "masq_checks")
        if fn is firewall.setup_masq:
            assert len(checks) == 32
            assert {r["comment"] for r in checks} == {names.masq_comment("net", "eth0", f"ctr{i}")
                                                      for i in range(16)}
        else:
            assert checks == []


@pytest.mark.root
def test_sixteen_processes_all_land(netns):
    script = ("import sys\n"
              "from cni_plugins.net import firewall\n"
              "i = int(sys.argv[1])\n"
              "firewall.setup_masq('net', 'eth0', f'p{i}', [f'10.6.0.{i + 2}/24'])\n")
    procs = [subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-c", script,
                               str(i)], stderr=subprocess.PIPE, text=True) for i in range(16)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    checks = rules_of(nft_json(netns), "masq_checks")
    assert sorted(r["expr"][0]["match"]["right"] for r in checks) == \
        sorted(f"10.6.0.{i + 2}" for i in range(16))
    assert len(rules_of(nft_json(netns), "postrouting")) == 3


# -- real traffic --------------------------------------------------------------------------

RECEIVER = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(10)
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    data, peer = s.recvfrom(100)
    print(data.decode(), peer[0], flush=True)
"""
SENDER = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)   # a fresh source port: a fresh conntrack entry
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.mark.root
def test_traffic_leaves_with_the_hosts_address(make_netns):
    """pod (10.7.0.2, fd07::2) — host — outside (192.0.2.2, fd02::2); the outside has
    routes back, so without masquerading it sees the pod's own address."""
    host, pod, out = make_netns(), make_netns(), make_netns()
    ip("-n", host.name, "link", "add", "to-pod", "type", "veth", "peer", "name", "eth0",
       "netns", pod.name)
    ip("-n", host.name, "link", "add", "to-out", "type", "veth", "peer", "name", "eth0",
       "netns", out.name)
    for ns, dev, addrs, gw in ((host, "to-pod", ("10.7.0.1/24", "fd07::1/64"), None),
                               (host, "to-out", ("192.0.2.1/24", "fd02::1/64"), None),
                               (pod, "eth0", ("10.7.0.2/24", "fd07::2/64"),
                                ("10.7.0.1", "fd07::1")),
                               (out, "eth0", ("192.0.2.2/24", "fd02::2/64"), None)):
        for a in addrs:
            ip("-n", ns.name, "addr", "add", a, "dev", dev, *(("nodad",) if ":" in a else ()))
        ip("-n", ns.name, "link", "set", dev, "up")
        ip("-n", ns.name, "link", "set", "lo", "up")
        if gw:
            ip("-n", ns.name, "route", "add", "default", "via", gw[0])
            ip("-n", ns.name, "-6", "route", "add", "default", "via", gw[1])
    ip("-n", out.name, "route", "add", "10.7.0.0/24", "via", "192.0.2.1")
    ip("-n", out.name, "-6", "route", "add", "fd07::/64", "via", "fd02::1")
    host.sh("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

    def sources(dst: str, n: int, port: int) -> list[str]:
        recv = subprocess.Popen(["ip", "netns", "exec", out.name, sys.executable, "-c",
                                 RECEIVER, dst, str(port), str(n)], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert recv.stdout.readline().strip() == "ready"
            seen = []
            for i in range(n):
                pod.sh(sys.executable, "-c", SENDER, dst, str(port), f"m{i}")
                seen.append(recv.stdout.readline().split()[1])
            return seen
        finally:
            recv.kill()
            recv.wait()

    assert sources("192.0.2.2", 1, 5001) == ["10.7.0.2"]
    assert sources("fd02::2", 1, 5002) == ["fd07::2"]
    with inside(host):
        firewall.setup_masq("net", "eth0", "pod1", ["10.7.0.2/24", "fd07::2/64"])
    assert sources("192.0.2.2", 2, 5003) == ["192.0.2.1", "192.0.2.1"]
    assert sources("fd02::2", 2, 5004) == ["fd02::1", "fd02::1"]
    conntrack = host.sh("conntrack", "-L", "-p", "udp", "--dport", "5003")
    assert "src=10.7.0.2 dst=192.0.2.2" in conntrack and "dst=192.0.2.1" in conntrack
    with inside(host):
        firewall.teardown_masq("net", "eth0", "pod1")
    assert sources("192.0.2.2", 1, 5005) == ["10.7.0.2"]
    assert sources("fd02::2", 1, 5006) == ["fd07::2"]
