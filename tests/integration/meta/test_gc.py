"""GC and STATUS (CNI 1.1.0) of every plugin that keeps state, in a throw-away node.

A chain bridge(ipMasq, macspoofchk, host-local) -> portmap -> bandwidth -> tuning is added
for a few pods of two networks; then pods lose their netns without DEL (and, for the
"reboot", every pod netns goes while the state dirs stay). GC, given the surviving
attachments, must remove the orphans' state and nothing else: not the valid pods', not
another network's, not what Go's plugins (1.1.1, /usr/lib/cni) made on the same node.
Everything is read back from the kernel (nft -j, ip -j) and the state directories.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from cni_plugins.meta.bandwidth import ifb_name
from tests.fixtures.netns import TestNS as NS
from tests.fixtures.pods import (
    Node, bridge_conf, call_in_node as call, links, nft_masq_rules, veths_settled,
)
from tests.fixtures.run import Reply, Runner

pytestmark = pytest.mark.root

V = "1.1.0"
NETS = {"gcnet": ("gcbr0", "10.91.0.0/24"), "othernet": ("gcbr1", "10.92.0.0/24")}
LIMITS = {"egressRate": 8_000_000, "egressBurst": 80_000}
MAPPING = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]


@dataclass
class Pod:
    net: str
    cid: str
    ns: NS
    ip: str = ""


def confs(node: Node, net: str, state: str, v: str = V) -> dict[str, dict]:
    """The chain's configs, each plugin keeping its state under the test's `state` dir."""
    bridge, subnet = NETS[net]
    base = {"cniVersion": v, "name": net}
    return {
        "bridge": bridge_conf(v, node, name=net, bridge=bridge, subnet=subnet, ipMasq=True,
                              macspoofchk=True),
        "portmap": {**base, "type": "portmap", "dataDir": f"{state}/portmap",
                    "capabilities": {"portMappings": True}},
        "bandwidth": {**base, "type": "bandwidth", **LIMITS},
        "tuning": {**base, "type": "tuning", "mtu": 1400, "dataDir": f"{state}/tuning"},
    }


def add(run: Runner, node: Node, net: str, cid: str, state: str, v: str = V) -> Pod:
    pod = Pod(net, cid, node.pod())
    prev: Any = None
    for plugin, conf in confs(node, net, state, v).items():
        if prev is not None:
            conf = {**conf, "prevResult": prev}
        if plugin == "portmap":
            conf = {**conf, "runtimeConfig": {"portMappings": MAPPING}}
        r = call(run, node, plugin, "ADD", conf, pod.ns, cid=cid)
        assert r.ok, (plugin, r.raw)
        prev = r.out
    pod.ip = prev["ips"][0]["address"].split("/")[0]
    return pod


def gc(run: Runner, node: Node, net: str, state: str, keep: list[Pod] | None,
       plugins: tuple[str, ...] = ("bridge", "portmap", "bandwidth", "tuning")) -> None:
    for plugin, conf in confs(node, net, state).items():
        if plugin not in plugins:
            continue
        if keep is not None:
            conf["cni.dev/valid-attachments"] = [{"containerID": p.cid, "ifname": "eth0"}
                                                 for p in keep]
        r = call(run, node, plugin, "GC", conf, netns="")
        assert r.ok and r.out is None, (plugin, r.raw)


# -- reading the node back -------------------------------------------------------------------

def nft(node: Node, family: str, table: str) -> list[dict]:
    try:
        raw = node.host.sh("nft", "-j", "list", "table", family, table)
    except subprocess.CalledProcessError:
        return []
    return json.loads(raw)["nftables"]


def masq_ids(node: Node, net: str) -> set[str]:
    return {r["comment"].rsplit("id: ", 1)[1] for r in nft_masq_rules(node.host)
            if f", net: {net}," in r["comment"]}


def spoof_ids(node: Node) -> set[str]:
    """Container IDs with a MAC spoof check rule (any network, any implementation)."""
    return {r["rule"]["comment"][len("macspoofchk-"):].rsplit("-", 1)[0]
            for r in nft(node, "bridge", "nat")
            if "rule" in r and r["rule"].get("comment", "").startswith("macspoofchk-")}


def spoof_chains(node: Node) -> set[str]:
    return {r["chain"]["name"] for r in nft(node, "bridge", "nat")
            if "chain" in r and r["chain"]["name"].startswith("cni-br-iface-")}


def portmap_ids(node: Node) -> set[str]:
    return {r["rule"]["comment"] for r in nft(node, "ip", "cni_hostport")
            if "rule" in r and "comment" in r["rule"]}


def ifbs(node: Node) -> set[str]:
    return {n for n, ln in links(node.host).items()
            if ln.get("linkinfo", {}).get("info_kind") == "ifb"}


def backups(state: str) -> set[str]:
    d = f"{state}/tuning"
    return set(os.listdir(d)) if os.path.isdir(d) else set()


def notes(state: str, net: str) -> set[str]:
    d = f"{state}/portmap/{net}"
    return set(os.listdir(d)) if os.path.isdir(d) else set()


def assert_state(node: Node, state: str, pods: list[Pod]) -> None:
    """Exactly `pods`' state in every plugin (both networks)."""
    for net in NETS:
        mine = [p for p in pods if p.net == net]
        assert node.reservations(net) == {p.ip for p in mine}, net
        assert masq_ids(node, net) == {p.cid for p in mine}, net
        assert notes(state, net) == {p.cid for p in mine}, net
    assert spoof_ids(node) == {p.cid for p in pods}
    assert spoof_chains(node) == {f"cni-br-iface-{p.cid}-eth0{s}" for p in pods
                                  for s in ("", "-mac")}
    assert portmap_ids(node) == {p.cid for p in pods}
    assert ifbs(node) == {ifb_name(p.net, p.cid) for p in pods}
    assert backups(state) == {f"{p.cid}_eth0.json" for p in pods}


def lose(*pods: Pod) -> None:
    """The runtime forgets the pods: their netns goes, no DEL."""
    for p in pods:
        p.ns.delete()


# -- GC ----------------------------------------------------------------------------------------

@pytest.fixture
def cluster(make_node, run, tmp_path):
    node = make_node()
    state = str(tmp_path / "state")
    pods = {cid: add(run, node, net, cid, state)
            for net, cid in [("gcnet", "keep"), ("gcnet", "gone"), ("gcnet", "gone2"),
                             ("othernet", "other")]}
    assert_state(node, state, list(pods.values()))
    return node, state, pods


def test_gc_removes_only_the_orphans(cluster, run):
    node, state, pods = cluster
    lose(pods["gone"], pods["gone2"])
    veths_settled(node.host)
    gc(run, node, "gcnet", state, [pods["keep"], Pod("gcnet", "elsewhere", pods["keep"].ns)])
    assert_state(node, state, [pods["keep"], pods["other"]])
    gc(run, node, "gcnet", state, [pods["keep"]])              # again: nothing left to do
    assert_state(node, state, [pods["keep"], pods["other"]])
    # the survivor's state is whole: its DEL finds all of it
    r = call(run, node, "bridge", "DEL", confs(node, "gcnet", state)["bridge"], pods["keep"].ns,
             cid="keep")
    assert r.ok, r.raw
    assert masq_ids(node, "gcnet") == set() and node.reservations("gcnet") == set()


def test_gc_without_a_list_removes_nothing(cluster, run):
    node, state, pods = cluster
    lose(pods["gone"])
    gc(run, node, "gcnet", state, None)
    assert_state(node, state, list(pods.values()))


def test_gc_after_a_reboot(cluster, run):
    """Every pod netns gone, the state dirs kept: GC with no valid attachment."""
    node, state, pods = cluster
    lose(*pods.values())
    veths_settled(node.host)
    gc(run, node, "gcnet", state, [])
    left = [pods["other"]]
    for net in NETS:
        assert node.reservations(net) == {p.ip for p in left if p.net == net}
    assert masq_ids(node, "othernet") == {"other"} and masq_ids(node, "gcnet") == set()
    assert portmap_ids(node) == {"other"} and spoof_ids(node) == {"other"}
    assert ifbs(node) == {ifb_name("othernet", "other")}
    assert backups(state) == {"other_eth0.json"}
    gc(run, node, "othernet", state, [])
    assert_state(node, state, [])


def test_gc_reaches_ipam_through_every_interface_plugin(make_node, run, tmp_path):
    """GC sent to an interface plugin is forwarded to its IPAM (host-local here)."""
    node = make_node()
    lan = node.lan(gw_cidr="10.79.0.1/24", master="mst0")
    assert lan
    ipam = {"type": "host-local", "subnet": "10.79.0.0/24", "dataDir": node.data_dir}
    conf = {"cniVersion": V, "name": "mvgc", "type": "macvlan", "master": "mst0",
            "ipam": ipam}
    pods = [node.pod() for _ in range(2)]
    for i, p in enumerate(pods):
        assert call(run, node, "macvlan", "ADD", conf, p, cid=f"c{i}").ok
    assert len(node.reservations("mvgc")) == 2
    lose(Pod("mvgc", "c1", pods[1]))
    ptp = {"cniVersion": V, "name": "mvgc", "type": "ptp", "ipMasq": True, "ipam": ipam}
    for plugin, c in (("macvlan", conf), ("ptp", ptp)):
        c = {**c, "cni.dev/valid-attachments": [{"containerID": "c0", "ifname": "eth0"}]}
        r = call(run, node, plugin, "GC", c, netns="")
        assert r.ok, r.raw
        assert len(node.reservations("mvgc")) == 1


# -- Go's plugins on the same node ---------------------------------------------------------------

def test_gc_never_touches_what_go_made(make_node, run, run_go, tmp_path):
    """Go 1.1.1's bridge (macspoofchk, ipMasq: iptables), bandwidth and tuning for a valid
    pod of this network and for a pod of another network: our GC leaves all of it."""
    node = make_node()
    state = str(tmp_path / "state")
    ours = add(run, node, "gcnet", "gone", state)
    go_valid = add_go(run_go, node, "gcnet", "govalid", state)
    go_other = add_go(run_go, node, "othernet", "goother", state)
    go_ifbs = {ifb_name("gcnet", "govalid"), ifb_name("othernet", "goother")}
    go_spoof = {"govalid", "goother"}
    assert ifbs(node) == go_ifbs | {ifb_name("gcnet", "gone")}
    assert spoof_ids(node) == go_spoof | {"gone"}
    lose(ours, go_other)
    veths_settled(node.host)
    gc(run, node, "gcnet", state, [go_valid])
    assert ifbs(node) == go_ifbs
    assert spoof_ids(node) == go_spoof
    assert backups(state) == {"govalid_eth0.json", "goother_eth0.json"}
    assert node.reservations("gcnet") == {go_valid.ip}
    assert node.reservations("othernet") == {go_other.ip}
    assert masq_ids(node, "gcnet") == set() and portmap_ids(node) == set()


def add_go(run_go: Runner, node: Node, net: str, cid: str, state: str) -> Pod:
    """Go's chain (1.0.0: the Go plugins 1.1.1 stop there) without portmap, whose Go
    backend is iptables; Go's ipMasq is iptables too (both never read by ours)."""
    pod = Pod(net, cid, node.pod())
    prev: Any = None
    for plugin, conf in confs(node, net, state, "1.0.0").items():
        if plugin == "portmap":
            continue
        if prev is not None:
            conf = {**conf, "prevResult": prev}
        r = call(run_go, node, plugin, "ADD", conf, pod.ns, cid=cid)
        assert r.ok, (plugin, r.raw)
        prev = r.out
    pod.ip = prev["ips"][0]["address"].split("/")[0]
    return pod


# -- STATUS --------------------------------------------------------------------------------------

def status(run: Runner, node: Node, plugin: str, conf: dict, wrap: list[str] | None = None
           ) -> Reply:
    if wrap is None:
        return call(run, node, plugin, "STATUS", conf, netns="")
    env = run.env("STATUS", "", "", "", "", node.path)
    cmd = ["ip", "netns", "exec", node.host.name, *wrap, os.path.join(run.plugin_dir, plugin)]
    proc = subprocess.run(cmd, input=json.dumps(conf).encode(), env=env, capture_output=True,
                          timeout=60)
    text = proc.stdout.decode()
    return Reply(proc.returncode, json.loads(text) if text.strip() else None,
                 proc.stderr.decode(), text)


def test_status_ready(make_node, run, tmp_path):
    node = make_node()
    for plugin, conf in confs(node, "gcnet", str(tmp_path)).items():
        r = status(run, node, plugin, conf)
        assert r.ok and r.out is None, (plugin, r.raw)


def test_status_50_when_the_range_is_full(make_node, run, tmp_path):
    node = make_node()
    conf = bridge_conf(V, node, name="fullnet", bridge="gcbr2", subnet="10.93.0.0/30")
    assert status(run, node, "bridge", conf).ok
    assert call(run, node, "bridge", "ADD", conf, node.pod(), cid="only").ok   # .2: the last
    for plugin, c in (("bridge", conf), ("ptp", {**conf, "type": "ptp"})):
        r = status(run, node, plugin, c)
        assert r.code == 50 and "exhausted" in r.out["msg"], (plugin, r.raw)


def test_status_50_when_a_delegate_is_missing(make_node, run):
    node = make_node()
    base = {"cniVersion": V, "name": "nodelegate", "ipam": {"type": "no-such-ipam"}}
    for plugin, extra in (("bridge", {"bridge": "gcbr3"}), ("ptp", {}),
                          ("macvlan", {"master": "lo"}), ("ipvlan", {"master": "lo"}),
                          ("vlan", {"master": "lo", "vlanId": 5}), ("dummy", {}),
                          ("tap", {})):
        r = status(run, node, plugin, {**base, "type": plugin, **extra})
        assert r.code == 50 and "no-such-ipam" in r.out["msg"], (plugin, r.raw)


NO_NET_ADMIN = ["capsh", "--drop=cap_net_admin", "--", "-c", 'exec "$0" "$@"']


@pytest.mark.skipif(os.environ.get("CNI_PLUGINS_TEST_SERVE") == "1",
                    reason="served, the request runs with the server's capabilities")
def test_status_50_when_nftables_is_unusable(make_node, run, tmp_path):
    """The plugin runs without CAP_NET_ADMIN: nf_tables refuses it (EPERM)."""
    node = make_node()
    c = confs(node, "gcnet", str(tmp_path))
    ptp = {**c["bridge"], "type": "ptp"}
    for plugin, conf in (("bridge", c["bridge"]), ("ptp", ptp), ("portmap", c["portmap"])):
        r = status(run, node, plugin, conf, NO_NET_ADMIN)
        assert r.code == 50 and "nftables is not usable" in r.out["msg"], (plugin, r.raw)
    # the same config without ipMasq/macspoofchk needs no nftables
    plain = {**c["bridge"], "ipMasq": False, "macspoofchk": False}
    r = status(run, node, "bridge", plain, NO_NET_ADMIN)
    assert r.ok, r.raw
