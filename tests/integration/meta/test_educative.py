"""educative, the seed's debug plugin: chained after loopback it logs exactly the seed's
fields and hands the previous result on unchanged (after conversion to the config's version)."""

from __future__ import annotations

import pytest

from cni_plugins import version
from cni_plugins.types import convert


def seed_block(cmd: str, cid: str, netns: str, ifname: str, args: str, path: str,
               stdin: str) -> str:
    return (f"\nCNI Command: {cmd}\nContainerID: {cid}\nNetns: {netns}\nIfName: {ifname}\n"
            f"Args: {args}\nPath: {path}\nStdinData: {stdin}\n----------------------\n")


@pytest.mark.root
@pytest.mark.parametrize("v", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_chained_after_loopback(v, netns, run, tmp_path, plugin_dir):
    import json

    log = tmp_path / "cni_output.log"
    lo = run("loopback", "ADD", {"cniVersion": v, "name": "cbr0", "type": "loopback"},
             netns=netns.path)
    assert lo.ok, lo.raw
    conf = {"cniOutput": str(log), "cniVersion": v, "name": "cbr0", "prevResult": lo.out,
            "type": "educative"}
    stdin = json.dumps(conf)
    cni_args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx"
    r = run("educative", "ADD", stdin, netns=netns.path, cni_args=cni_args, container_id="c35d9f")
    assert r.ok, r.raw
    assert r.out == convert.dump(convert.parse(v, lo.out), v) == lo.out
    assert log.read_text() == seed_block("ADD", "c35d9f", netns.path, "eth0", cni_args,
                                         plugin_dir, stdin)
    check = run("educative", "CHECK", stdin, netns=netns.path, container_id="c35d9f")
    assert check.ok == version.has_check(v)
    assert run("educative", "DEL", stdin, netns=netns.path, container_id="c35d9f").raw == ""
    text = log.read_text()
    assert text.count("CNI Command: ") == (3 if version.has_check(v) else 2)
    assert text.endswith(seed_block("DEL", "c35d9f", netns.path, "eth0", "", plugin_dir, stdin))


@pytest.mark.parametrize("v", version.ALL)
def test_prev_result_converted_to_config_version(v, run_inproc):
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "mtu": 1400}],
            "ips": [{"address": "10.1.0.4/24", "gateway": "10.1.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}], "dns": {}}
    r = run_inproc("educative", "ADD", {"cniVersion": v, "name": "n", "type": "educative",
                                        "prevResult": prev}, netns="/tmp")
    assert r.ok, r.raw
    assert r.out == convert.dump(convert.parse("1.1.0", prev), v)
    assert r.out["cniVersion"] == v


def test_no_prev_result_gives_empty_result(run_inproc):
    r = run_inproc("educative", "ADD", {"cniVersion": "1.0.0", "name": "n", "type": "educative"},
                   netns="/tmp")
    assert r.out == {"cniVersion": "1.0.0", "dns": {}}


def test_no_cni_output_logs_nothing(run_inproc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_inproc("educative", "DEL", {"cniVersion": "1.0.0", "name": "n", "type": "educative"})
    assert r.ok and list(tmp_path.iterdir()) == []


def test_unwritable_log_is_a_cni_error(run, tmp_path):
    r = run("educative", "ADD", {"cniVersion": "1.0.0", "name": "n", "type": "educative",
                                 "cniOutput": str(tmp_path / "no" / "such" / "dir.log")},
            netns="/tmp")
    assert r.code == 5 and "cniOutput" in r.out["msg"]
    assert "Traceback" not in r.raw
