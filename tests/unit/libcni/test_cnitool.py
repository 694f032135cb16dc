"""cnitool through click's CliRunner: environment and options, output, exit codes.

The plugins are a FakeExec (put in place of RawExec), except in the last tests, where
the real educative plugin runs through its symlink (no root needed)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import pytest
from click.testing import CliRunner
from click.testing import Result as CliResult

from cni_plugins import cnitool, invoke
from cni_plugins.errors import CNIError
from cni_plugins.libcni import cache

RESULT = {"cniVersion": "1.0.0",
          "interfaces": [{"name": "cni0", "mac": "0a:58:0a:01:00:01"},
                         {"name": "eth0", "mac": "0a:58:0a:01:00:05", "mtu": 1400,
                          "sandbox": "/run/netns/pod1"}],
          "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}],
          "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
          "dns": {"nameservers": ["10.1.0.1"], "search": ["cluster.local"]}}


class World:
    def __init__(self) -> None:
        self.fail: dict[tuple[str, str], CNIError] = {}
        self.exec = invoke.FakeExec(self.handle)
        self.envs: list[dict[str, str]] = []

    def handle(self, path: str, stdin: bytes, env: Mapping[str, str]) -> Any:
        ptype, verb = os.path.basename(path), env["CNI_COMMAND"]
        self.envs.append({k: v for k, v in env.items()
                          if k.startswith("CNI_") and not k.startswith("CNI_PLUGINS_")})
        if verb == "VERSION":
            return {"cniVersion": "1.1.0",
                    "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
        if (ptype, verb) in self.fail:
            raise self.fail[(ptype, verb)]
        if verb == "ADD":
            return {**RESULT, "cniVersion": json.loads(stdin)["cniVersion"]}
        return b""

    def verbs(self) -> list[str]:
        return [f"{t}:{v}" for t, v, _ in self.exec.calls if v != "VERSION"]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    w = World()
    monkeypatch.setattr(invoke, "RawExec", lambda stderr=None: w.exec)
    return w


@pytest.fixture
def netdir(tmp_path: Path) -> Path:
    d = tmp_path / "net.d"
    d.mkdir()
    (d / "10-net1.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "net1",
        "plugins": [{"type": "bridge"},
                    {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    (d / "20-net2.conflist").write_text(json.dumps({
        "cniVersion": "1.1.0", "name": "net2", "plugins": [{"type": "bridge"}]}))
    return d


@pytest.fixture
def env(netdir: Path, tmp_path: Path) -> dict[str, str]:
    return {"NETCONFPATH": str(netdir), "CNI_PATH": "/opt/cni/bin",
            "CNI_CACHE_DIR": str(tmp_path / "cache"), "CNI_IFNAME": None, "CNI_ARGS": None,
            "CAP_ARGS": None}  # type: ignore[dict-item]


def run(env: dict[str, str], *args: str, **more_env: str) -> CliResult:
    return CliRunner().invoke(cnitool.cli, list(args), env={**env, **more_env},
                              prog_name="cnitool")


def cid(netns: str) -> str:
    return "cnitool-" + hashlib.sha512(netns.encode()).hexdigest()[:20]


# --- help ----------------------------------------------------------------------------------


def test_help_lists_commands_examples_and_exit_codes() -> None:
    r = CliRunner().invoke(cnitool.cli, ["--help"], prog_name="cnitool")
    assert r.exit_code == 0
    for word in ("add", "check", "del", "gc", "status", "list", "NETCONFPATH", "CNI_PATH",
                 "cnitool add mynet /run/netns/pod1", "Exit codes", "3  network not found"):
        assert word in r.output
    for cmd in ("add", "check", "del", "gc", "status", "list"):
        sub = CliRunner().invoke(cnitool.cli, [cmd, "--help"], prog_name="cnitool")
        assert sub.exit_code == 0 and "Example" in sub.output and "Exit codes" in sub.output


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    assert run(env).exit_code in (0, 2)                  # a bare group prints its usage
    assert run(env, "add", "net1").exit_code == 2
    assert run(env, "frobnicate", "net1", "/x").exit_code == 2


# --- add / check / del ----------------------------------------------------------------------


def test_add_readable(world: World, env: dict[str, str], tmp_path: Path) -> None:
    r = run(env, "add", "net1", "/run/netns/pod1")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        f"Added eth0 in /run/netns/pod1 to network net1 (container {cid('/run/netns/pod1')}, "
        "CNI 1.0.0)",
        "Interfaces:",
        "  [0] cni0  mac 0a:58:0a:01:00:01  on the host",
        "  [1] eth0  mac 0a:58:0a:01:00:05  mtu 1400  in /run/netns/pod1",
        "Addresses:",
        "  10.1.0.5/24  gateway 10.1.0.1  on eth0",
        "Routes:",
        "  0.0.0.0/0  via 10.1.0.1",
        "DNS: nameservers 10.1.0.1; search cluster.local",
    ]
    assert world.verbs() == ["bridge:ADD", "portmap:ADD"]
    cached = tmp_path / "cache" / "results" / f"net1-{cid('/run/netns/pod1')}-eth0"
    assert json.loads(cached.read_text())["result"] == RESULT


def test_add_json(world: World, env: dict[str, str]) -> None:
    r = run(env, "add", "net2", "/run/netns/pod1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {**RESULT, "cniVersion": "1.1.0"}


def test_the_go_environment(world: World, env: dict[str, str], tmp_path: Path) -> None:
    caps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1}}
    r = run(env, "add", "net1", "relative/ns", CNI_IFNAME="net7",
            CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=web", CAP_ARGS=json.dumps(caps))
    assert r.exit_code == 0, r.output
    netns = os.path.abspath("relative/ns")
    add = [e for e in world.envs if e["CNI_COMMAND"] == "ADD"][0]
    add.pop("CNI_CACHE_DIR")                                 # ours, inherited
    assert add == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid(netns), "CNI_NETNS": netns,
                   "CNI_IFNAME": "net7", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web",
                   "CNI_PATH": "/opt/cni/bin"}
    portmap = [c for t, v, c in world.exec.calls if (t, v) == ("portmap", "ADD")][0]
    assert portmap["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    assert (tmp_path / "cache" / "results" / f"net1-{cid(netns)}-net7").exists()


def test_options_beat_nothing_and_match_env(world: World, env: dict[str, str],
                                            tmp_path: Path) -> None:
    r = run({**env, "NETCONFPATH": "/nonexistent"}, "add", "net1", "/run/netns/p",
            "--netconfpath", env["NETCONFPATH"], "-i", "eth3", "--container-id", "abc",
            "--cni-path", "/a:/b", "--cache-dir", str(tmp_path / "c2"))
    assert r.exit_code == 0, r.output
    add = [e for e in world.envs if e["CNI_COMMAND"] == "ADD"][0]
    assert (add["CNI_IFNAME"], add["CNI_CONTAINERID"], add["CNI_PATH"]) == ("eth3", "abc", "/a:/b")
    assert (tmp_path / "c2" / "results" / "net1-abc-eth3").exists()


def test_check_and_del(world: World, env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "add", "net1", "/run/netns/pod1").exit_code == 0
    r = run(env, "check", "net1", "/run/netns/pod1")
    assert r.exit_code == 0, r.output
    assert r.stdout == "eth0 in /run/netns/pod1 is attached to network net1\n"
    r = run(env, "del", "net1", "/run/netns/pod1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"network": "net1", "containerID": cid("/run/netns/pod1"),
                                    "netns": "/run/netns/pod1", "ifname": "eth0",
                                    "deleted": True}
    assert world.verbs() == ["bridge:ADD", "portmap:ADD", "bridge:CHECK", "portmap:CHECK",
                             "portmap:DEL", "bridge:DEL"]
    assert os.listdir(tmp_path / "cache" / "results") == []
    assert run(env, "del", "net1", "/run/netns/pod1").stdout == (
        "Deleted eth0 in /run/netns/pod1 from network net1\n")


def test_plugin_failure_exits_1_with_the_cni_error(world: World, env: dict[str, str]) -> None:
    world.fail[("portmap", "ADD")] = CNIError(11, "nftables busy", "EBUSY")
    r = run(env, "add", "net1", "/run/netns/pod1")
    assert r.exit_code == cnitool.EXIT_FAILED
    assert r.stdout == ""
    assert r.stderr == ("cnitool: plugin portmap failed (add): nftables busy\n"
                        "  details: EBUSY\n  (CNI error code 11)\n")
    r = run(env, "add", "net1", "/run/netns/pod1", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout) == {"code": 11, "msg": "plugin portmap failed (add): nftables busy",
                                    "details": "EBUSY"}


def test_unknown_network_exits_3(world: World, env: dict[str, str]) -> None:
    r = run(env, "add", "nosuch", "/run/netns/pod1")
    assert r.exit_code == cnitool.EXIT_CONFIG
    assert f'no net configuration with name "nosuch" in {env["NETCONFPATH"]}' in r.stderr
    assert world.exec.calls == []
    r = run(env, "del", "nosuch", "/x", "--json")
    assert r.exit_code == 3 and json.loads(r.stdout)["code"] == 7


@pytest.mark.parametrize(("var", "value", "why"), [
    ("CAP_ARGS", "{not json", "not JSON"), ("CAP_ARGS", "[1]", "must be a JSON object"),
    ("CNI_ARGS", "K8S_POD_NAME", "invalid CNI_ARGS pair 'K8S_POD_NAME'")])
def test_bad_cni_args_and_cap_args_exit_2(world: World, env: dict[str, str], var: str,
                                          value: str, why: str) -> None:
    r = run(env, "add", "net1", "/run/netns/pod1", **{var: value})
    assert r.exit_code == cnitool.EXIT_USAGE
    assert why in r.stderr and var in r.stderr
    assert world.exec.calls == []


def test_check_of_an_old_version_fails(world: World, env: dict[str, str], netdir: Path) -> None:
    (netdir / "30.conflist").write_text(json.dumps(
        {"cniVersion": "0.3.1", "name": "old", "plugins": [{"type": "bridge"}]}))
    r = run(env, "check", "old", "/run/netns/pod1")
    assert r.exit_code == 1
    assert "does not support the CHECK command" in r.stderr and "(CNI error code 1)" in r.stderr


# --- gc / status ----------------------------------------------------------------------------


def test_gc_keeps_the_valid_ones(world: World, env: dict[str, str]) -> None:
    for ns in ("/run/netns/a", "/run/netns/b"):
        assert run(env, "add", "net2", ns).exit_code == 0
    r = run(env, "gc", "net2", "/ignored", "--valid", f"{cid('/run/netns/b')}/eth0")
    assert r.exit_code == 0, r.output
    assert r.stdout == (f"network net2: removed 1 stale attachment(s)\n"
                        f"  {cid('/run/netns/a')} eth0\n")
    gc = [c for t, v, c in world.exec.calls if v == "GC"][0]
    assert gc["cni.dev/valid-attachments"] == [{"containerID": cid("/run/netns/b"),
                                                "ifname": "eth0"}]
    r = run(env, "gc", "net2", "--json")
    assert json.loads(r.stdout) == {"network": "net2", "removed": [
        {"containerID": cid("/run/netns/b"), "ifname": "eth0"}]}


def test_gc_keeps_attachments_whose_netns_exists_unless_all(world: World, env: dict[str, str],
                                                            tmp_path: Path) -> None:
    live = tmp_path / "live-netns"
    live.touch()
    for ns in (str(live), "/run/netns/gone"):
        assert run(env, "add", "net2", ns).exit_code == 0
    r = run(env, "gc", "net2", "--json")
    assert json.loads(r.stdout)["removed"] == [{"containerID": cid("/run/netns/gone"),
                                                "ifname": "eth0"}]
    gc = [c for t, v, c in world.exec.calls if v == "GC"][-1]
    assert gc["cni.dev/valid-attachments"] == [{"containerID": cid(str(live)),
                                                "ifname": "eth0"}]
    r = run(env, "gc", "net2", "--all", "--json")           # the reboot: nothing is valid
    assert json.loads(r.stdout)["removed"] == [{"containerID": cid(str(live)),
                                                "ifname": "eth0"}]
    gc = [c for t, v, c in world.exec.calls if v == "GC"][-1]
    assert gc["cni.dev/valid-attachments"] == []


def test_gc_all_and_valid_exclude_each_other(world: World, env: dict[str, str]) -> None:
    r = run(env, "gc", "net2", "--all", "--valid", "a/eth0")
    assert r.exit_code == 2 and "exclude each other" in r.stderr


def test_gc_bad_valid_exits_2(world: World, env: dict[str, str]) -> None:
    r = run(env, "gc", "net2", "--valid", "no-slash")
    assert r.exit_code == 2 and "CONTAINERID/IFNAME" in r.stderr


def test_gc_errors_exit_1(world: World, env: dict[str, str]) -> None:
    world.fail[("bridge", "GC")] = CNIError(5, "store unreadable")
    r = run(env, "gc", "net2")
    assert r.exit_code == 1
    assert "failed to GC plugin bridge: store unreadable" in r.stderr


def test_status(world: World, env: dict[str, str]) -> None:
    r = run(env, "status", "net2")
    assert (r.exit_code, r.stdout) == (0, "network net2: ready\n")
    world.fail[("bridge", "STATUS")] = CNIError(50, "no addresses left")
    r = run(env, "status", "net2", "/run/netns/x", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout) == {"code": 50, "msg": "plugin bridge failed (status): no "
                                                       "addresses left", "details": ""}


# --- list ------------------------------------------------------------------------------------


def test_list(world: World, env: dict[str, str], netdir: Path) -> None:
    r = run({**env, "CNI_PATH": ""}, "list")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "NAME  CNI    STATUS  PLUGINS         FILE",
        "net1  1.0.0  ok      bridge,portmap  10-net1.conflist",
        "net2  1.1.0  ok      bridge          20-net2.conflist",
    ]
    assert world.exec.calls == []                       # no CNI_PATH: plugins not asked


def test_list_shows_what_is_wrong(world: World, env: dict[str, str], netdir: Path) -> None:
    (netdir / "30-broken.conflist").write_text('{"name": "x", "plugins": []}')
    (netdir / "40-dup.conf").write_text('{"name": "net1", "type": "macvlan"}')
    (netdir / "50-missing.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "net5", "plugins": [{"type": "nosuch"}]}))
    world.exec.plugin_types = {"bridge", "portmap"}
    r = run(env, "list")
    assert r.exit_code == cnitool.EXIT_CONFIG
    lines = r.stdout.splitlines()
    assert lines[3].split() == ["-", "-", "invalid", "-", "30-broken.conflist"]
    assert lines[4].split() == ["net5", "1.0.0", "invalid", "nosuch", "50-missing.conflist"]
    assert lines[5].split() == ["net1", "0.1.0", "shadowed", "macvlan", "40-dup.conf"]
    assert ("30-broken.conflist: invalid config: plugins: empty: a network needs at least "
            "one plugin") in lines
    first = netdir / "10-net1.conflist"
    assert f"40-dup.conf: network 'net1' is already defined in {first}" in lines
    assert any(x.startswith("50-missing.conflist: failed to find plugin 'nosuch'") for x in lines)
    rows = json.loads(run(env, "list", "--json").stdout)
    assert [(os.path.basename(x["file"]), x["status"]) for x in rows] == [
        ("10-net1.conflist", "ok"), ("20-net2.conflist", "ok"), ("30-broken.conflist", "invalid"),
        ("50-missing.conflist", "invalid"), ("40-dup.conf", "shadowed")]
    assert rows[0]["plugins"] == ["bridge", "portmap"] and rows[2]["error"]


def test_list_of_an_empty_dir(tmp_path: Path) -> None:
    r = CliRunner().invoke(cnitool.cli, ["list", "--netconfpath", str(tmp_path)])
    assert (r.exit_code, r.stdout) == (0, f"no network configurations in {tmp_path}\n")


# --- real plugins through their symlinks (educative logs what it got) -------------------------


def test_with_real_plugins(plugin_dir: str, tmp_path: Path) -> None:
    log = tmp_path / "edu.log"
    netdir = tmp_path / "net.d"
    netdir.mkdir()
    (netdir / "10.conflist").write_text(json.dumps({
        "cniVersion": "1.1.0", "name": "edunet",
        "plugins": [{"type": "educative", "cniOutput": str(log)},
                    {"type": "educative", "cniOutput": str(log), "extra": {"kept": [1, 2]}}]}))
    env = {"NETCONFPATH": str(netdir), "CNI_PATH": plugin_dir,
           "CNI_CACHE_DIR": str(tmp_path / "cache")}
    r = run(env, "add", "edunet", str(tmp_path), "--json", CNI_ARGS="K=V")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"cniVersion": "1.1.0", "dns": {}}
    text = log.read_text()
    assert text.count("CNI Command: ADD") == 2
    assert f"ContainerID: {cid(str(tmp_path))}" in text and "Args: K=V" in text
    assert '"extra": {"kept": [1, 2]}' in text and '"prevResult": {"cniVersion": "1.1.0"' in text
    for cmd in ("check", "status", "del"):
        r = run(env, cmd, "edunet", str(tmp_path))
        assert r.exit_code == 0, r.output
    assert log.read_text().count("CNI Command: DEL") == 2
    assert os.listdir(tmp_path / "cache" / "results") == []
    r = run(env, "list")
    assert r.exit_code == 0 and "edunet  1.1.0  ok" in r.stdout


def test_real_plugin_error(plugin_dir: str, tmp_path: Path) -> None:
    netdir = tmp_path / "net.d"
    netdir.mkdir()
    (netdir / "10.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "bad", "plugins": [{"type": "educative", "cniOutput": 5}]}))
    env = {"NETCONFPATH": str(netdir), "CNI_PATH": plugin_dir,
           "CNI_CACHE_DIR": str(tmp_path / "cache")}
    r = run(env, "add", "bad", str(tmp_path))
    assert r.exit_code == 1
    assert r.stderr.startswith("cnitool: plugin educative failed (add): invalid config: cniOutput")
    assert "(CNI error code 7)" in r.stderr
    assert not (tmp_path / "cache").exists()


def test_cache_dir_default_is_go_s() -> None:
    assert cache.DEFAULT_DIR == "/var/lib/cni"
    add = next(p for p in cnitool.add.params if p.name == "cache_dir")
    assert add.default == "/var/lib/cni"
