"""libcni: what a runtime does with a network of plugins (the Go libcni's CNIConfig).

    from cni_plugins.libcni import CNIConfig, RuntimeConf, conf

    net = conf.load("/etc/cni/net.d", "mynet")
    cni = CNIConfig("/opt/cni/bin", cache_dir="/var/lib/cni")
    rt = RuntimeConf("ctr1", netns="/run/netns/pod1", ifname="eth0",
                     capability_args={"portMappings": [...]})
    result = cni.add_network_list(net, rt)   # types.Result; cached for DEL and CHECK
    cni.check_network_list(net, rt)
    cni.del_network_list(net, rt)
    cni.gc_network_list(net, valid=[("ctr2", "eth0")])
    cni.status_network_list(net)

  ADD    plugins in order, each getting the previous result as prevResult (in the
         list's version); the last result is cached.
  DEL    plugins in reverse, with the cached result as prevResult (0.4.0 on); a cache
         that cannot be read is dropped and DEL goes on without it. Stops at the first
         failing plugin and keeps the cache, so a retried DEL still has it.
  CHECK  plugins in order with the cached result (0.4.0 on; nothing if disableCheck).
  GC     DEL for every cached attachment of the network not in `valid`, then GC to
         every plugin (1.1.0 on) with cni.dev/valid-attachments; errors collected.
  STATUS every plugin (1.1.0 on); stops at the first error.

Before a list is used its plugins are looked up and asked VERSION (once per plugin per
CNIConfig): the list runs at the highest of its versions that every plugin speaks.
A plugin's failure keeps its code: `plugin bridge failed (add): <its message>`.
Plugins run through an invoke.Exec (RawExec by default; FakeExec in tests).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from .. import invoke, skel, version
from ..errors import CNIError, Code, ErrorList
from . import cache as _cache
from .conf import NetworkConfigList, PluginConf

if TYPE_CHECKING:
    from ..types import Result

__all__ = ["CNIConfig", "RuntimeConf", "NetworkConfigList", "PluginConf"]


@dataclass
class RuntimeConf:
    """One attachment's arguments: what CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and
    CNI_ARGS carry, and the runtime's capability data for `runtimeConfig`."""

    container_id: str
    netns: str = ""
    ifname: str = "eth0"
    args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)

    @property
    def args_str(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.args)


def parse_cni_args(raw: str) -> list[tuple[str, str]]:
    """"K=V;K2=V2" -> [("K", "V"), ("K2", "V2")], each part as strict as Go's cnitool."""
    out = []
    for pair in raw.split(";"):
        kv = pair.split("=")
        if len(kv) != 2 or not kv[0] or not kv[1]:
            raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, f"invalid CNI_ARGS pair {pair!r}")
        out.append((kv[0], kv[1]))
    return out


def _wrap(e: CNIError, plugin: PluginConf, verb: str) -> CNIError:
    return CNIError(e.code, f"plugin {plugin.type} failed ({verb}): {e.msg}", e.details)


class CNIConfig:
    def __init__(self, path: str | Iterable[str] = "", *, cache_dir: str = _cache.DEFAULT_DIR,
                 exec: invoke.Exec | None = None, validate: bool = True) -> None:
        self.path = path if isinstance(path, str) else ":".join(path)
        self.exec: invoke.Exec = exec or invoke.RawExec(stderr=sys.stderr.write)
        self.cache = _cache.ResultCache(cache_dir)
        self.validate = validate
        self._plugin_versions: dict[str, tuple[str, ...]] = {}

    # --- plugins and versions -----------------------------------------------------------

    def get_version_info(self, plugin_type: str) -> tuple[str, ...]:
        """The versions a plugin speaks (its VERSION answer; asked once)."""
        path = self.exec.find_in_path(plugin_type, self.path)
        if path not in self._plugin_versions:
            self._plugin_versions[path] = invoke.version_info(self.exec, path)
        return self._plugin_versions[path]

    def _negotiate(self, net: NetworkConfigList) -> tuple[str, list[CNIError]]:
        errors = ErrorList()
        speaks: list[tuple[PluginConf, tuple[str, ...]]] = []
        for p in net.plugins:
            with errors.collect():
                speaks.append((p, self.get_version_info(p.type)))
        if errors.errors:
            return net.cni_version, errors.errors
        for v in net.cni_versions:
            if all(v in versions for _, versions in speaks):
                return v, []
        v = net.cni_version
        return v, [CNIError(Code.INCOMPATIBLE_CNI_VERSION,
                            f"plugin {p.type} does not support config version {v!r}",
                            f"plugin supports {list(versions)}")
                   for p, versions in speaks if v not in versions]

    def validate_network_list(self, net: NetworkConfigList) -> list[str]:
        """Every plugin is found and speaks the list's version: the capabilities the list
        declares, or one CNIError naming every problem."""
        _, errors = self._negotiate(net)
        if errors:
            raise CNIError(errors[0].code, "; ".join(str(e) for e in errors))
        return sorted({c for p in net.plugins for c in p.capabilities})

    def version_for(self, net: NetworkConfigList, strict: bool = True) -> str:
        """The version `net` runs at. strict: CNIError when a plugin is missing or speaks
        none of the list's versions; otherwise (DEL, GC) the list's own version then."""
        if not self.validate:
            return net.cni_version
        v, errors = self._negotiate(net)
        if errors and strict:
            raise errors[0] if len(errors) == 1 else CNIError(
                errors[0].code, "; ".join(e.msg for e in errors),
                "; ".join(e.details for e in errors if e.details))
        return v

    # --- one plugin ---------------------------------------------------------------------

    def _stdin(self, net: NetworkConfigList, plugin: PluginConf, cni_version: str,
               prev: "Result | None" = None, rt: RuntimeConf | None = None,
               extra: dict[str, Any] | None = None) -> bytes:
        """The plugin's own JSON with name, cniVersion, prevResult and the runtimeConfig
        of the capabilities it declares (only those) put in; the rest untouched."""
        from ..types import convert

        obj = dict(plugin.raw)
        obj["name"] = net.name
        obj["cniVersion"] = cni_version
        if prev is not None:
            obj["prevResult"] = convert.dump(prev, cni_version)
        if rt is not None:
            rc = {c: rt.capability_args[c] for c in plugin.capabilities if c in rt.capability_args}
            if rc:
                obj["runtimeConfig"] = rc
        obj.update(extra or {})
        return json.dumps(obj).encode()

    def _run(self, verb: str, plugin: PluginConf, stdin: bytes,
             rt: RuntimeConf | None = None) -> bytes:
        path = self.exec.find_in_path(plugin.type, self.path)
        if rt is None:                  # GC, STATUS: no attachment
            env = invoke.cni_env(verb, path=self.path)
        else:
            env = invoke.cni_env(verb, container_id=rt.container_id, netns=rt.netns,
                                 ifname=rt.ifname, args=rt.args_str, path=self.path)
        return self.exec.exec_plugin(path, stdin, env)

    def _cached_result(self, net: NetworkConfigList, rt: RuntimeConf,
                       cni_version: str) -> "Result | None":
        """The cached ADD result, checked to be expressible in `cni_version`."""
        from ..types import convert

        try:
            a = self.cache.read(net.name, rt.container_id, rt.ifname)
            if a is None or a.result is None:
                return None
            result = convert.parse(cni_version, a.result)
            convert.dump(result, cni_version)
            return result
        except CNIError as e:
            raise CNIError(e.code, f"failed to get network {net.name!r} cached result: {e.msg}",
                           e.details) from e

    # --- the verbs ----------------------------------------------------------------------

    def add_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> "Result":
        skel.validate_container_id(rt.container_id)
        skel.validate_network_name(net.name)
        skel.validate_ifname(rt.ifname)
        v = self.version_for(net)
        result: Result | None = None
        for p in net.plugins:
            try:
                out = self._run("ADD", p, self._stdin(net, p, v, result, rt), rt)
                result = invoke.parse_result(out, v, p.type)
            except CNIError as e:
                raise _wrap(e, p, "add") from e
        assert result is not None
        self._cache_add(net, rt, result, v)
        return result

    def _cache_add(self, net: NetworkConfigList, rt: RuntimeConf, result: "Result",
                   cni_version: str) -> None:
        from ..types import convert

        try:
            self.cache.write(_cache.Attachment(
                container_id=rt.container_id, network=net.name, ifname=rt.ifname,
                config=net.conf_bytes, netns=rt.netns, cni_args=list(rt.args),
                capability_args=dict(rt.capability_args),
                result=convert.dump(result, cni_version)))
        except CNIError as e:
            raise CNIError(e.code, f"failed to set network {net.name!r} cached result: {e.msg}",
                           e.details) from e

    def check_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        v = self.version_for(net)
        if not version.has_check(v):
            raise CNIError(Code.INCOMPATIBLE_CNI_VERSION,
                           f"configuration version {v!r} does not support the CHECK command")
        if net.disable_check:
            return
        cached = self._cached_result(net, rt, v)
        for p in net.plugins:
            try:
                self._run("CHECK", p, self._stdin(net, p, v, cached, rt), rt)
            except CNIError as e:
                raise _wrap(e, p, "check") from e

    def del_network_list(self, net: NetworkConfigList, rt: RuntimeConf) -> None:
        v = self.version_for(net, strict=False)
        cached = None
        if version.has_check(v):        # DEL gets the cached result from 0.4.0 on
            try:
                cached = self._cached_result(net, rt, v)
            except CNIError:
                self.cache.delete(net.name, rt.container_id, rt.ifname)
        for p in reversed(net.plugins):
            try:
                self._run("DEL", p, self._stdin(net, p, v, cached, rt), rt)
            except CNIError as e:
                raise _wrap(e, p, "delete") from e
        self.cache.delete(net.name, rt.container_id, rt.ifname)

    def gc_network_list(self, net: NetworkConfigList,
                        valid: Iterable[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
        """Remove what is left of attachments the runtime no longer has; the (containerID,
        ifname) pairs it deleted. Raises one CNIError naming every failure.

        As Go's GCNetworkList: every cached attachment of the network not in `valid` gets
        a DEL with its cached config, then (from 1.1.0) every plugin a GC. `valid=None`
        (Go's nil GCArgs) DELs every cached attachment but sends the plugins no
        cni.dev/valid-attachments, so they remove nothing more; `valid=[]` tells them that
        nothing of the network is valid (a node reboot)."""
        if net.disable_gc:
            return []
        keep = set(valid or ())
        errors = ErrorList()
        removed = []
        try:
            attachments = self.cache.attachments()
        except CNIError:
            attachments = []
        for a in attachments:
            if a.network != net.name or (a.container_id, a.ifname) in keep:
                continue
            rt = RuntimeConf(a.container_id, netns=a.netns, ifname=a.ifname,
                             args=list(a.cni_args), capability_args=dict(a.capability_args))
            try:
                self.del_network_list(net, rt)
                removed.append((a.container_id, a.ifname))
            except CNIError as e:
                errors.errors.append(CNIError(
                    e.code, f"failed to delete stale attachment {a.container_id} {a.ifname}: "
                    f"{e.msg}", e.details))
        v = self.version_for(net, strict=False)
        if version.has_gc(v):
            extra = {}
            if valid is not None:
                attached = [{"containerID": c, "ifname": i} for c, i in sorted(keep)]
                # the spec first named the key cni.dev/attachments; Go sends both (#1101)
                extra = {"cni.dev/valid-attachments": attached, "cni.dev/attachments": attached}
            for p in net.plugins:
                stdin = self._stdin(net, p, v, extra=extra)
                try:
                    self._run("GC", p, stdin)
                except CNIError as e:
                    errors.errors.append(CNIError(e.code, f"failed to GC plugin {p.type}: {e.msg}",
                                                  e.details))
        errors.raise_if_any()
        return removed

    def status_network_list(self, net: NetworkConfigList) -> None:
        v = self.version_for(net)
        if not version.has_gc(v):       # STATUS came with GC, in 1.1.0
            return
        for p in net.plugins:
            try:
                self._run("STATUS", p, self._stdin(net, p, v))
            except CNIError as e:
                raise _wrap(e, p, "status") from e

    # --- the cache ----------------------------------------------------------------------

    def get_network_list_cached_result(self, net: NetworkConfigList,
                                       rt: RuntimeConf) -> "Result | None":
        return self._cached_result(net, rt, net.cni_version)

    def get_network_list_cached_config(self, net: NetworkConfigList,
                                       rt: RuntimeConf) -> tuple[bytes, RuntimeConf] | None:
        """The config bytes cached at ADD, and `rt` with the cached CNI_ARGS and
        capability args."""
        a = self.cache.read(net.name, rt.container_id, rt.ifname)
        if a is None:
            return None
        return a.config, RuntimeConf(rt.container_id, netns=rt.netns, ifname=rt.ifname,
                                     args=list(a.cni_args) or list(rt.args),
                                     capability_args=dict(a.capability_args))

    def get_cached_attachments(self, container_id: str = "") -> list[_cache.Attachment]:
        return self.cache.attachments(container_id)


def container_id_for_netns(netns: str) -> str:
    """The container ID the Go cnitool derives from a netns path."""
    import hashlib

    return "cnitool-" + hashlib.sha512(os.path.abspath(netns).encode()).hexdigest()[:20]
