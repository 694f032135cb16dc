"""flannel in a throw-away node netns (make_node), exec'd through its symlink and delegating
in process to our bridge and host-local: the kernel state flanneld's subnet.env asks for,
the saved delegate config, CHECK, DEL (repeated, and without a saved config), and the
bridge's masquerade when flanneld does not do it. Then the kube-flannel conflist, unchanged,
through cnitool with /run/flannel and /var/lib/cni bound to per-test dirs (a mount namespace
of the node) and traffic between its two pods."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cni_plugins import version
from tests.fixtures.pods import (Node, Server, addrs, fetch, ip_of, link, nft_masq_rules,
                                 routes, veths_settled)
from tests.fixtures.run import base_env

pytestmark = pytest.mark.root

VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
NET = "cbr0"
SUBNET_ENV = ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\n"
              "FLANNEL_MTU=1400\nFLANNEL_IPMASQ={masq}\n")
CNITOOL = os.path.join(os.path.dirname(sys.executable), "cnitool")
KUBE_FLANNEL = {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


def setup(node: Node, tmp: Path, masq: bool = True) -> dict:
    (tmp / "subnet.env").write_text(SUBNET_ENV.format(masq=str(masq).lower()))
    return {"subnetFile": str(tmp / "subnet.env"), "dataDir": str(tmp / "flannel"),
            "ipam": {"dataDir": node.data_dir},
            "delegate": {"hairpinMode": True, "isDefaultGateway": True}}


def conf(v: str, paths: dict) -> dict:
    return {"cniVersion": v, "name": NET, "type": "flannel", **paths}


@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del(v, make_node, tmp_path):
    node = make_node()
    paths = setup(node, tmp_path)
    pod = node.pod()
    r = node("flannel", "ADD", conf(v, paths), pod, cid="c1")
    assert r.ok, r.raw
    assert r.out["cniVersion"] == v
    assert [i["name"] for i in r.out["interfaces"]][::2] == ["cni0", "eth0"]
    ip = ip_of(r)
    assert ip.startswith("10.244.5.") and ip != "10.244.5.1"

    # the kernel: the node's bridge is the subnet's gateway, the pod has its address, the
    # MTU flanneld gave, a route to the cluster network and (isDefaultGateway) a default
    assert "10.244.5.1/24" in addrs(node.host, "cni0")
    assert addrs(pod, "eth0") == {f"{ip}/24"}
    assert link(pod, "eth0")["mtu"] == 1400
    got = {(rt["dst"], rt.get("gateway")) for rt in routes(pod)}
    assert {("10.244.0.0/16", "10.244.5.1"), ("default", "10.244.5.1")} <= got
    host_veth = r.out["interfaces"][1]["name"]
    assert link(node.host, host_veth)["linkinfo"]["info_slave_data"]["hairpin"] is True
    assert nft_masq_rules(node.host) == []           # FLANNEL_IPMASQ=true: flanneld's job
    assert node.reservations(NET) == {ip}

    # the saved delegate config: what upstream would have passed to bridge
    saved = tmp_path / "flannel" / "c1"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    d = json.loads(saved.read_text())
    assert (d["type"], d["name"], d["cniVersion"], d["ipMasq"], d["mtu"], d["isGateway"]) == \
        ("bridge", NET, v, False, 1400, True)
    assert d["ipam"]["ranges"] == [[{"subnet": "10.244.5.0/24"}]]

    if version.has_check(v):
        c = node("flannel", "CHECK", {**conf(v, paths), "prevResult": r.out}, pod, cid="c1")
        assert c.ok, c.raw
        pod.sh("ip", "addr", "del", f"{ip}/24", "dev", "eth0")     # the bridge's CHECK sees it
        c = node("flannel", "CHECK", {**conf(v, paths), "prevResult": r.out}, pod, cid="c1")
        assert not c.ok and ip in c.out["msg"], c.raw

    assert node("flannel", "DEL", conf(v, paths), pod, cid="c1").ok
    assert not saved.exists()
    assert node.reservations(NET) == set()
    assert veths_settled(node.host) == set()
    assert link(pod, "eth0") is None
    assert node("flannel", "DEL", conf(v, paths), pod, cid="c1").ok      # nothing to replay


def test_without_flanneld_masquerade_the_bridge_masquerades(make_node, tmp_path):
    node = make_node()
    paths = setup(node, tmp_path, masq=False)
    pod = node.pod()
    r = node("flannel", "ADD", conf("1.0.0", paths), pod, cid="c2")
    assert r.ok, r.raw
    assert len(nft_masq_rules(node.host, "c2")) == 1
    assert node("flannel", "DEL", conf("1.0.0", paths), pod, cid="c2").ok
    assert nft_masq_rules(node.host, "c2") == []


def test_a_failed_add_is_undone_by_the_runtime_del(make_node, tmp_path):
    """The delegate fails (its netns does not exist): the saved config stays, and the DEL
    that a runtime sends next replays it and removes it."""
    node = make_node()
    paths = setup(node, tmp_path)
    r = node("flannel", "ADD", conf("1.0.0", paths), netns="/run/netns/cnitest-none", cid="c3")
    assert not r.ok
    assert (tmp_path / "flannel" / "c3").exists()
    assert node("flannel", "DEL", conf("1.0.0", paths), netns="", cid="c3").ok
    assert not (tmp_path / "flannel" / "c3").exists()
    assert node.reservations(NET) == set()


def test_no_subnet_file_is_try_again_later(make_node, tmp_path):
    node = make_node()
    paths = {**setup(node, tmp_path), "subnetFile": str(tmp_path / "none.env")}
    r = node("flannel", "ADD", conf("1.0.0", paths), node.pod(), cid="c4")
    assert (r.rc, r.code) == (1, 11), r.raw
    assert not (tmp_path / "flannel").exists()


def test_the_kube_flannel_conflist_unchanged_through_cnitool(make_node, tmp_path):
    """The list exactly as kube-flannel installs it: the default paths, which a mount
    namespace of the node points at this test's dirs."""
    node = make_node()
    run_dir, lib_dir, net_d = tmp_path / "run-flannel", tmp_path / "var-lib-cni", tmp_path / "net.d"
    for d in (run_dir, lib_dir, net_d):
        d.mkdir()
    (run_dir / "subnet.env").write_text(SUBNET_ENV.format(masq="true"))
    (net_d / "10-flannel.conflist").write_text(json.dumps(KUBE_FLANNEL, indent=2))
    made_mount_point = not os.path.isdir("/run/flannel")
    os.makedirs("/run/flannel", exist_ok=True)          # a mount point on the host
    try:
        _kube_flannel_pods(node, run_dir, lib_dir, net_d)
    finally:
        if made_mount_point:
            os.rmdir("/run/flannel")


def _kube_flannel_pods(node: Node, run_dir: Path, lib_dir: Path, net_d: Path) -> None:

    def tool(*argv: str, **env: str) -> subprocess.CompletedProcess:
        e = base_env(drop=("CAP_ARGS", "NETCONFPATH", "CNI_CACHE_DIR"))
        e.update(NETCONFPATH=str(net_d), CNI_PATH=node.path, **env)
        script = ('mount --bind "$1" /run/flannel && mount --bind "$2" /var/lib/cni && '
                  'shift 2 && exec "$@"')
        return subprocess.run(["ip", "netns", "exec", node.host.name, "sh", "-c", script, "sh",
                               str(run_dir), str(lib_dir), CNITOOL, *argv],
                              env=e, capture_output=True, text=True, timeout=120)

    p1, p2 = node.pod(), node.pod()
    caps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    a1 = tool("add", NET, p1.path, "--json", CAP_ARGS=json.dumps(caps))
    assert a1.returncode == 0, a1.stderr
    a2 = tool("add", NET, p2.path, "--json")
    assert a2.returncode == 0, a2.stderr
    ip1 = json.loads(a1.stdout)["ips"][0]["address"].split("/")[0]
    ip2 = json.loads(a2.stdout)["ips"][0]["address"].split("/")[0]
    assert (lib_dir / "networks" / NET / ip1).exists()          # host-local's default dir
    assert len(os.listdir(lib_dir / "flannel")) == 2            # flannel's default dataDir
    assert len(os.listdir(lib_dir / "results")) == 2            # libcni's default cache

    server = Server(p1, 80)
    try:
        assert fetch(p2, ip1, 80) == ip2                        # pod to pod, no NAT
        assert fetch(p2, "10.244.5.1", 8080) == "10.244.5.1"    # the hostPort: hairpin, masqueraded
    finally:
        server.close()
    chk = tool("check", NET, p1.path)                           # the list is 0.3.1: no CHECK
    assert chk.returncode == 1 and "does not support the CHECK command" in chk.stderr

    for p in (p1, p2):
        d = tool("del", NET, p.path)
        assert d.returncode == 0, d.stderr
    assert os.listdir(lib_dir / "flannel") == []
    assert os.listdir(lib_dir / "results") == []
    assert [n for n in os.listdir(lib_dir / "networks" / NET) if n[0].isdigit()] == []
    assert veths_settled(node.host) == set()
