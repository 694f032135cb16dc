"""invoke: finding a plugin in CNI_PATH, and delegating to it by exec (fake shell-script
plugins) or in process (a link to our own executable)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cni_plugins import invoke
from cni_plugins.errors import CNIError, Code
from cni_plugins.meta import educative
from cni_plugins.skel import CmdArgs
from cni_plugins.types import DNS, Interface, IPConfig, Result, Route
from tests.fixtures.run import our_executable

RESULT_040 = {
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x"}],
    "ips": [
        {"version": "4", "interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
        {"version": "6", "interface": 0, "address": "fd00::5/64"},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "fd01::/64", "gw": "fd00::1"}],
    "dns": {"nameservers": ["10.1.0.1"], "search": ["example.com"]},
}
CANONICAL = Result(
    interfaces=[Interface(name="eth0", mac="0a:58:0a:01:00:05", sandbox="/var/run/netns/x")],
    ips=[IPConfig("10.1.0.5/24", gateway="10.1.0.1", interface=0),
         IPConfig("fd00::5/64", interface=0)],
    routes=[Route("0.0.0.0/0", gw="10.1.0.1"), Route("fd01::/64", gw="fd00::1")],
    dns=DNS(nameservers=["10.1.0.1"], search=["example.com"]))
ERROR = {"cniVersion": "0.4.0", "code": 11, "msg": "no IP addresses available in range set",
         "details": "10.1.0.2-10.1.0.254"}
CONF = {"cniVersion": "0.4.0", "name": "net1", "type": "bridge",
        "ipam": {"type": "fake-ipam", "subnet": "10.1.0.0/24"}}


def make_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_plugin(d: Path, name: str, add_stdout: str, rc: int = 0, stderr: str = "") -> Path:
    """A plugin that records its CNI_* env and stdin next to itself, then answers."""
    d.mkdir(parents=True, exist_ok=True)
    return make_exe(d / name, f"""#!/bin/sh
env | grep '^CNI_' | sort > "$0.$CNI_COMMAND.env"
cat > "$0.$CNI_COMMAND.stdin"
if [ "$CNI_COMMAND" = ADD ] || [ {rc} -ne 0 ]; then
cat <<'EOF'
{add_stdout}
EOF
fi
printf '%s' '{stderr}' >&2
exit {rc}
""")


def recorded_env(plugin: Path, verb: str) -> dict[str, str]:
    lines = Path(f"{plugin}.{verb}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def request(path: str, **kw: object) -> CmdArgs:
    a = CmdArgs(command="ADD", container_id="ctr-1", netns="/var/run/netns/x", ifname="eth0",
                args="IgnoreUnknown=1;K8S_POD_NAME=web-0", path=path,
                stdin=json.dumps(CONF).encode(), exe="")
    a.conf = dict(CONF)
    a.cni_version = "0.4.0"
    for k, v in kw.items():
        setattr(a, k, v)
    return a


# --- find_in_path ---------------------------------------------------------------------


def test_find_in_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    p = make_exe(b / "host-local", "#!/bin/sh\n")
    assert invoke.find_in_path("host-local", f"{a}:{b}") == str(p)
    assert invoke.find_in_path("host-local", f"::{a}::{b}:") == str(p)


def test_find_in_path_first_directory_wins(tmp_path: Path) -> None:
    p1 = make_exe((tmp_path / "one").mkdir() or tmp_path / "one" / "x", "#!/bin/sh\n")
    make_exe((tmp_path / "two").mkdir() or tmp_path / "two" / "x", "#!/bin/sh\n")
    assert invoke.find_in_path("x", f"{tmp_path / 'one'}:{tmp_path / 'two'}") == str(p1)


def test_find_in_path_skips_what_cannot_run(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    (a / "x").write_text("not executable")
    (b / "x").mkdir()                              # a directory, even if searchable
    p = make_exe(c / "x", "#!/bin/sh\n")
    assert invoke.find_in_path("x", f"{a}:{b}:{c}") == str(p)


@pytest.mark.parametrize("cni_path", ["", ":", "/nonexistent/dir"])
def test_find_in_path_not_found(tmp_path: Path, cni_path: str) -> None:
    with pytest.raises(CNIError) as e:
        invoke.find_in_path("nosuch-plugin", cni_path or "")
    assert e.value.code == Code.INVALID_NETWORK_CONFIG
    assert "'nosuch-plugin'" in e.value.msg
    assert e.value.msg.startswith("failed to find plugin 'nosuch-plugin' in path")


def test_find_in_path_not_found_names_the_dirs(tmp_path: Path) -> None:
    with pytest.raises(CNIError) as e:
        invoke.find_in_path("nosuch", f"{tmp_path}:/opt/cni/bin")
    assert str(tmp_path) in e.value.msg and "/opt/cni/bin" in e.value.msg


@pytest.mark.parametrize("name", ["../x", "x/../../x", "/bin/true", "sub/x", ".", "..", ""])
def test_find_in_path_refuses_paths(tmp_path: Path, name: str) -> None:
    bin_ = tmp_path / "bin"
    (bin_ / "sub").mkdir(parents=True)
    make_exe(tmp_path / "x", "#!/bin/sh\n")        # bin/../x exists and is executable
    make_exe(bin_ / "sub" / "x", "#!/bin/sh\n")
    with pytest.raises(CNIError) as e:
        invoke.find_in_path(name, str(bin_))
    assert e.value.code == Code.INVALID_NETWORK_CONFIG
    assert e.value.msg == f"invalid plugin type {name!r}"


# --- delegation by exec -------------------------------------------------------------------


def test_delegate_add_parses_the_result(tmp_path: Path) -> None:
    fake_plugin(tmp_path / "bin", "fake-ipam", json.dumps(RESULT_040, indent=2))
    r = invoke.delegate_add("fake-ipam", request(str(tmp_path / "bin")))
    assert r == CANONICAL


def test_delegate_passes_the_request(tmp_path: Path) -> None:
    bin_ = tmp_path / "bin"
    p = fake_plugin(bin_, "fake-ipam", json.dumps(RESULT_040))
    invoke.delegate_add("fake-ipam", request(f"{bin_}:/opt/cni/bin"))
    env = recorded_env(p, "ADD")
    assert {k: env.get(k) for k in ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS",
                                    "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")} == {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-1", "CNI_NETNS": "/var/run/netns/x",
        "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web-0",
        "CNI_PATH": f"{bin_}:/opt/cni/bin"}
    assert "CNI_NETNS_OVERRIDE" not in env
    assert json.loads(Path(f"{p}.ADD.stdin").read_text()) == CONF


def test_delegate_with_other_stdin_and_override(tmp_path: Path) -> None:
    p = fake_plugin(tmp_path, "fake-ipam", json.dumps(RESULT_040))
    other = b'{"cniVersion": "0.4.0", "name": "net1", "type": "fake-ipam"}'
    invoke.delegate_add("fake-ipam", request(str(tmp_path), netns_override="1"), stdin=other)
    assert Path(f"{p}.ADD.stdin").read_bytes() == other
    assert recorded_env(p, "ADD")["CNI_NETNS_OVERRIDE"] == "1"


@pytest.mark.parametrize("verb", ["DEL", "CHECK"])
def test_delegate_del_and_check(tmp_path: Path, verb: str) -> None:
    p = fake_plugin(tmp_path, "fake-ipam", json.dumps(RESULT_040))
    fn = invoke.delegate_del if verb == "DEL" else invoke.delegate_check
    assert fn("fake-ipam", request(str(tmp_path))) is None
    assert recorded_env(p, verb)["CNI_COMMAND"] == verb
    assert json.loads(Path(f"{p}.{verb}.stdin").read_text()) == CONF


@pytest.mark.parametrize("verb", ["ADD", "DEL", "CHECK"])
def test_delegate_error_passes_through(tmp_path: Path, verb: str) -> None:
    fake_plugin(tmp_path, "fake-ipam", json.dumps(ERROR), rc=1, stderr="some log line")
    fn = {"ADD": invoke.delegate_add, "DEL": invoke.delegate_del,
          "CHECK": invoke.delegate_check}[verb]
    with pytest.raises(CNIError) as e:
        fn("fake-ipam", request(str(tmp_path)))
    assert (e.value.code, e.value.msg, e.value.details) == (
        ERROR["code"], ERROR["msg"], ERROR["details"])


def test_delegate_error_without_details(tmp_path: Path) -> None:
    fake_plugin(tmp_path, "fake-ipam", '{"code": 7, "msg": "invalid config: subnet"}', rc=1)
    with pytest.raises(CNIError) as e:
        invoke.delegate_add("fake-ipam", request(str(tmp_path)))
    assert (e.value.code, e.value.msg, e.value.details) == (7, "invalid config: subnet", "")


@pytest.mark.parametrize("stdout", ["panic: runtime error", "", '{"msg": "no code"}', "[1]"])
def test_delegate_failing_without_error_json(tmp_path: Path, stdout: str) -> None:
    p = fake_plugin(tmp_path, "fake-ipam", stdout, rc=2, stderr="goroutine 1 [running]")
    with pytest.raises(CNIError) as e:
        invoke.delegate_add("fake-ipam", request(str(tmp_path)))
    assert e.value.code == Code.INTERNAL
    assert e.value.msg == f"plugin {p} failed with no error message"
    assert e.value.details == "goroutine 1 [running]"


@pytest.mark.parametrize("stdout", ["not json", "", "[]"])
def test_delegate_add_with_bad_result(tmp_path: Path, stdout: str) -> None:
    fake_plugin(tmp_path, "fake-ipam", stdout)
    with pytest.raises(CNIError) as e:
        invoke.delegate_add("fake-ipam", request(str(tmp_path)))
    assert e.value.code == Code.DECODING_FAILURE


def test_delegate_that_cannot_be_exec_d(tmp_path: Path) -> None:
    make_exe(tmp_path / "fake-ipam", "no shebang, not an ELF\n")
    with pytest.raises(CNIError) as e:
        invoke.delegate_add("fake-ipam", request(str(tmp_path)))
    assert e.value.code == Code.IO_FAILURE
    assert e.value.msg.startswith("failed to exec plugin ")


def test_delegate_not_found(tmp_path: Path) -> None:
    with pytest.raises(CNIError) as e:
        invoke.delegate_add("fake-ipam", request(str(tmp_path)))
    assert e.value.code == Code.INVALID_NETWORK_CONFIG
    assert "'fake-ipam'" in e.value.msg


@pytest.mark.parametrize(("conf_v", "delegate_v"), [("0.2.0", "0.2.0"), ("1.0.0", "1.0.0"),
                                                    ("1.1.0", "0.4.0")])
def test_delegate_result_in_any_version(tmp_path: Path, conf_v: str, delegate_v: str) -> None:
    from cni_plugins.types import convert

    printed = convert.convert(RESULT_040, "0.4.0", delegate_v)
    fake_plugin(tmp_path, "fake-ipam", json.dumps(printed))
    r = invoke.delegate_add("fake-ipam", request(str(tmp_path), cni_version=conf_v))
    assert r == convert.parse(delegate_v, printed)
    assert [ip.address for ip in r.ips] == ["10.1.0.5/24", "fd00::5/64"]


# --- delegation in process (a link to ourselves) -----------------------------------------

PREV = {"cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mtu": 1400}],
        "ips": [{"address": "10.2.0.5/24", "interface": 0}, {"address": "10.2.0.6/24"},
                {"address": "fd02::5/64"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.2.0.1", "table": 10}]}


def educative_request(plugin_dir: str, v: str, exe: str) -> CmdArgs:
    conf = {"cniVersion": v, "name": "net1", "type": "educative", "prevResult": PREV}
    a = request(plugin_dir, stdin=json.dumps(conf).encode(), exe=exe, cni_version=v)
    a.conf = conf
    return a


@pytest.mark.parametrize("v", ["0.2.0", "0.4.0", "1.1.0"])
def test_in_process_delegation_matches_exec(plugin_dir: str, v: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = educative.cmd_add
    monkeypatch.setattr(educative, "cmd_add", lambda args: calls.append(args.command) or real(args))
    inproc = invoke.delegate_add("educative", educative_request(plugin_dir, v, our_executable()))
    assert calls == ["ADD"]                       # served here, not by a child process
    by_exec = invoke.delegate_add("educative", educative_request(plugin_dir, v, ""))
    assert calls == ["ADD"]                       # the child ran its own copy
    assert inproc == by_exec
    if v == "0.2.0":                              # the same lossy conversion either way
        assert [ip.address for ip in inproc.ips] == ["10.2.0.5/24", "fd02::5/64"]
        assert inproc.interfaces == [] and inproc.routes == [Route("0.0.0.0/0", gw="10.2.0.1")]
    elif v == "0.4.0":
        assert inproc.interfaces == [Interface(name="eth0")]
    else:
        assert inproc.interfaces == [Interface(name="eth0", mtu=1400)]
        assert inproc.routes[0].table == 10


def test_in_process_delegation_validates_like_exec(plugin_dir: str) -> None:
    """A delegate served in process still checks the request (here: the ifname)."""
    for exe in (our_executable(), ""):
        a = educative_request(plugin_dir, "1.0.0", exe)
        a.ifname = "x" * 16
        with pytest.raises(CNIError) as e:
            invoke.delegate_add("educative", a)
        assert (e.value.code, e.value.msg) == (4, "interface name is too long")


def test_in_process_delegation_del(plugin_dir: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    a = educative_request(plugin_dir, "1.0.0", our_executable())
    a.stdin = json.dumps({**a.conf, "cniOutput": str(log)}).encode()
    assert invoke.delegate_del("educative", a) is None
    assert "CNI Command: DEL" in log.read_text()


def test_links_to_us_are_exec_d_when_exe_differs(plugin_dir: str, tmp_path: Path) -> None:
    """exe pointing elsewhere: the link is not us, so it is exec'd (and still works)."""
    other = make_exe(tmp_path / "other", "#!/bin/sh\n")
    r = invoke.delegate_add("educative", educative_request(plugin_dir, "1.1.0", str(other)))
    assert [ip.address for ip in r.ips] == ["10.2.0.5/24", "10.2.0.6/24", "fd02::5/64"]
    assert os.path.realpath(os.path.join(plugin_dir, "educative")) != str(other)
