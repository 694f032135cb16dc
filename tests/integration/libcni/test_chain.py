"""libcni and cnitool with real plugins: a chain (bridge + host-local, tuning, educative) and
loopback, run by `cnitool` inside a throw-away "host" netns for throw-away pods, per spec
version. Kernel state, the result cache on disk (Go's layout), GC and STATUS.

Interop (oracle): the Go libcni (Debian's source, 1.1.2, built into a small driver by
tests/fixtures/go_libcni.py) reads the cache ours wrote and DELs with it, and ours CHECKs
and DELs with the cache Go wrote; the two files have the same layout."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cni_plugins import version
from tests.fixtures import go_libcni
from tests.fixtures.run import base_env
from tests.fixtures.pods import Node, addrs, ipam_path, link, make_node, ping, veths  # noqa: F401

if TYPE_CHECKING:
    from tests.fixtures.netns import TestNS

pytestmark = pytest.mark.root

CNITOOL = os.path.join(os.path.dirname(sys.executable), "cnitool")
SUBNET, GW = "10.88.0.0/24", "10.88.0.1"
MAC = "0a:58:0a:58:00:99"
VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")


def cid(netns: str) -> str:
    return "cnitool-" + hashlib.sha512(netns.encode()).hexdigest()[:20]


class Setup:
    """A node with a config dir, a cache dir and an educative log, and cnitool run in it."""

    def __init__(self, node: Node, tmp: Path, v: str) -> None:
        self.node, self.v = node, v
        self.netdir, self.cache = tmp / "net.d", tmp / "cache"
        self.netdir.mkdir()
        self.log = tmp / "educative.log"
        self.conflist = {
            "cniVersion": v, "name": "podnet",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": True,
                 "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": node.data_dir,
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "tuning", "dataDir": str(tmp / "tuning"), "capabilities": {"mac": True},
                 "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}},
                {"type": "educative", "cniOutput": str(self.log), "custom": {"z": [1, "b"]}},
            ]}
        (self.netdir / "10-podnet.conflist").write_text(json.dumps(self.conflist, indent=2))
        (self.netdir / "00-lo.conflist").write_text(json.dumps(
            {"cniVersion": v, "name": "lo", "plugins": [{"type": "loopback"}]}))

    def env(self, **more: str) -> dict[str, str]:
        env = base_env(drop=("CAP_ARGS", "NETCONFPATH"))
        env.update(NETCONFPATH=str(self.netdir), CNI_PATH=self.node.path,
                   CNI_CACHE_DIR=str(self.cache), **more)
        return env

    def tool(self, *args: str, exe: str = CNITOOL, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.node.host.name, exe, *args],
                              env=self.env(**env), capture_output=True, text=True, timeout=120)

    def cached(self, net: str, pod: "TestNS", ifname: str = "eth0") -> Path:
        return self.cache / "results" / f"{net}-{cid(pod.path)}-{ifname}"

    def log_blocks(self, command: str) -> list[dict[str, Any]]:
        """The stdin educative got for each `command`, in order."""
        out = []
        for block in self.log.read_text().split("----------------------"):
            if f"CNI Command: {command}\n" in block:
                out.append(json.loads(block.split("StdinData: ", 1)[1]))
        return out


@pytest.fixture
def setup(make_node: Any, tmp_path: Path) -> Any:  # noqa: F811
    return lambda v: Setup(make_node(), tmp_path, v)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
    return proc


@pytest.mark.parametrize("v", VERSIONS)
def test_a_chain_through_cnitool(v: str, setup: Any) -> None:
    s = setup(v)
    p1, p2 = s.node.pod(), s.node.pod()
    ok(s.tool("add", "lo", p1.path, "-i", "lo"))
    caps = {"mac": MAC, "portMappings": [{"hostPort": 8080, "containerPort": 80,
                                          "protocol": "tcp"}]}
    out = ok(s.tool("add", "podnet", p1.path, "--json", CAP_ARGS=json.dumps(caps),
                    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=web"))
    r1 = json.loads(out.stdout)
    human = ok(s.tool("add", "podnet", p2.path)).stdout
    assert human.startswith(f"Added eth0 in {p2.path} to network podnet (container "
                            f"{cid(p2.path)}, CNI {v})\n")
    assert "Addresses:\n  10.88.0." in human and f"gateway {GW}" in human

    # the kernel: lo up, eth0 with the result's address and the runtime's MAC (tuning got
    # runtimeConfig.mac), pods reach each other over cni0
    assert "UP" in link(p1, "lo")["flags"]
    assert r1["cniVersion"] == v
    ip1 = r1["ips"][0]["address"]
    assert addrs(p1, "eth0") == {ip1}
    assert link(p1, "eth0")["address"] == MAC
    assert p1.sh("cat", "/proc/sys/net/ipv4/conf/eth0/arp_filter").strip() == "1"
    ip2 = next(iter(addrs(p2, "eth0")))
    assert ping(p1, ip2.split("/")[0])
    assert s.node.reservations("podnet") == {ip1.split("/")[0], ip2.split("/")[0]}

    # educative saw the chain: prevResult from bridge+tuning, no runtimeConfig (it declares
    # no capability), its own keys verbatim
    (add1, _add2) = s.log_blocks("ADD")
    assert add1["prevResult"]["ips"][0]["address"] == ip1
    assert add1["custom"] == {"z": [1, "b"]} and "runtimeConfig" not in add1
    assert (add1["name"], add1["cniVersion"]) == ("podnet", v)

    # the cache: Go's file name, modes and layout
    f = s.cached("podnet", p1)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700
    rec = json.loads(f.read_text())
    assert list(rec) == ["kind", "containerId", "config", "ifName", "networkName", "netns",
                         "cniArgs", "capabilityArgs", "result"]
    assert rec["result"] == r1 and rec["netns"] == p1.path and rec["containerId"] == cid(p1.path)
    assert base64.b64decode(rec["config"]) == (s.netdir / "10-podnet.conflist").read_bytes()
    assert rec["cniArgs"] == [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web"]]
    assert rec["capabilityArgs"] == caps
    assert s.cached("lo", p1, "lo").exists()

    if version.has_check(v):
        ok(s.tool("check", "podnet", p1.path))
        assert s.log_blocks("CHECK")[0]["prevResult"] == rec["result"]
    else:
        bad = s.tool("check", "podnet", p1.path)
        assert bad.returncode == 1 and "does not support the CHECK command" in bad.stderr
    st = ok(s.tool("status", "podnet"))
    assert st.stdout == "network podnet: ready\n"

    for pod in (p1, p2):
        ok(s.tool("del", "podnet", pod.path, CAP_ARGS=json.dumps(caps)))
    ok(s.tool("del", "lo", p1.path, "-i", "lo"))
    dels = s.log_blocks("DEL")
    assert ("prevResult" in dels[0]) == version.has_check(v)
    if version.has_check(v):
        assert dels[0]["prevResult"] == rec["result"]
    assert os.listdir(s.cache / "results") == []
    assert s.node.reservations("podnet") == set()
    assert veths(s.node.host) == set()
    assert link(p1, "eth0") is None and "UP" not in link(p1, "lo")["flags"]


def test_del_is_idempotent_and_survives_a_lost_netns(setup: Any) -> None:
    s = setup("1.0.0")
    pod = s.node.pod()
    ok(s.tool("add", "podnet", pod.path))
    path = pod.path
    pod.delete()
    ok(s.tool("del", "podnet", path))
    ok(s.tool("del", "podnet", path))
    assert os.listdir(s.cache / "results") == []
    assert s.node.reservations("podnet") == set() and veths(s.node.host) == set()


def test_a_failing_add_reports_the_plugin_and_caches_nothing(setup: Any) -> None:
    s = setup("1.0.0")
    pod = s.node.pod()
    ok(s.tool("add", "podnet", pod.path))
    again = s.tool("add", "podnet", pod.path)           # eth0 exists already
    assert again.returncode == 1
    assert again.stderr.startswith("cnitool: plugin bridge failed (add): ")
    assert "(CNI error code" in again.stderr
    missing = s.tool("add", "nosuch", pod.path)
    assert missing.returncode == 3


def test_gc_removes_what_is_not_valid(setup: Any) -> None:
    s = setup("1.1.0")
    p1, p2 = s.node.pod(), s.node.pod()
    r1 = json.loads(ok(s.tool("add", "podnet", p1.path, "--json")).stdout)
    r2 = json.loads(ok(s.tool("add", "podnet", p2.path, "--json")).stdout)
    ip1, ip2 = (r["ips"][0]["address"].split("/")[0] for r in (r1, r2))
    out = ok(s.tool("gc", "podnet", "--valid", f"{cid(p2.path)}/eth0", "--json"))
    assert json.loads(out.stdout) == {"network": "podnet", "removed": [
        {"containerID": cid(p1.path), "ifname": "eth0"}]}
    assert link(p1, "eth0") is None and link(p2, "eth0") is not None
    assert s.node.reservations("podnet") == {ip2}      # host-local's GC kept the valid one
    assert [p.name for p in (s.cache / "results").iterdir()] == [s.cached("podnet", p2).name]
    assert ip1 not in s.node.reservations("podnet")
    assert ping(p2, GW)
    ok(s.tool("gc", "podnet", "--all"))                # nothing valid: everything goes
    assert s.node.reservations("podnet") == set() and veths(s.node.host) == set()


def test_list_in_a_real_config_dir(setup: Any) -> None:
    s = setup("1.0.0")
    (s.netdir / "99-bad.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "bad", "plugins": [{"type": "nosuch"}]}))
    out = s.tool("list")
    assert out.returncode == 3
    lines = out.stdout.splitlines()
    assert lines[1].split() == ["lo", "1.0.0", "ok", "loopback", "00-lo.conflist"]
    assert lines[2].split() == ["podnet", "1.0.0", "ok", "bridge,tuning,educative",
                                "10-podnet.conflist"]
    assert lines[3].split()[:3] == ["bad", "1.0.0", "invalid"]
    assert any(x.startswith("99-bad.conflist: failed to find plugin 'nosuch'") for x in lines)


# --- interop with the Go libcni --------------------------------------------------------------


@pytest.fixture(scope="session")
def go_tool(tmp_path_factory: pytest.TempPathFactory) -> str:
    why = go_libcni.missing()
    if why:
        pytest.skip(f"Go libcni oracle unavailable: {why}")
    return go_libcni.build(str(tmp_path_factory.mktemp("go-libcni")))


def _same_record(ours: dict[str, Any], go: dict[str, Any]) -> None:
    """Go's libcni 1.1.2 predates the "netns" field; everything else is identical."""
    ours = {k: v for k, v in ours.items() if k != "netns"}
    assert list(ours) == list(go)
    assert base64.b64decode(ours.pop("config")) == base64.b64decode(go.pop("config"))
    assert ours == go


@pytest.mark.oracle
@pytest.mark.parametrize("v", ["0.4.0", "1.0.0"])
def test_go_reads_our_cache_and_we_read_go_s(v: str, setup: Any, go_tool: str) -> None:
    s = setup(v)
    caps = {"mac": MAC}
    cni_args = "IgnoreUnknown=1;K8S_POD_NAME=web"
    p_ours, p_go = s.node.pod(), s.node.pod()

    # ours ADDs; Go's libcni reads the cache back exactly and DELs with it
    ours = json.loads(ok(s.tool("add", "podnet", p_ours.path, "--json",
                                CAP_ARGS=json.dumps(caps), CNI_ARGS=cni_args)).stdout)
    ours_rec = json.loads(s.cached("podnet", p_ours).read_text())
    seen = json.loads(ok(s.tool("cached", "podnet", p_ours.path, exe=go_tool)).stdout)
    assert seen["containerId"] == cid(p_ours.path)     # the same container ID derivation
    assert seen["result"] == ours
    assert seen["config"] == (s.netdir / "10-podnet.conflist").read_text()
    assert seen["cniArgs"] == [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web"]]
    assert seen["capabilityArgs"] == caps

    # Go ADDs the other pod with the same arguments; the two records match field for field
    go_out = json.loads(ok(s.tool("add", "podnet", p_go.path, exe=go_tool,
                                  CAP_ARGS=json.dumps(caps), CNI_ARGS=cni_args)).stdout)
    go_rec = json.loads(s.cached("podnet", p_go).read_text())
    assert stat.S_IMODE(s.cached("podnet", p_go).stat().st_mode) == 0o600
    expected = {**ours_rec, "containerId": go_rec["containerId"], "result": go_out}
    _same_record(expected, go_rec)

    # ours CHECKs and DELs the pod Go added, with Go's cache as prevResult
    ok(s.tool("check", "podnet", p_go.path))
    assert s.log_blocks("CHECK")[-1]["prevResult"] == go_out
    ok(s.tool("del", "podnet", p_go.path, CAP_ARGS=json.dumps(caps)))
    assert s.log_blocks("DEL")[-1]["prevResult"] == go_out
    assert not s.cached("podnet", p_go).exists() and link(p_go, "eth0") is None

    # Go CHECKs and DELs the pod ours added
    ok(s.tool("check", "podnet", p_ours.path, exe=go_tool, CAP_ARGS=json.dumps(caps)))
    ok(s.tool("del", "podnet", p_ours.path, exe=go_tool, CAP_ARGS=json.dumps(caps)))
    assert s.log_blocks("DEL")[-1]["prevResult"] == ours
    assert not s.cached("podnet", p_ours).exists() and link(p_ours, "eth0") is None
    assert s.node.reservations("podnet") == set() and veths(s.node.host) == set()


@pytest.mark.oracle
def test_go_and_ours_load_the_same_network(setup: Any, go_tool: str) -> None:
    """A legacy .conf and a conflist of the same name: both pick the conflist; a name only
    in a .conf is found by both."""
    s = setup("1.0.0")
    (s.netdir / "05-podnet.conf").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "podnet", "type": "educative", "cniOutput": "/dev/null"}))
    (s.netdir / "20-edu.conf").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "edu", "type": "educative",
         "cniOutput": str(s.log)}))
    pod = s.node.pod()
    for exe in (CNITOOL, go_tool):
        flags = ["--json"] if exe == CNITOOL else []
        out = json.loads(ok(s.tool("add", "edu", pod.path, *flags, exe=exe)).stdout)
        assert out == {"cniVersion": "1.0.0", "dns": {}}
        ok(s.tool("del", "edu", pod.path, exe=exe))
    assert [b["type"] for b in s.log_blocks("ADD")] == ["educative", "educative"]
