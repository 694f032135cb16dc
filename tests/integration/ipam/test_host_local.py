"""host-local through its symlink (as a runtime execs it) and in process (as our own main
plugins delegate to it), per spec version; the store is read back from a tmp dataDir.

Concurrency, crash and Go-comparison tests are in test_host_local_stress.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cni_plugins import version

from .helpers import NET, NETNS, VERSIONS, files, host_local, ips, reservations, v4

MODES = ("exec", "inproc")


@pytest.fixture(params=MODES)
def runner(request, run, run_inproc):
    r = run if request.param == "exec" else run_inproc
    return lambda verb, conf, **kw: r("host-local", verb, conf, netns=NETNS, **kw)


@pytest.fixture
def inproc(run_inproc):
    return lambda verb, conf, **kw: run_inproc("host-local", verb, conf, netns=NETNS, **kw)


@pytest.fixture
def resolv(tmp_path: Path) -> str:
    p = tmp_path / "resolv.conf"
    p.write_text("# comment\nnameserver 1.1.1.1\n; other comment\nnameserver 8.8.8.8\n"
                 "domain example.com\nsearch a.example b.example\nsearch c.example\n"
                 "options ndots:5 rotate\nsortlist 10.0.0.0\nnameserver\n"
                 "   nameserver   9.9.9.9   \n")
    return str(p)


DNS = {"nameservers": ["1.1.1.1", "8.8.8.8", "9.9.9.9"], "domain": "example.com",
       "search": ["a.example", "b.example", "c.example"], "options": ["ndots:5", "rotate"]}


# --- the whole life of one attachment, per version -----------------------------------------

@pytest.mark.parametrize("v", VERSIONS)
def test_add_check_del_dual_stack(v, runner, tmp_path, resolv):
    conf = host_local(tmp_path, [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/120"}]], v,
                      routes=[{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
                      resolvConf=resolv)
    r = runner("ADD", conf, container_id="ctr1")
    assert r.ok, r.raw
    if not version.at_least(v, "0.3.0"):
        assert r.out == {
            "cniVersion": v,
            "ip4": {"ip": "10.1.2.2/24", "gateway": "10.1.2.1", "routes": [{"dst": "0.0.0.0/0"}]},
            "ip6": {"ip": "fd00::2/120", "gateway": "fd00::1",
                    "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
            "dns": DNS}
    else:
        fam = {} if version.at_least(v, "1.0.0") else None
        want = [{"address": "10.1.2.2/24", "gateway": "10.1.2.1"},
                {"address": "fd00::2/120", "gateway": "fd00::1"}]
        if fam is None:
            want = [{"version": "4", **want[0]}, {"version": "6", **want[1]}]
        assert r.out == {"cniVersion": v, "ips": want,
                         "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
                         "dns": DNS}
    assert files(tmp_path) == {"10.1.2.2": b"ctr1\r\neth0", "fd00::2": b"ctr1\r\neth0",
                               "last_reserved_ip.0": b"10.1.2.2",
                               "last_reserved_ip.1": b"fd00::2", "lock": b""}
    if version.has_check(v):
        assert runner("CHECK", conf, container_id="ctr1").ok
        assert runner("CHECK", conf, container_id="ctr2").code == 3
    if version.has_gc(v):
        assert runner("STATUS", conf).ok
    assert runner("DEL", conf, container_id="ctr1").ok
    assert files(tmp_path) == {"last_reserved_ip.0": b"10.1.2.2",
                               "last_reserved_ip.1": b"fd00::2", "lock": b""}
    assert runner("DEL", conf, container_id="ctr1").ok          # nothing left: still fine
    if version.has_check(v):
        assert runner("CHECK", conf, container_id="ctr1").code == 3


# --- every key and its default ---------------------------------------------------------------

def _legacy(**kw):
    return {"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.10", "gateway": "10.9.0.254", **kw}


# name: (ipam keys, top-level keys, CNI_ARGS, expected (address, gateway), single family)
KEYS = {
    "defaults": ({"ranges": v4()}, {}, "", [("10.1.2.2/24", "10.1.2.1")]),
    "rangeStart-rangeEnd-gateway": (
        {"ranges": [[{"subnet": "10.1.0.0/16", "rangeStart": "10.1.1.20",
                      "rangeEnd": "10.1.3.50", "gateway": "10.1.0.254"}]]}, {}, "",
        [("10.1.1.20/16", "10.1.0.254")]),
    "gateway-at-rangeStart-is-skipped": (
        {"ranges": v4(rangeStart="10.1.2.10", gateway="10.1.2.10")}, {}, "",
        [("10.1.2.11/24", "10.1.2.10")]),
    "ipv6-defaults": ({"ranges": [[{"subnet": "fd00:1::/64"}]]}, {}, "",
                      [("fd00:1::2/64", "fd00:1::1")]),
    "several-ranges-in-a-set": (
        {"ranges": [[{"subnet": "10.1.0.0/30"}, {"subnet": "10.2.0.0/24"}]]}, {}, "",
        [("10.1.0.2/30", "10.1.0.1")]),
    "legacy-top-level-range": ({**_legacy(rangeEnd="10.9.0.20")}, {}, "",
                               [("10.9.0.10/24", "10.9.0.254")]),
    "legacy-then-ranges": ({**_legacy(), "ranges": [[{"subnet": "fd00::/120"}]]}, {}, "",
                           [("10.9.0.10/24", "10.9.0.254"), ("fd00::2/120", "fd00::1")]),
    "keys-match-case-insensitively": (
        {"RANGES": [[{"Subnet": "10.1.2.0/24", "RANGESTART": "10.1.2.40"}]]}, {}, "",
        [("10.1.2.40/24", "10.1.2.1")]),
    "runtimeConfig.ipRanges-come-first": (
        {"ranges": v4()}, {"runtimeConfig": {"ipRanges": [[{"subnet": "fd07::/64"}]]}}, "",
        [("fd07::2/64", "fd07::1"), ("10.1.2.2/24", "10.1.2.1")]),
    "CNI_ARGS-IP": ({"ranges": v4()}, {}, "IP=10.1.2.77", [("10.1.2.77/24", "10.1.2.1")]),
    "CNI_ARGS-IgnoreUnknown": ({"ranges": v4()}, {},
                               "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.2.78",
                               [("10.1.2.78/24", "10.1.2.1")]),
    "args.cni.ips": ({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/120"}]]},
                     {"args": {"cni": {"ips": ["fd00::50", "10.1.2.50"]}}}, "",
                     [("10.1.2.50/24", "10.1.2.1"), ("fd00::50/120", "fd00::1")]),
    "runtimeConfig.ips-as-cidr": ({"ranges": v4()}, {"runtimeConfig": {"ips": ["10.1.2.60/24"]}},
                                  "", [("10.1.2.60/24", "10.1.2.1")]),
    "requests-from-every-source": (
        {"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/120"}],
                    [{"subnet": "10.3.0.0/24"}]]},
        {"args": {"cni": {"ips": ["fd00::9"]}}, "runtimeConfig": {"ips": ["10.3.0.9"]}},
        "IP=10.1.2.9",
        [("10.1.2.9/24", "10.1.2.1"), ("fd00::9/120", "fd00::1"), ("10.3.0.9/24", "10.3.0.1")]),
}
SINGLE_PER_FAMILY = {"defaults", "rangeStart-rangeEnd-gateway", "gateway-at-rangeStart-is-skipped",
                     "ipv6-defaults", "several-ranges-in-a-set", "legacy-top-level-range",
                     "legacy-then-ranges", "keys-match-case-insensitively",
                     "runtimeConfig.ipRanges-come-first", "CNI_ARGS-IP", "CNI_ARGS-IgnoreUnknown",
                     "args.cni.ips", "runtimeConfig.ips-as-cidr"}


@pytest.mark.parametrize("v", VERSIONS)
@pytest.mark.parametrize("case", sorted(KEYS))
def test_config_key(case, v, runner, tmp_path):
    ipam, top, cni_args, want = KEYS[case]
    if v == "0.2.0" and case not in SINGLE_PER_FAMILY:
        pytest.skip("0.2.0 results hold one address per family")
    conf = {**host_local(tmp_path, None, v), **top}
    conf["ipam"].update(ipam)
    if "RANGES" in ipam:
        conf["ipam"]["DATADIR"] = conf["ipam"].pop("dataDir")
    r = runner("ADD", conf, container_id="ctr1", cni_args=cni_args)
    assert r.ok, r.raw
    got = ips(r.out, v)
    assert got == want if version.at_least(v, "0.3.0") else sorted(got) == sorted(want)
    assert sorted(reservations(tmp_path)) == sorted(a.split("/")[0] for a, _ in want)
    assert runner("DEL", conf, container_id="ctr1").ok
    assert reservations(tmp_path) == {}


def test_routes_keep_every_field_and_resolvconf_empty_file(inproc, tmp_path):
    (tmp_path / "empty").write_text("")
    routes = [{"dst": "0.0.0.0/0", "gw": "10.1.2.254"},
              {"dst": "192.168.7.5/24", "mtu": 1400, "advmss": 1360, "priority": 5,
               "table": 100, "scope": 0}]
    conf = host_local(tmp_path, v4(), "1.1.0", routes=routes, resolvConf=str(tmp_path / "empty"))
    r = inproc("ADD", conf, container_id="c")
    assert r.ok, r.raw
    assert r.out["routes"] == routes            # dst keeps its host bits, as Go prints it
    assert r.out["dns"] == {}


def test_data_dir_defaults_to_var_lib_cni_networks():
    from cni_plugins.ipam import host_local as hl
    from cni_plugins.skel import CmdArgs

    a = CmdArgs(command="ADD")
    a.conf = {"name": "n", "ipam": {"type": "host-local", "ranges": v4()}}
    assert hl.load_conf(a).data_dir == "/var/lib/cni/networks"
    a.conf["ipam"]["dataDir"] = ""
    assert hl.load_conf(a).data_dir == "/var/lib/cni/networks"


# --- allocation order, wrap-around, exhaustion -----------------------------------------------

def add_many(inproc, conf, cids):
    out = []
    for cid in cids:
        r = inproc("ADD", conf, container_id=cid)
        assert r.ok, r.raw
        out.append(ips(r.out, conf["cniVersion"])[0][0])
    return out


def test_round_robin_order_and_wrap(inproc, tmp_path):
    conf = host_local(tmp_path, v4("10.1.2.0/29"))
    assert add_many(inproc, conf, ["c0", "c1", "c2"]) == ["10.1.2.2/29", "10.1.2.3/29",
                                                          "10.1.2.4/29"]
    assert inproc("DEL", conf, container_id="c0").ok
    # a freed address is not handed out again until the range has been gone through
    assert add_many(inproc, conf, ["c3", "c4"]) == ["10.1.2.5/29", "10.1.2.6/29"]
    assert add_many(inproc, conf, ["c5"]) == ["10.1.2.2/29"]          # wrapped
    r = inproc("ADD", conf, container_id="c6")
    assert r.code == 999 and "ipam.ranges[0]" in r.out["msg"] and "no free address" in r.out["msg"]


def test_wrap_across_the_ranges_of_a_set(inproc, tmp_path):
    conf = host_local(tmp_path, [[{"subnet": "10.1.0.0/30"}, {"subnet": "10.2.0.0/30"},
                                  {"subnet": "10.3.0.0/29", "rangeEnd": "10.3.0.3"}]])
    assert add_many(inproc, conf, ["a", "b", "c", "d"]) == [
        "10.1.0.2/30", "10.2.0.2/30", "10.3.0.2/29", "10.3.0.3/29"]
    assert inproc("DEL", conf, container_id="a").ok
    assert add_many(inproc, conf, ["e"]) == ["10.1.0.2/30"]
    assert inproc("ADD", conf, container_id="f").code == 999


@pytest.mark.parametrize("mode", MODES)
def test_slash_30_gives_exactly_one_address(mode, run, run_inproc, tmp_path):
    r_ = run if mode == "exec" else run_inproc
    conf = host_local(tmp_path, v4("10.1.2.0/30"))
    r = r_("host-local", "ADD", conf, netns=NETNS, container_id="c1")
    assert r.ok and ips(r.out, "1.0.0") == [("10.1.2.2/30", "10.1.2.1")]
    before = files(tmp_path)
    r = r_("host-local", "ADD", conf, netns=NETNS, container_id="c2")
    assert r.code == 999
    assert r.out["msg"] == ("failed to allocate from ipam.ranges[0]: no free address left in "
                            "range set 10.1.2.1-10.1.2.2")
    assert files(tmp_path) == before


def test_ipv6_exhaustion_includes_the_last_address(inproc, tmp_path):
    conf = host_local(tmp_path, [[{"subnet": "fd00::/126"}]])
    assert add_many(inproc, conf, ["a", "b"]) == ["fd00::2/126", "fd00::3/126"]
    assert inproc("ADD", conf, container_id="c").code == 999


@pytest.mark.parametrize("content", [b"10.99.0.1", b"garbage", b"", b"fd00::1"])
def test_stale_last_reserved_restarts_from_range_start(content, inproc, tmp_path):
    (tmp_path / NET).mkdir()
    (tmp_path / NET / "last_reserved_ip.0").write_bytes(content)
    conf = host_local(tmp_path, v4())
    assert add_many(inproc, conf, ["a"]) == ["10.1.2.2/24"]


def test_round_robin_continues_from_last_reserved(inproc, tmp_path):
    (tmp_path / NET).mkdir()
    (tmp_path / NET / "last_reserved_ip.0").write_bytes(b"10.1.2.100")
    assert add_many(inproc, host_local(tmp_path, v4()), ["a"]) == ["10.1.2.101/24"]


# --- one address per (container, ifname) ------------------------------------------------------

def test_duplicate_add_is_refused_and_keeps_the_first(inproc, tmp_path):
    conf = host_local(tmp_path, [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/120"}]])
    assert inproc("ADD", conf, container_id="c1").ok
    before = reservations(tmp_path)
    r = inproc("ADD", conf, container_id="c1")
    assert r.code == 999 and "duplicate allocation" in r.out["msg"]
    assert "10.1.2.2" in r.out["msg"] and "ipam.ranges[0]" in r.out["msg"]
    assert reservations(tmp_path) == before
    assert inproc("ADD", conf, container_id="c1", ifname="eth1").ok    # another interface


def test_failed_add_releases_only_what_it_reserved(inproc, tmp_path):
    """The second set is full: the first set's new address is given back. Go would also
    release the container's addresses from an earlier ADD; we keep them."""
    conf = host_local(tmp_path, [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.7.0.0/30"}]])
    assert inproc("ADD", conf, container_id="holder").ok
    before = reservations(tmp_path)
    r = inproc("ADD", conf, container_id="late")
    assert r.code == 999 and "ipam.ranges[1]" in r.out["msg"]
    assert reservations(tmp_path) == before
    # the same container asking again with an address of its own in set 0
    r = inproc("ADD", conf, container_id="holder", cni_args="IP=10.1.2.50")
    assert not r.ok
    assert reservations(tmp_path) == before


def test_legacy_reservation_counts_for_duplicates_and_del(inproc, tmp_path):
    conf = host_local(tmp_path, v4())
    (tmp_path / NET).mkdir()
    (tmp_path / NET / "10.1.2.9").write_bytes(b"old-ctr")
    assert "duplicate" in inproc("ADD", conf, container_id="old-ctr").out["msg"]
    assert inproc("DEL", conf, container_id="old-ctr", ifname="whatever").ok
    assert reservations(tmp_path) == {}


def test_del_releases_by_container_and_ifname(inproc, tmp_path):
    conf = host_local(tmp_path, v4())
    for cid, ifn in (("a", "eth0"), ("a", "eth1"), ("b", "eth0")):
        assert inproc("ADD", conf, container_id=cid, ifname=ifn).ok
    assert inproc("DEL", conf, container_id="a", ifname="eth1").ok
    assert sorted(reservations(tmp_path).values()) == [b"a\r\neth0", b"b\r\neth0"]
    assert inproc("DEL", conf, container_id="a", ifname="eth9").ok     # holds nothing
    assert len(reservations(tmp_path)) == 2


def test_del_creates_nothing_and_tolerates_a_broken_range(inproc, tmp_path):
    conf = host_local(tmp_path / "never", v4())
    assert inproc("DEL", conf, container_id="a").ok
    assert not (tmp_path / "never").exists()
    good = host_local(tmp_path, v4())
    assert inproc("ADD", good, container_id="a").ok
    broken = host_local(tmp_path, v4("10.1.2.5/24"))       # host bits: ADD would refuse it
    assert inproc("DEL", broken, container_id="a").ok
    assert reservations(tmp_path) == {}


# --- requested addresses -------------------------------------------------------------------

DUAL = [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00::/120"}]]


@pytest.mark.parametrize("top, cni_args, code, words", [
    ({}, "IP=10.1.2.1", 4, "CNI_ARGS: IP: 10.1.2.1 is the gateway of ipam.ranges[0][0]"),
    ({}, "IP=10.5.0.1", 4, "CNI_ARGS: IP: 10.5.0.1 is not in any range"),
    ({}, "IP=bogus", 4, "CNI_ARGS: IP: 'bogus' is not an IP address"),
    ({}, "IP=10.1.2.5;FOO=1", 4, "CNI_ARGS: unknown key 'FOO'"),
    ({"args": {"cni": {"ips": ["10.1.2.5", "10.1.2.6"]}}}, "", 7,
     "invalid config: args.cni.ips[1]: 10.1.2.6 and 10.1.2.5 are both in ipam.ranges[0]"),
    ({"args": {"cni": {"ips": ["10.1.2.300"]}}}, "", 7, "invalid config: args.cni.ips[0]: "),
    ({"runtimeConfig": {"ips": ["fd00::1/120"]}}, "", 7,
     "invalid config: runtimeConfig.ips[0]: fd00::1 is the gateway of ipam.ranges[1][0]"),
    ({"runtimeConfig": {"ips": [5]}}, "", 7, "invalid config: runtimeConfig.ips[0]: expected a string"),
])
def test_bad_requests_write_nothing(top, cni_args, code, words, runner, tmp_path):
    conf = {**host_local(tmp_path, DUAL), **top}
    r = runner("ADD", conf, container_id="c", cni_args=cni_args)
    assert r.code == code, r.raw
    assert words in r.out["msg"], r.out["msg"]
    assert not (tmp_path / NET).exists()


def test_requested_address_already_taken(runner, tmp_path):
    conf = host_local(tmp_path, DUAL)
    assert runner("ADD", conf, container_id="a", cni_args="IP=10.1.2.77").ok
    before = files(tmp_path)
    r = runner("ADD", conf, container_id="b", cni_args="IP=10.1.2.77")
    assert r.code == 999
    assert r.out["msg"] == ("failed to allocate requested address 10.1.2.77 (CNI_ARGS IP): "
                            "already reserved in ipam.ranges[0]")
    assert files(tmp_path) == before


def test_requested_address_moves_round_robin_on(inproc, tmp_path):
    conf = host_local(tmp_path, v4())
    assert inproc("ADD", conf, container_id="a", cni_args="IP=10.1.2.200").ok
    assert add_many(inproc, conf, ["b"]) == ["10.1.2.201/24"]


# --- CHECK ---------------------------------------------------------------------------------

def test_check_wants_an_address_in_every_set(inproc, tmp_path):
    one = host_local(tmp_path, v4(), "1.1.0")
    two = host_local(tmp_path, DUAL, "1.1.0")
    assert inproc("ADD", one, container_id="a").ok
    assert inproc("CHECK", one, container_id="a").ok
    r = inproc("CHECK", two, container_id="a")
    assert r.code == 999 and "ipam.ranges[1]" in r.out["msg"]
    assert inproc("CHECK", one, container_id="a", ifname="eth1").code == 3


# --- GC ------------------------------------------------------------------------------------

def gc_conf(data_dir, valid):
    conf = host_local(data_dir, DUAL, "1.1.0")
    if valid is not None:
        conf["cni.dev/valid-attachments"] = [{"containerID": c, "ifname": i} for c, i in valid]
    return conf


def test_gc_releases_what_is_not_valid(runner, tmp_path):
    conf = host_local(tmp_path, DUAL, "1.1.0")
    for cid, ifn in (("keep", "eth0"), ("keep", "eth1"), ("gone", "eth0")):
        assert runner("ADD", conf, container_id=cid, ifname=ifn).ok
    (tmp_path / NET / "10.1.2.99").write_bytes(b"legacy-keep")
    (tmp_path / NET / "10.1.2.98").write_bytes(b"legacy-gone")
    lasts = {k: v for k, v in files(tmp_path).items() if k.startswith("last_")}
    r = runner("GC", gc_conf(tmp_path, [("keep", "eth0"), ("legacy-keep", "eth5")]))
    assert r.ok, r.raw
    left = reservations(tmp_path)
    assert sorted(set(left.values())) == [b"keep\r\neth0", b"legacy-keep"]
    assert len(left) == 3                                      # keep/eth0 v4 + v6, legacy
    assert {k: v for k, v in files(tmp_path).items() if k.startswith("last_")} == lasts
    assert "lock" in files(tmp_path)


def test_gc_with_empty_list_releases_all_and_absent_list_nothing(inproc, tmp_path):
    conf = host_local(tmp_path, DUAL, "1.1.0")
    assert inproc("ADD", conf, container_id="a").ok
    assert inproc("GC", gc_conf(tmp_path, None)).ok
    assert len(reservations(tmp_path)) == 2
    assert inproc("GC", gc_conf(tmp_path, [])).ok
    assert reservations(tmp_path) == {}
    assert sorted(files(tmp_path)) == ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    assert inproc("ADD", conf, container_id="b").ok            # the store still works


def test_gc_on_a_missing_store_creates_nothing(inproc, tmp_path):
    assert inproc("GC", gc_conf(tmp_path / "none", [])).ok
    assert not (tmp_path / "none").exists()


def test_gc_and_status_need_1_1_0(inproc, tmp_path):
    for verb in ("GC", "STATUS"):
        assert inproc(verb, host_local(tmp_path, v4(), "1.0.0")).code == 1


# --- STATUS --------------------------------------------------------------------------------

def test_status_reports_an_exhausted_range_set(runner, tmp_path):
    conf = host_local(tmp_path, [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.7.0.0/30"}]], "1.1.0")
    assert runner("STATUS", conf).ok
    assert not (tmp_path / NET).exists()                      # STATUS writes nothing
    assert runner("ADD", conf, container_id="a").ok
    r = runner("STATUS", conf)
    assert r.code == 50
    assert r.out["msg"] == ("failed to find a free address in ipam.ranges[1]: range set "
                            "10.7.0.1-10.7.0.2 is exhausted")
    assert runner("DEL", conf, container_id="a").ok
    assert runner("STATUS", conf).ok


def test_status_ignores_the_gateway_and_foreign_files(inproc, tmp_path):
    conf = host_local(tmp_path, v4("10.7.0.0/30"), "1.1.0")
    (tmp_path / NET).mkdir()
    (tmp_path / NET / "10.7.0.1").write_bytes(b"gateway?")     # the gateway: never given out
    (tmp_path / NET / "10.9.9.9").write_bytes(b"elsewhere")
    assert inproc("STATUS", conf).ok


def test_status_on_unusable_data_dir_and_bad_config(inproc, tmp_path):
    (tmp_path / "file").write_text("")
    assert inproc("STATUS", host_local(tmp_path / "file", v4(), "1.1.0")).code == 50
    assert inproc("STATUS", host_local(tmp_path, v4("10.0.0.1/24"), "1.1.0")).code == 7


# --- bad input: the right code, the field named, nothing written -----------------------------

def _unreadable(tmp_path):
    return str(tmp_path / "no-such-resolv.conf")


BAD = {
    "malformed subnet": (lambda t: {"ranges": v4("10.1.2.0")}, 7, "ipam.ranges[0][0].subnet"),
    "subnet not a string": (lambda t: {"ranges": [[{"subnet": 5}]]}, 7,
                            "ipam.ranges[0][0].subnet: expected a string"),
    "host bits": (lambda t: {"ranges": v4("10.1.2.5/24")}, 7, "ipam.ranges[0][0].subnet: "
                  "network 10.1.2.5/24 has host bits set"),
    "too small": (lambda t: {"ranges": v4("10.1.2.0/31")}, 7, "too small to allocate from"),
    "rangeStart outside": (lambda t: {"ranges": v4(rangeStart="10.1.3.1")}, 7,
                           "ipam.ranges[0][0].rangeStart"),
    "rangeEnd before rangeStart": (lambda t: {"ranges": v4(rangeStart="10.1.2.9", rangeEnd="10.1.2.8")},
                                   7, "ipam.ranges[0][0].rangeEnd"),
    "gateway malformed": (lambda t: {"ranges": v4(gateway="10.1.2")}, 7, "ipam.ranges[0][0].gateway"),
    "overlapping sets": (lambda t: {"ranges": [[{"subnet": "10.1.2.0/24"}],
                                               [{"subnet": "10.1.2.128/25"}]]},
                         7, "ipam.ranges[1]: range set overlaps ipam.ranges[0]"),
    "overlapping ranges in a set": (lambda t: {"ranges": [[{"subnet": "10.1.0.0/16"},
                                                           {"subnet": "10.1.2.0/24"}]]},
                                    7, "ipam.ranges[0][1]: range"),
    "legacy overlaps ranges": (lambda t: {"subnet": "10.1.0.0/16", "ranges": v4()}, 7,
                               "ipam.ranges[0]: range set overlaps ipam"),
    "mixed families in a set": (lambda t: {"ranges": [[{"subnet": "10.1.2.0/24"},
                                                       {"subnet": "fd00::/64"}]]},
                                7, "mixed address families"),
    "empty set": (lambda t: {"ranges": [[]]}, 7, "ipam.ranges[0]: empty range set"),
    "set not a list": (lambda t: {"ranges": [{"subnet": "10.1.2.0/24"}]}, 7, "ipam.ranges[0]"),
    "no ranges": (lambda t: {}, 7, "ipam.ranges: no IP ranges specified"),
    "route without dst": (lambda t: {"ranges": v4(), "routes": [{"gw": "10.1.2.1"}]}, 7,
                          "ipam.routes[0].dst"),
    "route gw malformed": (lambda t: {"ranges": v4(), "routes": [{"dst": "0.0.0.0/0", "gw": "x"}]},
                           7, "ipam.routes[0].gw"),
    "unreadable resolvConf": (lambda t: {"ranges": v4(), "resolvConf": _unreadable(t)}, 5,
                              "failed to read ipam.resolvConf"),
    "dataDir is a file": (lambda t: {"ranges": v4(), "dataDir": str(t / "afile")}, 5,
                          "ipam.dataDir"),
    "dataDir not a string": (lambda t: {"ranges": v4(), "dataDir": ["x"]}, 7,
                             "ipam.dataDir: expected a string, got a list"),
    "dataDir relative": (lambda t: {"ranges": v4(), "dataDir": "data"}, 7,
                         "ipam.dataDir: 'data' is not an absolute path"),
    "resolvConf relative": (lambda t: {"ranges": v4(), "resolvConf": "resolv.conf"}, 7,
                            "ipam.resolvConf: 'resolv.conf' is not an absolute path"),
    "ipam null keys": (lambda t: {"ranges": None, "routes": None}, 7,
                       "ipam.ranges: no IP ranges specified"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case, runner, tmp_path):
    make, code, words = BAD[case]
    (tmp_path / "afile").write_text("")
    data = tmp_path / "data"
    conf = host_local(data, None)
    conf["ipam"].update(make(tmp_path))
    r = runner("ADD", conf, container_id="c")
    assert r.code == code, r.raw
    assert words in r.out["msg"], r.out["msg"]
    assert not data.exists()
    assert sorted(os.listdir(tmp_path)) == ["afile"]


@pytest.mark.parametrize("top, code, words", [
    ({"ipam": None}, 7, "ipam: missing"),
    ({"ipam": "x"}, 7, "ipam: expected an object"),
    ({"cniVersion": "0.2.0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}],
                                                                      [{"subnet": "10.2.0.0/24"}]]}},
     7, "cniVersion 0.2.0 allows one address per family"),
    ({"name": "../escape"}, 7, "invalid characters found in network name"),
])
def test_bad_top_level(top, code, words, runner, tmp_path):
    conf = {**host_local(tmp_path / "data", v4()), **top}
    if isinstance(conf.get("ipam"), dict):
        conf["ipam"].setdefault("dataDir", str(tmp_path / "data"))
    r = runner("ADD", conf, container_id="c")
    assert r.code == code, r.raw
    assert words in r.out["msg"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("cid", ["../escape", "a/b", "..", "x\n"])
def test_container_id_cannot_reach_the_file_system(cid, runner, tmp_path):
    r = runner("ADD", host_local(tmp_path / "data", v4()), container_id=cid)
    assert r.code == 4
    assert not (tmp_path / "data").exists() and not (tmp_path / "escape").exists()
