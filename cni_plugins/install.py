"""`cni-plugins install`: a symlink per plugin type, pointing at this executable.

Links are made atomically (a temporary link renamed over the name), so a runtime exec'ing
/opt/cni/bin/bridge during the swap sees either the old file or the new link. A regular
file (the Go plugin) or a link to something else is replaced only with --force, and
--uninstall removes only links that point at us. --cnitool PATH does the same for one more
link, PATH (e.g. /usr/local/bin/cnitool): the binary runs cnitool when called by that name.
"""

from __future__ import annotations

import os

import click

from . import plugins
from .__main__ import executable


def _points_at_us(path: str, target: str) -> bool:
    return os.path.islink(path) and os.path.realpath(path) == os.path.realpath(target)


def install(directory: str, target: str, force: bool = False) -> list[str]:
    """Link every plugin type in `directory` to `target`; returns the names linked."""
    os.makedirs(directory, exist_ok=True)
    dirs = [n for n in plugins.names() if os.path.isdir(os.path.join(directory, n))
            and not os.path.islink(os.path.join(directory, n))]
    if dirs:
        raise click.ClickException(f"refusing to replace directories {', '.join(dirs)} "
                                   f"in {directory}")
    refused = [n for n in plugins.names()
               if os.path.lexists(p := os.path.join(directory, n))
               and not _points_at_us(p, target) and not force]
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


def uninstall(directory: str, target: str) -> list[str]:
    removed = []
    for name in plugins.names():
        path = os.path.join(directory, name)
        if _points_at_us(path, target):
            os.unlink(path)
            removed.append(name)
    return removed


def listing(directory: str, target: str,
            extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    """(name, state) per plugin type in directory, then per (name, path) of `extra`."""
    rows = []
    for name, path in [*((n, os.path.join(directory, n)) for n in plugins.names()), *extra]:
        if _points_at_us(path, target):
            state = f"-> {os.readlink(path)}"
        elif os.path.islink(path):
            state = f"other link -> {os.readlink(path)}"
        elif os.path.exists(path):
            state = "other file (not ours)"
        else:
            state = "not installed"
        rows.append((name, state))
    return rows


@click.command(help="Install a symlink per CNI plugin type into DIR, pointing at this "
                    "executable.\n\nExample: cni-plugins install --dir /opt/cni/bin --force")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="plugin directory, e.g. /opt/cni/bin")
@click.option("--force", is_flag=True, help="replace files that are not ours (the Go plugins)")
@click.option("--uninstall", "remove", is_flag=True, help="remove the links that point at us")
@click.option("--list", "show", is_flag=True, help="show what DIR holds for each plugin type")
@click.option("--cnitool", "cnitool", type=click.Path(dir_okay=False), default=None,
              metavar="PATH", help="also link PATH (e.g. /usr/local/bin/cnitool) to this "
                                   "executable, which runs cnitool when called by that name")
def cli(directory: str, force: bool, remove: bool, show: bool, cnitool: str | None) -> None:
    target = executable()
    extra = (("cnitool", cnitool),) if cnitool else ()
    if not os.access(target, os.X_OK) or target.endswith(".py"):
        raise click.ClickException(f"{target} is not an executable to link to; "
                                   "run install from the cni-plugins script or binary")
    if show:
        for name, state in listing(directory, target, extra):
            click.echo(f"{name:12} {state}")
    elif remove:
        for name in uninstall(directory, target):
            click.echo(f"removed {os.path.join(directory, name)}")
        if cnitool and _points_at_us(cnitool, target):
            os.unlink(cnitool)
            click.echo(f"removed {cnitool}")
    else:
        if cnitool:                     # checked first: a refusal leaves DIR untouched
            check_cnitool(cnitool, target, force)
        for name in install(directory, target, force):
            click.echo(f"{os.path.join(directory, name)} -> {target}")
        if cnitool:
            install_cnitool(cnitool, target, force)
            click.echo(f"{cnitool} -> {target}")
