"""`cni-plugins install`: a symlink per plugin type, pointing at the native shim beside this
executable (build/shim/cni-shim.c: the exec'd file hands the request to the server and runs
this executable standalone when there is none).

Links are made atomically (a temporary link renamed over the name), so a runtime exec'ing
/opt/cni/bin/bridge during the swap sees either the old file or the new link. A regular
file (the Go plugin) or a link to something else is replaced only with --force, and
--uninstall removes only links that point at us. --cnitool PATH does the same for one more
link, PATH (e.g. /usr/local/bin/cnitool), to this executable, which runs cnitool when called
by that name.

--service also installs the server's systemd units (socket-activated: the first plugin exec
starts `cni-plugins serve`) and the dhcp daemon's (cni-dhcp.socket on /run/cni/dhcp.sock, as
Go's units; cni-dhcp.service also starts at boot, to renew the leases it kept) and enables
them; where systemd is not PID 1 it says so and
installs the links only. --root DIR writes and enables the units in an image root instead
(`systemctl --root`, nothing started). --uninstall --service disables and removes them.
"""

from __future__ import annotations

import os
import subprocess

import click

from . import plugins
from .exe import executable
from .invoke import shim_of
from .ipam._dhcp_wire import DEFAULT_SOCKET as DHCP_SOCKET
from .serve import DEFAULT_SOCKET

DHCP_UNITS = ("cni-dhcp.socket", "cni-dhcp.service")
UNITS = (*DHCP_UNITS, "cni-plugins.socket", "cni-plugins.service")
# enabled: the server's socket; the dhcp daemon's socket and its service, which starts at
# boot to renew the leases it kept on disk (activation alone would wait for a plugin call)
ENABLED = ("cni-dhcp.socket", "cni-dhcp.service", "cni-plugins.socket")
UNIT_DIR = "/etc/systemd/system"
MARK = "# Installed by `cni-plugins install --service`"


def _points_at_us(path: str, *targets: str) -> bool:
    return os.path.islink(path) and os.path.realpath(path) in {
        os.path.realpath(t) for t in targets if t}


def install(directory: str, target: str, force: bool = False, earlier: str = "") -> list[str]:
    """Link every plugin type in `directory` to `target`; returns the names linked. A link
    to `earlier` (the executable, which plugin links pointed at before the shim) is ours
    too: an upgrade replaces it without --force."""
    os.makedirs(directory, exist_ok=True)
    dirs = [n for n in plugins.names() if os.path.isdir(os.path.join(directory, n))
            and not os.path.islink(os.path.join(directory, n))]
    if dirs:
        raise click.ClickException(f"refusing to replace directories {', '.join(dirs)} "
                                   f"in {directory}")
    refused = [n for n in plugins.names()
               if os.path.lexists(p := os.path.join(directory, n))
               and not _points_at_us(p, target, earlier) and not force]
    if refused:
        raise click.ClickException(
            f"refusing to replace {', '.join(refused)} in {directory} (not ours); "
            "use --force to replace them")
    for name in plugins.names():
        _link(os.path.join(directory, name), target)
    return plugins.names()


def _link(path: str, target: str) -> None:
    """path -> target, atomically: a temporary link renamed over the name."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.cni-plugins-{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)                  # left by a crashed run with our pid
    os.symlink(target, tmp)
    os.replace(tmp, path)


def check_cnitool(path: str, target: str, force: bool = False) -> None:
    """Refuse a cnitool link that could not be made, before anything is linked."""
    if os.path.basename(path) != "cnitool":
        raise click.ClickException(f"--cnitool {path}: the link must be named cnitool "
                                   "(the executable picks what to run by its name)")
    if os.path.isdir(path) and not os.path.islink(path):
        raise click.ClickException(f"refusing to replace directory {path}")
    if os.path.lexists(path) and not _points_at_us(path, target) and not force:
        raise click.ClickException(f"refusing to replace {path} (not ours); "
                                   "use --force to replace it")


def install_cnitool(path: str, target: str, force: bool = False) -> None:
    """One more link, `path` (its basename must be cnitool), to this executable."""
    check_cnitool(path, target, force)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    _link(path, target)


def uninstall(directory: str, target: str, earlier: str = "") -> list[str]:
    removed = []
    for name in plugins.names():
        path = os.path.join(directory, name)
        if _points_at_us(path, target, earlier):
            os.unlink(path)
            removed.append(name)
    return removed


def listing(directory: str, target: str,
            extra: tuple[tuple[str, str, str], ...] = ()) -> list[tuple[str, str]]:
    """(name, state) per plugin type in directory (linked to `target`), then per
    (name, path, its target) of `extra`."""
    rows = []
    for name, path, to in [*((n, os.path.join(directory, n), target) for n in plugins.names()),
                           *extra]:
        if _points_at_us(path, to):
            state = f"-> {os.readlink(path)}"
        elif os.path.islink(path):
            state = f"other link -> {os.readlink(path)}"
        elif os.path.exists(path):
            state = "other file (not ours)"
        else:
            state = "not installed"
        rows.append((name, state))
    return rows


def unit_texts(exe: str) -> dict[str, str]:
    """The dhcp daemon's and the server's socket and service units for `exe`."""
    run_dir = os.path.dirname(DEFAULT_SOCKET)
    return {
        "cni-dhcp.socket": f"""{MARK}
# Socket activation for cni-dhcp.service, the dhcp IPAM plugin's lease daemon.
[Unit]
Description=cni-plugins dhcp daemon socket
PartOf=cni-dhcp.service

[Socket]
ListenStream={DHCP_SOCKET}
SocketMode=0600
SocketUser=root
DirectoryMode=0700
Accept=no

[Install]
WantedBy=sockets.target
""",
        "cni-dhcp.service": f"""{MARK}
# The dhcp IPAM plugin's lease daemon: holds, renews and releases the pods' DHCP leases.
# Its leases are kept in /var/lib/cni/dhcp: restarted, it renews every one still in use.
[Unit]
Description=cni-plugins dhcp daemon (leases of the dhcp IPAM plugin)
Requires=cni-dhcp.socket
After=cni-dhcp.socket network.target

[Service]
Type=simple
ExecStart={exe} dhcp daemon -socketpath {DHCP_SOCKET}
# SIGTERM: the clients stop without releasing; the leases outlive the daemon.
Restart=on-failure
RestartSec=1
StateDirectory=cni/dhcp
StateDirectoryMode=0700
User=root

[Install]
WantedBy=multi-user.target
""",
        "cni-plugins.socket": f"""{MARK}
# Socket activation for cni-plugins.service: the first plugin exec starts the server.
# Shims that arrive before it is up are queued by the kernel, not refused.
[Unit]
Description=cni-plugins server socket

[Socket]
ListenStream={DEFAULT_SOCKET}
SocketMode=0600
SocketUser=root
DirectoryMode=0700
Accept=no

[Install]
WantedBy=sockets.target
""",
        "cni-plugins.service": f"""{MARK}
# The resident server of cni-plugins: the shims in the plugin directory hand it their requests
# and run {exe} standalone whenever it is absent, so stopping or restarting it never
# breaks a pod.
[Unit]
Description=cni-plugins server (fast path for the CNI plugins)
Requires=cni-plugins.socket
After=cni-plugins.socket

[Service]
Type=simple
ExecStart={exe} serve --socket {DEFAULT_SOCKET}
# SIGTERM: stop accepting, let every worker finish its requests in flight, exit.
KillMode=mixed
TimeoutStopSec=120
Restart=on-failure
RestartSec=1
RuntimeDirectory={os.path.basename(run_dir)}
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
User=root

[Install]
WantedBy=multi-user.target
""",
    }


def systemd_running() -> bool:
    """sd_booted(): systemd is PID 1 (it makes /run/systemd/system at boot)."""
    return os.path.isdir("/run/systemd/system")


def _systemctl(*argv: str) -> None:
    proc = subprocess.run(["systemctl", *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise click.ClickException(f"systemctl {' '.join(argv)} failed: "
                                   f"{(proc.stderr or proc.stdout).strip()}")


def install_service(exe: str, root: str | None) -> list[str]:
    """Write both units (refusing to overwrite units not ours) and enable the socket; with
    `root`, inside that image root and without starting anything. Returns the paths."""
    unit_dir = os.path.join(root, UNIT_DIR.lstrip("/")) if root else UNIT_DIR
    foreign = [u for u in UNITS if os.path.exists(p := os.path.join(unit_dir, u))
               and not _our_unit(p)]
    if foreign:
        raise click.ClickException(f"refusing to replace {', '.join(foreign)} in {unit_dir} "
                                   "(not written by cni-plugins install)")
    os.makedirs(unit_dir, exist_ok=True)
    paths = []
    for name, text in unit_texts(exe).items():
        path = os.path.join(unit_dir, name)
        tmp = f"{path}.cni-plugins-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        paths.append(path)
    if root:
        _systemctl(f"--root={root}", "enable", *ENABLED)
    else:
        _systemctl("daemon-reload")
        _systemctl("enable", "--now", *ENABLED)
    return paths


def uninstall_service(root: str | None) -> list[str]:
    unit_dir = os.path.join(root, UNIT_DIR.lstrip("/")) if root else UNIT_DIR
    ours = [p for u in UNITS if _our_unit(p := os.path.join(unit_dir, u))]
    if not ours:
        return []
    names = [os.path.basename(p) for p in ours]      # units of an older install may be absent
    if root:
        _systemctl(f"--root={root}", "disable", *names)
    else:
        _systemctl("disable", "--now", *names)
    for path in ours:
        os.unlink(path)
    if not root:
        _systemctl("daemon-reload")
    return ours


def _our_unit(path: str) -> bool:
    try:
        with open(path) as f:
            return f.readline().rstrip("\n") == MARK
    except OSError:
        return False


@click.command(help="Install a symlink per CNI plugin type into DIR, pointing at the shim "
                    "beside this executable.\n\n"
                    "Example: cni-plugins install --dir /opt/cni/bin --force --service")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="plugin directory, e.g. /opt/cni/bin")
@click.option("--force", is_flag=True, help="replace files that are not ours (the Go plugins)")
@click.option("--uninstall", "remove", is_flag=True, help="remove the links that point at us")
@click.option("--list", "show", is_flag=True, help="show what DIR holds for each plugin type")
@click.option("--cnitool", "cnitool", type=click.Path(dir_okay=False), default=None,
              metavar="PATH", help="also link PATH (e.g. /usr/local/bin/cnitool) to this "
                                   "executable, which runs cnitool when called by that name")
@click.option("--service", is_flag=True,
              help="also install and enable the server's systemd units (socket-activated)")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="with --service: write and enable the units in this image root instead")
def cli(directory: str, force: bool, remove: bool, show: bool, cnitool: str | None,
        service: bool, root: str | None) -> None:
    exe = executable()
    target = shim_of(exe)
    extra = (("cnitool", cnitool, exe),) if cnitool else ()
    if not os.access(exe, os.X_OK) or exe.endswith(".py"):
        raise click.ClickException(f"{exe} is not an executable to link to; "
                                   "run install from the cni-plugins script or binary")
    if not os.access(target, os.X_OK):
        raise click.ClickException(f"no shim at {target}: build it with build/build.sh "
                                   "(bundle) or scripts/setup.sh (venv)")
    if root and not service:
        raise click.ClickException("--root goes with --service")
    with_units = service and (root is not None or systemd_running())
    if service and not with_units:
        click.echo("systemd is not running as PID 1 here: installing the links only "
                   "(start `cni-plugins serve` yourself, or use --root for an image)")
    if show:
        for name, state in listing(directory, target, extra):
            click.echo(f"{name:12} {state}")
    elif remove:
        for name in uninstall(directory, target, earlier=exe):
            click.echo(f"removed {os.path.join(directory, name)}")
        if cnitool and _points_at_us(cnitool, exe):
            os.unlink(cnitool)
            click.echo(f"removed {cnitool}")
        if with_units:
            for path in uninstall_service(root):
                click.echo(f"removed {path}")
    else:
        if cnitool:                     # checked first: a refusal leaves DIR untouched
            check_cnitool(cnitool, exe, force)
        for name in install(directory, target, force, earlier=exe):
            click.echo(f"{os.path.join(directory, name)} -> {target}")
        if cnitool:
            install_cnitool(cnitool, exe, force)
            click.echo(f"{cnitool} -> {exe}")
        if with_units:
            for path in install_service(exe, root):
                click.echo(f"{path} (enabled)")
