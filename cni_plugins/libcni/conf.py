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
from typing import Annotated, Any, Iterator

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator

from .. import netconf, skel, version
from ..errors import CNIError, Code
from ..netconf import Invalid

DEFAULT_DIR = "/etc/cni/net.d"
LIST_EXTENSIONS = (".conflist",)
LEGACY_EXTENSIONS = (".conf", ".json")


class NotFound(CNIError):
    """No configuration of that name (or none at all) in the directory."""

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(Code.INVALID_NETWORK_CONFIG, msg, details)


# -- the models: what libcni reads of a network and of each plugin section ---------------


class PluginSection(netconf.NetConf):
    """A plugin section's protocol keys, as libcni reads them (Go's types.PluginConf):
    `type` required, the others typed as every plugin's NetConf has them; `dns` is only
    an object here (it is the plugin's to read). The rest is the plugin's own."""

    dns: dict[str, Any] = Field(default_factory=dict)           # type: ignore[assignment]

    @model_validator(mode="after")
    def _type_required(self) -> "PluginSection":
        if not self.type:
            raise Invalid("required: the plugin's type", field="type")
        return self


def _network_name(value: str) -> str:
    try:
        skel.validate_network_name(value)
    except CNIError as e:
        raise Invalid(f"{e.msg}: {value!r}" if e.details else e.msg) from None
    return value


def _version(value: str) -> str:
    try:
        version.parse(value)
    except ValueError:
        raise Invalid(f"{value!r} is not a version (x.y.z)") from None
    return value


def _go_bool(value: Any) -> Any:
    """Go's libcni also takes "true"/"false" (any case) for a conflist's flags."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


Flag = Annotated[bool, BeforeValidator(_go_bool)]
_SUPPORTED = f"libcni supports {', '.join(version.ALL)}"


class ConfList(netconf.Model):
    """A conflist's own keys (a legacy .conf is read as a list of one, see parse)."""

    name: Annotated[str, AfterValidator(_network_name)]
    cni_version: str = Field("", alias="cniVersion")
    cni_versions: list[Annotated[str, AfterValidator(_version)]] | None = Field(
        None, alias="cniVersions")
    disable_check: Flag = Field(False, alias="disableCheck")
    disable_gc: Flag = Field(False, alias="disableGC")
    load_only_inlined_plugins: Flag = Field(False, alias="loadOnlyInlinedPlugins")
    plugins: list[PluginSection] | None = None

    def versions(self) -> tuple[str, ...]:
        """The versions the network may run at, highest first: the first is the one it
        runs at. With `cniVersions`, those and `cniVersion` that this libcni speaks (the
        plugins may still lower it: CNIConfig.version_for); no version means 0.1.0."""
        if self.cni_versions is None:
            v = self.cni_version or "0.1.0"
            if v not in version.ALL:
                raise Invalid(f"unsupported version {v!r} ({_SUPPORTED})", field="cniVersion",
                              code=Code.INCOMPATIBLE_CNI_VERSION)
            return (v,)
        known = {x for x in [*self.cni_versions, self.cni_version] if x in version.ALL}
        if not known:
            raise Invalid(f"none of {self.cni_versions} is supported ({_SUPPORTED})",
                          field="cniVersions", code=Code.INCOMPATIBLE_CNI_VERSION)
        return tuple(sorted(known, key=version.parse, reverse=True))

    @model_validator(mode="after")
    def _usable(self) -> "ConfList":
        self.versions()
        if self.plugins == []:
            raise Invalid("empty: a network needs at least one plugin", field="plugins")
        if self.plugins is None and self.load_only_inlined_plugins:
            raise Invalid("required: loadOnlyInlinedPlugins is true", field="plugins")
        return self


def parse(raw: Any, legacy: bool = False) -> ConfList:
    """A conflist's decoded JSON, or a legacy single-plugin config's as a list of one
    (Go's ConfListFromConf: its name and cniVersion are the network's). Raises
    pydantic's ValidationError (netconf.problems words it), paths as in the file."""
    if not legacy:
        return ConfList.model_validate(raw)
    PluginSection.model_validate(raw)
    wrapper: dict[str, Any] = {"name": raw.get("name") or "", "plugins": [raw]}
    if "cniVersion" in raw:
        wrapper["cniVersion"] = raw["cniVersion"]
    return ConfList.model_validate(wrapper)


def no_plugins(path: str, name: str) -> str:
    return (f"no plugin configs found (inline or in "
            f"{os.path.join(os.path.dirname(path) or '.', name)}/*.conf)")


# -- what the chain runs --------------------------------------------------------------------


@dataclass
class PluginConf:
    """One plugin's configuration object, verbatim, with its protocol keys read."""

    raw: dict[str, Any]
    section: PluginSection
    source: str = ""                    # the file it came from, when it has its own

    @property
    def type(self) -> str:
        return self.section.type

    @property
    def name(self) -> str:
        return self.section.name

    @property
    def capabilities(self) -> list[str]:
        """The capabilities the plugin declares (those set to true)."""
        return [k for k, v in self.section.capabilities.items() if v]

    @classmethod
    def from_file(cls, path: str) -> "PluginConf":
        """A `<dir>/<name>/*.conf` plugin: CNIError naming the file."""
        try:
            raw = netconf.decode(read_file(path))
            return cls(raw, PluginSection.model_validate(raw), path)
        except ValidationError as e:
            netconf.raise_invalid(e)
            raise                                # unreachable
        except CNIError as e:
            raise CNIError(e.code, f"{path}: {e.msg}", e.details) from e


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
    def from_bytes(cls, data: bytes, source: str = "", legacy: bool = False
                   ) -> "NetworkConfigList":
        """A conflist (or a legacy conf), without the plugins of its directory (see
        from_file). CNIError 6 (not JSON), 1 (no version we speak) or 7."""
        raw = netconf.decode(data)
        try:
            top = parse(raw, legacy)
        except ValidationError as e:
            netconf.raise_invalid(e)
            raise                                # unreachable
        sections = [raw] if legacy else raw.get("plugins") or []
        if legacy:                               # Go's ConfListFromConf re-marshals it
            listed = {"name": top.name, **({"cniVersion": raw["cniVersion"]}
                                           if "cniVersion" in raw else {}), "plugins": sections}
            data = json.dumps(listed, separators=(",", ":")).encode()
        versions = top.versions()
        plugins = [PluginConf(r, s, source if legacy else "")
                   for r, s in zip(sections, top.plugins or [])]
        return cls(name=top.name, cni_version=versions[0], plugins=plugins, conf_bytes=data,
                   cni_versions=versions, disable_check=top.disable_check,
                   disable_gc=top.disable_gc,
                   load_only_inlined_plugins=top.load_only_inlined_plugins, source=source)

    @classmethod
    def from_file(cls, path: str) -> "NetworkConfigList":
        """A config file: a conflist followed by the plugins in `<its dir>/<name>/*.conf`
        (unless loadOnlyInlinedPlugins), or a legacy conf as a list of one."""
        legacy = not path.endswith(LIST_EXTENSIONS)
        net = cls.from_bytes(read_file(path), source=path, legacy=legacy)
        if not legacy and not net.load_only_inlined_plugins:
            net.plugins.extend(PluginConf.from_file(f) for f in plugin_files(path, net.name))
        if not net.plugins:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"invalid config: plugins: {no_plugins(path, net.name)}")
        return net


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"error reading {path}: {e.strerror}") from e


def plugin_files(path: str, name: str) -> list[str]:
    """The `<dir>/<name>/*.conf` plugins that follow the conflist at `path`."""
    return conf_files(os.path.join(os.path.dirname(path), name), (".conf",))


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
            entry.net = NetworkConfigList.from_file(path)
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
            net = NetworkConfigList.from_file(path)
        except CNIError as e:
            broken.append(f"{os.path.basename(path)}: {e}")
            continue
        if net.name == name:
            return net
    if not found_any:
        raise NotFound(f"no net configurations found in {directory}")
    raise NotFound(f'no net configuration with name "{name}" in {directory}',
                   ("unreadable: " + "; ".join(broken)) if broken else "")
