"""static through its symlink and in process, per spec version; and against Go's."""

from __future__ import annotations

import pytest

from cni_plugins import version

from .helpers import GO_VERSIONS, NETNS, VERSIONS, finish, ips, spawn

GO = "/usr/lib/cni/static"


@pytest.fixture(params=("exec", "inproc"))
def runner(request, run, run_inproc):
    r = run if request.param == "exec" else run_inproc
    return lambda verb, conf, **kw: r("static", verb, conf, netns=NETNS, **kw)


def static(v: str = "1.0.0", **ipam) -> dict:
    return {"cniVersion": v, "name": "snet", "type": "macvlan", "ipam": {"type": "static", **ipam}}


FULL = dict(
    addresses=[{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}, {"address": "FD10::05/64"}],
    routes=[{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.5/16", "gw": "10.10.5.1"}],
    dns={"nameservers": ["8.8.8.8"], "domain": "example.com", "search": ["example.com"],
         "options": ["ndots:3"]})


@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del(v, runner):
    conf = static(v, **FULL)
    r = runner("ADD", conf)
    assert r.ok, r.raw
    if version.at_least(v, "0.3.0"):
        want = [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}, {"address": "fd10::5/64"}]
        if not version.at_least(v, "1.0.0"):
            want = [{"version": "4", **want[0]}, {"version": "6", **want[1]}]
        assert r.out == {"cniVersion": v, "ips": want, "routes": FULL["routes"][:1] + [
            {"dst": "192.168.0.5/16", "gw": "10.10.5.1"}], "dns": FULL["dns"]}
    else:
        assert r.out == {"cniVersion": v,
                         "ip4": {"ip": "10.10.0.5/24", "gateway": "10.10.0.1",
                                 "routes": [{"dst": "0.0.0.0/0"},
                                            {"dst": "192.168.0.5/16", "gw": "10.10.5.1"}]},
                         "ip6": {"ip": "fd10::5/64"}, "dns": FULL["dns"]}
    if version.has_check(v):
        assert runner("CHECK", {**conf, "prevResult": r.out}).ok
    assert runner("DEL", conf).ok
    assert runner("DEL", {**conf, "ipam": {"type": "static"}}).ok


@pytest.mark.parametrize("top, cni_args, want", [
    ({}, "IP=10.20.0.5/24,fd20::5/64;GATEWAY=10.20.0.1,fd20::1",
     [("10.10.0.5/24", "10.10.0.1"), ("fd10::5/64", None), ("10.20.0.5/24", "10.20.0.1"),
      ("fd20::5/64", "fd20::1")]),
    ({}, "GATEWAY=fd10::1", [("10.10.0.5/24", "10.10.0.1"), ("fd10::5/64", None)]),
    ({}, "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.20.0.5/24",
     [("10.10.0.5/24", "10.10.0.1"), ("fd10::5/64", None), ("10.20.0.5/24", None)]),
    ({"args": {"cni": {"ips": ["10.30.0.5/24"]}}}, "IP=10.20.0.5/24", [("10.30.0.5/24", None)]),
    ({"runtimeConfig": {"ips": ["10.40.0.5/24"]}, "args": {"cni": {"ips": ["10.30.0.5/24"]}}},
     "IP=10.20.0.5/24;GATEWAY=10.40.0.1", [("10.40.0.5/24", None)]),
], ids=["CNI_ARGS", "GATEWAY-only-for-CNI_ARGS", "IgnoreUnknown", "args-over-CNI_ARGS",
        "runtimeConfig-over-all"])
def test_precedence(top, cni_args, want, runner):
    conf = {**static(addresses=FULL["addresses"]), **top}
    r = runner("ADD", conf, cni_args=cni_args)
    assert r.ok, r.raw
    assert ips(r.out, "1.0.0") == want


def test_no_addresses_is_an_empty_result(runner):
    r = runner("ADD", static())
    assert r.ok and r.out == {"cniVersion": "1.0.0", "dns": {}}


@pytest.mark.parametrize("ipam, top, cni_args, code, words", [
    ({"addresses": [{"address": "10.10.0.5"}]}, {}, "", 7,
     "invalid config: ipam.addresses[0].address: '10.10.0.5' is not in CIDR notation"),
    ({"addresses": [{"gateway": "10.10.0.1"}]}, {}, "", 7,
     "invalid config: ipam.addresses[0].address: a CIDR address is required"),
    ({"addresses": [{"address": "10.10.0.5/24", "gateway": "x"}]}, {}, "", 7,
     "ipam.addresses[0].gateway"),
    ({"addresses": [{"address": "10.10.0.5/24", "gateway": "fd00::1"}]}, {}, "", 7,
     "ipam.addresses[0].gateway"),
    ({"addresses": "10.10.0.5/24"}, {}, "", 7, "invalid config: ipam.addresses: expected a list"),
    ({}, {"args": {"cni": {"ips": ["10.30.0.5"]}}}, "", 7, "invalid config: args.cni.ips[0]"),
    ({}, {"runtimeConfig": {"ips": ["x/24"]}}, "", 7, "invalid config: runtimeConfig.ips[0]"),
    ({}, {}, "IP=10.20.0.5", 4, "CNI_ARGS: IP: '10.20.0.5' is not in CIDR notation"),
    ({}, {}, "IP=10.20.0.5/24;GATEWAY=nope", 4, "CNI_ARGS: GATEWAY"),
    ({}, {}, "IP=10.20.0.5/24;OTHER=1", 4, "CNI_ARGS: unknown key 'OTHER'"),
    ({"routes": [{"dst": "10.0.0.5"}]}, {}, "", 7, "invalid config: ipam.routes[0].dst"),
    ({"dns": {"nameservers": "8.8.8.8"}}, {}, "", 7, "invalid config: ipam.dns.nameservers"),
    ({"addresses": [{"address": "10.10.0.5/24"}, {"address": "10.11.0.5/24"}]},
     {"cniVersion": "0.2.0"}, "", 7, "cniVersion 0.2.0 allows one address per family"),
])
def test_bad_input(ipam, top, cni_args, code, words, runner):
    conf = {**static(**ipam), **top}
    r = runner("ADD", conf, cni_args=cni_args)
    assert r.code == code, r.raw
    assert words in r.out["msg"], r.out["msg"]


def test_missing_ipam(runner):
    r = runner("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "x"})
    assert r.code == 7 and "ipam: missing" in r.out["msg"]


@pytest.mark.parametrize("prev_ips, ok, words", [
    ([{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}, {"address": "fd10::5/64"}], True, ""),
    ([{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}, {"address": "fd10:0::5/64",
                                                           "gateway": "fd10::1"}], True, ""),
    ([{"address": "10.10.0.5/24", "gateway": "10.10.0.9"}, {"address": "fd10::5/64"}], False,
     "failed to match gateway of 10.10.0.5/24"),
    ([{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}], False,
     "failed to find address fd10::5/64"),
    ([{"address": "10.10.0.5/16", "gateway": "10.10.0.1"}, {"address": "fd10::5/64"}], False,
     "failed to find address 10.10.0.5/24"),
])
def test_check_against_prev_result(prev_ips, ok, words, runner):
    conf = static(**FULL)
    conf["prevResult"] = {"cniVersion": "1.0.0", "ips": prev_ips}
    r = runner("CHECK", conf)
    assert r.ok is ok, r.raw
    if not ok:
        assert r.code == 999 and words in r.out["msg"]


def test_check_needs_prev_result(runner):
    r = runner("CHECK", static(**FULL))
    assert r.code == 7 and "prevResult" in r.out["msg"]


# --- against Go ----------------------------------------------------------------------------

DIFF = {
    "full": (FULL, {}, ""),
    "CNI_ARGS": ({"addresses": FULL["addresses"]}, {}, "IP=10.20.0.5/24,fd20::5/64;GATEWAY=10.20.0.1"),
    "args": ({}, {"args": {"cni": {"ips": ["10.30.0.5/24", "fd30::5/64"]}}}, "IP=10.20.0.5/24"),
    "runtimeConfig": ({"addresses": FULL["addresses"]},
                      {"runtimeConfig": {"ips": ["10.40.0.5/24"]}}, ""),
    "empty": ({}, {}, ""),
    "routes keep host bits": ({"addresses": [{"address": "10.0.0.2/8"}],
                               "routes": [{"dst": "10.0.0.5/8", "gw": "10.0.0.1"}]}, {}, ""),
}


@pytest.mark.oracle
@pytest.mark.parametrize("v", GO_VERSIONS)
def test_same_results_as_go(v, plugin_dir):
    ours = f"{plugin_dir}/static"
    for name, (ipam, top, cni_args) in DIFF.items():
        if v == "0.2.0" and name in ("CNI_ARGS", "empty"):
            continue
        conf = {**static(v, **ipam), **top}
        extra = {"CNI_ARGS": cni_args} if cni_args else None
        go_rc, go_out = finish(spawn(GO, "ADD", conf, "c", extra=extra))
        rc, out = finish(spawn(ours, "ADD", conf, "c", extra=extra))
        assert (rc, out) == (go_rc, go_out), name
