"""The multi-call executable as a process: `install`, usage, and dispatch by name.

Runs the venv's `cni-plugins` script (or CNI_PLUGINS_BIN, see tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cni_plugins import plugins, version
from tests.fixtures.run import our_executable, our_shim

EXE = our_executable()
TARGET = os.path.realpath(EXE)          # what cnitool links to
SHIM = os.path.realpath(our_shim())     # what the plugin links point at
NAMES = plugins.names()


def cli(*argv: str, env: dict[str, str] | None = None,
        exe: str = EXE) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    e.update(env or {})
    return subprocess.run([exe, *argv], env=e, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def entries(d: Path) -> dict[str, str]:
    """name -> "link:<target>" or "file:<content>" for everything in d."""
    out = {}
    for p in d.iterdir():
        out[p.name] = f"link:{os.readlink(p)}" if p.is_symlink() else f"file:{p.read_text()}"
    return out


def test_plugin_types_exist() -> None:
    assert {"loopback", "educative"} <= set(NAMES)
    assert os.access(SHIM, os.X_OK) and os.access(TARGET, os.X_OK)


def test_install_links_every_type(tmp_path: Path) -> None:
    d = tmp_path / "opt" / "cni" / "bin"                    # created on demand
    r = cli("install", "--dir", str(d))
    assert r.returncode == 0, r.stderr
    assert entries(d) == {n: f"link:{SHIM}" for n in NAMES}
    assert r.stdout.splitlines() == [f"{d / n} -> {SHIM}" for n in NAMES]


def test_install_is_idempotent(tmp_path: Path) -> None:
    assert cli("install", "--dir", str(tmp_path)).returncode == 0
    first = entries(tmp_path)
    r = cli("install", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert entries(tmp_path) == first == {n: f"link:{SHIM}" for n in NAMES}


def test_install_accepts_an_indirect_link_to_us(tmp_path: Path) -> None:
    """A link whose real path is us (e.g. via another link) counts as ours."""
    hop = tmp_path / "hop"
    hop.symlink_to(SHIM)
    d = tmp_path / "bin"
    d.mkdir()
    (d / "loopback").symlink_to(hop)
    assert cli("install", "--dir", str(d)).returncode == 0
    assert os.readlink(d / "loopback") == SHIM


def test_install_upgrades_links_to_the_executable(tmp_path: Path) -> None:
    """Links an earlier install made to the executable itself (before the shim) are ours:
    replaced by links to the shim without --force, and removed by --uninstall."""
    for name in NAMES:
        (tmp_path / name).symlink_to(TARGET)
    r = cli("install", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert entries(tmp_path) == {n: f"link:{SHIM}" for n in NAMES}
    (tmp_path / "loopback").unlink()
    (tmp_path / "loopback").symlink_to(TARGET)
    assert cli("install", "--dir", str(tmp_path), "--uninstall").returncode == 0
    assert entries(tmp_path) == {}


@pytest.mark.parametrize("kind", ["file", "foreign-link"])
def test_install_refuses_what_is_not_ours(tmp_path: Path, kind: str) -> None:
    victim = tmp_path / "loopback"
    if kind == "file":
        victim.write_text("#!/bin/sh\necho go loopback\n")
    else:
        victim.symlink_to("/bin/true")
    before = entries(tmp_path)
    r = cli("install", "--dir", str(tmp_path))
    assert r.returncode != 0
    assert "refusing to replace loopback" in r.stderr and "--force" in r.stderr
    assert entries(tmp_path) == before                      # nothing else linked either


def test_install_force_replaces(tmp_path: Path) -> None:
    (tmp_path / "loopback").write_text("go plugin")
    (tmp_path / "educative").symlink_to("/bin/true")
    (tmp_path / "unrelated").write_text("keep me")
    r = cli("install", "--dir", str(tmp_path), "--force")
    assert r.returncode == 0, r.stderr
    assert entries(tmp_path) == {**{n: f"link:{SHIM}" for n in NAMES},
                                 "unrelated": "file:keep me"}


def test_uninstall_removes_only_our_links(tmp_path: Path) -> None:
    assert cli("install", "--dir", str(tmp_path)).returncode == 0
    (tmp_path / "loopback").unlink()
    (tmp_path / "loopback").write_text("go plugin")
    (tmp_path / "educative").unlink()
    (tmp_path / "educative").symlink_to("/bin/true")
    (tmp_path / "unrelated").symlink_to(SHIM)             # ours, but not a plugin name
    r = cli("install", "--dir", str(tmp_path), "--uninstall")
    assert r.returncode == 0, r.stderr
    ours = [n for n in NAMES if n not in ("loopback", "educative")]
    assert r.stdout.splitlines() == [f"removed {tmp_path / n}" for n in ours]
    assert entries(tmp_path) == {"loopback": "file:go plugin", "educative": "link:/bin/true",
                                 "unrelated": f"link:{SHIM}"}


def test_uninstall_of_an_empty_dir(tmp_path: Path) -> None:
    r = cli("install", "--dir", str(tmp_path), "--uninstall")
    assert (r.returncode, r.stdout) == (0, "")


def test_list(tmp_path: Path) -> None:
    assert cli("install", "--dir", str(tmp_path)).returncode == 0
    (tmp_path / "loopback").unlink()
    (tmp_path / "loopback").write_text("go plugin")
    (tmp_path / "educative").unlink()
    (tmp_path / "educative").symlink_to("/bin/true")
    ours = [n for n in NAMES if n not in ("loopback", "educative")]
    if ours:
        (tmp_path / ours[0]).unlink()
    r = cli("install", "--dir", str(tmp_path), "--list")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split(None, 1)[1] for line in r.stdout.splitlines()}
    assert set(rows) == set(NAMES)
    assert rows["loopback"] == "other file (not ours)"
    assert rows["educative"] == "other link -> /bin/true"
    if ours:
        assert rows[ours[0]] == "not installed"
        for n in ours[1:]:
            assert rows[n] == f"-> {SHIM}"
    assert entries(tmp_path)["loopback"] == "file:go plugin"   # --list changes nothing


def test_install_cnitool_link(tmp_path: Path) -> None:
    """--cnitool PATH: one more link; called by that name, the executable is cnitool."""
    tool = tmp_path / "usr" / "local" / "bin" / "cnitool"
    r = cli("install", "--dir", str(tmp_path / "bin"), "--cnitool", str(tool))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"{tool} -> {TARGET}"
    assert os.readlink(tool) == TARGET
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "10-a.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "loopback"}]}))
    listed = cli("list", "--json", env={"NETCONFPATH": str(tmp_path / "net.d"),
                                        "CNI_PATH": str(tmp_path / "bin")}, exe=str(tool))
    assert listed.returncode == 0, listed.stderr
    assert [(n["name"], n["status"], n["plugins"]) for n in json.loads(listed.stdout)] == [
        ("a", "ok", ["loopback"])]
    rows = dict(line.split(None, 1) for line in cli(
        "install", "--dir", str(tmp_path / "bin"), "--list", "--cnitool", str(tool)
    ).stdout.splitlines())
    assert rows["cnitool"] == f"-> {TARGET}"
    r = cli("install", "--dir", str(tmp_path / "bin"), "--uninstall", "--cnitool", str(tool))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"removed {tool}"
    assert not os.path.lexists(tool) and entries(tmp_path / "bin") == {}


def test_cnitool_by_argument() -> None:
    r = cli("cnitool", "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: cnitool [OPTIONS] COMMAND")


@pytest.mark.parametrize("kind", ["file", "foreign-link", "wrong-name"])
def test_install_cnitool_refusals_link_nothing(tmp_path: Path, kind: str) -> None:
    tool = tmp_path / ("cni-tool" if kind == "wrong-name" else "cnitool")
    if kind == "file":
        tool.write_text("go cnitool")
    elif kind == "foreign-link":
        tool.symlink_to("/bin/true")
    r = cli("install", "--dir", str(tmp_path / "bin"), "--cnitool", str(tool))
    assert r.returncode != 0
    assert ("must be named cnitool" if kind == "wrong-name" else "--force") in r.stderr
    assert not (tmp_path / "bin").exists()                  # refused before any plugin link
    if kind != "wrong-name":
        assert cli("install", "--dir", str(tmp_path / "bin"), "--cnitool", str(tool),
                   "--force").returncode == 0
        assert os.readlink(tool) == TARGET


def test_uninstall_keeps_a_foreign_cnitool(tmp_path: Path) -> None:
    (tmp_path / "cnitool").write_text("go cnitool")
    r = cli("install", "--dir", str(tmp_path / "bin"), "--uninstall",
            "--cnitool", str(tmp_path / "cnitool"))
    assert (r.returncode, r.stdout) == (0, "")
    assert (tmp_path / "cnitool").read_text() == "go cnitool"


# --- the server's systemd units -------------------------------------------------------------

def units(root: Path) -> Path:
    return root / "etc" / "systemd" / "system"


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"),
                    reason="systemd is PID 1 here: --service would enable units on this machine")
def test_service_without_systemd_installs_the_links_only(tmp_path: Path) -> None:
    r = cli("install", "--dir", str(tmp_path / "bin"), "--service")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("systemd is not running as PID 1 here")
    assert entries(tmp_path / "bin") == {n: f"link:{SHIM}" for n in NAMES}
    assert not any("(enabled)" in line for line in r.stdout.splitlines())


def test_service_in_an_image_root(tmp_path: Path) -> None:
    """--root: the units are written and enabled (systemctl --root, which needs no running
    systemd), pointing at this executable; --uninstall takes them away again."""
    root = tmp_path / "image"
    r = cli("install", "--dir", str(tmp_path / "bin"), "--service", "--root", str(root))
    assert r.returncode == 0, r.stderr
    d = units(root)
    assert r.stdout.splitlines()[-2:] == [f"{d / 'cni-plugins.socket'} (enabled)",
                                          f"{d / 'cni-plugins.service'} (enabled)"]
    service = (d / "cni-plugins.service").read_text()
    assert f"ExecStart={TARGET} serve --socket /run/cni-plugins/serve.sock" in service
    socket_unit = (d / "cni-plugins.socket").read_text()
    assert "ListenStream=/run/cni-plugins/serve.sock" in socket_unit
    assert "SocketMode=0600" in socket_unit and "DirectoryMode=0700" in socket_unit
    wants = d / "sockets.target.wants" / "cni-plugins.socket"
    assert wants.is_symlink() and os.readlink(wants).endswith("cni-plugins.socket")
    again = cli("install", "--dir", str(tmp_path / "bin"), "--service", "--root", str(root))
    assert again.returncode == 0, again.stderr              # idempotent
    r = cli("install", "--dir", str(tmp_path / "bin"), "--uninstall", "--service",
            "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert not (d / "cni-plugins.socket").exists() and not (d / "cni-plugins.service").exists()
    assert not wants.is_symlink() and entries(tmp_path / "bin") == {}


def test_service_refuses_units_not_ours(tmp_path: Path) -> None:
    d = units(tmp_path)
    d.mkdir(parents=True)
    (d / "cni-plugins.service").write_text("[Service]\nExecStart=/bin/true\n")
    r = cli("install", "--dir", str(tmp_path / "bin"), "--service", "--root", str(tmp_path))
    assert r.returncode != 0 and "refusing to replace cni-plugins.service" in r.stderr
    assert (d / "cni-plugins.service").read_text() == "[Service]\nExecStart=/bin/true\n"
    assert cli("install", "--dir", str(tmp_path / "bin"), "--root", str(tmp_path)).returncode == 1


def test_install_needs_dir() -> None:
    r = cli("install")
    assert r.returncode == 2
    assert "--dir" in r.stderr


# --- usage and dispatch -------------------------------------------------------------------


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"], ["help"]])
def test_usage_lists_types(argv: list[str]) -> None:
    r = cli(*argv)
    assert r.returncode == 0
    assert r.stdout.startswith("usage: cni-plugins TYPE")
    listed = r.stdout.split("plugin types:\n", 1)[1].split()
    assert listed == NAMES


def test_unknown_type() -> None:
    r = cli("nosuch")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith("cni-plugins: unknown plugin type 'nosuch'")
    assert "plugin types:" in r.stderr


def test_type_as_argument_version() -> None:
    r = cli("loopback", env={"CNI_COMMAND": "VERSION"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"cniVersion": "1.1.0", "supportedVersions": list(version.ALL)}


def test_type_as_argument_error_is_cni_json() -> None:
    r = cli("loopback", env={"CNI_COMMAND": "ADD"})
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["code"] == 4
    assert out["msg"] == "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"


def test_dispatch_by_link_name(tmp_path: Path) -> None:
    assert cli("install", "--dir", str(tmp_path)).returncode == 0
    link = str(tmp_path / "educative")
    r = cli(env={"CNI_COMMAND": "VERSION"}, exe=link)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["supportedVersions"] == list(version.ALL)
    about = cli(exe=link)
    assert (about.returncode, about.stdout) == (0, "")
    assert about.stderr.startswith("CNI educative plugin")


def test_link_name_wins_over_arguments(tmp_path: Path) -> None:
    """/opt/cni/bin/loopback ignores argv: a runtime never passes any."""
    (tmp_path / "loopback").symlink_to(SHIM)
    r = cli("install", "--dir", str(tmp_path / "x"), env={"CNI_COMMAND": "VERSION"},
            exe=str(tmp_path / "loopback"))
    assert r.returncode == 0
    assert "supportedVersions" in json.loads(r.stdout)
    assert not (tmp_path / "x").exists()
