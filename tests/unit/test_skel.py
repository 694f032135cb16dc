"""skel.run, in process, with the educative plugin (no root needed): every path of the
protocol with its exit code, error code and stdout.

Each call goes through `call()`, which also checks the invariants of every reply: an
error is rc 1 with exactly {cniVersion, code, msg, details} on stdout and no traceback;
success prints either nothing or one JSON object.
"""

from __future__ import annotations

import json
import sys
import types as pytypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cni_plugins import plugins, skel, version
from cni_plugins.errors import CNIError, Code
from cni_plugins.skel import CmdArgs

GOLDEN = Path(__file__).parent / "golden"
ALL = version.ALL
SUPPORTED_LIST = '["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]'
NOT_OUR_NETNS = "/var/run/netns/cni-unit-test-does-not-exist"


@dataclass
class Reply:
    rc: int
    out: Any                # parsed stdout, or None when stdout was empty
    raw: str
    stderr: str
    stdin_reads: int
    log: str = ""           # what educative appended to cniOutput

    @property
    def code(self) -> int:
        assert self.rc == 1, f"expected an error, got rc {self.rc}: {self.raw}"
        return self.out["code"]


@dataclass
class Env:
    command: str = "ADD"
    container_id: str | None = "ctr-1"
    netns: str | None = NOT_OUR_NETNS
    ifname: str | None = "eth0"
    path: str | None = "/opt/cni/bin"
    extra: dict[str, str] = field(default_factory=dict)

    def build(self) -> dict[str, str]:
        env = {"CNI_COMMAND": self.command, "CNI_CONTAINERID": self.container_id,
               "CNI_NETNS": self.netns, "CNI_IFNAME": self.ifname, "CNI_PATH": self.path,
               **self.extra}
        return {k: v for k, v in env.items() if v is not None}


def conf(v: str | None = "1.0.0", **more: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "testnet", "type": "educative"}
    if v is not None:
        c["cniVersion"] = v
    c.update(more)
    return c


def call(env: dict[str, str] | Env, stdin: bytes | dict | str = b"", plugin: str = "educative",
         tmp_log: Path | None = None) -> Reply:
    if isinstance(env, Env):
        env = env.build()
    if isinstance(stdin, dict):
        if tmp_log is not None:
            stdin = {**stdin, "cniOutput": str(tmp_log)}
        data = json.dumps(stdin).encode()
    else:
        data = stdin.encode() if isinstance(stdin, str) else stdin
    reads = []
    errs: list[str] = []

    def read() -> bytes:
        reads.append(1)
        return data

    rc, raw = skel.run(plugin, env, read, exe="", stderr=errs.append)
    out = json.loads(raw) if raw.strip() else None
    assert "Traceback" not in raw
    if rc != 0:
        assert rc == 1
        assert isinstance(out, dict)
        assert set(out) == {"cniVersion", "code", "msg", "details"}, out
        assert isinstance(out["code"], int) and isinstance(out["msg"], str)
        assert isinstance(out["details"], str) and out["cniVersion"] in ALL
        assert "\n" not in out["msg"]
    log = tmp_log.read_text() if tmp_log is not None and tmp_log.exists() else ""
    return Reply(rc, out, raw, "".join(errs), len(reads), log)


# --- no command, VERSION, unknown command ---------------------------------------------


@pytest.mark.parametrize("env", [{}, {"CNI_COMMAND": ""}, {"CNI_PATH": "/x", "CNI_IFNAME": "e"}])
def test_no_command_prints_about_on_stderr(env: dict[str, str]) -> None:
    r = call(env, b"{not read")
    assert (r.rc, r.raw, r.stdin_reads) == (0, "", 0)
    assert r.stderr.startswith("CNI educative plugin (cni-plugins ")
    assert "CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0" \
        in r.stderr


@pytest.mark.parametrize("env", [{"CNI_COMMAND": "VERSION"}, Env("VERSION").build()])
def test_version(env: dict[str, str]) -> None:
    r = call(env, b"{garbage that must not be read")
    assert (r.rc, r.stdin_reads, r.stderr) == (0, 0, "")
    assert r.out == {"cniVersion": "1.1.0", "supportedVersions": list(ALL)}


def test_version_of_a_plugin_speaking_fewer_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(plugins.SUPPORTED, "educative", ("0.4.0", "1.0.0"))
    r = call({"CNI_COMMAND": "VERSION"})
    assert r.out == {"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0"]}


@pytest.mark.parametrize("cmd", ["FOO", "add", "Version"])
def test_unknown_command(cmd: str) -> None:
    r = call(Env(cmd), conf())
    assert r.code == Code.INVALID_ENVIRONMENT_VARIABLES
    assert r.out["msg"] == f"unknown CNI_COMMAND: {cmd}"


# --- the environment table -------------------------------------------------------------


@pytest.mark.parametrize(("cmd", "missing"), [
    ("ADD", "CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH"),
    ("CHECK", "CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH"),
    ("DEL", "CNI_CONTAINERID,CNI_IFNAME,CNI_PATH"),
    ("GC", "CNI_PATH"),
    ("STATUS", "CNI_PATH"),
])
def test_missing_variables_are_reported_at_once(cmd: str, missing: str) -> None:
    r = call({"CNI_COMMAND": cmd}, conf("1.1.0"))
    assert r.code == Code.INVALID_ENVIRONMENT_VARIABLES
    assert r.out["msg"] == f"required env variables [{missing}] missing"
    assert r.stdin_reads == 0


@pytest.mark.parametrize("var", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"])
def test_one_missing_variable_for_add(var: str) -> None:
    env = Env().build()
    del env[var]
    r = call(env, conf())
    assert r.code == 4
    assert r.out["msg"] == f"required env variables [{var}] missing"


def test_empty_variable_counts_as_missing() -> None:
    r = call(Env(ifname="", path=""), conf())
    assert r.out["msg"] == "required env variables [CNI_IFNAME,CNI_PATH] missing"


def test_del_does_not_need_netns(tmp_path: Path) -> None:
    r = call(Env("DEL", netns=None), conf(), tmp_log=tmp_path / "log")
    assert (r.rc, r.raw) == (0, "")
    assert "CNI Command: DEL" in r.log and "Netns: \n" in r.log


@pytest.mark.parametrize("cmd", ["GC", "STATUS"])
def test_gc_and_status_need_only_path(cmd: str, tmp_path: Path) -> None:
    r = call({"CNI_COMMAND": cmd, "CNI_PATH": "/opt/cni/bin"}, conf("1.1.0"),
             tmp_log=tmp_path / "log")
    assert (r.rc, r.raw, r.stdin_reads) == (0, "", 1)
    assert r.log == ""          # educative has no cmd_gc/cmd_status: skel's no-op


def test_stdin_read_failure_is_io_failure() -> None:
    def broken() -> bytes:
        raise OSError(5, "Input/output error")

    rc, raw = skel.run("educative", Env().build(), broken, stderr=lambda s: None)
    out = json.loads(raw)
    assert (rc, out["code"]) == (1, Code.IO_FAILURE)
    assert out["msg"].startswith("error reading from stdin")


# --- the config -----------------------------------------------------------------------


@pytest.mark.parametrize("stdin", [b"", b"{", b"{\"name\": \"x\",}", b"\xff\xfe{}", b"not json"])
def test_malformed_json(stdin: bytes) -> None:
    r = call(Env(), stdin)
    assert r.code == Code.DECODING_FAILURE
    assert r.out["msg"].startswith("error unmarshall network config: ")


@pytest.mark.parametrize("stdin", [b"[]", b"[{\"name\": \"x\"}]", b"\"x\"", b"42", b"null"])
def test_non_object_json(stdin: bytes) -> None:
    r = call(Env(), stdin)
    assert r.code == Code.DECODING_FAILURE
    assert r.out["msg"] == "error unmarshall network config: expected a JSON object"


@pytest.mark.parametrize("name", [None, ""])
def test_missing_name(name: str | None) -> None:
    c = conf()
    if name is None:
        del c["name"]
    else:
        c["name"] = name
    r = call(Env(), c)
    assert r.code == Code.INVALID_NETWORK_CONFIG
    assert r.out["msg"] == "missing network name"


@pytest.mark.parametrize("name", ["../x", "a/b", "-lead", ".hidden", "sp ace", "x;y", "net\n"])
def test_bad_network_name(name: Any) -> None:
    r = call(Env(), conf(name=name))
    assert r.code == Code.INVALID_NETWORK_CONFIG
    assert r.out["msg"] == "invalid characters found in network name"
    assert r.out["details"] == str(name)


@pytest.mark.parametrize(("name", "kind"), [(5, "a number"), (["n"], "a list"),
                                            (True, "a boolean"), ({}, "an object")])
def test_network_name_of_the_wrong_type(name: Any, kind: str) -> None:
    """Not a string: a decoding failure naming the key (Go's skel: code 6), not a name
    with invalid characters."""
    r = call(Env(), conf(name=name))
    assert r.code == Code.DECODING_FAILURE
    assert r.out["msg"] == f"error unmarshall network config: name: expected a string, got {kind}"


@pytest.mark.parametrize("name", ["a", "net-1", "my_net.v2", "0net"])
def test_good_network_name(name: str) -> None:
    assert call(Env(), conf(name=name)).rc == 0


@pytest.mark.parametrize("cmd", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize("cid", ["a/b", "../etc", "-x", "a b", "ctr\n1", "ctr1\n"])
def test_bad_container_id(cmd: str, cid: str) -> None:
    r = call(Env(cmd, container_id=cid), conf("1.0.0"))
    assert r.code == Code.INVALID_ENVIRONMENT_VARIABLES
    assert r.out["msg"] == "invalid characters in containerID"
    assert r.out["details"] == cid


@pytest.mark.parametrize("cmd", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize(("ifname", "msg"), [
    ("a" * 16, "interface name is too long"),
    ("ü" * 8, "interface name is too long"),          # 16 bytes, 8 characters
    (".", "interface name is . or .."),
    ("..", "interface name is . or .."),
    ("a/b", "interface name contains / or : or whitespace characters"),
    ("a:b", "interface name contains / or : or whitespace characters"),
    ("a b", "interface name contains / or : or whitespace characters"),
    ("eth\t0", "interface name contains / or : or whitespace characters"),
])
def test_bad_ifname(cmd: str, ifname: str, msg: str) -> None:
    r = call(Env(cmd, ifname=ifname), conf("1.0.0"))
    assert r.code == Code.INVALID_ENVIRONMENT_VARIABLES
    assert r.out["msg"] == msg


@pytest.mark.parametrize("ifname", ["a" * 15, "eth0", "net1.100", "veth-ü"])
def test_good_ifname(ifname: str) -> None:
    assert call(Env(ifname=ifname), conf()).rc == 0


def test_validators_run_for_optional_variables_when_set() -> None:
    """GC needs no CNI_IFNAME, but a bad one given is still refused (as in Go)."""
    r = call({"CNI_COMMAND": "GC", "CNI_PATH": "/p", "CNI_IFNAME": "a/b"}, conf("1.1.0"))
    assert r.code == Code.INVALID_ENVIRONMENT_VARIABLES


# --- versions -------------------------------------------------------------------------


@pytest.mark.parametrize(("v", "kind"), [(1, "a number"), (1.0, "a number"),
                                         (["1.0.0"], "a list"), (True, "a boolean")])
def test_cni_version_of_the_wrong_type(v: Any, kind: str) -> None:
    """A number where a string is expected is a decoding failure (6), not "incompatible"."""
    r = call(Env(), conf(v))
    assert r.code == Code.DECODING_FAILURE
    assert r.out["msg"] == ("error unmarshall network config: cniVersion: expected a string, "
                            f"got {kind}")


@pytest.mark.parametrize("v", ["9.9.9", "abc", "1.1", "0.5.0", "", None])
def test_unknown_cni_version(v: Any) -> None:
    c = conf()
    c["cniVersion"] = v
    r = call(Env(), c)
    if v in ("", None):             # absent or empty: 0.1.0, which educative speaks
        assert r.code == Code.INTERNAL      # ... but an empty result cannot be 0.1.0
        return
    assert r.code == Code.INCOMPATIBLE_CNI_VERSION
    assert r.out["msg"] == "incompatible CNI versions"
    assert r.out["details"] == f"config is {json.dumps(v)}, plugin supports {SUPPORTED_LIST}"


def test_plugin_supported_versions_in_details(monkeypatch: pytest.MonkeyPatch) -> None:
    """plugins.SUPPORTED is the one source: VERSION advertises what requests accept."""
    mod = _fake_plugin(monkeypatch, "fewer")
    monkeypatch.setitem(plugins.SUPPORTED, "fewer", ("0.3.1", "0.4.0"))
    mod.cmd_add = lambda args: None
    r = call(Env(), conf("1.0.0"), plugin="fewer")
    assert r.code == 1
    assert r.out["details"] == 'config is "1.0.0", plugin supports ["0.3.1" "0.4.0"]'


def _golden(name: str, drop_version: bool = True) -> dict:
    obj = json.loads((GOLDEN / f"{name}.json").read_text())
    if drop_version:
        obj.pop("cniVersion")
    return obj


def test_absent_cni_version_is_010() -> None:
    r = call(Env(), conf(None, prevResult=_golden("0.2.0")))
    assert r.rc == 0
    assert r.out == {**_golden("0.2.0"), "cniVersion": "0.1.0"}


def test_absent_cni_version_refuses_check() -> None:
    r = call(Env("CHECK"), conf(None))
    assert r.code == Code.INCOMPATIBLE_CNI_VERSION
    assert r.out["cniVersion"] == "0.1.0"


@pytest.mark.parametrize(("versions", "chosen"), [
    (["0.3.1", "1.0.0", "9.9.9"], "1.0.0"),
    (["1.0.0", "0.4.0", "1.1.0"], "1.1.0"),
    (["0.3.0", "0.3.1"], "0.3.1"),
    (["0.4.0", "0.10.0", 7], "0.4.0"),
])
def test_cni_versions_list_picks_highest_supported(versions: list, chosen: str) -> None:
    r = call(Env(), conf(None, cniVersions=versions, prevResult=_golden("1.1.0")))
    assert r.rc == 0
    assert r.out["cniVersion"] == chosen


def test_cni_versions_list_with_nothing_known() -> None:
    r = call(Env(), conf(None, cniVersions=["9.9.9", "2.0.0"]))
    assert r.code == Code.INCOMPATIBLE_CNI_VERSION
    assert r.out["msg"] == "incompatible CNI versions"
    assert "9.9.9" in r.out["details"] and "2.0.0" in r.out["details"]
    assert r.out["details"].endswith(f"plugin supports {SUPPORTED_LIST}")


@pytest.mark.parametrize("v", ALL)
def test_add_answers_in_the_config_version(v: str) -> None:
    """educative passes prevResult on: skel converts it to the request's version."""
    r = call(Env(), conf(v, prevResult=_golden("1.1.0", drop_version=False)))
    assert r.rc == 0
    assert r.out["cniVersion"] == v
    if version.at_least(v, "0.3.0"):
        assert [ip["address"] for ip in r.out["ips"]] == [
            "10.1.0.5/24", "fd00:10:1::5/64", "10.1.0.6/24", "fd00:10:1::6/64"]
    else:
        assert r.out["ip4"]["ip"] == "10.1.0.5/24" and r.out["ip6"]["ip"] == "fd00:10:1::5/64"


@pytest.mark.parametrize("v", [v for v in ALL if version.at_least(v, "0.3.0")])
def test_add_without_prev_result_is_empty(v: str, tmp_path: Path) -> None:
    r = call(Env(), conf(v), tmp_log=tmp_path / "log")
    assert r.out == {"cniVersion": v, "dns": {}}
    assert "CNI Command: ADD" in r.log and "ContainerID: ctr-1" in r.log


@pytest.mark.parametrize("v", ["0.1.0", "0.2.0"])
def test_add_without_addresses_cannot_be_02x(v: str) -> None:
    """As Go's debug plugin: PrintResult of an empty result fails to convert."""
    r = call(Env(), conf(v))
    assert r.code == Code.INTERNAL
    assert r.out["msg"] == "cannot convert: no valid IP addresses"
    assert r.out["cniVersion"] == v


@pytest.mark.parametrize("v", ["0.1.0", "0.2.0", "0.3.0", "0.3.1"])
def test_check_needs_040(v: str, tmp_path: Path) -> None:
    r = call(Env("CHECK"), conf(v), tmp_log=tmp_path / "log")
    assert r.code == Code.INCOMPATIBLE_CNI_VERSION
    assert r.out["msg"] == "config version does not allow CHECK"
    assert r.log == ""


@pytest.mark.parametrize("v", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_runs_from_040(v: str, tmp_path: Path) -> None:
    r = call(Env("CHECK"), conf(v), tmp_log=tmp_path / "log")
    assert (r.rc, r.raw) == (0, "")
    assert "CNI Command: CHECK" in r.log


@pytest.mark.parametrize("cmd", ["GC", "STATUS"])
@pytest.mark.parametrize("v", ["0.4.0", "1.0.0"])
def test_gc_and_status_need_110(cmd: str, v: str) -> None:
    r = call({"CNI_COMMAND": cmd, "CNI_PATH": "/opt/cni/bin"}, conf(v))
    assert r.code == Code.INCOMPATIBLE_CNI_VERSION
    assert r.out["msg"] == f"config version does not allow {cmd}"


@pytest.mark.parametrize("cmd", ["GC", "STATUS"])
def test_gc_and_status_without_implementation_succeed(cmd: str) -> None:
    r = call(Env(cmd), conf("1.1.0", **{"cni.dev/valid-attachments": []}))
    assert (r.rc, r.raw) == (0, "")


# --- CNI_NETNS must not be our own namespace ------------------------------------------


@pytest.mark.parametrize("cmd", ["ADD", "CHECK", "DEL"])
def test_own_netns_is_refused(cmd: str, tmp_path: Path) -> None:
    r = call(Env(cmd, netns="/proc/self/ns/net"), conf("1.0.0"), tmp_log=tmp_path / "log")
    assert r.code == Code.INVALID_NETNS
    assert r.out["msg"] == "plugin's netns and netns from CNI_NETNS should not be the same"
    assert r.log == ""


@pytest.mark.parametrize("override", ["1", "true", "TRUE"])
def test_own_netns_with_override(override: str, tmp_path: Path) -> None:
    r = call(Env(netns="/proc/self/ns/net", extra={"CNI_NETNS_OVERRIDE": override}),
             conf("1.0.0"), tmp_log=tmp_path / "log")
    assert r.out == {"cniVersion": "1.0.0", "dns": {}}
    assert "Netns: /proc/self/ns/net" in r.log


@pytest.mark.parametrize("override", ["0", "false", "yes"])
def test_own_netns_with_other_override_values(override: str) -> None:
    r = call(Env(netns="/proc/self/ns/net", extra={"CNI_NETNS_OVERRIDE": override}), conf())
    assert r.code == Code.INVALID_NETNS


def test_another_namespace_file_is_not_ours(tmp_path: Path) -> None:
    """A path that exists but is not our netns (here: a plain file) passes this check."""
    f = tmp_path / "ns"
    f.write_text("")
    assert call(Env(netns=str(f)), conf()).rc == 0


# --- crashes and plugin errors --------------------------------------------------------


def _fake_plugin(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: Any) -> Any:
    modname = f"tests.unit._fake_{name.replace('-', '_')}"
    mod = pytypes.ModuleType(modname)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, modname, mod)
    monkeypatch.setitem(plugins.REGISTRY, name, modname)
    return mod


def _raise(exc: BaseException) -> Any:
    def fn(args: CmdArgs) -> Any:
        raise exc
    return fn


@pytest.mark.parametrize("cmd", ["ADD", "DEL", "CHECK"])
def test_crash_is_code_999_one_line(cmd: str, monkeypatch: pytest.MonkeyPatch) -> None:
    boom = RuntimeError("boom: first line\n  File \"x.py\", line 1\nsecond line")
    _fake_plugin(monkeypatch, "crashy", **{f"cmd_{cmd.lower()}": _raise(boom)})
    r = call(Env(cmd), conf("1.0.0"), plugin="crashy")
    assert r.out == {"cniVersion": "1.0.0", "code": 999, "msg": "boom: first line",
                     "details": "RuntimeError"}
    assert r.stderr == ""


def test_crash_in_a_real_plugin_module(monkeypatch: pytest.MonkeyPatch) -> None:
    from cni_plugins.meta import educative

    monkeypatch.setattr(educative, "cmd_add", _raise(KeyError("ipam")))
    r = call(Env(), conf("0.4.0"))
    assert r.out == {"cniVersion": "0.4.0", "code": 999, "msg": "'ipam'", "details": "KeyError"}


def test_crash_without_message_names_the_type(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_plugin(monkeypatch, "crashy", cmd_add=_raise(ZeroDivisionError()))
    r = call(Env(), conf(), plugin="crashy")
    assert (r.out["code"], r.out["msg"], r.out["details"]) == (
        999, "ZeroDivisionError", "ZeroDivisionError")


def test_crash_traceback_goes_to_stderr_only_when_debugging(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_plugin(monkeypatch, "crashy", cmd_add=_raise(ValueError("bad")))
    r = call(Env(extra={"CNI_PLUGINS_DEBUG": "1"}), conf(), plugin="crashy")
    assert r.out["code"] == 999 and r.out["msg"] == "bad"
    assert "Traceback" in r.stderr and "ValueError: bad" in r.stderr


def test_plugin_cni_error_passes_through_unwrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_plugin(monkeypatch, "picky",
                 cmd_add=_raise(CNIError(107, "failed to frob 'eth0'", "EFROB")))
    r = call(Env(), conf("0.3.1"), plugin="picky")
    assert r.out == {"cniVersion": "0.3.1", "code": 107, "msg": "failed to frob 'eth0'",
                     "details": "EFROB"}


def test_add_returning_nothing_is_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_plugin(monkeypatch, "lazy", cmd_add=lambda args: None)
    r = call(Env(), conf(), plugin="lazy")
    assert r.code == Code.INTERNAL
    assert r.out["msg"] == "plugin lazy returned no result from ADD"


def test_verbs_see_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[CmdArgs] = []

    def gc(args: CmdArgs) -> None:
        seen.append(args)

    _fake_plugin(monkeypatch, "gcer", cmd_gc=gc)
    c = conf("1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]})
    r = call({"CNI_COMMAND": "GC", "CNI_PATH": "/a:/b", "CNI_ARGS": "K=V"}, c, plugin="gcer")
    assert (r.rc, r.raw) == (0, "")
    (args,) = seen
    assert (args.command, args.path, args.args, args.cni_version) == ("GC", "/a:/b", "K=V", "1.1.0")
    assert args.conf == c and json.loads(args.stdin) == c
    assert args.valid_attachments() == {("c1", "eth0")}


# --- CmdArgs ---------------------------------------------------------------------------


def _args(conf: dict) -> CmdArgs:
    a = CmdArgs(command="GC")
    a.conf = conf
    return a


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_valid_attachments(key: str) -> None:
    a = _args({key: [{"containerID": "c1", "ifname": "eth0"},
                     {"containerID": "c2", "ifname": "net1"},
                     {"containerID": "c1", "ifname": "eth0"},
                     {"containerID": "c3"}]})
    assert a.valid_attachments() == {("c1", "eth0"), ("c2", "net1"), ("c3", "")}


def test_valid_attachments_prefers_the_current_key() -> None:
    a = _args({"cni.dev/valid-attachments": [{"containerID": "new", "ifname": "eth0"}],
               "cni.dev/attachments": [{"containerID": "old", "ifname": "eth0"}]})
    assert a.valid_attachments() == {("new", "eth0")}


def test_valid_attachments_absent_or_empty() -> None:
    assert _args({}).valid_attachments() == set()
    assert _args({"cni.dev/valid-attachments": []}).valid_attachments() == set()


@pytest.mark.parametrize("raw", [{"containerID": "c"}, "c1", [["c1", "eth0"]], [{"ifname": "e"}],
                                 [{"containerID": 5, "ifname": "e"}]])
def test_valid_attachments_malformed(raw: Any) -> None:
    with pytest.raises(CNIError) as e:
        _args({"cni.dev/valid-attachments": raw}).valid_attachments()
    assert e.value.code == Code.INVALID_NETWORK_CONFIG
    assert "cni.dev/valid-attachments" in e.value.msg


def test_cmd_args_replace_keeps_the_request() -> None:
    a = CmdArgs(command="ADD", container_id="c", netns="/n", ifname="eth0", args="A=1",
                path="/p", netns_override="1", stdin=b"{}", exe="/bin/x")
    b = a.replace(command="DEL", stdin=b"{\"x\": 1}")
    assert (b.command, b.stdin) == ("DEL", b"{\"x\": 1}")
    assert (b.container_id, b.netns, b.ifname, b.args, b.path, b.netns_override, b.exe) == (
        "c", "/n", "eth0", "A=1", "/p", "1", "/bin/x")
    assert a.command == "ADD"


def test_replace_copies_the_decoded_config_and_version() -> None:
    """The rollback DEL after a failed result conversion is args.replace(command="DEL"):
    it must carry the request's config, not an empty one."""
    a = CmdArgs(command="ADD", container_id="c", stdin=b'{"name": "n"}')
    a.conf, a.cni_version = {"name": "n", "macspoofchk": True}, "0.2.0"
    d = a.replace(command="DEL")
    assert (d.command, d.container_id, d.stdin, d.conf, d.cni_version) == (
        "DEL", "c", b'{"name": "n"}', a.conf, "0.2.0")
    assert a.command == "ADD"
