"""libcni without root: config loading, the result cache, and the verbs against a FakeExec
that plays the plugins (and records what each was sent)."""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Mapping

import pytest

from cni_plugins import invoke, version
from cni_plugins.errors import CNIError, Code
from cni_plugins.libcni import (
    CNIConfig,
    RuntimeConf,
    cache,
    conf,
    container_id_for_netns,
    parse_cni_args,
)
from cni_plugins.types import IPConfig, Result

# --- a world of fake plugins ---------------------------------------------------------------


class Plugins:
    """Fake plugins by type: ADD appends one address to the prevResult; `fail[(type, verb)]`
    makes a verb fail; `speaks[type]` is what VERSION answers."""

    def __init__(self) -> None:
        self.speaks: dict[str, list[str]] = {}
        self.fail: dict[tuple[str, str], CNIError] = {}
        self.addr: dict[str, str] = {"bridge": "10.1.0.5/24", "tuning": "10.1.0.6/24"}
        self.envs: list[dict[str, str]] = []
        self.exec = invoke.FakeExec(self.handle)

    @property
    def calls(self) -> list[tuple[str, str, dict[str, Any]]]:
        return self.exec.calls

    def verbs(self) -> list[str]:
        """"bridge:ADD", … without the VERSION queries."""
        return [f"{t}:{v}" for t, v, _ in self.calls if v != "VERSION"]

    def stdin(self, plugin: str, verb: str) -> dict[str, Any]:
        return [c for t, v, c in self.calls if (t, v) == (plugin, verb)][-1]

    def handle(self, path: str, stdin: bytes, env: Mapping[str, str]) -> Any:
        ptype, verb = os.path.basename(path), env["CNI_COMMAND"]
        self.envs.append({k: v for k, v in env.items()
                          if k.startswith("CNI_") and not k.startswith("CNI_PLUGINS_")})
        if verb == "VERSION":
            return {"cniVersion": "1.1.0",
                    "supportedVersions": self.speaks.get(ptype, list(version.ALL))}
        if (ptype, verb) in self.fail:
            raise self.fail[(ptype, verb)]
        if verb != "ADD":
            return b""
        c = json.loads(stdin)
        prev = c.get("prevResult") or {"cniVersion": c["cniVersion"]}
        ips = list(prev.get("ips", []))
        if ptype in self.addr:
            ip: dict[str, Any] = {"address": self.addr[ptype]}
            if c["cniVersion"] in ("0.3.0", "0.3.1", "0.4.0"):
                ip["version"] = "4"
            ips.append(ip)
        return {**prev, "cniVersion": c["cniVersion"], "ips": ips}


@pytest.fixture
def world() -> Plugins:
    return Plugins()


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


@pytest.fixture
def cni(world: Plugins, cache_dir: str) -> CNIConfig:
    return CNIConfig("/opt/cni/bin:/usr/lib/cni", cache_dir=cache_dir, exec=world.exec)


def netlist(*types: str, v: str = "1.0.0", **top: Any) -> conf.NetworkConfigList:
    raw = {"cniVersion": v, "name": "net1", **top,
           "plugins": [{"type": t} if isinstance(t, str) else t for t in types]}
    return conf.NetworkConfigList.from_bytes(json.dumps(raw).encode())


RT = RuntimeConf("ctr1", netns="/run/netns/pod1", ifname="eth0",
                 args=[("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web")])


def write(d: Path, name: str, obj: Any) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


# --- conf: finding a network in a directory -------------------------------------------------


def test_conflists_first_sorted_first_match_wins(tmp_path: Path) -> None:
    write(tmp_path, "20-b.conflist", {"cniVersion": "1.0.0", "name": "net1",
                                      "plugins": [{"type": "second"}]})
    write(tmp_path, "10-a.conflist", {"cniVersion": "1.0.0", "name": "net1",
                                      "plugins": [{"type": "first"}]})
    write(tmp_path, "00-legacy.conf", {"cniVersion": "1.0.0", "name": "net1", "type": "legacy"})
    net = conf.load(str(tmp_path), "net1")
    assert [p.type for p in net.plugins] == ["first"]
    assert net.source == str(tmp_path / "10-a.conflist")
    assert net.conf_bytes == (tmp_path / "10-a.conflist").read_bytes()


@pytest.mark.parametrize("ext", [".conf", ".json"])
def test_legacy_single_plugin_file_becomes_a_list(tmp_path: Path, ext: str) -> None:
    plugin = {"cniVersion": "0.3.1", "name": "old", "type": "bridge", "bridge": "cni0",
              "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}
    write(tmp_path, "05-other.conflist", {"name": "other", "cniVersion": "1.0.0",
                                          "plugins": [{"type": "x"}]})
    write(tmp_path, "10-old" + ext, plugin)
    net = conf.load(str(tmp_path), "old")
    assert (net.name, net.cni_version) == ("old", "0.3.1")
    assert [p.raw for p in net.plugins] == [plugin]
    assert json.loads(net.conf_bytes) == {"name": "old", "cniVersion": "0.3.1",
                                          "plugins": [plugin]}


def test_not_found_and_no_configs(tmp_path: Path) -> None:
    with pytest.raises(conf.NotFound) as e:
        conf.load(str(tmp_path / "nonexistent"), "net1")
    assert e.value.msg == f"no net configurations found in {tmp_path / 'nonexistent'}"
    write(tmp_path, "10.conflist", {"name": "other", "plugins": [{"type": "x"}]})
    with pytest.raises(conf.NotFound) as e:
        conf.load(str(tmp_path), "net1")
    assert e.value.msg == f'no net configuration with name "net1" in {tmp_path}'
    assert e.value.code == Code.INVALID_NETWORK_CONFIG


def test_a_broken_file_does_not_hide_the_others(tmp_path: Path) -> None:
    write(tmp_path, "01-broken.conflist", '{"name": ')
    write(tmp_path, "02.conflist", {"name": "net1", "cniVersion": "1.0.0",
                                    "plugins": [{"type": "x"}]})
    assert conf.load(str(tmp_path), "net1").plugins[0].type == "x"
    with pytest.raises(conf.NotFound) as e:
        conf.load(str(tmp_path), "net2")
    assert "01-broken.conflist" in e.value.details


def test_directories_and_other_extensions_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "10.conflist").mkdir()
    write(tmp_path, "20.conflist.bak", {"name": "net1", "plugins": [{"type": "x"}]})
    write(tmp_path, "30.yaml", "name: net1")
    with pytest.raises(conf.NotFound):
        conf.load(str(tmp_path), "net1")


def test_scan_shows_errors_and_shadowed_networks(tmp_path: Path) -> None:
    write(tmp_path, "10.conflist", {"name": "net1", "plugins": [{"type": "a"}]})
    write(tmp_path, "20.conflist", {"name": "net1", "plugins": [{"type": "b"}]})
    write(tmp_path, "30.conflist", {"plugins": [{"type": "c"}]})
    write(tmp_path, "05.conf", {"name": "net1", "type": "d"})
    entries = conf.scan(str(tmp_path))
    assert [os.path.basename(e.path) for e in entries] == [
        "10.conflist", "20.conflist", "30.conflist", "05.conf"]
    assert [e.shadowed_by for e in entries] == [
        "", str(tmp_path / "10.conflist"), "", str(tmp_path / "10.conflist")]
    assert entries[2].error is not None
    assert entries[2].error.msg == "invalid config: name: required"
    assert entries[3].legacy and not entries[0].legacy


# --- conf: what a list says -----------------------------------------------------------------


@pytest.mark.parametrize(("top", "msg"), [
    ({"name": 3}, "invalid config: name: expected a string, got a number"),
    ({"name": "a b"}, "invalid config: name: invalid characters found in network name: 'a b'"),
    ({"cniVersion": 1}, "invalid config: cniVersion: expected a string, got a number"),
    ({"plugins": {}}, "invalid config: plugins: expected a list, got an object"),
    ({"plugins": []}, "invalid config: plugins: empty: a network needs at least one plugin"),
    ({"plugins": [{"type": ""}]}, "invalid config: plugins[0].type: required: the plugin's type"),
    ({"plugins": [{"type": "x"}, {"name": "y"}]},
     "invalid config: plugins[1].type: required: the plugin's type"),
    ({"plugins": [{"type": "x", "capabilities": {"portMappings": "yes"}}]},
     "invalid config: plugins[0].capabilities.portMappings: expected a boolean, got a string"),
    ({"plugins": [{"type": "x", "ipam": {"type": 1}}]},
     "invalid config: plugins[0].ipam.type: expected a string, got a number"),
    ({"plugins": [{"type": "x", "args": []}]},
     "invalid config: plugins[0].args: expected an object, got a list"),
    ({"disableCheck": "maybe"}, "invalid config: disableCheck: expected a boolean, got a string"),
    ({"disableGC": 1}, "invalid config: disableGC: expected a boolean, got a number"),
    ({"loadOnlyInlinedPlugins": True, "plugins": None},     # null is as if absent
     "invalid config: plugins: required: loadOnlyInlinedPlugins is true"),
])
def test_invalid_lists(top: dict[str, Any], msg: str) -> None:
    raw = {"name": "net1", "cniVersion": "1.0.0", "plugins": [{"type": "x"}], **top}
    with pytest.raises(CNIError) as e:
        conf.NetworkConfigList.from_bytes(json.dumps(raw).encode())
    assert e.value.msg == msg
    assert e.value.code == Code.INVALID_NETWORK_CONFIG


def test_not_json() -> None:
    with pytest.raises(CNIError) as e:
        conf.NetworkConfigList.from_bytes(b"{")
    assert e.value.code == Code.DECODING_FAILURE


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), ("true", True), ("TRUE", True), ("False", False)])
def test_flags_accept_booleans_and_their_strings(value: Any, expected: bool) -> None:
    net = netlist("x", disableCheck=value, disableGC=value)
    assert (net.disable_check, net.disable_gc) == (expected, expected)


@pytest.mark.parametrize(("v", "vs", "chosen", "candidates"), [
    ("1.0.0", None, "1.0.0", ("1.0.0",)),
    ("", None, "0.1.0", ("0.1.0",)),
    ("0.4.0", ["1.0.0", "1.1.0"], "1.1.0", ("1.1.0", "1.0.0", "0.4.0")),
    ("", ["0.3.1", "1.0.0"], "1.0.0", ("1.0.0", "0.3.1")),
    ("1.0.0", ["1.1.0", "2.0.0", "1.2.0"], "1.1.0", ("1.1.0", "1.0.0")),   # above ours: ignored
    ("0.4.0", [], "0.4.0", ("0.4.0",)),
])
def test_cni_versions_highest_we_speak(v: str, vs: list[str] | None, chosen: str,
                                       candidates: tuple[str, ...]) -> None:
    top: dict[str, Any] = {"cniVersion": v}
    if vs is not None:
        top["cniVersions"] = vs
    net = netlist("x", **top)
    assert (net.cni_version, net.cni_versions) == (chosen, candidates)


@pytest.mark.parametrize(("top", "code", "msg"), [
    ({"cniVersions": ["1.0"]}, 7, "cniVersions[0]: '1.0' is not a version (x.y.z)"),
    ({"cniVersions": "1.0.0"}, 7, "cniVersions: expected a list, got a string"),
    ({"cniVersions": [1]}, 7, "cniVersions[0]: expected a string, got a number"),
    ({"cniVersion": "", "cniVersions": ["2.0.0"]}, 1,
     "cniVersions: none of ['2.0.0'] is supported (libcni supports 0.1.0, "),
    ({"cniVersion": "9.9.9"}, 1, "cniVersion: unsupported version '9.9.9' (libcni supports "),
])
def test_bad_versions(top: dict[str, Any], code: int, msg: str) -> None:
    with pytest.raises(CNIError) as e:
        netlist("x", **top)
    assert e.value.code == code
    assert e.value.msg.startswith("invalid config: " + msg)


def test_plugins_from_the_network_directory(tmp_path: Path) -> None:
    write(tmp_path, "10.conflist", {"name": "net1", "cniVersion": "1.0.0",
                                    "plugins": [{"type": "bridge"}]})
    write(tmp_path / "net1", "20-b.conf", {"type": "tuning"})
    write(tmp_path / "net1", "10-a.conf", {"type": "portmap"})
    write(tmp_path / "net1", "30-c.json", {"type": "ignored"})
    net = conf.load(str(tmp_path), "net1")
    assert [p.type for p in net.plugins] == ["bridge", "portmap", "tuning"]
    assert net.plugins[1].source == str(tmp_path / "net1" / "10-a.conf")


def test_load_only_inlined_plugins(tmp_path: Path) -> None:
    write(tmp_path, "10.conflist", {"name": "net1", "loadOnlyInlinedPlugins": True,
                                    "plugins": [{"type": "bridge"}]})
    write(tmp_path / "net1", "10.conf", {"type": "portmap"})
    assert [p.type for p in conf.load(str(tmp_path), "net1").plugins] == ["bridge"]


def test_plugins_only_from_the_directory(tmp_path: Path) -> None:
    write(tmp_path, "10.conflist", {"name": "net1", "cniVersion": "1.1.0"})
    with pytest.raises(conf.NotFound) as e:
        conf.load(str(tmp_path), "net1")
    assert "no plugin configs found" in e.value.details
    write(tmp_path / "net1", "10.conf", {"type": "bridge"})
    assert [p.type for p in conf.load(str(tmp_path), "net1").plugins] == ["bridge"]
    with pytest.raises(CNIError) as e:
        conf.NetworkConfigList.from_bytes(b'{"name": "n", "loadOnlyInlinedPlugins": true}')
    assert e.value.msg == "invalid config: plugins: required: loadOnlyInlinedPlugins is true"


# --- the verbs: ADD -------------------------------------------------------------------------


def test_add_threads_prev_result_and_caches(world: Plugins, cni: CNIConfig,
                                            cache_dir: str) -> None:
    net = netlist("bridge", "tuning", "portmap")
    r = cni.add_network_list(net, RT)
    assert [ip.address for ip in r.ips] == ["10.1.0.5/24", "10.1.0.6/24"]
    assert world.verbs() == ["bridge:ADD", "tuning:ADD", "portmap:ADD"]
    assert "prevResult" not in world.stdin("bridge", "ADD")
    assert world.stdin("tuning", "ADD")["prevResult"] == {
        "cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}], "dns": {}}
    assert [ip["address"] for ip in world.stdin("portmap", "ADD")["prevResult"]["ips"]] == [
        "10.1.0.5/24", "10.1.0.6/24"]
    a = cni.cache.read("net1", "ctr1", "eth0")
    assert a is not None and a.result is not None
    assert a.result["ips"] == [{"address": "10.1.0.5/24"}, {"address": "10.1.0.6/24"}]
    assert a.config == net.conf_bytes and a.netns == "/run/netns/pod1"
    assert a.cni_args == [("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web")]


@pytest.mark.parametrize("v", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_prev_result_in_the_list_version(world: Plugins, cni: CNIConfig, v: str) -> None:
    cni.add_network_list(netlist("bridge", "tuning", v=v), RT)
    prev = world.stdin("tuning", "ADD")["prevResult"]
    assert prev["cniVersion"] == v
    assert prev["ips"][0] == ({"version": "4", "address": "10.1.0.5/24"} if v < "1.0.0"
                              else {"address": "10.1.0.5/24"})
    assert world.stdin("tuning", "ADD")["cniVersion"] == v


def test_result_without_cni_version_is_read_in_the_config_version(world: Plugins,
                                                                  cni: CNIConfig) -> None:
    world.exec.handler = lambda p, s, env: (
        {"cniVersion": "1.1.0", "supportedVersions": ["0.4.0"]} if env["CNI_COMMAND"] == "VERSION"
        else {"ips": [{"version": "4", "address": "10.1.0.9/24"}]})
    r = cni.add_network_list(netlist("bridge", v="0.4.0"), RT)
    assert r.ips == [IPConfig("10.1.0.9/24")]


def test_every_plugin_gets_the_six_variables(world: Plugins, cni: CNIConfig,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNI_NETNS", "/leaked/from/our/env")
    monkeypatch.setenv("SOME_VAR", "kept")
    cni.add_network_list(netlist("bridge"), RuntimeConf("c2", ifname="net0"))
    add = [e for e in world.envs if e["CNI_COMMAND"] == "ADD"][0]
    assert add == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c2", "CNI_NETNS": "",
                   "CNI_IFNAME": "net0", "CNI_ARGS": "", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"}
    version_env = world.envs[0]
    assert (version_env["CNI_COMMAND"], version_env["CNI_NETNS"], version_env["CNI_PATH"]) == (
        "VERSION", "dummy", "dummy")
    cni.del_network_list(netlist("bridge"), RT)
    assert world.envs[-1]["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=web"


def test_only_declared_capabilities_reach_runtime_config(world: Plugins, cni: CNIConfig) -> None:
    net = netlist({"type": "bridge", "runtimeConfig": {"old": 1}},
                  {"type": "portmap", "capabilities": {"portMappings": True, "ips": False}},
                  {"type": "bandwidth", "capabilities": {"bandwidth": True}},
                  {"type": "tuning", "capabilities": {"mac": True}})
    rt = RuntimeConf("c1", netns="/x", capability_args={
        "portMappings": [{"hostPort": 8080, "containerPort": 80}], "ips": ["10.0.0.9/24"],
        "mac": "0a:00:00:00:00:01"})
    cni.add_network_list(net, rt)
    assert world.stdin("bridge", "ADD")["runtimeConfig"] == {"old": 1}     # untouched
    assert world.stdin("portmap", "ADD")["runtimeConfig"] == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80}]}
    assert "runtimeConfig" not in world.stdin("bandwidth", "ADD")
    assert world.stdin("tuning", "ADD")["runtimeConfig"] == {"mac": "0a:00:00:00:00:01"}
    cni.del_network_list(net, rt)
    assert world.stdin("portmap", "DEL")["runtimeConfig"] == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80}]}


def test_plugin_config_is_passed_verbatim(world: Plugins, cni: CNIConfig) -> None:
    plugin = {"type": "bridge", "zeta": {"b": [1, 2.5, None], "a": "ü"}, "Big": 2 ** 70,
              "args": {"cni": {"labels": [{"key": "app", "value": "web"}]}}, "alpha": True}
    cni.add_network_list(netlist(plugin), RT)
    sent = world.stdin("bridge", "ADD")
    assert list(sent) == ["type", "zeta", "Big", "args", "alpha", "name", "cniVersion"]
    assert {k: sent[k] for k in plugin} == plugin
    # the list's name and version win over the plugin's own
    cni.add_network_list(netlist({"type": "bridge", "name": "x", "cniVersion": "0.3.1"}), RT)
    assert (world.stdin("bridge", "ADD")["name"], world.stdin("bridge", "ADD")["cniVersion"]) == (
        "net1", "1.0.0")


def test_add_error_names_the_plugin_and_keeps_the_code(world: Plugins, cni: CNIConfig) -> None:
    world.fail[("tuning", "ADD")] = CNIError(11, "no IP addresses available", "range 10.1/24")
    with pytest.raises(CNIError) as e:
        cni.add_network_list(netlist("bridge", "tuning", "portmap"), RT)
    assert (e.value.code, e.value.msg, e.value.details) == (
        11, "plugin tuning failed (add): no IP addresses available", "range 10.1/24")
    assert world.verbs() == ["bridge:ADD", "tuning:ADD"]
    assert cni.cache.read("net1", "ctr1", "eth0") is None


@pytest.mark.parametrize(("rt", "code", "msg"), [
    (RuntimeConf(""), 3, "missing containerID"),
    (RuntimeConf("bad/id"), 4, "invalid characters in containerID"),
    (RuntimeConf("c1", ifname="x" * 16), 4, "interface name is too long"),
])
def test_add_validates_the_runtime_conf(world: Plugins, cni: CNIConfig, rt: RuntimeConf,
                                        code: int, msg: str) -> None:
    with pytest.raises(CNIError) as e:
        cni.add_network_list(netlist("bridge"), rt)
    assert (e.value.code, e.value.msg) == (code, msg)
    assert world.calls == []


def test_cache_write_failure_fails_add(world: Plugins, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cni = CNIConfig("/bin", cache_dir=str(blocker), exec=world.exec)
    with pytest.raises(CNIError) as e:
        cni.add_network_list(netlist("bridge"), RT)
    assert e.value.msg.startswith("failed to set network 'net1' cached result: ")
    assert e.value.code == Code.IO_FAILURE


# --- the verbs: VERSION before use ------------------------------------------------------------


def test_plugins_are_asked_version_once(world: Plugins, cni: CNIConfig) -> None:
    net = netlist("bridge", "portmap")
    cni.add_network_list(net, RT)
    cni.check_network_list(net, RT)
    cni.del_network_list(net, RT)
    assert [f"{t}:{v}" for t, v, _ in world.calls if v == "VERSION"] == [
        "bridge:VERSION", "portmap:VERSION"]
    assert world.stdin("bridge", "VERSION") == {"cniVersion": "1.1.0"}


def test_a_missing_plugin_fails_before_any_add(world: Plugins, cni: CNIConfig) -> None:
    world.exec.plugin_types = {"bridge", "tuning"}
    with pytest.raises(CNIError) as e:
        cni.add_network_list(netlist("bridge", "tuning", "nosuch"), RT)
    assert e.value.code == Code.INVALID_NETWORK_CONFIG
    assert "failed to find plugin 'nosuch'" in e.value.msg
    assert world.verbs() == []


def test_a_plugin_not_speaking_the_version_fails_before_any_add(world: Plugins,
                                                                cni: CNIConfig) -> None:
    world.speaks["tuning"] = ["0.3.1", "0.4.0", "1.0.0"]
    with pytest.raises(CNIError) as e:
        cni.add_network_list(netlist("bridge", "tuning", v="1.1.0"), RT)
    assert (e.value.code, e.value.msg) == (
        1, "plugin tuning does not support config version '1.1.0'")
    assert world.verbs() == []
    with pytest.raises(CNIError) as e:
        cni.validate_network_list(netlist("bridge", "tuning", v="1.1.0"))


def test_cni_versions_settle_on_what_every_plugin_speaks(world: Plugins, cni: CNIConfig) -> None:
    world.speaks["tuning"] = ["0.3.1", "0.4.0", "1.0.0"]
    net = netlist("bridge", "tuning", v="0.4.0", cniVersions=["1.0.0", "1.1.0"])
    assert net.cni_version == "1.1.0"
    cni.add_network_list(net, RT)
    assert cni.version_for(net) == "1.0.0"
    assert {c["cniVersion"] for t, v, c in world.calls if v == "ADD"} == {"1.0.0"}
    assert cni.cache.read("net1", "ctr1", "eth0").result["cniVersion"] == "1.0.0"  # type: ignore


def test_old_plugins_without_version(world: Plugins) -> None:
    def handler(path: str, stdin: bytes, env: Mapping[str, str]) -> Any:
        if os.path.basename(path) == "ancient":
            raise CNIError(4, "unknown CNI_COMMAND: VERSION")
        return {"cniVersion": "0.2.0"}
    ex = invoke.FakeExec(handler)
    assert invoke.version_info(ex, "/bin/ancient") == ("0.1.0",)
    assert invoke.version_info(ex, "/bin/old") == ("0.1.0", "0.2.0")
    ex.handler = lambda *a: {"cniVersion": "1.0.0"}
    with pytest.raises(CNIError, match="missing field supportedVersions"):
        invoke.version_info(ex, "/bin/x")
    ex.handler = lambda *a: b"not json"
    with pytest.raises(CNIError) as e:
        invoke.version_info(ex, "/bin/x")
    assert e.value.code == Code.DECODING_FAILURE


def test_validation_can_be_turned_off(world: Plugins, cache_dir: str) -> None:
    cni = CNIConfig("/bin", cache_dir=cache_dir, exec=world.exec, validate=False)
    cni.add_network_list(netlist("bridge"), RT)
    assert [v for _, v, _ in world.calls] == ["ADD"]


# --- the verbs: DEL and CHECK ---------------------------------------------------------------


def test_del_in_reverse_with_the_cached_result(world: Plugins, cni: CNIConfig) -> None:
    net = netlist("bridge", "tuning", "portmap")
    cni.add_network_list(net, RT)
    cached = world.stdin("portmap", "ADD")["prevResult"]
    cni.del_network_list(net, RT)
    assert world.verbs()[3:] == ["portmap:DEL", "tuning:DEL", "bridge:DEL"]
    for t in ("portmap", "tuning", "bridge"):
        assert world.stdin(t, "DEL")["prevResult"] == cached
    assert cni.cache.read("net1", "ctr1", "eth0") is None


def test_del_before_0_4_0_has_no_prev_result(world: Plugins, cni: CNIConfig) -> None:
    net = netlist("bridge", v="0.3.1")
    cni.add_network_list(net, RT)
    cni.del_network_list(net, RT)
    assert "prevResult" not in world.stdin("bridge", "DEL")
    assert cni.cache.read("net1", "ctr1", "eth0") is None


def test_del_without_a_cache_still_runs(world: Plugins, cni: CNIConfig) -> None:
    cni.del_network_list(netlist("bridge", "portmap"), RT)
    assert world.verbs() == ["portmap:DEL", "bridge:DEL"]
    assert "prevResult" not in world.stdin("bridge", "DEL")


@pytest.mark.parametrize("content", ['{"kind": "cniCacheV1", "containerId": 5}', "{not json",
                                     '{"kind": "other"}',
                                     '{"kind": "cniCacheV1", "result": {"ips": "x"}}'])
def test_del_carries_on_when_the_cache_is_unreadable(world: Plugins, cni: CNIConfig,
                                                     content: str) -> None:
    path = Path(cni.cache.path("net1", "ctr1", "eth0"))
    path.parent.mkdir(parents=True)
    path.write_text(content)
    cni.del_network_list(netlist("bridge"), RT)
    assert world.verbs() == ["bridge:DEL"]
    assert "prevResult" not in world.stdin("bridge", "DEL")
    assert not path.exists()


def test_del_stops_at_a_failure_and_keeps_the_cache(world: Plugins, cni: CNIConfig) -> None:
    net = netlist("bridge", "tuning", "portmap")
    cni.add_network_list(net, RT)
    world.fail[("tuning", "DEL")] = CNIError(5, "failed to remove sysctl", "EROFS")
    with pytest.raises(CNIError) as e:
        cni.del_network_list(net, RT)
    assert (e.value.code, e.value.msg, e.value.details) == (
        5, "plugin tuning failed (delete): failed to remove sysctl", "EROFS")
    assert world.verbs()[3:] == ["portmap:DEL", "tuning:DEL"]
    assert cni.cache.read("net1", "ctr1", "eth0") is not None
    del world.fail[("tuning", "DEL")]
    cni.del_network_list(net, RT)                         # the retry still has prevResult
    assert "prevResult" in world.stdin("bridge", "DEL")


def test_del_with_a_missing_plugin_fails_on_reaching_it(world: Plugins, cni: CNIConfig) -> None:
    world.exec.plugin_types = {"bridge"}
    with pytest.raises(CNIError) as e:
        cni.del_network_list(netlist("bridge", "gone"), RT)
    assert e.value.msg.startswith("plugin gone failed (delete): failed to find plugin 'gone'")


def test_check_with_the_cached_result(world: Plugins, cni: CNIConfig) -> None:
    net = netlist("bridge", "tuning")
    r = cni.add_network_list(net, RT)
    cni.check_network_list(net, RT)
    assert world.verbs()[2:] == ["bridge:CHECK", "tuning:CHECK"]
    assert world.stdin("bridge", "CHECK")["prevResult"] == world.stdin("tuning", "CHECK")[
        "prevResult"]
    assert [ip["address"] for ip in world.stdin("bridge", "CHECK")["prevResult"]["ips"]] == [
        ip.address for ip in r.ips]
    world.fail[("tuning", "CHECK")] = CNIError(999, "link eth0 has the wrong MAC")
    with pytest.raises(CNIError, match=r"^plugin tuning failed \(check\): link eth0"):
        cni.check_network_list(net, RT)


def test_check_before_0_4_0_and_disabled(world: Plugins, cni: CNIConfig) -> None:
    with pytest.raises(CNIError) as e:
        cni.check_network_list(netlist("bridge", v="0.3.1"), RT)
    assert (e.value.code, e.value.msg) == (
        1, "configuration version '0.3.1' does not support the CHECK command")
    cni.check_network_list(netlist("bridge", disableCheck=True), RT)
    assert world.verbs() == []


def test_check_with_a_corrupt_cache_fails(world: Plugins, cni: CNIConfig) -> None:
    path = Path(cni.cache.path("net1", "ctr1", "eth0"))
    path.parent.mkdir(parents=True)
    path.write_text("{")
    with pytest.raises(CNIError) as e:
        cni.check_network_list(netlist("bridge"), RT)
    assert e.value.msg.startswith("failed to get network 'net1' cached result: ")


# --- the verbs: GC and STATUS ---------------------------------------------------------------


def _attach(cni: CNIConfig, net: conf.NetworkConfigList, *pairs: tuple[str, str]) -> None:
    for cid, ifname in pairs:
        cni.add_network_list(net, RuntimeConf(cid, netns=f"/run/netns/{cid}", ifname=ifname))


def test_gc_dels_stale_attachments_then_gcs_every_plugin(world: Plugins, cni: CNIConfig) -> None:
    net = netlist("bridge", "portmap", v="1.1.0")
    other = conf.NetworkConfigList.from_bytes(json.dumps(
        {"name": "net2", "cniVersion": "1.1.0", "plugins": [{"type": "bridge"}]}).encode())
    _attach(cni, net, ("a", "eth0"), ("b", "eth0"), ("b", "eth1"))
    _attach(cni, other, ("c", "eth0"))
    world.calls.clear()
    removed = cni.gc_network_list(net, valid=[("b", "eth0"), ("zz", "eth9")])
    assert removed == [("a", "eth0"), ("b", "eth1")]
    assert world.verbs() == ["portmap:DEL", "bridge:DEL", "portmap:DEL", "bridge:DEL",
                             "bridge:GC", "portmap:GC"]
    dels = [c for t, v, c in world.calls if (t, v) == ("bridge", "DEL")]
    assert [c["prevResult"]["ips"][0]["address"] for c in dels] == ["10.1.0.5/24"] * 2
    valid = [{"containerID": "b", "ifname": "eth0"}, {"containerID": "zz", "ifname": "eth9"}]
    assert world.stdin("bridge", "GC") == {
        "type": "bridge", "name": "net1", "cniVersion": "1.1.0",
        "cni.dev/valid-attachments": valid, "cni.dev/attachments": valid}
    gc_env = [e for e in world.envs if e["CNI_COMMAND"] == "GC"][0]
    assert (gc_env["CNI_CONTAINERID"], gc_env["CNI_NETNS"], gc_env["CNI_PATH"]) == (
        "", "", cni.path)
    left = {(a.network, a.container_id, a.ifname) for a in cni.get_cached_attachments()}
    assert left == {("net1", "b", "eth0"), ("net2", "c", "eth0")}


def test_gc_dels_with_what_the_cache_recorded(world: Plugins, cni: CNIConfig) -> None:
    net = netlist({"type": "portmap", "capabilities": {"portMappings": True}}, v="1.1.0")
    rt = RuntimeConf("a", netns="/run/netns/a", args=[("K", "V")],
                     capability_args={"portMappings": [{"hostPort": 1}]})
    cni.add_network_list(net, rt)
    cni.gc_network_list(net)
    del_env = [e for e in world.envs if e["CNI_COMMAND"] == "DEL"][0]
    assert (del_env["CNI_CONTAINERID"], del_env["CNI_NETNS"], del_env["CNI_ARGS"]) == (
        "a", "/run/netns/a", "K=V")
    assert world.stdin("portmap", "DEL")["runtimeConfig"] == {"portMappings": [{"hostPort": 1}]}
    # Go's nil GCArgs: the plugins get no list, so they remove nothing more
    assert "cni.dev/valid-attachments" not in world.stdin("portmap", "GC")
    cni.gc_network_list(net, valid=[])          # nothing valid: they get an empty list
    assert world.stdin("portmap", "GC")["cni.dev/valid-attachments"] == []


def test_gc_collects_errors_and_goes_on(world: Plugins, cni: CNIConfig) -> None:
    net = netlist("bridge", "portmap", v="1.1.0")
    _attach(cni, net, ("a", "eth0"), ("b", "eth0"))
    world.fail[("portmap", "DEL")] = CNIError(11, "nft busy")
    world.fail[("bridge", "GC")] = CNIError(5, "cannot read store")
    with pytest.raises(CNIError) as e:
        cni.gc_network_list(net)
    assert e.value.code == 11
    assert e.value.msg == (
        "failed to delete stale attachment a eth0: plugin portmap failed (delete): nft busy; "
        "failed to delete stale attachment b eth0: plugin portmap failed (delete): nft busy; "
        "failed to GC plugin bridge: cannot read store")
    assert world.verbs()[-2:] == ["bridge:GC", "portmap:GC"]
    assert len(cni.get_cached_attachments()) == 2


def test_gc_before_1_1_0_only_dels(world: Plugins, cni: CNIConfig) -> None:
    net = netlist("bridge", v="1.0.0")
    _attach(cni, net, ("a", "eth0"))
    assert cni.gc_network_list(net) == [("a", "eth0")]
    assert "bridge:GC" not in world.verbs()


def test_gc_disabled(world: Plugins, cni: CNIConfig) -> None:
    net = netlist("bridge", v="1.1.0", disableGC=True)
    _attach(cni, net, ("a", "eth0"))
    world.calls.clear()
    assert cni.gc_network_list(net) == []
    assert world.calls == [] and len(cni.get_cached_attachments()) == 1


def test_gc_without_a_cache_dir(world: Plugins, cni: CNIConfig) -> None:
    assert cni.gc_network_list(netlist("bridge", v="1.1.0")) == []
    assert world.verbs() == ["bridge:GC"]


def test_status_stops_at_the_first_error(world: Plugins, cni: CNIConfig) -> None:
    net = netlist("bridge", "tuning", "portmap", v="1.1.0")
    cni.status_network_list(net)
    assert world.verbs() == ["bridge:STATUS", "tuning:STATUS", "portmap:STATUS"]
    assert world.stdin("tuning", "STATUS") == {"type": "tuning", "name": "net1",
                                               "cniVersion": "1.1.0"}
    world.calls.clear()
    world.fail[("tuning", "STATUS")] = CNIError(50, "no IPs left", "10.1.0.0/24")
    with pytest.raises(CNIError) as e:
        cni.status_network_list(net)
    assert (e.value.code, e.value.msg, e.value.details) == (
        50, "plugin tuning failed (status): no IPs left", "10.1.0.0/24")
    assert world.verbs() == ["bridge:STATUS", "tuning:STATUS"]


def test_status_before_1_1_0_is_ready(world: Plugins, cni: CNIConfig) -> None:
    cni.status_network_list(netlist("bridge", v="1.0.0"))
    assert world.verbs() == []


# --- the cache ------------------------------------------------------------------------------

# Go's cachedInfo (libcni/api.go), in declaration order, with its JSON names.
GO_FIELDS = ["kind", "containerId", "config", "ifName", "networkName", "netns", "cniArgs",
             "capabilityArgs", "result"]


def test_cache_layout_is_go_s(world: Plugins, cni: CNIConfig, cache_dir: str) -> None:
    net = netlist("bridge")
    rt = RuntimeConf("ctr1", netns="/run/netns/pod1", args=[("K", "V")],
                     capability_args={"portMappings": []})
    cni.add_network_list(net, rt)
    path = Path(cache_dir, "results", "net1-ctr1-eth0")
    obj = json.loads(path.read_bytes())
    assert list(obj) == GO_FIELDS
    assert obj["kind"] == "cniCacheV1"
    assert base64.b64decode(obj["config"]) == net.conf_bytes
    assert obj["cniArgs"] == [["K", "V"]]
    assert obj["result"]["cniVersion"] == "1.0.0"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(cache_dir).stat().st_mode) == 0o700
    assert b" " not in path.read_bytes().replace(b'"cni.dev', b"")   # compact, as Go writes


def test_cache_leaves_out_empty_fields(tmp_path: Path) -> None:
    c = cache.ResultCache(str(tmp_path))
    c.write(cache.Attachment("c1", "n", "eth0", config=b"{}"))
    obj = json.loads(Path(c.path("n", "c1", "eth0")).read_text())
    assert list(obj) == ["kind", "containerId", "config", "ifName", "networkName"]


def test_cache_round_trip_and_listing(tmp_path: Path) -> None:
    c = cache.ResultCache(str(tmp_path))
    a = cache.Attachment("c1", "net1", "eth0", config=b'{"name":"net1"}', netns="/run/netns/x",
                         cni_args=[("A", "1")], capability_args={"mac": "0a:00:00:00:00:01"},
                         result={"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]})
    c.write(a)
    assert c.read("net1", "c1", "eth0") == a
    c.write(cache.Attachment("c2", "net1", "eth0"))
    c.write(cache.Attachment("c1", "net2", "eth1"))
    results = Path(c.results_dir)
    (results / "net3-c1-eth0").write_text("{broken")
    (results / "net4-c1-eth0").write_text('{"kind": "cniCacheV2", "containerId": "c1"}')
    (results / ".tmp-xyz").write_text(json.dumps(a.to_json()))
    # what a restarted runtime sees: everything readable, sorted by file name
    assert [(x.network, x.container_id, x.ifname) for x in c.attachments()] == [
        ("net1", "c1", "eth0"), ("net1", "c2", "eth0"), ("net2", "c1", "eth1")]
    assert [(x.network, x.ifname) for x in c.attachments("c1")] == [
        ("net1", "eth0"), ("net2", "eth1")]
    assert c.delete("net1", "c1", "eth0") and not c.delete("net1", "c1", "eth0")
    assert c.read("net1", "c1", "eth0") is None


def test_cache_reads_go_written_records() -> None:
    """A record as Go's encoding/json writes it: HTML-escaped, config base64, nulls."""
    config = b'{"cniVersion":"0.4.0","name":"n&1","plugins":[{"type":"bridge"}]}'
    text = ('{"kind":"cniCacheV1","containerId":"c1","config":"%s","ifName":"eth0",'
            '"networkName":"n\\u00261","cniArgs":[["K8S_POD_NAME","web"]],'
            '"result":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.2/24"}],'
            '"dns":{}}}') % base64.b64encode(config).decode()
    a = cache.Attachment.from_json(json.loads(text))
    assert (a.network, a.config, a.cni_args, a.capability_args) == (
        "n&1", config, [("K8S_POD_NAME", "web")], {})
    assert cache.Attachment.from_json(json.loads(
        '{"kind":"cniCacheV1","containerId":"c","config":null,"ifName":"e",'
        '"networkName":"n","capabilityArgs":null}')).config == b""


def test_cache_reads_the_legacy_bare_result(tmp_path: Path, world: Plugins) -> None:
    c = cache.ResultCache(str(tmp_path))
    Path(c.results_dir).mkdir(parents=True)
    Path(c.path("net1", "ctr1", "eth0")).write_text(json.dumps(
        {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.2/24"}]}))
    a = c.read("net1", "ctr1", "eth0")
    assert a is not None and a.result is not None and a.result["cniVersion"] == "0.3.1"
    assert c.attachments() == []                       # not listable, as in Go
    cni = CNIConfig("/bin", cache_dir=str(tmp_path), exec=world.exec)
    assert cni.get_network_list_cached_result(netlist("bridge", v="0.4.0"), RT) == Result(
        ips=[IPConfig("10.1.0.2/24")])


def test_cache_path_needs_all_three(tmp_path: Path) -> None:
    c = cache.ResultCache(str(tmp_path))
    with pytest.raises(CNIError, match="cache file path requires network name"):
        c.path("net1", "", "eth0")
    assert c.path("n", "c", "e") == str(tmp_path / "results" / "n-c-e")


def test_cached_config(world: Plugins, cni: CNIConfig) -> None:
    net = netlist({"type": "portmap", "capabilities": {"portMappings": True}})
    rt = RuntimeConf("ctr1", netns="/x", args=[("A", "1")], capability_args={"portMappings": [1]})
    assert cni.get_network_list_cached_config(net, rt) is None
    cni.add_network_list(net, rt)
    got = cni.get_network_list_cached_config(net, RuntimeConf("ctr1", netns="/x"))
    assert got is not None
    config, new_rt = got
    assert config == net.conf_bytes
    assert (new_rt.args, new_rt.capability_args) == ([("A", "1")], {"portMappings": [1]})


# --- runtime conf, exec -----------------------------------------------------------------------


def test_container_id_like_go_cnitool() -> None:
    import hashlib

    cid = container_id_for_netns("/run/netns/pod1")
    assert cid == "cnitool-" + hashlib.sha512(b"/run/netns/pod1").hexdigest()[:20]
    assert container_id_for_netns("/run/netns/../netns/pod1/") == cid
    # the Go cnitool's ID for this path: hex of the first 10 bytes of sha512
    assert cid == "cnitool-" + hashlib.sha512(b"/run/netns/pod1").digest()[:10].hex()


@pytest.mark.parametrize(("raw", "pairs"), [
    ("A=1", [("A", "1")]), ("IgnoreUnknown=1;K8S_POD_NAME=web", [("IgnoreUnknown", "1"),
                                                                  ("K8S_POD_NAME", "web")])])
def test_parse_cni_args(raw: str, pairs: list[tuple[str, str]]) -> None:
    assert parse_cni_args(raw) == pairs
    assert RuntimeConf("c", args=pairs).args_str == raw


@pytest.mark.parametrize("raw", ["A", "A=", "=1", "A=1=2", "A=1;", ";"])
def test_parse_cni_args_is_strict(raw: str) -> None:
    with pytest.raises(CNIError) as e:
        parse_cni_args(raw)
    assert e.value.code == Code.INVALID_ENVIRONMENT_VARIABLES


def test_raw_exec_retries_text_file_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    tries: list[int] = []

    def fake_run(*a: Any, **kw: Any) -> Any:
        tries.append(1)
        if len(tries) < 3:
            raise OSError(errno.ETXTBSY, "Text file busy")
        return subprocess.CompletedProcess(a[0], 0, b'{"ok": 1}', b"")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(invoke.time, "sleep", lambda s: None)
    assert invoke.RawExec().exec_plugin("/bin/x", b"{}", {}) == b'{"ok": 1}'
    assert len(tries) == 3
    tries.clear()
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: (_ for _ in ()).throw(
        OSError(errno.ETXTBSY, "Text file busy")))
    with pytest.raises(CNIError) as e:
        invoke.RawExec().exec_plugin("/bin/x", b"{}", {})
    assert e.value.code == Code.IO_FAILURE


def test_raw_exec_passes_stderr_on(tmp_path: Path) -> None:
    p = tmp_path / "plugin"
    p.write_text("#!/bin/sh\necho 'a log line' >&2\necho '{}'\n")
    p.chmod(0o755)
    seen: list[str] = []
    assert invoke.RawExec(stderr=seen.append).exec_plugin(str(p), b"", {}) == b"{}\n"
    assert seen == ["a log line\n"]


def test_in_process_exec_serves_links_to_us(plugin_dir: str, tmp_path: Path) -> None:
    from tests.fixtures.run import our_executable

    other: list[str] = []
    fake = invoke.FakeExec(lambda p, s, e: other.append(p) or b"{}")
    ex = invoke.InProcessExec(our_executable(), other=fake)
    edu = os.path.join(plugin_dir, "educative")
    assert ex.serves(edu) == "educative"
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "educative"}).encode()
    env = invoke.cni_env("ADD", container_id="c1", netns="/tmp", ifname="eth0", path=plugin_dir)
    assert json.loads(ex.exec_plugin(edu, stdin, env)) == {"cniVersion": "1.0.0", "dns": {}}
    assert other == []
    with pytest.raises(CNIError) as e:
        ex.exec_plugin(edu, b"{", env)
    assert e.value.code == Code.DECODING_FAILURE
    ex.exec_plugin("/usr/lib/cni/bridge", stdin, env)     # not us: handed on
    assert other == ["/usr/lib/cni/bridge"]
    cni = CNIConfig(plugin_dir, cache_dir=str(tmp_path), exec=ex)
    assert cni.get_version_info("educative") == version.ALL
