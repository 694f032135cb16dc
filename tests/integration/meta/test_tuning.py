"""tuning chained after bridge, inside a throw-away host netns (make_node): sysctls and
link attributes read back inside the pod (`ip -j -d link`, /proc/sys), the node's and the
real host's values left alone, the backup file in a per-test dataDir, DEL restoring
everything in every state, CHECK against hand-made changes, the MAC sources in Go's
order, the allow-list, bad input refused before anything is written; after our bridge and
Go's, Go's tuning (1.1.1) after our bridge as the oracle, each implementation's DEL
restoring what the other backed up; and the seed's conflist end to end through cnitool."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cni_plugins import version
from cni_plugins.meta import tuning
from tests.fixtures.netns import TestNS as NS
from tests.fixtures.pods import Node, call_in_node as call, bridge_conf, link, sysctl
from tests.fixtures.run import GO_DIR, Reply, Runner, base_env

pytestmark = pytest.mark.root

VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
GO_VERSIONS = ("0.3.1", "0.4.0", "1.0.0")          # the Go plugins 1.1.1 stop at 1.0.0
NET = "brnet"                                       # bridge_conf's network name
MAC = "0a:58:0a:4d:00:99"
# net.core.somaxconn is per netns; an IFNAME key in both spellings
SYSCTLS = {"net.core.somaxconn": "777",
           "net.ipv4.conf.IFNAME.arp_filter": "1",
           "net/ipv4/conf/IFNAME/arp_ignore": "2"}
SYSCTL_FILES = {"net.core.somaxconn": "net/core/somaxconn",
                "net.ipv4.conf.IFNAME.arp_filter": "net/ipv4/conf/eth0/arp_filter",
                "net/ipv4/conf/IFNAME/arp_ignore": "net/ipv4/conf/eth0/arp_ignore"}
GO_ATTRS = {"mac": MAC, "mtu": 1400, "promisc": True, "allmulti": True}
ATTRS = {**GO_ATTRS, "txQLen": 500}                 # Go 1.1.1 has no txQLen
APPLIED = {"mac": MAC, "mtu": 1400, "promisc": True, "allmulti": True, "txqlen": 500}


# -- pods and calls ----------------------------------------------------------------------------

@dataclass
class Pod:
    node: Node
    ns: NS
    cid: str
    prev: dict                  # the bridge's ADD result
    v: str


def attach(node: Node, v: str, bridge: Runner, cid: str = "ctr1") -> Pod:
    ns = node.pod()
    r = call(bridge, node, "bridge", "ADD", bridge_conf(v, node), ns, cid=cid)
    assert r.ok, r.raw
    return Pod(node, ns, cid, r.out, v)


def tconf(v: str, prev: dict | None, data_dir: Path, **fields: Any) -> dict:
    conf: dict[str, Any] = {"cniVersion": v, "name": NET, "type": "tuning",
                            "dataDir": str(data_dir), **fields}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def state(ns: NS, ifname: str = "eth0") -> dict:
    """The attributes tuning changes, as `ip -j -d link` reports them."""
    got = link(ns, ifname)
    assert got is not None, f"no {ifname} in {ns.name}"
    return {"mac": got["address"], "mtu": got["mtu"], "promisc": "PROMISC" in got["flags"],
            "allmulti": "ALLMULTI" in got["flags"], "txqlen": got.get("txqlen", 0)}


def sysctls(ns: NS) -> dict[str, str | None]:
    return {key: sysctl(ns, f) for key, f in SYSCTL_FILES.items()}


def host_somaxconn(node: Node) -> tuple[str | None, str]:
    """net.core.somaxconn in the node's netns and in this process's (the real host's)."""
    with open("/proc/sys/net/core/somaxconn") as f:
        return sysctl(node.host, "net/core/somaxconn"), f.read().strip()


def backup(data_dir: Path, cid: str, ifname: str = "eth0") -> Path:
    return data_dir / f"{cid}_{ifname}.json"


def with_mac(prev: dict, mac: str, ifname: str = "eth0") -> dict:
    """The prevResult tuning must print: the container interface's MAC replaced."""
    out = copy.deepcopy(prev)
    for iface in out["interfaces"]:
        if iface["name"] == ifname and "sandbox" in iface:
            iface["mac"] = mac
    return out


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "tuning"              # tuning creates it


# -- ADD / CHECK / DEL after our bridge and Go's -----------------------------------------------

@pytest.mark.parametrize("bridge_impl", ["ours", pytest.param("go", marks=pytest.mark.oracle)])
@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del(v, bridge_impl, make_node, run, run_go, data_dir):
    if bridge_impl == "go" and v not in GO_VERSIONS:
        pytest.skip("the Go bridge 1.1.1 stops at 1.0.0")
    node = make_node()
    pod = attach(node, v, run_go if bridge_impl == "go" else run)
    before, sysctls_before, host_before = state(pod.ns), sysctls(pod.ns), host_somaxconn(node)
    # Go's bridge leaves the container veth with no queue (ip prints no txqlen)
    assert before["mac"] != MAC and before["mtu"] == 1500
    assert before["txqlen"] == (0 if bridge_impl == "go" else 1000)
    conf = tconf(v, pod.prev, data_dir, sysctl=SYSCTLS, **ATTRS)

    r = call(run, node, "tuning", "ADD", conf, pod)
    assert r.ok, r.raw
    assert r.out == with_mac(pod.prev, MAC)
    assert state(pod.ns) == APPLIED
    assert sysctls(pod.ns) == {k: SYSCTLS[k] for k in SYSCTL_FILES}
    assert host_somaxconn(node) == host_before              # the pod's netns only
    f = backup(data_dir, pod.cid)
    assert json.loads(f.read_text()) == {"Network": conf["name"], "ContainerID": pod.cid,
                                         "IfName": "eth0",    # whose backup it is, for GC
                                         "Mac": before["mac"], "Promisc": False, "Mtu": 1500,
                                         "Allmulti": False, "TxQLen": before["txqlen"]}
    assert stat.S_IMODE(f.stat().st_mode) == 0o600

    if version.has_check(v):
        r = call(run, node, "tuning", "CHECK", tconf(v, r.out, data_dir, sysctl=SYSCTLS,
                                                     **ATTRS), pod)
        assert r.ok, r.raw

    for _ in range(2):                                      # DEL is idempotent
        r = call(run, node, "tuning", "DEL", conf, pod)
        assert r.ok, r.raw
        assert state(pod.ns) == before
        assert not f.exists()
    # sysctls are not restored (Go neither): the netns goes away with the pod
    assert sysctls(pod.ns) != sysctls_before
    r = call(run, node, "bridge", "DEL", bridge_conf(v, node), pod)
    assert r.ok, r.raw
    assert host_somaxconn(node) == host_before


@pytest.mark.oracle
@pytest.mark.parametrize("v", GO_VERSIONS)
def test_go_tuning_after_our_bridge_and_our_del(v, make_node, run, run_go, data_dir):
    """Go's tuning after our bridge: the same kernel state and result as ours; its backup
    (lowercase keys) restored by our DEL. Go's CHECK forgets to expand IFNAME; ours
    passes on the same setup."""
    node = make_node()
    pod = attach(node, v, run)
    before, host_before = state(pod.ns), host_somaxconn(node)
    conf = tconf(v, pod.prev, data_dir, sysctl=SYSCTLS, **GO_ATTRS)
    r = call(run_go, node, "tuning", "ADD", conf, pod)
    assert r.ok, r.raw
    assert r.out == with_mac(pod.prev, MAC)
    assert state(pod.ns) == {**APPLIED, "txqlen": 1000}
    assert sysctls(pod.ns) == {k: SYSCTLS[k] for k in SYSCTL_FILES}
    assert host_somaxconn(node) == host_before
    f = backup(data_dir, pod.cid)
    assert json.loads(f.read_text()) == {"mac": before["mac"], "promisc": False, "mtu": 1500,
                                         "allmulti": False}

    if version.has_check(v):
        check = tconf(v, r.out, data_dir, sysctl=SYSCTLS, **GO_ATTRS)
        go_check = call(run_go, node, "tuning", "CHECK", check, pod)
        assert go_check.code == 999 and "/IFNAME/" in go_check.out["msg"], go_check.raw
        r = call(run, node, "tuning", "CHECK", check, pod)
        assert r.ok, r.raw

    r = call(run, node, "tuning", "DEL", conf, pod)
    assert r.ok, r.raw
    assert state(pod.ns) == before and not f.exists()
    r = call(run_go, node, "tuning", "DEL", conf, pod)     # nothing left to restore
    assert r.ok, r.raw
    assert state(pod.ns) == before


@pytest.mark.oracle
@pytest.mark.parametrize("v", GO_VERSIONS)
def test_go_del_restores_what_ours_backed_up(v, make_node, run, run_go, data_dir):
    """Our backup ("Mac", "Mtu"… and "TxQLen") read by Go's case-insensitive decoder:
    everything Go knows is restored; the queue length, which Go 1.1.1 does not know,
    stays."""
    node = make_node()
    pod = attach(node, v, run)
    before = state(pod.ns)
    somaxconn = {"net.core.somaxconn": "777"}       # Go's CHECK can't take an IFNAME key
    conf = tconf(v, pod.prev, data_dir, sysctl=somaxconn, **ATTRS)
    r = call(run, node, "tuning", "ADD", conf, pod)
    assert r.ok, r.raw
    assert state(pod.ns) == APPLIED
    if version.has_check(v):
        go_check = call(run_go, node, "tuning", "CHECK",
                        tconf(v, r.out, data_dir, sysctl=somaxconn, **GO_ATTRS), pod)
        assert go_check.ok, go_check.raw
    r = call(run_go, node, "tuning", "DEL", conf, pod)
    assert r.ok, r.raw
    assert state(pod.ns) == {**before, "txqlen": 500}
    assert not backup(data_dir, pod.cid).exists()


def test_in_process(make_node, run_inproc, data_dir):
    """The same request served in this process (skel.run inside the host netns)."""
    node = make_node(mode="inproc")
    pod = attach(node, "1.1.0", run_inproc)
    before = state(pod.ns)
    conf = tconf("1.1.0", pod.prev, data_dir, sysctl=SYSCTLS, **ATTRS)
    r = call(run_inproc, node, "tuning", "ADD", conf, pod)
    assert r.ok, r.raw
    assert r.out == with_mac(pod.prev, MAC) and state(pod.ns) == APPLIED
    r = call(run_inproc, node, "tuning", "CHECK", {**conf, "prevResult": r.out}, pod)
    assert r.ok, r.raw
    r = call(run_inproc, node, "tuning", "DEL", conf, pod)
    assert r.ok, r.raw
    assert state(pod.ns) == before and not backup(data_dir, pod.cid).exists()


def test_sysctls_only_change_no_link_and_write_no_backup(make_node, run_inproc, data_dir):
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    before = state(pod.ns)
    r = call(run_inproc, node, "tuning", "ADD",
             tconf("1.0.0", pod.prev, data_dir, sysctl=SYSCTLS), pod)
    assert r.ok, r.raw
    assert r.out == pod.prev
    assert sysctls(pod.ns) == {k: SYSCTLS[k] for k in SYSCTL_FILES}
    assert state(pod.ns) == before and not data_dir.exists()


def test_prev_result_required(make_node, run_inproc, data_dir):
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    r = call(run_inproc, node, "tuning", "ADD",
             tconf("1.0.0", None, data_dir, sysctl={"net.core.somaxconn": "600"}, mtu=1400),
             pod)
    assert r.code == 7 and "prevResult" in r.out["msg"], r.raw
    assert sysctl(pod.ns, "net/core/somaxconn") != "600" and state(pod.ns)["mtu"] == 1500
    assert not data_dir.exists()


# -- where the settings come from --------------------------------------------------------------

# (static mac, CNI_ARGS MAC, runtimeConfig.mac, args.cni.mac) -> the MAC applied
MACS = ["0a:58:00:00:00:01", "0a:58:00:00:00:02", "0a:58:00:00:00:03", "0a:58:00:00:00:04"]
MAC_SOURCES = [
    ((MACS[0], None, None, None), MACS[0]),
    ((MACS[0], MACS[1], None, None), MACS[1]),
    ((MACS[0], MACS[1], MACS[2], None), MACS[2]),
    ((MACS[0], MACS[1], MACS[2], MACS[3]), MACS[3]),
    ((None, MACS[1], None, MACS[3]), MACS[3]),
    ((None, None, MACS[2], None), MACS[2]),
    ((MACS[0], None, "", None), MACS[0]),               # an empty runtimeConfig.mac: ignored
]


@pytest.mark.parametrize("impl", ["ours", pytest.param("go", marks=pytest.mark.oracle)])
def test_mac_sources_in_gos_order(impl, make_node, run_inproc, run_go, data_dir):
    """static < CNI_ARGS MAC < runtimeConfig.mac < args.cni.mac, as Go's parseConf; the
    result carries the MAC applied, DEL puts the original back each time."""
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    runner = run_inproc if impl == "ours" else run_go
    original = state(pod.ns)["mac"]
    for (static, cni_args, runtime, args_cni), want in MAC_SOURCES:
        fields: dict[str, Any] = {}
        if static is not None:
            fields["mac"] = static
        if runtime is not None:
            fields["runtimeConfig"] = {"mac": runtime}
        if args_cni is not None:
            fields["args"] = {"cni": {"mac": args_cni}}
        conf = tconf("1.0.0", pod.prev, data_dir, **fields)
        env_args = f"IgnoreUnknown=1;MAC={cni_args}" if cni_args else "IgnoreUnknown=1"
        r = call(runner, node, "tuning", "ADD", conf, pod, cni_args=env_args)
        assert r.ok, (fields, cni_args, r.raw)
        assert state(pod.ns)["mac"] == want, (fields, cni_args)
        assert r.out == with_mac(pod.prev, want)
        r = call(runner, node, "tuning", "DEL", conf, pod, cni_args=env_args)
        assert r.ok, r.raw
        assert state(pod.ns)["mac"] == original


@pytest.mark.parametrize("impl", ["ours", pytest.param("go", marks=pytest.mark.oracle)])
def test_args_cni_override_the_static_settings(impl, make_node, run_inproc, run_go, data_dir):
    """args.cni.sysctl is merged over the static map (a key in both: args.cni wins);
    mtu, promisc, allmulti (and txQLen, ours) replace the static values."""
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    runner = run_inproc if impl == "ours" else run_go
    args_cni: dict[str, Any] = {"sysctl": {"net.core.somaxconn": "701",
                                           "net.ipv4.conf.IFNAME.arp_filter": "1"},
                                "mtu": 1450, "promisc": True, "allmulti": True}
    if impl == "ours":
        args_cni["txQLen"] = 321
    conf = tconf("1.0.0", pod.prev, data_dir, mtu=1300, promisc=False, allmulti=False,
                 sysctl={"net.core.somaxconn": "600", "net/ipv4/conf/IFNAME/arp_ignore": "2"},
                 args={"cni": args_cni})
    r = call(runner, node, "tuning", "ADD", conf, pod)
    assert r.ok, r.raw
    got = state(pod.ns)
    assert (got["mtu"], got["promisc"], got["allmulti"]) == (1450, True, True)
    assert got["txqlen"] == (321 if impl == "ours" else 1000)
    assert sysctls(pod.ns) == {"net.core.somaxconn": "701",
                               "net.ipv4.conf.IFNAME.arp_filter": "1",
                               "net/ipv4/conf/IFNAME/arp_ignore": "2"}
    if impl == "ours":
        r = call(runner, node, "tuning", "CHECK", {**conf, "prevResult": r.out}, pod)
        assert r.ok, r.raw


@pytest.mark.parametrize("impl", ["ours", pytest.param("go", marks=pytest.mark.oracle)])
def test_args_cni_sysctl_without_a_static_map(impl, make_node, run_inproc, run_go, data_dir):
    """Go 1.1.1 assigns into a nil map here and panics (exit status 2); ours sets it."""
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    runner = run_inproc if impl == "ours" else run_go
    conf = tconf("1.0.0", pod.prev, data_dir,
                 args={"cni": {"sysctl": {"net.core.somaxconn": "601"}}})
    r = call(runner, node, "tuning", "ADD", conf, pod)
    if impl == "go":
        assert r.rc == 2 and "nil map" in r.stderr, r.raw
        assert sysctl(pod.ns, "net/core/somaxconn") != "601"
        return
    assert r.ok, r.raw
    assert sysctl(pod.ns, "net/core/somaxconn") == "601"


def test_unknown_cni_args_need_ignore_unknown(make_node, run_inproc, data_dir):
    """CNI_ARGS keys beyond MAC and the Kubernetes ones are refused without IgnoreUnknown
    (Go's tuning knows MAC only, so it refuses the K8S_* keys too)."""
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    conf = tconf("1.0.0", pod.prev, data_dir, mtu=1400)
    r = call(run_inproc, node, "tuning", "ADD", conf, pod, cni_args="FOO=1;MAC=" + MAC)
    assert r.code == 4 and "FOO" in r.out["msg"], r.raw
    assert state(pod.ns)["mtu"] == 1500 and not data_dir.exists()
    r = call(run_inproc, node, "tuning", "ADD", conf, pod,
             cni_args="K8S_POD_NAME=web;MAC=" + MAC)
    assert r.ok, r.raw
    assert state(pod.ns)["mac"] == MAC


# -- CHECK follows the kernel ------------------------------------------------------------------

def _hand_change(change: str, pod: Pod) -> str:
    """Change one thing by hand; returns a word CHECK's message names."""
    ns = pod.ns
    if change == "sysctl":
        ns.sh("sysctl", "-qw", "net.core.somaxconn=778")
        return "somaxconn"
    if change == "ifname-sysctl":
        ns.sh("sysctl", "-qw", "net.ipv4.conf.eth0.arp_filter=0")
        return "arp_filter"
    if change == "mtu":
        ns.sh("ip", "link", "set", "eth0", "mtu", "1399")
        return "mtu"
    if change == "mac":
        ns.sh("ip", "link", "set", "eth0", "address", "0a:58:0a:4d:00:98")
        return "mac"
    if change == "promisc":
        ns.sh("ip", "link", "set", "eth0", "promisc", "off")
        return "promisc"
    if change == "allmulti":
        ns.sh("ip", "link", "set", "eth0", "allmulticast", "off")
        return "allmulti"
    if change == "txqlen":
        ns.sh("ip", "link", "set", "eth0", "txqueuelen", "501")
        return "txQLen"
    raise ValueError(change)


CHANGES = ["sysctl", "ifname-sysctl", "mtu", "mac", "promisc", "allmulti", "txqlen"]


@pytest.mark.parametrize("change", CHANGES)
def test_check_detects_hand_changes(change, make_node, run_inproc, data_dir):
    node = make_node(mode="inproc")
    pod = attach(node, "1.1.0", run_inproc)
    conf = tconf("1.1.0", pod.prev, data_dir, sysctl=SYSCTLS, **ATTRS)
    r = call(run_inproc, node, "tuning", "ADD", conf, pod)
    assert r.ok, r.raw
    check = {**conf, "prevResult": r.out}
    assert call(run_inproc, node, "tuning", "CHECK", check, pod).ok
    word = _hand_change(change, pod)
    r = call(run_inproc, node, "tuning", "CHECK", check, pod)
    assert r.code == 999, r.raw
    assert word.lower() in r.out["msg"].lower(), r.raw


@pytest.mark.oracle
@pytest.mark.parametrize("change", ["sysctl", "mtu"])
def test_go_check_detects_the_same(change, make_node, run_inproc, run_go, data_dir):
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    fields = {"sysctl": {"net.core.somaxconn": "777"}, **GO_ATTRS}
    r = call(run_go, node, "tuning", "ADD", tconf("1.0.0", pod.prev, data_dir, **fields), pod)
    assert r.ok, r.raw
    check = tconf("1.0.0", r.out, data_dir, **fields)
    for runner in (run_go, run_inproc):
        assert call(runner, node, "tuning", "CHECK", check, pod).ok
    word = _hand_change(change, pod)
    for runner in (run_go, run_inproc):
        r = call(runner, node, "tuning", "CHECK", check, pod)
        assert r.code == 999 and word.lower() in r.out["msg"].lower(), r.raw


def test_check_needs_prev_result(make_node, run_inproc, data_dir):
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    conf = tconf("1.0.0", pod.prev, data_dir, mtu=1400)
    assert call(run_inproc, node, "tuning", "ADD", conf, pod).ok
    r = call(run_inproc, node, "tuning", "CHECK", tconf("1.0.0", None, data_dir, mtu=1400), pod)
    assert r.code == 7 and "prevResult" in r.out["msg"], r.raw


# -- DEL in every state ------------------------------------------------------------------------

DEL_STATES = ["after-add", "repeated", "netns-deleted", "empty-netns", "link-deleted",
              "backup-missing", "never-added"]
# where Go 1.1.1 leaves its backup behind: it restores (and removes) only inside the netns,
# with the link there
GO_KEEPS_BACKUP = {"netns-deleted", "empty-netns", "link-deleted"}


@pytest.mark.parametrize("impl", ["ours", pytest.param("go", marks=pytest.mark.oracle)])
@pytest.mark.parametrize("st", DEL_STATES)
def test_del_in_every_state(st, impl, make_node, run_inproc, run_go, data_dir):
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    runner = run_inproc if impl == "ours" else run_go
    before = state(pod.ns)
    conf = tconf("1.0.0", pod.prev, data_dir, sysctl={"net.core.somaxconn": "777"},
                 **GO_ATTRS)
    f = backup(data_dir, pod.cid)
    if st != "never-added":
        r = call(runner, node, "tuning", "ADD", conf, pod)
        assert r.ok, r.raw
        assert f.exists()
    netns = pod.ns.path
    if st == "netns-deleted":
        pod.ns.delete()
    elif st == "empty-netns":
        netns = ""
    elif st == "link-deleted":
        pod.ns.sh("ip", "link", "del", "eth0")
    elif st == "backup-missing":
        f.unlink()
    r = call(runner, node, "tuning", "DEL", conf, pod, netns=netns)
    assert r.ok and r.out is None, r.raw
    if st == "repeated":
        r = call(runner, node, "tuning", "DEL", conf, pod, netns=netns)
        assert r.ok, r.raw
    assert f.exists() == (impl == "go" and st in GO_KEEPS_BACKUP)
    if st in ("after-add", "repeated", "never-added"):
        assert state(pod.ns) == before
    elif st in ("empty-netns", "backup-missing"):
        assert state(pod.ns)["mtu"] == 1400                # nothing to restore from / into


def test_del_with_a_broken_backup(make_node, run_inproc, data_dir):
    """An unreadable backup: DEL succeeds and leaves the file (as Go does)."""
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    conf = tconf("1.0.0", pod.prev, data_dir, mtu=1400)
    assert call(run_inproc, node, "tuning", "ADD", conf, pod).ok
    f = backup(data_dir, pod.cid)
    f.write_text("{not json")
    r = call(run_inproc, node, "tuning", "DEL", conf, pod)
    assert r.ok, r.raw
    assert f.exists() and state(pod.ns)["mtu"] == 1400


def test_backups_are_per_container_and_interface(make_node, run_inproc, data_dir):
    """Two pods with their own container IDs share a dataDir: DEL of one restores it and
    leaves the other's backup and settings alone."""
    node = make_node(mode="inproc")
    a, b = attach(node, "1.0.0", run_inproc, "pod-a"), attach(node, "1.0.0", run_inproc, "pod-b")
    before_a = state(a.ns)
    for pod in (a, b):
        r = call(run_inproc, node, "tuning", "ADD",
                 tconf("1.0.0", pod.prev, data_dir, mtu=1400), pod)
        assert r.ok, r.raw
    assert sorted(os.listdir(data_dir)) == ["pod-a_eth0.json", "pod-b_eth0.json"]
    assert call(run_inproc, node, "tuning", "DEL", tconf("1.0.0", a.prev, data_dir, mtu=1400),
                a).ok
    assert os.listdir(data_dir) == ["pod-b_eth0.json"]
    assert state(a.ns) == before_a and state(b.ns)["mtu"] == 1400


# -- the allow-list ----------------------------------------------------------------------------

ALLOW = "^net\\.core\\.somaxconn$\nnet\\.ipv4\\.conf\\.IFNAME\\.\n"
# (key, allowed): Go matches each pattern anywhere in the key (regexp.MatchString), so the
# unanchored second line allows every per-interface ipv4 key
ALLOW_CASES = [("net.core.somaxconn", True), ("net.ipv4.conf.IFNAME.arp_filter", True),
               ("net.core.rmem_max", False), ("net.ipv4.conf.all.arp_filter", False)]


def test_allow_list_in_process(monkeypatch, make_node, run_inproc, data_dir, tmp_path):
    """tuning.ALLOWLIST pointed at a file of ours: listed keys pass, others are refused
    with code 7 naming the key, before anything is written; no file, no restriction."""
    allow = tmp_path / "allowlist.conf"
    allow.write_text(ALLOW)
    monkeypatch.setattr(tuning, "ALLOWLIST", str(allow))
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    default = sysctl(pod.ns, "net/core/somaxconn")
    for key, allowed in ALLOW_CASES:
        conf = tconf("1.0.0", pod.prev, data_dir,
                     sysctl={"net.core.somaxconn": "600", key: "1"}, mtu=1400)
        r = call(run_inproc, node, "tuning", "ADD", conf, pod)
        if allowed:
            assert r.ok, (key, r.raw)
            assert call(run_inproc, node, "tuning", "DEL", conf, pod).ok
            pod.ns.sh("sysctl", "-qw", f"net.core.somaxconn={default}")
            continue
        assert r.code == 7 and key in r.out["msg"] and "allow" in r.out["msg"], (key, r.raw)
        assert sysctl(pod.ns, "net/core/somaxconn") == default
        assert state(pod.ns)["mtu"] == 1500 and not backup(data_dir, pod.cid).exists()
    monkeypatch.setattr(tuning, "ALLOWLIST", str(tmp_path / "absent.conf"))
    conf = tconf("1.0.0", pod.prev, data_dir, sysctl={"net.ipv4.conf.all.arp_filter": "1"})
    r = call(run_inproc, node, "tuning", "ADD", conf, pod)
    assert r.ok, r.raw
    assert sysctl(pod.ns, "net/ipv4/conf/all/arp_filter") == "1"


def _overlay_runner(tmp_path: Path, plugin_dir: str, allowlist: str) -> Runner:
    """A plugin dir whose `tuning` runs the real one in a private mount namespace where
    /etc is overlaid with etc/cni/tuning/allowlist.conf: the host's /etc is not touched."""
    etc = tmp_path / f"etc-{os.path.basename(plugin_dir)}"
    (etc / "cni" / "tuning").mkdir(parents=True)
    (etc / "cni" / "tuning" / "allowlist.conf").write_text(allowlist)
    wrap = tmp_path / f"wrap-{os.path.basename(plugin_dir)}"
    wrap.mkdir()
    script = wrap / "tuning"
    script.write_text(
        "#!/bin/sh\nexec unshare --mount --propagation private sh -c "
        "'mount -t overlay overlay -o lowerdir=\"$1\":/etc /etc && shift && exec \"$@\"' "
        f"sh {etc} {os.path.join(plugin_dir, 'tuning')}\n")
    script.chmod(0o755)
    return Runner(str(wrap), mode="exec")


def _go_has_allow_list() -> bool:
    try:
        with open(os.path.join(GO_DIR, "tuning"), "rb") as f:
            return b"allowlist" in f.read()
    except OSError:
        return False


@pytest.mark.parametrize("impl", ["ours", pytest.param("go", marks=pytest.mark.oracle)])
def test_allow_list_file_exec(impl, make_node, run_inproc, plugin_dir, data_dir, tmp_path):
    """/etc/cni/tuning/allowlist.conf itself, exec'd in a private mount namespace with an
    overlay on /etc. Go 1.1.1 predates the allow-list: it allows every key; a Go build
    that has it must give our verdicts."""
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():
            pytest.skip("no overlayfs in this kernel")
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    runner = _overlay_runner(tmp_path, plugin_dir if impl == "ours" else GO_DIR, ALLOW)
    default = sysctl(pod.ns, "net/core/somaxconn")
    assert not os.path.exists(tuning.ALLOWLIST)
    want = [a for _, a in ALLOW_CASES]
    if impl == "go" and not _go_has_allow_list():
        want = [True] * len(ALLOW_CASES)        # (rmem_max then fails in the kernel: EACCES)
    verdicts = []
    for key, _ in ALLOW_CASES:
        conf = tconf("1.0.0", pod.prev, data_dir, sysctl={key: "1"})
        r = call(runner, node, "tuning", "ADD", conf, pod)
        verdicts.append(r.ok or "allowed" not in r.out["msg"])
        if not r.ok and "allowed" in r.out["msg"]:
            assert key in r.out["msg"], (impl, r.raw)
        pod.ns.sh("sysctl", "-qw", f"net.core.somaxconn={default}")
    assert verdicts == want


# -- bad input: a CNI error naming the field, nothing written ----------------------------------

BAD = [
    ({"sysctl": {"kernel.hostname": "x"}}, "kernel.hostname"),
    ({"sysctl": {"kernel/hostname": "x"}}, "kernel/hostname"),
    ({"sysctl": {"net/../kernel/hostname": "x"}}, "net/../kernel/hostname"),
    ({"sysctl": {"net.ipv4.conf.IFNAME...arp_filter": "1"}}, "net.ipv4.conf.IFNAME...arp_filter"),
    ({"sysctl": {"net..core.somaxconn": "1"}}, "net..core.somaxconn"),
    ({"sysctl": {"net/core//somaxconn": "1"}}, "net/core//somaxconn"),
    ({"sysctl": {"/net/core/somaxconn": "1"}}, "/net/core/somaxconn"),
    ({"sysctl": {"net.": "1"}}, "'net.'"),
    ({"sysctl": {"net.core.rmem_max": 212992}}, "sysctl.net.core.rmem_max"),
    ({"sysctl": {"net.core.rmem_max": None}}, "sysctl.net.core.rmem_max"),
    ({"sysctl": ["net.core.somaxconn"]}, "sysctl"),
    ({"mtu": -1}, "mtu"),
    ({"txQLen": -1}, "txQLen"),
    ({"args": {"cni": {"mtu": -5}}}, "mtu"),
    ({"args": {"cni": {"sysctl": {"kernel.hostname": "x"}}}}, "kernel.hostname"),
    ({"mac": "zz"}, "mac"),
    ({"runtimeConfig": {"mac": "0a:58:0a:4d:00:99:01"}}, "mac"),
    ({"dataDir": "tuning-backups"}, "dataDir: 'tuning-backups' is not an absolute path"),
    ({"args": {"cni": {"mtu": "9000"}}}, "args.cni.mtu: expected an integer, got a string"),
]


@pytest.mark.parametrize("fields,field", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_refused_before_any_change(fields, field, make_node, run_inproc,
                                                data_dir):
    """Every case also asks for a good sysctl and an MTU: neither may be applied."""
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    before, before_sysctls = state(pod.ns), sysctls(pod.ns)
    good = {"sysctl": {"net.core.somaxconn": "600"}, "mtu": 1400}
    merged = {**good, **fields}
    if isinstance(fields.get("sysctl"), dict):
        merged["sysctl"] = {**good["sysctl"], **fields["sysctl"]}
    r = call(run_inproc, node, "tuning", "ADD", tconf("1.0.0", pod.prev, data_dir, **merged),
             pod)
    assert r.code == 7, r.raw
    assert r.out["msg"].startswith("invalid config: ") and field in r.out["msg"], r.raw
    assert sysctls(pod.ns) == before_sysctls and state(pod.ns) == before
    assert not data_dir.exists()


def test_bad_input_exec(make_node, run, data_dir):
    """The same through the symlink: a code-7 JSON error on stdout, exit status 1."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    default = sysctl(pod.ns, "net/core/somaxconn")
    conf = tconf("1.0.0", pod.prev, data_dir, mtu=1400,
                 sysctl={"net.core.somaxconn": "600", "net/../kernel/hostname": "x"})
    r = call(run, node, "tuning", "ADD", conf, pod)
    assert r.rc == 1 and r.out == {
        "cniVersion": "1.0.0", "code": 7, "details": "",
        "msg": "invalid config: sysctl: invalid net sysctl key 'net/../kernel/hostname'"}
    assert sysctl(pod.ns, "net/core/somaxconn") == default
    assert state(pod.ns)["mtu"] == 1500 and not data_dir.exists()


def test_a_sysctl_the_kernel_lacks(make_node, run_inproc, data_dir):
    """A well-formed key with no file: the kernel's error, and no link change."""
    node = make_node(mode="inproc")
    pod = attach(node, "1.0.0", run_inproc)
    r = call(run_inproc, node, "tuning", "ADD",
             tconf("1.0.0", pod.prev, data_dir, sysctl={"net.core.nosuch": "1"}, mtu=1400), pod)
    assert r.code == 999 and "net.core.nosuch" in r.out["msg"], r.raw
    assert state(pod.ns)["mtu"] == 1500 and not data_dir.exists()


# -- the seed's conflist through cnitool -------------------------------------------------------

CNITOOL = os.path.join(os.path.dirname(sys.executable), "cnitool")


def test_seed_conflist_through_cnitool(make_node, tmp_path, data_dir):
    """The seed's conflist (bridge + host-local, tuning with net.core.somaxconn and the
    mac capability, portmap), with educative chained in between, ADD/CHECK/DEL by cnitool
    run inside the node's netns: state read back, and everything gone after DEL. The
    conflist is the seed's, so the bridge is no gateway (no isGateway) and the node has no
    route to the pod: portmap's rules are read back, its traffic is test_portmap's."""
    from cni_plugins import plugins

    node = make_node()
    have_portmap = "portmap" in plugins.REGISTRY
    netdir, cache, log = tmp_path / "net.d", tmp_path / "cache", tmp_path / "educative.log"
    netdir.mkdir()
    chain: list[dict] = [
        {"type": "bridge", "bridge": "cni0",
         "keyA": ["some more", "plugin specific", "configuration"],
         "ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1",
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": node.data_dir},
         "dns": {"nameservers": ["10.1.0.1"]}},
        {"type": "tuning", "capabilities": {"mac": True}, "dataDir": str(data_dir),
         "sysctl": {"net.core.somaxconn": "500"}},
        {"type": "educative", "cniOutput": str(log)},
    ]
    if have_portmap:
        chain.append({"type": "portmap", "capabilities": {"portMappings": True},
                      "dataDir": str(data_dir / "portmap")})
    (netdir / "10-dbnet.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "dbnet", "plugins": chain}, indent=2))
    pod = node.pod()
    cid = "cnitool-" + hashlib.sha512(pod.path.encode()).hexdigest()[:20]
    caps = {"mac": MAC, "portMappings": [{"hostPort": 8080, "containerPort": 80,
                                          "protocol": "tcp"}]}
    env = base_env(drop=("CAP_ARGS", "NETCONFPATH"))
    env.update(NETCONFPATH=str(netdir), CNI_PATH=node.path, CAP_ARGS=json.dumps(caps))

    def tool(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ip", "netns", "exec", node.host.name, CNITOOL, *args,
                               "--cache-dir", str(cache)], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    host_before = host_somaxconn(node)
    out = json.loads(tool("add", "dbnet", pod.path, "--json").stdout)
    ip = out["ips"][0]["address"]
    assert ip.startswith("10.1.") and out["ips"][0]["gateway"] == "10.1.0.1"
    assert out["dns"] == {"nameservers": ["10.1.0.1"]}
    assert sysctl(pod, "net/core/somaxconn") == "500"
    assert host_somaxconn(node) == host_before
    assert state(pod)["mac"] == MAC
    assert [i["mac"] for i in out["interfaces"] if i["name"] == "eth0"] == [MAC]
    assert backup(data_dir, cid).exists()
    adds = [b for b in log.read_text().split("----------------------")
            if "CNI Command: ADD\n" in b]
    assert len(adds) == 1
    seen = json.loads(adds[0].split("StdinData: ", 1)[1])
    assert seen["prevResult"]["interfaces"][2]["mac"] == MAC      # after tuning
    if have_portmap:
        rules = node.host.sh("nft", "list", "table", "ip", "cni_hostport")
        assert cid in rules and f"dnat to {ip.split('/')[0]}:80" in rules

    tool("check", "dbnet", pod.path)
    tool("del", "dbnet", pod.path)
    assert not backup(data_dir, cid).exists()
    assert link(pod, "eth0") is None
    assert node.reservations("dbnet") == set()
    assert os.listdir(cache / "results") == []
    if have_portmap:
        proc = subprocess.run(["ip", "netns", "exec", node.host.name, "nft", "list",
                               "ruleset"], capture_output=True, text=True)
        assert cid not in proc.stdout
    tool("del", "dbnet", pod.path)                                  # idempotent
