"""Configs checked offline: `cni-plugins validate PATH…` and `cni-plugins schema TYPE`.

    cni-plugins validate /etc/cni/net.d          # before deploying: one line per problem
    10-net.conflist: plugins[1].ipam.ranges[0][0].subnet: '10.1.0.0' is not in CIDR notation …
    cni-plugins schema bridge                    # the JSON Schema of bridge's config

A file is read as libcni reads it (cni_plugins/libcni/conf.py: a `.conflist` with its
`<dir>/<name>/*.conf` plugins, or a legacy `.conf`/`.json` as a list of one): the network's
name and versions, then every plugin section, with the name and cniVersion libcni
injects, against its plugin's `Conf` model (and its IPAM plugin's, which gets the same
section), then the plugin's `check()` (what ADD refuses beyond the types) where it has
one. A plugin type this project does not implement is noted on stderr, not checked.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import click
from pydantic import ValidationError

from . import netconf, plugins, skel, version
from .errors import CNIError, json_kind
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

    # -- the network -------------------------------------------------------------------

    def network(self, raw: Any) -> tuple[str, str] | None:
        """name and cniVersion of a conflist (or legacy conf); None when unusable."""
        if not isinstance(raw, dict):
            self.add("config", f"expected an object, got {json_kind(raw)}")
            return None
        name = raw.get("name")
        where = "name"
        if name is None:
            self.add(where, "required: the network's name")
        elif not isinstance(name, str):
            self.add(where, f"expected a string, got {json_kind(name)}")
        else:
            try:
                skel.validate_network_name(name)
            except CNIError as e:
                self.add(where, f"{e.msg}: {name!r}" if e.details else e.msg)
        return (name if isinstance(name, str) else ""), self.versions(raw)

    def versions(self, raw: dict[str, Any]) -> str:
        """The version the network runs at ("" when none is usable), as libcni picks it."""
        v = raw.get("cniVersion", "")
        if not isinstance(v, str):
            self.add("cniVersion", f"expected a string, got {json_kind(v)}")
            return ""
        known = [v] if v in version.ALL else []
        if v and v not in version.ALL and "cniVersions" not in raw:    # else: the list's
            self.add("cniVersion", f"unknown version {v!r} (known: {', '.join(version.ALL)})")
        listed = raw.get("cniVersions")
        if listed is not None:
            if not isinstance(listed, list):
                self.add("cniVersions", f"expected a list, got {json_kind(listed)}")
                listed = []
            for i, item in enumerate(listed):
                if not isinstance(item, str):
                    self.add(f"cniVersions[{i}]", f"expected a string, got {json_kind(item)}")
                    continue
                try:
                    version.parse(item)
                except ValueError:
                    self.add(f"cniVersions[{i}]", f"{item!r} is not a version (x.y.z)")
                    continue
                if item in version.ALL:
                    known.append(item)
            if not known:
                self.add("cniVersions", "none of these versions is known "
                         f"(known: {', '.join(version.ALL)})")
        if not known:
            return "0.1.0" if not v and listed is None else ""
        return max(known, key=version.parse)

    def flags(self, raw: dict[str, Any]) -> bool:
        """disableCheck, disableGC, loadOnlyInlinedPlugins: booleans (or "true"/"false");
        returns loadOnlyInlinedPlugins."""
        out = False
        for key in ("disableCheck", "disableGC", "loadOnlyInlinedPlugins"):
            value = raw.get(key, False)
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool):
                self.add(key, f"expected a boolean, got {json_kind(value)}")
            elif key == "loadOnlyInlinedPlugins":
                out = value
        return out

    # -- one plugin --------------------------------------------------------------------

    def plugin(self, raw: Any, where: str, name: str, cni_version: str) -> None:
        if not isinstance(raw, dict):
            self.add(where, f"expected an object, got {json_kind(raw)}")
            return
        kind = raw.get("type")
        if not kind:
            self.add(_join(where, "type"), "required: the plugin's type")
            return
        if not isinstance(kind, str):
            self.add(_join(where, "type"), f"expected a string, got {json_kind(kind)}")
            return
        if kind not in plugins.REGISTRY:
            self.notes.append(f"{self.name}: {where or 'config'}: type {kind!r} is not "
                              "implemented here: not checked")
            return
        if cni_version and cni_version not in plugins.supported_versions(kind):
            self.add(_join(where, "type"), f"{kind} does not speak cniVersion {cni_version} "
                     f"(it speaks {', '.join(plugins.supported_versions(kind))})")
        data = {**raw, "name": name, "cniVersion": cni_version}   # what libcni injects
        types = [kind]
        ipam = raw.get("ipam")
        ipam_type = ipam.get("type") if isinstance(ipam, dict) else None
        if isinstance(ipam_type, str) and ipam_type:
            if ipam_type in plugins.REGISTRY:
                types.append(ipam_type)
            else:
                self.notes.append(f"{self.name}: {_join(where, 'ipam')}: type {ipam_type!r} "
                                  "is not implemented here: not checked")
        for t in types:
            self.section(t, data, where, cni_version)

    def section(self, plugin_type: str, data: dict[str, Any], where: str,
                cni_version: str) -> None:
        model = model_of(plugin_type)
        try:
            conf = model.model_validate(data)
        except ValidationError as e:
            for w, msg, _, _ in netconf.problems(e):
                self.add(_join(where, w), msg)
            return
        check = getattr(conf, "check", None)
        if check is None:
            return
        conf.cni_version = cni_version or "0.1.0"
        try:
            check()
        except CNIError as e:
            w, msg = _split(e)
            self.add(_join(where, w), msg)

    # -- files -------------------------------------------------------------------------

    def run(self) -> list[Problem]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as e:
            self.add("config", f"cannot read: {e.strerror}")
            return self.problems
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            self.add("config", f"not valid JSON: {e}")
            return self.problems
        if not self.path.endswith(libconf.LIST_EXTENSIONS):
            found = self.network(raw)
            if found is not None:
                self.plugin(raw, "", *found)
            return self.problems
        found = self.network(raw)
        if found is None:
            return self.problems
        name, cni_version = found
        inline_only = self.flags(raw)
        listed = raw.get("plugins")
        sections: list[tuple[str, Any]] = []
        if listed is None:
            if inline_only:
                self.add("plugins", "required: loadOnlyInlinedPlugins is true")
        elif not isinstance(listed, list):
            self.add("plugins", f"expected a list, got {json_kind(listed)}")
        elif not listed:
            self.add("plugins", "empty: a network needs at least one plugin")
        else:
            sections = [(f"plugins[{i}]", p) for i, p in enumerate(listed)]
        if not inline_only and name:
            sub = os.path.join(os.path.dirname(self.path), name)
            for f in libconf.conf_files(sub, (".conf",)):
                rel = os.path.join(name, os.path.basename(f))
                try:
                    with open(f, "rb") as fh:
                        sections.append((rel, json.loads(fh.read())))
                except (OSError, ValueError, UnicodeDecodeError) as e:
                    self.add(rel, f"cannot be read as JSON: {e}")
        if listed is None and not sections:
            self.add("plugins", "no plugin configs found (inline or in "
                     f"{os.path.join(os.path.dirname(self.path) or '.', name)}/*.conf)")
        for where, section in sections:
            self.plugin(section, where, name, cni_version)
        return self.problems


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
