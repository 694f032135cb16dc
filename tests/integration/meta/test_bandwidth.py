"""bandwidth chained after bridge, inside a throw-away host netns (make_node): the qdiscs
and the ifb read back with tc/ip, rates measured with TCP traffic, bad input refused
before anything is installed, and the Go plugin (/usr/lib/cni, 1.1.1) as the oracle —
chained after our bridge, with our bandwidth after its bridge, and DEL across the two."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from cni_plugins import version
from cni_plugins.meta.bandwidth import ifb_name
from tests.fixtures.netns import TestNS as NS
from tests.fixtures.pods import Node, call_in_node as call, bridge_conf, inside, ip_of
from tests.fixtures.run import Reply, Runner

pytestmark = pytest.mark.root

VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
GO_VERSIONS = ("0.3.1", "0.4.0", "1.0.0")          # the Go plugins 1.1.1 stop at 1.0.0
NET = "brnet"                                       # bridge_conf's network name
MBIT = 1_000_000
# different rates per direction, so that a swapped direction cannot pass
LIMITS = {"ingressRate": 8 * MBIT, "ingressBurst": 80_000,
          "egressRate": 6 * MBIT, "egressBurst": 60_000}
TBF_IN = {"rate": 1_000_000, "burst": 10_000, "lat": 25_000}    # tc -j: bytes/s, bytes, µs
TBF_OUT = {"rate": 750_000, "burst": 7_500, "lat": 25_000}


# -- helpers ---------------------------------------------------------------------------------

@dataclass
class Pod:
    node: Node
    ns: NS
    cid: str
    prev: dict                  # the bridge's ADD result
    v: str

    @property
    def veth(self) -> str:
        return self.prev["interfaces"][1]["name"]

    @property
    def ip(self) -> str:
        return ip_of(Reply(0, self.prev))

    @property
    def ifb(self) -> str:
        return ifb_name(NET, self.cid)


def attach(node: Node, v: str, bridge: Runner, cid: str = "ctr1") -> Pod:
    ns = node.pod()
    r = call(bridge, node, "bridge", "ADD", bridge_conf(v, node), ns, cid=cid)
    assert r.ok, r.raw
    return Pod(node, ns, cid, r.out, v)


def bw_conf(v: str, prev: dict | None, **fields: Any) -> dict:
    conf: dict[str, Any] = {"cniVersion": v, "name": NET, "type": "bandwidth", **fields}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def tc_json(ns: NS, *args: str) -> list[dict]:
    return json.loads(ns.sh("tc", "-j", *args) or "[]")


def shaping(ns: NS) -> dict[str, list[tuple]]:
    """dev -> [(kind, handle, root, options)] of every qdisc but the default ones."""
    out: dict[str, list[tuple]] = {}
    for q in tc_json(ns, "qdisc", "show"):
        if q["kind"] in ("noqueue", "pfifo_fast", "fq_codel", "mq"):
            continue
        out.setdefault(q["dev"], []).append(
            (q["kind"], q["handle"], bool(q.get("root")), q.get("options", {})))
    return {dev: sorted(qs, key=repr) for dev, qs in out.items()}


def redirects(ns: NS, dev: str) -> set[str]:
    """Devices the u32 filters on `dev`'s ingress redirect to (mirred egress redirect)."""
    out = set()
    for f in tc_json(ns, "filter", "show", "dev", dev, "ingress"):
        opts = f.get("options", {})
        if f["kind"] != "u32" or "match" not in opts:
            continue
        assert opts["match"] == {"value": "0", "mask": "0", "offmask": "", "off": 0}
        assert f["protocol"] == "all"
        for act in opts.get("actions", []):
            if act["kind"] == "mirred":
                assert (act["mirred_action"], act["direction"]) == ("redirect", "egress")
                out.add(act["to_dev"])
    return out


def ifbs(ns: NS) -> set[str]:
    return {link["ifname"] for link in ns.ip_json("link", "show", "type", "ifb")}


def ifb_link(ns: NS, name: str) -> dict:
    (link,) = ns.ip_json("-d", "link", "show", "dev", name)
    return link


def kernel_tbf(ns: NS) -> dict[str, tuple[int, int, int]]:
    """dev -> (rate B/s, buffer ticks, limit B) of the tbf qdiscs, read through netlink."""
    from cni_plugins.net.netlink import Netlink

    with inside(ns), Netlink() as nl:
        names = {link.index: link.name for link in nl.links()}
        return {names[q.index]: (q.rate, q.buffer, q.limit) for q in nl.qdiscs()
                if q.kind == "tbf"}


def assert_shaped(pod: Pod, *, ingress: dict | None = TBF_IN, egress: dict | None = TBF_OUT
                  ) -> None:
    host = pod.node.host
    got = shaping(host)
    want_veth = []
    if ingress:
        want_veth.append(("tbf", "1:", True, ingress))
    if egress:
        want_veth.append(("ingress", "ffff:", False, {}))
        assert got.get(pod.ifb) == [("tbf", "1:", True, egress)], got
        assert redirects(host, pod.veth) == {pod.ifb}
        ifb = ifb_link(host, pod.ifb)
        assert "UP" in ifb["flags"] and ifb["mtu"] == 1500, ifb
    else:
        assert pod.ifb not in ifbs(host)
    assert got.get(pod.veth, []) == sorted(want_veth, key=repr), got


def assert_unshaped(pod: Pod) -> None:
    """Nothing of bandwidth's on the node: no ifb, no qdisc on the host veth."""
    assert ifbs(pod.node.host) == set()
    assert shaping(pod.node.host) == {}


def result_ifaces(out: dict) -> list[dict]:
    return out["interfaces"]


# -- ADD / CHECK / DEL ------------------------------------------------------------------------

@pytest.mark.parametrize("bridge_impl", ["ours", pytest.param("go", marks=pytest.mark.oracle)])
@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del(v, bridge_impl, make_node, run, run_go):
    if bridge_impl == "go" and v not in GO_VERSIONS:
        pytest.skip("the Go bridge 1.1.1 stops at 1.0.0")
    node = make_node()
    pod = attach(node, v, run_go if bridge_impl == "go" else run)
    conf = bw_conf(v, pod.prev, **LIMITS)

    r = call(run, node, "bandwidth", "ADD", conf, pod)
    assert r.ok, r.raw
    assert_shaped(pod)
    assert r.out["cniVersion"] == v
    ifaces = result_ifaces(r.out)
    assert ifaces[:-1] == pod.prev["interfaces"]
    assert ifaces[-1] == {"name": pod.ifb, "mac": ifb_link(node.host, pod.ifb)["address"]}
    assert {k: r.out[k] for k in r.out if k != "interfaces"} == \
        {k: pod.prev[k] for k in pod.prev if k != "interfaces"}

    if version.has_check(v):
        r = call(run, node, "bandwidth", "CHECK", bw_conf(v, r.out, **LIMITS), pod)
        assert r.ok, r.raw

    for _ in range(2):                                  # DEL is idempotent
        r = call(run, node, "bandwidth", "DEL", conf, pod)
        assert r.ok, r.raw
        assert ifbs(node.host) == set()
    r = call(run, node, "bridge", "DEL", bridge_conf(v, node), pod)
    assert r.ok, r.raw
    assert_unshaped(pod)
    assert pod.veth not in {link["ifname"] for link in node.host.ip_json("link", "show")}


def test_in_process(make_node, run_inproc):
    """The same request served in this process (skel.run inside the host netns)."""
    node = make_node(mode="inproc")
    pod = attach(node, "1.1.0", run_inproc)
    r = call(run_inproc, node, "bandwidth", "ADD", bw_conf("1.1.0", pod.prev, **LIMITS), pod)
    assert r.ok, r.raw
    assert_shaped(pod)
    r = call(run_inproc, node, "bandwidth", "CHECK", bw_conf("1.1.0", r.out, **LIMITS), pod)
    assert r.ok, r.raw
    r = call(run_inproc, node, "bandwidth", "DEL", bw_conf("1.1.0", r.out, **LIMITS), pod)
    assert r.ok, r.raw
    assert ifbs(node.host) == set()


def test_pods_are_shaped_apart(make_node, run):
    """Two pods on one node: each gets its own ifb and qdiscs; DEL of one leaves the
    other's alone."""
    node = make_node()
    a, b = attach(node, "1.0.0", run, cid="pod-a"), attach(node, "1.0.0", run, cid="pod-b")
    slow = {"ingressRate": 4 * MBIT, "ingressBurst": 40_000,
            "egressRate": 2 * MBIT, "egressBurst": 20_000}
    for pod, fields in ((a, LIMITS), (b, slow)):
        r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **fields), pod)
        assert r.ok, r.raw
    assert a.ifb != b.ifb and ifbs(node.host) == {a.ifb, b.ifb}
    assert_shaped(a)
    assert_shaped(b, ingress={"rate": 500_000, "burst": 5_000, "lat": 25_000},
                  egress={"rate": 250_000, "burst": 2_500, "lat": 25_000})
    r = call(run, node, "bandwidth", "DEL", bw_conf("1.0.0", a.prev, **LIMITS), a)
    assert r.ok, r.raw
    assert ifbs(node.host) == {b.ifb}
    assert_shaped(b, ingress={"rate": 500_000, "burst": 5_000, "lat": 25_000},
                  egress={"rate": 250_000, "burst": 2_500, "lat": 25_000})


@pytest.mark.parametrize("which", ["ingress", "egress"])
def test_one_direction_only(which, make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    fields = {k: v for k, v in LIMITS.items() if k.startswith(which)}
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **fields), pod)
    assert r.ok, r.raw
    if which == "ingress":
        assert_shaped(pod, egress=None)
        assert result_ifaces(r.out) == pod.prev["interfaces"]
    else:
        assert_shaped(pod, ingress=None)
        assert result_ifaces(r.out)[-1]["name"] == pod.ifb
    r = call(run, node, "bandwidth", "CHECK", bw_conf("1.0.0", r.out, **fields), pod)
    assert r.ok, r.raw


def test_runtime_config_and_static_precedence(make_node, run):
    """runtimeConfig.bandwidth (the capability) applies when the static keys are absent;
    any static key, even a zero, wins over it, as in Go."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    runtime = {"runtimeConfig": {"bandwidth": LIMITS}}
    r = call(run, node, "bandwidth", "ADD",
             bw_conf("1.0.0", pod.prev, ingressRate=0, **runtime), pod)
    assert r.ok, r.raw
    assert r.out["interfaces"] == pod.prev["interfaces"]
    assert_unshaped(pod)

    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **runtime), pod)
    assert r.ok, r.raw
    assert_shaped(pod)
    r = call(run, node, "bandwidth", "CHECK", bw_conf("1.0.0", r.out, **runtime), pod)
    assert r.ok, r.raw


def test_keys_match_case_insensitively(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    fields = {k[0].upper() + k[1:]: v for k, v in LIMITS.items()}
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **fields), pod)
    assert r.ok, r.raw
    assert_shaped(pod)


def test_no_limits_passes_prev_result(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev), pod)
    assert r.ok, r.raw
    assert r.out == pod.prev
    assert_unshaped(pod)


@pytest.mark.parametrize("fields", [LIMITS, {}], ids=["limits", "none"])
def test_prev_result_required(fields, make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", None, **fields), pod)
    assert r.code == 7, r.raw
    assert "chained" in r.out["msg"] and "prevResult" in r.out["msg"]
    assert_unshaped(pod)


def test_versions(run):
    r = run("bandwidth", "VERSION", b"{}")
    assert r.out["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    r = run("bandwidth", "ADD", bw_conf("0.2.0", None), netns="/proc/1/ns/net")
    assert r.code == 1 and r.out["msg"] == "incompatible CNI versions", r.raw


@pytest.mark.parametrize("verb", ["GC", "STATUS"])
def test_gc_and_status_do_nothing(verb, make_node, run):
    node = make_node()
    pod = attach(node, "1.1.0", run)
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.1.0", pod.prev, **LIMITS), pod)
    assert r.ok, r.raw
    r = call(run, node, "bandwidth", verb, bw_conf("1.1.0", None, **LIMITS), netns="")
    assert r.ok and r.out is None, r.raw
    assert_shaped(pod)


@pytest.mark.parametrize("state", ["netns-deleted", "empty-netns", "never-added",
                                   "bad-config"])
def test_del_removes_the_ifb_whatever_the_state(state, make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    if state != "never-added":
        r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **LIMITS), pod)
        assert r.ok, r.raw
    netns = pod.ns.path
    conf = bw_conf("1.0.0", pod.prev, **LIMITS)
    if state == "netns-deleted":
        pod.ns.delete()
    elif state == "empty-netns":
        netns = ""
    elif state == "bad-config":         # a DEL that cannot parse the limits still cleans up
        conf = bw_conf("1.0.0", pod.prev, ingressRate=-1)
    r = call(run, node, "bandwidth", "DEL", conf, pod, netns=netns)
    assert r.ok, r.raw
    assert ifbs(node.host) == set()


# -- CHECK follows the kernel -------------------------------------------------------------------

@pytest.mark.parametrize("tamper", ["ingress-rate", "egress-rate", "filter", "ingress-qdisc",
                                    "ifb"])
def test_check_detects_changes(tamper, make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **LIMITS), pod)
    assert r.ok, r.raw
    check = bw_conf("1.0.0", r.out, **LIMITS)
    assert call(run, node, "bandwidth", "CHECK", check, pod).ok
    host = node.host
    if tamper == "ingress-rate":
        host.sh("tc", "qdisc", "change", "dev", pod.veth, "root", "tbf", "rate", "4mbit",
                "burst", "10000", "latency", "25ms")
    elif tamper == "egress-rate":
        host.sh("tc", "qdisc", "change", "dev", pod.ifb, "root", "tbf", "rate", "6mbit",
                "burst", "8000", "latency", "25ms")
    elif tamper == "filter":
        host.sh("tc", "filter", "del", "dev", pod.veth, "ingress")
    elif tamper == "ingress-qdisc":
        host.sh("tc", "qdisc", "del", "dev", pod.veth, "ingress")
    else:
        host.sh("ip", "link", "del", pod.ifb)
    r = call(run, node, "bandwidth", "CHECK", check, pod)
    assert r.code == 999, r.raw
    want = {"ingress-rate": pod.veth, "egress-rate": pod.ifb, "filter": "redirect",
            "ingress-qdisc": "redirect", "ifb": "missing"}[tamper]
    assert want in r.out["msg"], r.raw


# -- bad input: CNI error naming the field, nothing installed -------------------------------------

BAD = [
    ({"ingressRate": 8000}, 7, "ingressBurst: if ingressRate is set, ingressBurst must"),
    ({"egressBurst": 8000}, 7, "egressRate: if egressBurst is set, egressRate must"),
    ({"egressRate": 8000, "egressBurst": 8 * 0xFFFFFFFF}, 7,
     "egressBurst: burst cannot be more than 4GB"),
    ({"ingressRate": 8000, "ingressBurst": 1 << 40}, 7,
     "ingressBurst: burst cannot be more than 4GB"),
    ({"ingressRate": -1, "ingressBurst": 100}, 7, "ingressRate: must be a whole number"),
    ({"egressRate": 8000, "egressBurst": -8}, 7, "egressBurst: must be a whole number"),
    ({"ingressRate": "8000", "ingressBurst": 800}, 7, "ingressRate: expected an integer, got a string"),
    ({"ingressRate": 8000.5, "ingressBurst": 800}, 7, "ingressRate: expected an integer, got a number"),
    ({"ingressRate": True, "ingressBurst": 800}, 7, "ingressRate: expected an integer, got a boolean"),
    ({"egressRate": 1 << 64, "egressBurst": 800}, 7, "egressRate: must be a whole number"),
    ({"ingressRate": 7, "ingressBurst": 800}, 7, "ingressRate: must be at least 8 bits"),
    ({"ingressRate": 8000, "ingressBurst": 4}, 7, "ingressBurst: must be at least 8 bits"),
    ({"egressRate": 8, "egressBurst": 8 * 10**9}, 7, "egressBurst: too large for egressRate"),
    ({"runtimeConfig": {"bandwidth": {"egressRate": 8000}}}, 7,
     "runtimeConfig.bandwidth.egressBurst: if egressRate is set"),
    ({"runtimeConfig": {"bandwidth": []}}, 7, "runtimeConfig.bandwidth: expected an object, got a list"),
    ({"runtimeConfig": 3}, 7, "runtimeConfig: expected an object, got a number"),
    ({"unshapedSubnets": ["10.0.0.0/8"], **LIMITS}, 2, "unshapedSubnets: not supported"),
]


@pytest.mark.parametrize("fields,code,msg", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_refused_before_any_change(fields, code, msg, make_node, run_inproc):
    node = make_node()
    pod = attach(node, "1.0.0", node.runner)
    r = call(run_inproc, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **fields), pod)
    assert r.code == code, r.raw
    assert r.out["msg"] == "invalid config: " + r.out["msg"].removeprefix("invalid config: ")
    assert msg in r.out["msg"], r.raw
    assert_unshaped(pod)


def test_bad_input_exec(make_node, run):
    """The same through the symlink: a code-7 JSON error on stdout, exit status 1."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, egressRate=8000), pod)
    assert r.rc == 1 and r.out == {
        "cniVersion": "1.0.0", "code": 7, "details": "",
        "msg": "invalid config: egressBurst: if egressRate is set, egressBurst must also be set"}
    assert_unshaped(pod)


def test_not_a_veth(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    pod.ns.sh("ip", "link", "add", "eth1", "type", "bridge")
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **LIMITS), pod.ns,
             cid=pod.cid, env={"CNI_IFNAME": "eth1"})
    assert r.code == 7 and "no veth peer" in r.out["msg"], r.raw
    assert_unshaped(pod)


def test_host_veth_must_be_in_prev_result(make_node, run):
    node = make_node()
    pod = attach(node, "1.0.0", run)
    prev = {**pod.prev, "interfaces": [i for i in pod.prev["interfaces"]
                                       if i["name"] != pod.veth]}
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", prev, **LIMITS), pod)
    assert r.code == 999 and "not in prevResult" in r.out["msg"], r.raw
    assert_unshaped(pod)


def test_failed_add_removes_what_it_made(make_node, run):
    """A foreign ingress qdisc on the host veth makes the redirect fail: the tbf and the
    ifb this ADD made are removed, the foreign qdisc stays."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    node.host.sh("tc", "qdisc", "add", "dev", pod.veth, "ingress")
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **LIMITS), pod)
    assert r.rc == 1 and "ingress qdisc" in r.out["msg"], r.raw
    assert ifbs(node.host) == set()
    assert shaping(node.host) == {pod.veth: [("ingress", "ffff:", False, {})]}


def test_rates_beyond_32_bits(make_node, run):
    """40 Gbit/s is 5e9 bytes/s: more than tc_ratespec's 32 bits, so TCA_TBF_RATE64."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    fields = {"ingressRate": 40_000 * MBIT, "ingressBurst": 8 * 10**7,
              "egressRate": 100_000 * MBIT, "egressBurst": 8 * 10**8}
    r = call(run, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **fields), pod)
    assert r.ok, r.raw
    tbf = kernel_tbf(node.host)
    assert tbf[pod.veth][0] == 5 * 10**9 and tbf[pod.ifb][0] == 125 * 10**8
    assert shaping(node.host)[pod.veth][1][3]["rate"] == 5 * 10**9
    r = call(run, node, "bandwidth", "CHECK", bw_conf("1.0.0", r.out, **fields), pod)
    assert r.ok, r.raw


# -- the Go plugin as the oracle ------------------------------------------------------------------

def _normal(pod: Pod) -> dict:
    """The node's shaping with the pod's device names replaced by roles."""
    names = {pod.veth: "VETH", pod.ifb: "IFB"}
    got = shaping(pod.node.host)
    return {"qdiscs": {names.get(d, d): qs for d, qs in got.items()},
            "tbf": {names.get(d, d): p for d, p in kernel_tbf(pod.node.host).items()},
            "redirects": {names.get(d, d) for d in redirects(pod.node.host, pod.veth)},
            "ifbs": {names.get(d, d) for d in ifbs(pod.node.host)},
            "ifb": {k: ifb_link(pod.node.host, pod.ifb)[k] for k in ("mtu", "flags")}
            if pod.ifb in ifbs(pod.node.host) else None}


@pytest.mark.oracle
@pytest.mark.parametrize("fields", [
    LIMITS,
    {"ingressRate": 1_000_000, "ingressBurst": 1_000_001},      # odd bits: bytes round down
    {"ingressRate": 40_000 * MBIT, "ingressBurst": 8 * 10**7,       # TCA_TBF_RATE64
     "egressRate": 100_000 * MBIT, "egressBurst": 8 * 0xFFFFFFFF - 9},  # limit wraps (Go's u32)
], ids=["limits", "odd", "huge"])
@pytest.mark.parametrize("v", GO_VERSIONS)
def test_same_as_go(v, fields, make_node, run, run_go):
    """Go's bandwidth and ours, each after our bridge on its own node, same container ID:
    identical qdiscs, kernel tbf parameters, redirect, ifb name and result; then each
    implementation's DEL removes the other's ifb."""
    pods = {}
    outs = {}
    for impl, runner in (("ours", run), ("go", run_go)):
        node = make_node()
        pod = attach(node, v, run, cid="ctr-diff")
        r = call(runner, node, "bandwidth", "ADD", bw_conf(v, pod.prev, **fields), pod)
        assert r.ok, (impl, r.raw)
        pods[impl], outs[impl] = pod, r.out
    assert _normal(pods["ours"]) == _normal(pods["go"])

    def shape(out: dict, pod: Pod) -> dict:
        roles = {pod.veth: "VETH", pod.ns.path: "POD"}
        return {**out, "ips": "-", "interfaces": [
            {k: "MAC" if k == "mac" else roles.get(val, val) for k, val in i.items()}
            for i in out["interfaces"]]}
    assert shape(outs["ours"], pods["ours"]) == shape(outs["go"], pods["go"])

    if version.has_check(v):        # each CHECK accepts the other's setup
        for impl, runner in (("ours", run_go), ("go", run)):
            pod = pods[impl]
            r = call(runner, pod.node, "bandwidth", "CHECK", bw_conf(v, outs[impl], **fields),
                     pod)
            assert r.ok, (impl, r.raw)
    for impl, runner in (("ours", run_go), ("go", run)):
        pod = pods[impl]
        r = call(runner, pod.node, "bandwidth", "DEL", bw_conf(v, outs[impl], **fields), pod)
        assert r.ok, (impl, r.raw)
        assert ifbs(pod.node.host) == set()


@pytest.mark.oracle
@pytest.mark.parametrize("v", GO_VERSIONS)
def test_go_bandwidth_after_our_bridge(v, make_node, run, run_go):
    node = make_node()
    pod = attach(node, v, run)
    r = call(run_go, node, "bandwidth", "ADD", bw_conf(v, pod.prev, **LIMITS), pod)
    assert r.ok, r.raw
    assert_shaped(pod)
    assert result_ifaces(r.out)[-1]["name"] == pod.ifb
    r = call(run_go, node, "bandwidth", "DEL", bw_conf(v, pod.prev, **LIMITS), pod)
    assert r.ok, r.raw
    r = call(run, node, "bridge", "DEL", bridge_conf(v, node), pod)
    assert r.ok, r.raw
    assert_unshaped(pod)


# -- traffic ----------------------------------------------------------------------------------------

def throughput(sender: NS, receiver: NS, dst: str, seconds: float = 2.0,
               warmup: float = 0.4) -> float:
    """bit/s of TCP payload from `sender` to `dst` in `receiver`, counted by the receiver
    over `seconds` after `warmup` (the bucket's initial burst and slow start)."""
    with inside(receiver):
        srv = socket.socket()
    with inside(sender):
        cli = socket.socket()
    srv.bind((dst, 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def send() -> None:
        chunk = b"\0" * 65536
        cli.settimeout(3)
        try:
            cli.connect((dst, port))
            while not stop.is_set():
                cli.sendall(chunk)
        except OSError:
            pass

    sender_thread = threading.Thread(target=send, daemon=True)
    sender_thread.start()
    srv.settimeout(5)
    conn, _ = srv.accept()
    conn.settimeout(5)
    begin = time.monotonic() + warmup
    end = begin + seconds
    counted = 0
    try:
        while True:
            data = conn.recv(1 << 16)
            now = time.monotonic()
            if not data or now >= end:
                break
            if now >= begin:
                counted += len(data)
    finally:
        stop.set()
        for s in (conn, cli, srv):
            s.close()
        sender_thread.join(5)
    return counted * 8 / seconds


@pytest.mark.parametrize("impl", ["ours", pytest.param("go", marks=pytest.mark.oracle)])
def test_traffic_is_limited_both_ways(impl, make_node, run, run_go, capsys):
    """Host -> pod is the ingress limit (tbf on the veth), pod -> host the egress one (the
    ifb): each measured within ±15 % of its rate (TCP payload, so a little under)."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    gateway = pod.prev["ips"][0]["gateway"]
    runner = run if impl == "ours" else run_go
    r = call(runner, node, "bandwidth", "ADD", bw_conf("1.0.0", pod.prev, **LIMITS), pod)
    assert r.ok, r.raw
    into_pod = throughput(node.host, pod.ns, pod.ip)
    from_pod = throughput(pod.ns, node.host, gateway)
    with capsys.disabled():
        print(f"\n  [{impl}] host->pod {into_pod / MBIT:.2f} Mbit/s (limit 8), "
              f"pod->host {from_pod / MBIT:.2f} Mbit/s (limit 6)")
    assert 0.85 * 8 * MBIT <= into_pod <= 1.15 * 8 * MBIT
    assert 0.85 * 6 * MBIT <= from_pod <= 1.15 * 6 * MBIT


def test_unlimited_traffic_is_faster(make_node, run):
    """The control: the same transfer without bandwidth runs far above the limits."""
    node = make_node()
    pod = attach(node, "1.0.0", run)
    assert throughput(node.host, pod.ns, pod.ip, seconds=0.5, warmup=0.1) > 50 * MBIT
