"""`cni-plugins install`: a symlink per plugin type, pointing at this executable.

Links are made atomically (a temporary link renamed over the name), so a runtime exec'ing
/opt/cni/bin/bridge during the swap sees either the old file or the new link. A regular
file (the Go plugin) or a link to something else is replaced only with --force, and
--uninstall removes only links that point at us.
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
        path = os.path.join(directory, name)
        tmp = os.path.join(directory, f".{name}.cni-plugins-{os.getpid()}")
        if os.path.lexists(tmp):
            os.unlink(tmp)              # left by a crashed run with our pid
        os.symlink(target, tmp)
        os.replace(tmp, path)
    return plugins.names()


def uninstall(directory: str, target: str) -> list[str]:
    removed = []
    for name in plugins.names():
        path = os.path.join(directory, name)
        if _points_at_us(path, target):
            os.unlink(path)
            removed.append(name)
    return removed


def listing(directory: str, target: str) -> list[tuple[str, str]]:
    rows = []
    for name in plugins.names():
        path = os.path.join(directory, name)
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
def cli(directory: str, force: bool, remove: bool, show: bool) -> None:
    target = executable()
    if not os.access(target, os.X_OK) or target.endswith(".py"):
        raise click.ClickException(f"{target} is not an executable to link to; "
                                   "run install from the cni-plugins script or binary")
    if show:
        for name, state in listing(directory, target):
            click.echo(f"{name:12} {state}")
    elif remove:
        for name in uninstall(directory, target):
            click.echo(f"removed {os.path.join(directory, name)}")
    else:
        for name in install(directory, target, force):
            click.echo(f"{os.path.join(directory, name)} -> {target}")
