"""invoke: finding a plugin in CNI_PATH and running it, for delegation and for libcni.

Running a plugin goes through an `Exec`, the one seam between "what to run" and "how":

    RawExec()            a child process (retried on "text file busy"); the default
    InProcessExec(exe)   a link to our own executable `exe` runs here through skel.run,
                         with the same validation and output; anything else is exec'd
    FakeExec(handler)    tests: `handler(path, stdin, env) -> bytes` plays the plugin

Every Exec returns the plugin's stdout, and raises the plugin's own error JSON as the
same CNIError, unchanged. On top of it:

    result = invoke.delegate_add(conf.ipam.type, args)      # Result
    invoke.delegate_del(conf.ipam.type, args)               # None; raises CNIError
    out = ex.exec_plugin(path, stdin, cni_env("ADD", container_id=…, netns=…, …))
    versions = invoke.version_info(ex, path)                # ("0.1.0", …, "1.1.0")
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol

from . import plugins, skel, version
from .errors import CNIError, Code

if TYPE_CHECKING:
    from .net.request import Rollback
    from .types import Result


def find_in_path(plugin: str, cni_path: str) -> str:
    if not plugin or "/" in plugin or plugin in (".", ".."):
        raise CNIError(Code.INVALID_NETWORK_CONFIG, f"invalid plugin type {plugin!r}")
    dirs = [d for d in cni_path.split(":") if d]
    for d in dirs:
        candidate = os.path.join(d, plugin)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(Code.INVALID_NETWORK_CONFIG,
                   f"failed to find plugin {plugin!r} in path {dirs}")


def cni_env(command: str, *, container_id: str = "", netns: str = "", ifname: str = "",
            args: str = "", path: str = "", netns_override: str = "",
            base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one plugin run: `base` (default: ours) with the six CNI
    variables always set, even when empty, so that nothing inherited leaks into them."""
    env = _unfrozen(dict(skel.request_environ() if base is None else base))
    env.update(CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_NETNS=netns,
               CNI_IFNAME=ifname, CNI_ARGS=args, CNI_PATH=path)
    if netns_override:
        env["CNI_NETNS_OVERRIDE"] = netns_override
    return env


def _unfrozen(env: dict[str, str]) -> dict[str, str]:
    """The pyinstaller launcher points LD_LIBRARY_PATH at our bundled libraries and sets
    _PYI_* for itself; a plugin we exec must see the system's libraries, as before us."""
    if "LD_LIBRARY_PATH_ORIG" in env:
        env["LD_LIBRARY_PATH"] = env.pop("LD_LIBRARY_PATH_ORIG")
    elif getattr(sys, "frozen", False):
        env.pop("LD_LIBRARY_PATH", None)
    for key in [k for k in env if k.startswith("_PYI_") or k == "_MEIPASS2"]:
        del env[key]
    return env


class Exec(Protocol):
    """How a plugin is found and run. Raises CNIError (the plugin's own, or why it
    could not run); returns the plugin's stdout."""

    def find_in_path(self, plugin: str, cni_path: str) -> str: ...

    def exec_plugin(self, path: str, stdin: bytes, env: Mapping[str, str]) -> bytes: ...


def _plugin_error(path: str, rc: int, stdout: bytes, stderr: bytes) -> CNIError:
    try:
        return CNIError.from_json(json.loads(stdout))
    except ValueError:
        detail = (stderr or stdout).decode(errors="replace").strip()
        return CNIError(Code.INTERNAL, f"plugin {path} failed with no error message",
                        detail[:500])


class RawExec:
    """Plugins as child processes. `stderr`, when given, receives what they log there
    (a runtime shows it to its operator); otherwise it is dropped."""

    attempts = 5

    def __init__(self, stderr: Callable[[str], Any] | None = None) -> None:
        self.stderr = stderr

    def find_in_path(self, plugin: str, cni_path: str) -> str:
        return find_in_path(plugin, cni_path)

    def exec_plugin(self, path: str, stdin: bytes, env: Mapping[str, str]) -> bytes:
        for attempt in range(self.attempts):
            try:
                proc = subprocess.run([path], input=stdin, env=dict(env),
                                      capture_output=True, check=False)
                break
            except OSError as e:
                # ETXTBSY: the file is being written (an upgrade in progress): wait, retry
                if e.errno != errno.ETXTBSY or attempt == self.attempts - 1:
                    raise CNIError(Code.IO_FAILURE,
                                   f"failed to exec plugin {path!r}: {e.strerror}") from e
                time.sleep(0.05 * (attempt + 1))
        if self.stderr is not None and proc.stderr:
            self.stderr(proc.stderr.decode(errors="replace"))
        if proc.returncode != 0:
            raise _plugin_error(path, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout


SHIM = "cni-shim"           # the native shim beside the executable: what the links point at


def shim_of(exe: str) -> str:
    """The shim installed next to our executable `exe` (build/build.sh, scripts/setup.sh)."""
    return os.path.join(os.path.dirname(os.path.realpath(exe)), SHIM)


class InProcessExec:
    """A plugin path that is a link to `exe` (our multi-call executable) or to its shim is
    served in this process by skel.run, exactly as the executable would serve it; others
    go to `other`."""

    def __init__(self, exe: str, other: Exec | None = None,
                 stderr: Callable[[str], Any] | None = None) -> None:
        self.exe = os.path.realpath(exe) if exe else ""
        self.ours = {self.exe, shim_of(self.exe)} if exe else set()
        self.other: Exec = other or RawExec()
        self.stderr = stderr or (lambda text: sys.stderr.write(text))  # today's sys.stderr

    def find_in_path(self, plugin: str, cni_path: str) -> str:
        return self.other.find_in_path(plugin, cni_path)

    def serves(self, path: str) -> str | None:
        """The plugin type `path` runs here, or None when it must be exec'd."""
        name = os.path.basename(path)
        if name in plugins.REGISTRY and os.path.realpath(path) in self.ours:
            return name
        return None

    def exec_plugin(self, path: str, stdin: bytes, env: Mapping[str, str]) -> bytes:
        name = self.serves(path)
        if name is None:
            return self.other.exec_plugin(path, stdin, env)
        rc, out = skel.run(name, env, lambda: stdin, exe=self.exe, stderr=self.stderr)
        if rc != 0:
            raise _plugin_error(path, rc, out.encode(), b"")
        return out.encode()


class FakeExec:
    """For tests: `handler(path, stdin, env)` plays every plugin; it returns stdout bytes
    (or a dict/Result-like JSON object) or raises CNIError. Plugins are "found" in the
    first CNI_PATH directory when their type is in `plugin_types` (None: any type)."""

    def __init__(self, handler: Callable[[str, bytes, Mapping[str, str]], Any],
                 plugin_types: Iterable[str] | None = None) -> None:
        self.handler = handler
        self.plugin_types = None if plugin_types is None else set(plugin_types)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []   # (type, CNI_COMMAND, stdin)

    def find_in_path(self, plugin: str, cni_path: str) -> str:
        dirs = [d for d in cni_path.split(":") if d]
        if not plugin or "/" in plugin:
            raise CNIError(Code.INVALID_NETWORK_CONFIG, f"invalid plugin type {plugin!r}")
        if not dirs or (self.plugin_types is not None and plugin not in self.plugin_types):
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"failed to find plugin {plugin!r} in path {dirs}")
        return os.path.join(dirs[0], plugin)

    def exec_plugin(self, path: str, stdin: bytes, env: Mapping[str, str]) -> bytes:
        try:
            conf = json.loads(stdin)
        except ValueError:
            conf = {}
        self.calls.append((os.path.basename(path), env.get("CNI_COMMAND", ""), conf))
        out = self.handler(path, stdin, env)
        if out is None:
            return b""
        if isinstance(out, (bytes, str)):
            return out.encode() if isinstance(out, str) else out
        return json.dumps(out).encode()


def default_exec(exe: str = "") -> Exec:
    return InProcessExec(exe) if exe else RawExec()


def parse_result(out: bytes, cni_version: str, plugin: str) -> "Result":
    """A plugin's ADD output as a canonical Result; a result without its own cniVersion
    is read in the config's version (Go's fixupResultVersion)."""
    from .types import convert

    try:
        obj: Any = json.loads(out)
    except ValueError as e:
        raise CNIError(Code.DECODING_FAILURE, f"failed to decode result of {plugin}: {e}") from e
    return convert.parse(cni_version, obj)


def version_info(ex: Exec, path: str) -> tuple[str, ...]:
    """The versions the plugin at `path` speaks, from its VERSION answer.

    A plugin too old to know VERSION speaks 0.1.0; one answering 0.2.0 without a list
    speaks 0.1.0 and 0.2.0 (as the Go library reads them)."""
    env = cni_env("VERSION", netns="dummy", ifname="dummy", path="dummy")
    stdin = json.dumps({"cniVersion": version.CURRENT}).encode()
    try:
        out = ex.exec_plugin(path, stdin, env)
    except CNIError as e:
        if e.msg == "unknown CNI_COMMAND: VERSION":
            return ("0.1.0",)
        raise
    try:
        info = json.loads(out)
    except ValueError as e:
        raise CNIError(Code.DECODING_FAILURE, f"decoding version info of {path}: {e}") from e
    if not isinstance(info, dict) or not isinstance(info.get("cniVersion"), str) \
            or not info["cniVersion"]:
        raise CNIError(Code.DECODING_FAILURE,
                       f"decoding version info of {path}: missing field cniVersion")
    supported = info.get("supportedVersions")
    if not supported:
        if info["cniVersion"] == "0.2.0":
            return ("0.1.0", "0.2.0")
        raise CNIError(Code.DECODING_FAILURE,
                       f"decoding version info of {path}: missing field supportedVersions")
    if not isinstance(supported, list) or not all(isinstance(v, str) for v in supported):
        raise CNIError(Code.DECODING_FAILURE,
                       f"decoding version info of {path}: supportedVersions: not a list of strings")
    return tuple(supported)


def _env(args: skel.CmdArgs, command: str) -> dict[str, str]:
    return cni_env(command, container_id=args.container_id, netns=args.netns,
                   ifname=args.ifname, args=args.args, path=args.path,
                   netns_override=args.netns_override)


def delegate(plugin: str, command: str, args: skel.CmdArgs,
             stdin: bytes | None = None, ex: Exec | None = None) -> "Result | None":
    """Run `plugin` for `command` with this request's variables (and `stdin`, default the
    request's own config). ADD returns the delegate's result as a canonical Result.

    A delegate that is a link to the executable serving this request (`args.exe`) runs
    in this process; its output goes through the same JSON, so the same lossy version
    conversion applies as when it is exec'd."""
    stdin = args.stdin if stdin is None else stdin
    ex = ex or default_exec(args.exe)
    path = ex.find_in_path(plugin, args.path)
    out = ex.exec_plugin(path, stdin, _env(args, command))
    if command != "ADD":
        return None
    return parse_result(out, args.cni_version, plugin)


def ipam_add(plugin: str, args: skel.CmdArgs, undo: "Rollback") -> "Result":
    """An interface plugin's IPAM step: the delegate's result, which must hold an address;
    `undo` (the ADD's net.request.Rollback) releases it again if the ADD fails."""
    from .testing import checkpoint

    result = delegate_add(plugin, args)
    undo.callback(delegate_del, plugin, args)
    checkpoint("ipam")
    if not result.ips:
        raise CNIError(Code.INTERNAL, "IPAM plugin returned missing IP config")
    return result


def delegate_add(plugin: str, args: skel.CmdArgs, stdin: bytes | None = None) -> "Result":
    result = delegate(plugin, "ADD", args, stdin)
    assert result is not None
    return result


def delegate_del(plugin: str, args: skel.CmdArgs, stdin: bytes | None = None) -> None:
    delegate(plugin, "DEL", args, stdin)


def delegate_check(plugin: str, args: skel.CmdArgs, stdin: bytes | None = None) -> None:
    delegate(plugin, "CHECK", args, stdin)


def delegate_gc(plugin: str, args: skel.CmdArgs, stdin: bytes | None = None) -> None:
    """GC reaches the IPAM delegate with the same cni.dev/valid-attachments (the list is
    in the config bytes, forwarded unchanged)."""
    delegate(plugin, "GC", args, stdin)


def delegate_status(plugin: str, args: skel.CmdArgs, stdin: bytes | None = None) -> None:
    """STATUS of the delegate; one that cannot be found makes the caller unable to work
    (code 50), whatever find_in_path said. The delegate's own error passes through."""
    ex = default_exec(args.exe)
    try:
        ex.find_in_path(plugin, args.path)
    except CNIError as e:
        raise CNIError(Code.PLUGIN_NOT_AVAILABLE, f"failed to find delegate plugin "
                       f"{plugin!r}: {e.msg}", e.details) from e
    delegate(plugin, "STATUS", args, stdin, ex)
