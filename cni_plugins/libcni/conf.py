"""Network configurations on disk, found and read the way the Go libcni does.

    net = conf.load("/etc/cni/net.d", "mynet")     # NetworkConfigList, or CNIError
    for entry in conf.scan("/etc/cni/net.d"): …    # every file, parsed or with its error

In a directory, `*.conflist` files come first (sorted by name; the first whose `name`
matches wins), then the legacy single-plugin `*.conf` / `*.json` files (sorted), which
are turned into a list of one. A conflist's plugins are followed by those in
`<dir>/<name>/*.conf` unless `loadOnlyInlinedPlugins` is true.

Each plugin's JSON is kept as it was written (unknown keys, their order, their values):
libcni only injects `name`, `cniVersion`, `prevResult` and `runtimeConfig` into a copy.

Where Go stops at the first file it cannot parse, we skip it and go on; its error is
named in the "not found" error if the network is not found elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from .. import skel, version
from ..errors import CNIError, Code

DEFAULT_DIR = "/etc/cni/net.d"
LIST_EXTENSIONS = (".conflist",)
LEGACY_EXTENSIONS = (".conf", ".json")


class NotFound(CNIError):
    """No configuration of that name (or none at all) in the directory."""

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(Code.INVALID_NETWORK_CONFIG, msg, details)


def _invalid(msg: str) -> CNIError:
    return CNIError(Code.INVALID_NETWORK_CONFIG, msg)


def _go_type(value: Any) -> str:
    """The type name Go's encoding/json would give `value`, for Go's error messages."""
    names = {bool: "bool", int: "float64", float: "float64", str: "string",
             list: "[]interface {}", dict: "map[string]interface {}", type(None): "<nil>"}
    return names.get(type(value), type(value).__name__)


@dataclass
class PluginConf:
    """One plugin's configuration object, verbatim."""

    raw: dict[str, Any]
    source: str = ""                    # the file it came from, when it has its own

    @property
    def type(self) -> str:
        return str(self.raw["type"])

    @property
    def name(self) -> str:
        return str(self.raw.get("name") or "")

    @property
    def capabilities(self) -> list[str]:
        """The capabilities the plugin declares (those set to true)."""
        caps = self.raw.get("capabilities") or {}
        return [k for k, v in caps.items() if v is True]

    @classmethod
    def from_obj(cls, obj: Any, source: str = "") -> "PluginConf":
        """Checked like Go's types.PluginConf decoding: `type` is required, and the
        protocol's keys must have the protocol's types."""
        where = "error parsing configuration"
        if not isinstance(obj, dict):
            raise _invalid(f"{where}: expected a JSON object, got {_go_type(obj)}")
        for key in ("name", "cniVersion", "type"):
            if key in obj and not isinstance(obj[key], str):
                raise _invalid(f"{where}: {key}: must be a string, got {_go_type(obj[key])}")
        if not obj.get("type"):
            raise _invalid(f"{where}: missing 'type'")
        caps = obj.get("capabilities")
        if caps is not None and (not isinstance(caps, dict)
                                 or not all(isinstance(v, bool) for v in caps.values())):
            raise _invalid(f"{where}: capabilities: must be an object of booleans")
        ipam = obj.get("ipam")
        if ipam is not None and (not isinstance(ipam, dict)
                                 or not isinstance(ipam.get("type", ""), str)):
            raise _invalid(f"{where}: ipam: must be an object with a string 'type'")
        for key in ("dns", "runtimeConfig", "args"):
            if obj.get(key) is not None and not isinstance(obj[key], dict):
                raise _invalid(f"{where}: {key}: must be an object")
        return cls(raw=obj, source=source)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "") -> "PluginConf":
        return cls.from_obj(_decode(data, "error parsing configuration"), source)


@dataclass
class NetworkConfigList:
    """A network: its name, the version it runs at, and its plugins in order."""

    name: str
    cni_version: str
    plugins: list[PluginConf]
    conf_bytes: bytes                          # the file as read: the cache's "config"
    cni_versions: tuple[str, ...] = ()         # versions it may run at, highest first
    disable_check: bool = False
    disable_gc: bool = False
    load_only_inlined_plugins: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if not self.cni_versions:
            self.cni_versions = (self.cni_version,)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "") -> "NetworkConfigList":
        """A conflist, without the plugins of its directory (see from_file)."""
        where = "error parsing configuration list"
        raw = _decode(data, where)
        if not isinstance(raw, dict):
            raise _invalid(f"{where}: expected a JSON object, got {_go_type(raw)}")
        if "name" not in raw:
            raise _invalid(f"{where}: no name")
        name = raw["name"]
        if not isinstance(name, str):
            raise _invalid(f"{where}: invalid name type {_go_type(name)}")
        skel.validate_network_name(name)
        cni_version, candidates = _versions(raw, where)
        flags = {key: _read_bool(raw, key, where)
                 for key in ("disableCheck", "disableGC", "loadOnlyInlinedPlugins")}
        net = cls(name=name, cni_version=cni_version, plugins=[], conf_bytes=data,
                  cni_versions=candidates, disable_check=flags["disableCheck"],
                  disable_gc=flags["disableGC"],
                  load_only_inlined_plugins=flags["loadOnlyInlinedPlugins"], source=source)
        if "plugins" not in raw:
            if net.load_only_inlined_plugins:
                raise _invalid(f"{where}: `loadOnlyInlinedPlugins` is true, and no 'plugins' key")
            return net
        plugins = raw["plugins"]
        if not isinstance(plugins, list):
            raise _invalid(f"{where}: invalid 'plugins' type {_go_type(plugins)}")
        if not plugins:
            raise _invalid(f"{where}: no plugins in list")
        for i, obj in enumerate(plugins):
            try:
                net.plugins.append(PluginConf.from_obj(obj))
            except CNIError as e:
                raise CNIError(e.code, f"failed to parse plugin config {i}: {e.msg}") from e
        return net

    @classmethod
    def from_file(cls, path: str) -> "NetworkConfigList":
        """A conflist file, followed by the plugins in `<its dir>/<name>/*.conf`."""
        net = cls.from_bytes(_read(path), source=path)
        if not net.load_only_inlined_plugins:
            sub = os.path.join(os.path.dirname(path), net.name)
            for f in conf_files(sub, (".conf",)):
                net.plugins.append(PluginConf.from_bytes(_read(f), source=f))
        if not net.plugins:
            raise _invalid(f"{path}: no plugin configs found")
        return net

    @classmethod
    def from_plugin(cls, plugin: PluginConf) -> "NetworkConfigList":
        """A legacy single-plugin config, as a list of one (Go's ConfListFromConf)."""
        raw: dict[str, Any] = {"name": plugin.raw.get("name", "")}
        if "cniVersion" in plugin.raw:
            raw["cniVersion"] = plugin.raw["cniVersion"]
        raw["plugins"] = [plugin.raw]
        net = cls.from_bytes(json.dumps(raw, separators=(",", ":")).encode(), plugin.source)
        net.plugins[0].source = plugin.source
        return net


def _decode(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CNIError(Code.DECODING_FAILURE, f"{where}: {e}") from e


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"error reading {path}: {e.strerror}") from e


def _read_bool(raw: dict[str, Any], key: str, where: str) -> bool:
    value = raw.get(key, False)
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise _invalid(f"{where}: invalid type {_go_type(value)} for {key}")
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _invalid(f"{where}: invalid value {value.lower()!r} for {key}")


def _versions(raw: dict[str, Any], where: str) -> tuple[str, tuple[str, ...]]:
    """(cniVersion to run at, the versions it may run at, highest first).

    With `cniVersions`, the highest of those and `cniVersion` that this libcni speaks;
    the plugins may still lower it (CNIConfig.version_for). No version means 0.1.0."""
    v = raw.get("cniVersion", "")
    if not isinstance(v, str):
        raise _invalid(f"{where}: invalid cniVersion type {_go_type(v)}")
    if "cniVersions" not in raw:
        v = v or "0.1.0"
        if v not in version.ALL:
            raise CNIError(Code.INCOMPATIBLE_CNI_VERSION, f"{where}: unsupported cniVersion {v!r}",
                           f"libcni supports {list(version.ALL)}")
        return v, (v,)
    listed = raw["cniVersions"]
    if not isinstance(listed, list):
        raise _invalid(f"{where}: invalid type for cniVersions: {_go_type(listed)}")
    for i, item in enumerate(listed):
        if not isinstance(item, str):
            raise _invalid(f"{where}: invalid type for cniVersions index {i}: {_go_type(item)}")
        try:
            version.parse(item)
        except ValueError:
            raise _invalid(f"{where}: invalid cniVersions entry {item} at index {i}") from None
    known = {x for x in [*listed, v] if x in version.ALL}
    if not known:
        raise CNIError(Code.INCOMPATIBLE_CNI_VERSION,
                       f"{where}: none of cniVersions {listed} is supported",
                       f"libcni supports {list(version.ALL)}")
    ordered = tuple(sorted(known, key=version.parse, reverse=True))
    return ordered[0], ordered


def conf_files(directory: str, extensions: tuple[str, ...]) -> list[str]:
    """Files (not directories) in `directory` with one of `extensions`, sorted by name;
    none when the directory does not exist."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        return []
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"failed to read {directory}: {e.strerror}") from e
    out = []
    for n in sorted(names):
        p = os.path.join(directory, n)
        if os.path.splitext(n)[1] in extensions and not os.path.isdir(p):
            out.append(p)
    return out


@dataclass
class Entry:
    """One file of a config directory, in load order."""

    path: str
    net: NetworkConfigList | None = None
    error: CNIError | None = None
    shadowed_by: str = ""               # an earlier file already defines this name
    plugins_dir: list[str] = field(default_factory=list)

    @property
    def legacy(self) -> bool:
        return not self.path.endswith(LIST_EXTENSIONS)


def _parse(path: str) -> NetworkConfigList:
    if path.endswith(LIST_EXTENSIONS):
        return NetworkConfigList.from_file(path)
    return NetworkConfigList.from_plugin(PluginConf.from_bytes(_read(path), source=path))


def _candidates(directory: str) -> Iterator[str]:
    yield from conf_files(directory, LIST_EXTENSIONS)
    yield from conf_files(directory, LEGACY_EXTENSIONS)


def scan(directory: str) -> list[Entry]:
    """Every config file of `directory`, parsed (or with its error), in load order."""
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for path in _candidates(directory):
        entry = Entry(path)
        try:
            entry.net = _parse(path)
        except CNIError as e:
            entry.error = e
        else:
            entry.shadowed_by = seen.get(entry.net.name, "")
            seen.setdefault(entry.net.name, path)
        entries.append(entry)
    return entries


def load(directory: str, name: str) -> NetworkConfigList:
    """The network `name` of `directory`, as the Go libcni's LoadNetworkConf finds it."""
    broken: list[str] = []
    found_any = False
    for path in _candidates(directory):
        found_any = True
        try:
            net = _parse(path)
        except CNIError as e:
            broken.append(f"{os.path.basename(path)}: {e}")
            continue
        if net.name == name:
            return net
    if not found_any:
        raise NotFound(f"no net configurations found in {directory}")
    raise NotFound(f'no net configuration with name "{name}" in {directory}',
                   ("unreadable: " + "; ".join(broken)) if broken else "")
