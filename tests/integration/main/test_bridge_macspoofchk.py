"""bridge macspoofchk: frames from a pod's port with another source MAC are dropped, in
Go's nftables layout (table bridge nat); DEL removes exactly this pod's rule and chains."""

from __future__ import annotations

import json
import subprocess

import pytest

pytestmark = pytest.mark.root


def conf(tmp_path) -> dict:
    return {"cniVersion": "1.0.0", "name": "spoofnet", "type": "bridge", "bridge": "spbr0",
            "isGateway": True, "macspoofchk": True,
            "ipam": {"type": "host-local", "subnet": "10.93.0.0/24",
                     "dataDir": str(tmp_path / "ipam")}}


def ruleset(host) -> dict:
    return json.loads(host.sh("nft", "-j", "list", "table", "bridge", "nat"))


def test_spoofed_frames_dropped_and_rules_removed(make_netns, run, tmp_path):
    host, pod, other = make_netns(), make_netns(), make_netns()
    r = run("bridge", "ADD", conf(tmp_path), netns=pod.path, host=host, container_id="ctr-a")
    assert r.ok, r.raw
    r2 = run("bridge", "ADD", conf(tmp_path), netns=other.path, host=host,
             container_id="ctr-b")
    assert r2.ok, r2.raw
    host_veth, mac = r.out["interfaces"][1]["name"], r.out["interfaces"][2]["mac"]

    items = ruleset(host)["nftables"]
    chains = {i["chain"]["name"]: i["chain"] for i in items if "chain" in i}
    assert chains["PREROUTING"]["hook"] == "prerouting" and chains["PREROUTING"]["prio"] == -300
    assert {"cni-br-iface-ctr-a-eth0", "cni-br-iface-ctr-a-eth0-mac"} <= set(chains)
    rules = [i["rule"] for i in items if "rule" in i]
    base = [x for x in rules if x["chain"] == "PREROUTING"
            and x.get("comment") == "macspoofchk-ctr-a-eth0"]
    assert len(base) == 1
    assert {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": host_veth}} \
        in base[0]["expr"]
    mac_rules = [x for x in rules if x["chain"] == "cni-br-iface-ctr-a-eth0-mac"]
    assert mac_rules[0]["expr"][0]["match"]["right"] == mac
    assert {"drop": None} in mac_rules[1]["expr"]

    pod.sh("ping", "-c1", "-W2", "10.93.0.1")               # own MAC: passes
    pod.sh("ip", "link", "set", "eth0", "address", "02:de:ad:be:ef:01")
    with pytest.raises(subprocess.CalledProcessError):
        pod.sh("ping", "-c1", "-W1", "10.93.0.1")           # spoofed: dropped

    assert run("bridge", "DEL", conf(tmp_path), netns=pod.path, host=host,
               container_id="ctr-a").ok
    assert run("bridge", "DEL", conf(tmp_path), netns=pod.path, host=host,
               container_id="ctr-a").ok                      # idempotent
    items = ruleset(host)["nftables"]
    names = {i["chain"]["name"] for i in items if "chain" in i}
    assert not any("ctr-a" in n for n in names) and "cni-br-iface-ctr-b-eth0" in names
    assert not [i for i in items if "rule" in i
                and i["rule"].get("comment") == "macspoofchk-ctr-a-eth0"]
    other.sh("ping", "-c1", "-W2", "10.93.0.1")             # the other pod unaffected


def test_result_conversion_failure_rolls_back_with_the_real_config(make_netns, run, tmp_path):
    """An L2-only result cannot be said at 0.2.0: skel undoes the ADD with a DEL, and that
    DEL must see the request's config (it used to get an empty one: default bridge, no
    macspoofchk, so the pod's rules and chains stayed)."""
    host, pod = make_netns(), make_netns()
    c = {"cniVersion": "0.2.0", "name": "spoofnet", "type": "bridge", "bridge": "spbr0",
         "macspoofchk": True}
    r = run("bridge", "ADD", c, netns=pod.path, host=host, container_id="ctr-l2")
    assert r.rc == 1, r.raw
    assert "0.2.0" in r.out["msg"] or "address" in r.out["msg"], r.out
    items = json.loads(host.sh("nft", "-j", "list", "ruleset", "bridge"))["nftables"]
    assert not [i for i in items if "chain" in i and "ctr-l2" in i["chain"]["name"]]
    assert not [i for i in items if "rule" in i
                and "ctr-l2" in (i["rule"].get("comment") or "")]
    assert [l for l in pod.sh("ip", "-o", "link").splitlines() if ": lo:" not in l] == []
    host_links = host.sh("ip", "-o", "link", "show", "type", "veth")
    assert host_links.strip() == "", host_links
