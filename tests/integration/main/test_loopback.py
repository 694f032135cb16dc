"""loopback, executed through its symlink as a runtime does, per spec version; kernel state
read back from the namespace."""

from __future__ import annotations

import json

import pytest

from cni_plugins import version

pytestmark = pytest.mark.root


def conf(v: str, **extra: object) -> dict:
    return {"cniVersion": v, "name": "lo-test", "type": "loopback", **extra}


def lo_state(ns) -> dict:
    (link,) = ns.ip_json("link", "show", "lo")
    return link


def lo_addrs(ns) -> list[str]:
    (link,) = ns.ip_json("addr", "show", "lo")
    return sorted(f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"])


@pytest.mark.parametrize("mode", ["exec", "inproc"])
@pytest.mark.parametrize("v", version.ALL)
def test_add_brings_lo_up_and_reports_it(v, mode, netns, run, run_inproc):
    runner = run if mode == "exec" else run_inproc
    assert "UP" not in lo_state(netns)["flags"]
    r = runner("loopback", "ADD", conf(v), netns=netns.path, ifname="eth7")
    assert r.ok, r.raw
    assert "UP" in lo_state(netns)["flags"]
    addrs = lo_addrs(netns)
    assert "127.0.0.1/8" in addrs
    assert r.out["cniVersion"] == v
    if version.at_least(v, "0.3.0"):
        assert r.out["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00",
                                        "sandbox": netns.path}]
        assert sorted(ip["address"] for ip in r.out["ips"]) == addrs
        assert all(ip["interface"] == 0 for ip in r.out["ips"])
        assert all(("version" in ip) == (not version.at_least(v, "1.0.0")) for ip in r.out["ips"])
    else:
        assert r.out["ip4"] == {"ip": "127.0.0.1/8"}
        assert set(r.out) <= {"cniVersion", "ip4", "ip6", "dns"}


@pytest.mark.parametrize("v", [v for v in version.ALL if version.has_check(v)])
def test_check_follows_the_kernel(v, netns, run):
    assert run("loopback", "ADD", conf(v), netns=netns.path).ok
    assert run("loopback", "CHECK", conf(v), netns=netns.path).ok
    netns.sh("ip", "link", "set", "lo", "down")
    r = run("loopback", "CHECK", conf(v), netns=netns.path)
    assert r.rc != 0 and r.out["msg"] == "loopback interface is down"


@pytest.mark.parametrize("v", ["0.3.1", "1.0.0", "1.1.0"])
def test_del_sets_lo_down_and_is_idempotent(v, netns, run):
    assert run("loopback", "ADD", conf(v), netns=netns.path).ok
    for _ in range(2):
        r = run("loopback", "DEL", conf(v), netns=netns.path)
        assert r.ok and r.raw == "", r.raw
        assert "UP" not in lo_state(netns)["flags"]


def test_del_when_netns_is_gone_or_empty(netns, run):
    path = netns.path
    assert run("loopback", "ADD", conf("1.0.0"), netns=path).ok
    netns.delete()
    assert run("loopback", "DEL", conf("1.0.0"), netns=path).ok
    assert run("loopback", "DEL", conf("1.0.0"), netns="").ok


def test_add_in_missing_netns_is_invalid_netns(run):
    r = run("loopback", "ADD", conf("1.0.0"), netns="/run/netns/cnitest-does-not-exist")
    assert r.code == 8 and "cnitest-does-not-exist" in r.out["msg"]


def test_add_in_a_file_that_is_no_netns(tmp_path, run):
    f = tmp_path / "notns"
    f.write_text("")
    r = run("loopback", "ADD", conf("1.0.0"), netns=str(f))
    assert r.code == 8 and "not a network namespace" in r.out["msg"]


def test_add_in_own_netns_refused_unless_overridden(run):
    r = run("loopback", "ADD", conf("1.0.0"), netns="/proc/1/ns/net")
    assert r.code == 8


@pytest.mark.parametrize("v", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_prev_result_passes_through(v, netns, run):
    prev = {"cniVersion": v, "interfaces": [{"name": "eth0", "sandbox": netns.path}],
            "ips": [{"address": "10.9.8.7/24", "interface": 0,
                     **({"version": "4"} if not version.at_least(v, "1.0.0") else {})}],
            "dns": {}}
    r = run("loopback", "ADD", conf(v, prevResult=prev), netns=netns.path)
    assert r.ok, r.raw
    assert r.out == prev
    assert "UP" in lo_state(netns)["flags"]


def test_netns_restored_after_request(netns, run_inproc):
    """In-process: the calling thread is back in its own namespace afterwards."""
    import os

    before = os.stat("/proc/thread-self/ns/net").st_ino
    assert run_inproc("loopback", "ADD", conf("1.0.0"), netns=netns.path).ok
    assert run_inproc("loopback", "ADD", conf("1.0.0"), netns="/nonexistent").code == 8
    assert os.stat("/proc/thread-self/ns/net").st_ino == before
    assert json.loads(netns.sh("ip", "-j", "link", "show", "lo"))[0]["ifname"] == "lo"
