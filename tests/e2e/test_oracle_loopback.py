"""Differential: our loopback against Go's (/usr/lib/cni/loopback) on the same inputs.

Known, deliberate differences (also listed in the README):
- Go's loopback builds its result in the 1.0.0 shape and prints it without converting it:
  for 0.3.x/0.4.0 its ips lack the "version" the spec requires there, and for 0.1.0/0.2.0 it
  prints interfaces/ips labelled "0.2.0". Ours prints each version's own shape: the spec's
  conversion of Go's result.
- 1.1.0: the Debian Go plugins (1.1.1) stop at 1.0.0; ours speak 1.1.0.
- a missing or non-netns CNI_NETNS: Go answers 999, ours the more specific 8 (invalid netns).
"""

from __future__ import annotations

import pytest

from cni_plugins import version
from cni_plugins.types import convert, v100

pytestmark = [pytest.mark.root, pytest.mark.oracle]

GO_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")


def conf(v: str) -> dict:
    return {"cniVersion": v, "name": "oracle", "type": "loopback"}


def lo_flags(ns) -> list[str]:
    return ns.ip_json("link", "show", "lo")[0]["flags"]


@pytest.mark.parametrize("v", GO_VERSIONS)
def test_same_result_and_state(v, make_netns, run, run_go):
    ours_ns, go_ns = make_netns(), make_netns()
    ours = run("loopback", "ADD", conf(v), netns=ours_ns.path)
    go = run_go("loopback", "ADD", conf(v), netns=go_ns.path)
    assert ours.ok and go.ok, (ours.raw, go.raw)
    go.out["interfaces"][0]["sandbox"] = ours_ns.path
    assert ours.out == convert.dump(v100.decode(go.out), v)
    assert lo_flags(ours_ns) == lo_flags(go_ns)
    assert run("loopback", "DEL", conf(v), netns=ours_ns.path).ok
    assert run_go("loopback", "DEL", conf(v), netns=go_ns.path).ok
    assert lo_flags(ours_ns) == lo_flags(go_ns)
    if version.has_check(v):
        assert run("loopback", "CHECK", conf(v), netns=ours_ns.path).rc == \
            run_go("loopback", "CHECK", conf(v), netns=go_ns.path).rc == 1


@pytest.mark.parametrize("v", ["0.1.0", "0.2.0"])
def test_old_versions_are_spec_conversions_of_go(v, make_netns, run, run_go):
    ours_ns, go_ns = make_netns(), make_netns()
    ours = run("loopback", "ADD", conf(v), netns=ours_ns.path)
    go = run_go("loopback", "ADD", conf(v), netns=go_ns.path)
    assert ours.ok and go.ok
    assert ours.out == convert.dump(v100.decode(go.out), v)


def test_versions_are_a_superset(run, run_go):
    ours = run("loopback", "VERSION", b"")
    go = run_go("loopback", "VERSION", b"")
    assert set(go.out["supportedVersions"]) < set(ours.out["supportedVersions"])
    assert ours.out["cniVersion"] == version.CURRENT


BAD = [
    # (name, verb, stdin, env overrides)
    ("missing env", "ADD", conf("1.0.0"), {"CNI_IFNAME": None, "CNI_PATH": None}),
    ("bad json", "ADD", b"{not json", {}),
    ("missing name", "ADD", {"cniVersion": "1.0.0", "type": "loopback"}, {}),
    ("bad name", "ADD", {"cniVersion": "1.0.0", "name": "a/b", "type": "loopback"}, {}),
    ("bad version", "ADD", conf("9.9.9"), {}),
    ("check on 0.3.1", "CHECK", conf("0.3.1"), {}),
    ("bad container id", "ADD", conf("1.0.0"), {"CNI_CONTAINERID": "a/b"}),
    ("bad ifname", "ADD", conf("1.0.0"), {"CNI_IFNAME": "x" * 16}),
    ("unknown command", "FOO", conf("1.0.0"), {}),
]


@pytest.mark.parametrize("name,verb,stdin,env", BAD, ids=[b[0] for b in BAD])
def test_same_error_codes(name, verb, stdin, env, netns, run, run_go):
    ours = run("loopback", verb, stdin, netns=netns.path, env=env)
    go = run_go("loopback", verb, stdin, netns=netns.path, env=env)
    assert ours.rc != 0 and go.rc != 0
    assert ours.code == go.code, (ours.out, go.out)
    if name != "bad json":      # the JSON decoder's own words differ
        assert ours.out["msg"] == go.out["msg"]


@pytest.mark.parametrize("netns_path", ["/run/netns/cnitest-absent", "/etc/hostname"])
def test_more_specific_code_for_bad_netns(netns_path, run, run_go):
    ours = run("loopback", "ADD", conf("1.0.0"), netns=netns_path)
    go = run_go("loopback", "ADD", conf("1.0.0"), netns=netns_path)
    assert go.code == 999 and ours.code == 8
