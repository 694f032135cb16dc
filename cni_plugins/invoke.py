"""Delegation: a plugin calling another plugin (IPAM) the way libcni does.

The delegate is looked up in CNI_PATH. When the file found is this same executable
(a symlink to us), it runs in-process through skel.execute, with the same validation
and the same version conversion of its result as if it had been exec'd; otherwise it
is exec'd with the CNI variables of the request. A delegate's error JSON comes back as
the same CNIError, unchanged.

    result = invoke.delegate_add(conf.ipam.type, args)      # Result
    invoke.delegate_del(conf.ipam.type, args)               # None; raises CNIError
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from typing import TYPE_CHECKING, Any

from . import plugins, skel
from .errors import CNIError, Code

if TYPE_CHECKING:
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


def _env(args: skel.CmdArgs, command: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CNI_COMMAND=command, CNI_CONTAINERID=args.container_id, CNI_NETNS=args.netns,
               CNI_IFNAME=args.ifname, CNI_ARGS=args.args, CNI_PATH=args.path)
    if args.netns_override:
        env["CNI_NETNS_OVERRIDE"] = args.netns_override
    return env


def _exec(path: str, args: skel.CmdArgs, command: str, stdin: bytes) -> bytes:
    for attempt in range(5):
        try:
            proc = subprocess.run([path], input=stdin, env=_env(args, command),
                                  capture_output=True, check=False)
            break
        except OSError as e:
            if e.errno != errno.ETXTBSY or attempt == 4:
                raise CNIError(Code.IO_FAILURE, f"failed to exec plugin {path!r}: {e.strerror}") from e
            time.sleep(0.05 * (attempt + 1))
    if proc.returncode != 0:
        try:
            raise CNIError.from_json(json.loads(proc.stdout))
        except ValueError:
            detail = (proc.stderr or proc.stdout).decode(errors="replace").strip()
            raise CNIError(Code.INTERNAL, f"plugin {path} failed with no error message",
                           detail[:500]) from None
    return proc.stdout


def delegate(plugin: str, command: str, args: skel.CmdArgs,
             stdin: bytes | None = None) -> "Result | None":
    """Run `plugin` for `command` with this request's variables (and `stdin`, default the
    request's own config). ADD returns the delegate's result as a canonical Result."""
    from .types import convert

    stdin = args.stdin if stdin is None else stdin
    path = find_in_path(plugin, args.path)
    if plugin in plugins.REGISTRY and args.exe and os.path.realpath(path) == os.path.realpath(args.exe):
        sub = args.replace(command=command, stdin=stdin)
        result = skel.execute(plugin, sub)
        if result is None:
            return None
        # the same lossy conversion an exec'd delegate's printed result would go through
        return convert.parse(sub.cni_version, convert.dump(result, sub.cni_version))
    out = _exec(path, args, command, stdin)
    if command != "ADD":
        return None
    try:
        obj: Any = json.loads(out)
    except ValueError as e:
        raise CNIError(Code.DECODING_FAILURE, f"failed to decode result of {plugin}: {e}") from e
    return convert.parse(args.cni_version, obj)


def delegate_add(plugin: str, args: skel.CmdArgs, stdin: bytes | None = None) -> "Result":
    result = delegate(plugin, "ADD", args, stdin)
    assert result is not None
    return result


def delegate_del(plugin: str, args: skel.CmdArgs, stdin: bytes | None = None) -> None:
    delegate(plugin, "DEL", args, stdin)


def delegate_check(plugin: str, args: skel.CmdArgs, stdin: bytes | None = None) -> None:
    delegate(plugin, "CHECK", args, stdin)
