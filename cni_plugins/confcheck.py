"""Configs checked offline: `cni-plugins validate PATH…` and `cni-plugins schema TYPE`.

    cni-plugins validate /etc/cni/net.d          # before deploying: one line per problem
    10-net.conflist: plugins[1].ipam.ranges[0][0].subnet: '10.1.0.0' is not in CIDR notation …
    cni-plugins schema bridge                    # the JSON Schema of bridge's config

A file is read by libcni's own models (cni_plugins/libcni/conf.py: a `.conflist` with its
`<dir>/<name>/*.conf` plugins, or a legacy `.conf`/`.json` as a list of one), every problem
of the network's keys and of its plugins' protocol keys listed. Once the network reads,
every plugin section, with the name and cniVersion libcni injects, is checked against its
plugin's `Conf` model (and its IPAM plugin's, which gets the same section), then the
plugin's `check()` (what ADD refuses beyond the types) where it has one. A plugin type
this project does not implement is noted on stderr, not checked.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import click
from pydantic import ValidationError

from . import netconf, plugins, version
from .errors import CNIError
from .libcni import conf as libconf


@dataclass(frozen=True)
class Problem:
    file: str
    where: str
    msg: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.msg}"


def model_of(plugin_type: str) -> type[netconf.Model]:
    """The config model of a plugin type (KeyError for a type we do not implement)."""
    if plugin_type not in plugins.REGISTRY:
        raise KeyError(plugin_type)
    return plugins.load(plugin_type).Conf


def schema(plugin_type: str) -> dict[str, Any]:
    return model_of(plugin_type).model_json_schema(by_alias=True)


def _split(e: CNIError) -> tuple[str, str]:
    """'invalid config: ipam.ranges[0]: empty range set' -> ('ipam.ranges[0]', '…')."""
    text = e.msg.removeprefix("invalid config: ")
    where, sep, msg = text.partition(": ")
    if sep and text != e.msg and " " not in where:
        return where, msg
    return "", e.msg


def _join(prefix: str, where: str) -> str:
    if not where or where == "config":
        return prefix or "config"
    if not prefix:
        return where
    return prefix + ("" if where.startswith("[") else ".") + where


class Checker:
    """Problems of one file, in the order libcni would meet them."""

    def __init__(self, path: str, notes: list[str]) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.problems: list[Problem] = []
        self.notes = notes

    def add(self, where: str, msg: str) -> None:
        p = Problem(self.name, where or "config", msg)
        if p not in self.problems:
            self.problems.append(p)

    def invalid(self, e: ValidationError, prefix: str = "") -> None:
        for where, msg, _, _ in netconf.problems(e, prefix):
            self.add(where, msg)

    def run(self) -> list[Problem]:
        """The network as libcni reads it (libcni.conf: every problem of its own keys and
        its plugins' protocol keys); once it reads, each plugin section as its plugin."""
        legacy = not self.path.endswith(libconf.LIST_EXTENSIONS)
        try:
            raw = netconf.decode(libconf.read_file(self.path))
            top = libconf.parse(raw, legacy)
        except CNIError as e:
            self.add("config", e.msg)
            return self.problems
        except ValidationError as e:
            self.invalid(e)
            self.readable_sections(raw, legacy)
            return self.problems
        sections = [("", raw)] if legacy else [
            (f"plugins[{i}]", p) for i, p in enumerate(raw.get("plugins") or [])]
        if not legacy and not top.load_only_inlined_plugins:
            for f in libconf.plugin_files(self.path, top.name):
                rel = os.path.join(top.name, os.path.basename(f))
                try:
                    section = netconf.decode(libconf.read_file(f))
                    libconf.PluginSection.model_validate(section)
                except CNIError as e:
                    self.add(rel, e.msg)
                except ValidationError as e:
                    self.invalid(e, rel)
                else:
                    sections.append((rel, section))
        if top.plugins is None and not sections and not self.problems:
            self.add("plugins", libconf.no_plugins(self.path, top.name))
        for where, section in sections:
            self.plugin(section, where, top.name, top.versions()[0])
        return self.problems

    def readable_sections(self, raw: Any, legacy: bool) -> None:
        """The network does not read, but its plugin sections whose protocol keys do are
        still checked as their plugins (at the network's cniVersion if it is known, else
        the newest), so that one run lists every problem."""
        if not isinstance(raw, dict):
            return
        listed = raw.get("plugins")
        sections = [("", raw)] if legacy else [
            (f"plugins[{i}]", p) for i, p in enumerate(listed if isinstance(listed, list) else [])]
        name = raw.get("name") if isinstance(raw.get("name"), str) else ""
        v = raw.get("cniVersion")
        cni_version = v if v in version.ALL else version.ALL[-1]
        for where, section in sections:
            try:
                libconf.PluginSection.model_validate(section)
            except ValidationError:
                continue                    # reported with the network's problems
            self.plugin(section, where, name, cni_version)

    def plugin(self, raw: dict[str, Any], where: str, name: str, cni_version: str) -> None:
        """One section, whose protocol keys libcni read already, against its plugin's model
        (and its IPAM plugin's, which gets the same section)."""
        section = libconf.PluginSection.model_validate(raw)
        kind = section.type
        if kind not in plugins.REGISTRY:
            self.notes.append(f"{self.name}: {where or 'config'}: type {kind!r} is not "
                              "implemented here: not checked")
            return
        if cni_version not in plugins.supported_versions(kind):
            self.add(_join(where, "type"), f"{kind} does not speak cniVersion {cni_version} "
                     f"(it speaks {', '.join(plugins.supported_versions(kind))})")
        data = {**raw, "name": name, "cniVersion": cni_version}   # what libcni injects
        types = [kind]
        if section.ipam.type:
            if section.ipam.type in plugins.REGISTRY:
                types.append(section.ipam.type)
            else:
                self.notes.append(f"{self.name}: {_join(where, 'ipam')}: type "
                                  f"{section.ipam.type!r} is not implemented here: not checked")
        for t in types:
            self.section(t, data, where, cni_version)

    def section(self, plugin_type: str, data: dict[str, Any], where: str,
                cni_version: str) -> None:
        model = model_of(plugin_type)
        try:
            conf = model.model_validate(data)
        except ValidationError as e:
            self.invalid(e, where)
            return
        check = getattr(conf, "check", None)
        if check is None:
            return
        conf.cni_version = cni_version
        try:
            check()
        except CNIError as e:
            w, msg = _split(e)
            self.add(_join(where, w), msg)


def files_of(paths: tuple[str, ...] | list[str]) -> Iterator[str]:
    """Each path; a directory is expanded to its config files in libcni's order."""
    for p in paths:
        if os.path.isdir(p):
            yield from libconf.conf_files(p, libconf.LIST_EXTENSIONS)
            yield from libconf.conf_files(p, libconf.LEGACY_EXTENSIONS)
        else:
            yield p


def validate(paths: tuple[str, ...] | list[str]) -> tuple[dict[str, list[Problem]], list[str]]:
    """{file: problems} for every file, and the notes (unchecked plugin types)."""
    notes: list[str] = []
    return {f: Checker(f, notes).run() for f in files_of(paths)}, notes


@click.command(help="Check CNI network configs offline, as libcni would load them: "
                    ".conflist/.conf/.json files or directories of them. One line per "
                    "problem (FILE: FIELD: message); exit status 1 if there is any.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def validate_cli(paths: tuple[str, ...]) -> None:
    found, notes = validate(paths)
    for note in notes:
        click.echo(note, err=True)
    if not found:
        raise click.ClickException(f"no .conflist, .conf or .json files in {', '.join(paths)}")
    bad = False
    for f, problems in found.items():
        for p in problems:
            click.echo(str(p))
        if problems:
            bad = True
        else:
            click.echo(f"{os.path.basename(f)}: ok")
    sys.exit(1 if bad else 0)


@click.command(help="Print the JSON Schema of plugin TYPE's config.")
@click.argument("plugin_type", metavar="TYPE")
def schema_cli(plugin_type: str) -> None:
    try:
        out = schema(plugin_type)
    except KeyError:
        raise click.ClickException(f"unknown plugin type {plugin_type!r} "
                                   f"(types: {', '.join(plugins.names())})") from None
    click.echo(json.dumps(out, indent=2))
