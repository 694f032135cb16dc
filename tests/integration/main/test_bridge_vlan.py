"""bridge with vlan / vlanTrunk / preserveDefaultVlan: needs bridge VLAN filtering, which
the development kernel lacks; runs in the guest (tests/guest/run). In-process, since every
interpreter start costs seconds under emulation; IPAM is Go's host-local (exec'd)."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.run import GO_DIR

pytestmark = [pytest.mark.root, pytest.mark.kernel("bridge_vlan")]


def conf(tmp_path, **extra: object) -> dict:
    return {"cniVersion": "1.0.0", "name": "vlannet", "type": "bridge", "bridge": "vbr0",
            "ipam": {"type": "host-local", "subnet": "10.91.0.0/24",
                     "dataDir": str(tmp_path / "ipam")}, **extra}


def port_vlans(host, port: str) -> dict[int, list[str]]:
    out = json.loads(host.sh("bridge", "-j", "vlan", "show", "dev", port) or "[]")
    return {v["vlan"]: v.get("flags", []) for entry in out for v in entry.get("vlans", [])}


def test_access_vlans_isolate_and_trunk_tags(make_netns, run_inproc, tmp_path):
    run_inproc.extra_path = [GO_DIR]
    host = make_netns()
    pods = {name: make_netns() for name in ("a", "b", "c", "t")}
    res = {}
    for name, vlan in (("a", 10), ("b", 10), ("c", 20)):
        r = run_inproc("bridge", "ADD", conf(tmp_path, vlan=vlan, preserveDefaultVlan=False),
                       netns=pods[name].path, host=host, container_id=f"ctr-{name}")
        assert r.ok, r.raw
        res[name] = r.out
    r = run_inproc("bridge", "ADD", conf(tmp_path, vlanTrunk=[{"id": 30}, {"minID": 40,
                                                                          "maxID": 42}]),
                   netns=pods["t"].path, host=host, container_id="ctr-t")
    assert r.ok, r.raw

    assert json.loads(host.sh("ip", "-j", "-d", "link", "show", "vbr0"))[0][
        "linkinfo"]["info_data"]["vlan_filtering"] == 1
    port_a = res["a"]["interfaces"][1]["name"]
    assert port_vlans(host, port_a) == {10: ["PVID", "Egress Untagged"]}
    trunk = port_vlans(host, r.out["interfaces"][1]["name"])
    assert set(trunk) == {1, 30, 40, 41, 42}          # default VLAN 1 preserved

    ip_b = res["b"]["ips"][0]["address"].split("/")[0]
    ip_c = res["c"]["ips"][0]["address"].split("/")[0]
    pods["a"].sh("ping", "-c1", "-W2", ip_b)
    with pytest.raises(Exception):
        pods["a"].sh("ping", "-c1", "-W1", ip_c)

    for name in ("a", "b", "c", "t"):
        d = run_inproc("bridge", "DEL", conf(tmp_path), netns=pods[name].path, host=host,
                       container_id=f"ctr-{name}")
        assert d.ok, d.raw
    assert not [l for l in host.ip_json("link") if l.get("master") == "vbr0"]


def test_gateway_on_vlan_interface(make_netns, run_inproc, tmp_path):
    run_inproc.extra_path = [GO_DIR]
    host, pod = make_netns(), make_netns()
    r = run_inproc("bridge", "ADD", conf(tmp_path, vlan=100, isGateway=True),
                   netns=pod.path, host=host, container_id="ctr-gw")
    assert r.ok, r.raw
    (gw,) = host.ip_json("addr", "show", "vbr0.100")
    assert "10.91.0.1" in [a["local"] for a in gw["addr_info"]]
    pod.sh("ping", "-c1", "-W2", "10.91.0.1")
    assert run_inproc("bridge", "DEL", conf(tmp_path, vlan=100, isGateway=True),
                      netns=pod.path, host=host, container_id="ctr-gw").ok
