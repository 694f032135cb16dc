"""The CNI protocol (spec 1.1.0) around a plugin: environment, stdin, version, output.

A plugin module defines any of `cmd_add(args) -> Result`, `cmd_del(args)`,
`cmd_check(args)`, `cmd_gc(args)`, `cmd_status(args)`; the ones it leaves out succeed
as no-ops. It never reads the environment or stdin, prints, or exits: this module does.

    main("loopback", exe)                 # the process edge: env, stdin, stdout, os._exit
    run("loopback", environ, stdin, exe)  # -> (exit code, stdout text); no process I/O
    execute("host-local", args)           # -> Result | None, raises CNIError (delegation)

The protocol (environment, the JSON object, name, cniVersion) is checked here, before
the plugin module is imported; the plugin reads its own keys through its `Conf` model
(netconf). VERSION imports no plugin module.
"""

from __future__ import annotations

import json
import os
import re
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, Mapping

from . import __version__, plugins, version
from .errors import CNIError, Code, json_kind

if TYPE_CHECKING:
    from .types import Result

VERBS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
# The environment of the request being served (the server's requests each have their own).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("cni_plugins_environ", default=None)


def request_environ() -> Mapping[str, str]:
    """The environment the current request came with: what a delegate we exec inherits."""
    env = _ENVIRON.get()
    return os.environ if env is None else env

_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*\Z")  # \Z: "$" would allow a final "\n"


def validate_container_id(value: str) -> None:
    if not value:
        raise CNIError(Code.UNKNOWN_CONTAINER, "missing containerID")
    if not _ID.match(value):
        raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, "invalid characters in containerID",
                       value)


def validate_ifname(value: str) -> None:
    if not value:
        raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, "interface name is empty")
    if len(value.encode()) > 15:
        raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, "interface name is too long",
                       "interface name should be less than 16 characters")
    if value in (".", ".."):
        raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, "interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in value):
        raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES,
                       "interface name contains / or : or whitespace characters")


def validate_network_name(value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise CNIError(Code.DECODING_FAILURE,
                       f"error unmarshall network config: name: expected a string, "
                       f"got {json_kind(value)}")
    if not value:
        raise CNIError(Code.INVALID_NETWORK_CONFIG, "missing network name")
    if not _ID.match(value):
        raise CNIError(Code.INVALID_NETWORK_CONFIG, "invalid characters found in network name",
                       str(value))


def parse_cni_args(raw: str, known: tuple[str, ...] = ()) -> dict[str, str]:
    """CNI_ARGS "K=V;K2=V2" -> dict. Keys outside `known` are refused (CNIError 4)
    unless IgnoreUnknown=1|true is among them, as in Go's LoadArgs."""
    out: dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(";"):
        parts = pair.split("=")
        if len(parts) != 2 or not parts[0]:
            raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, f"CNI_ARGS: invalid pair {pair!r}")
        out[parts[0]] = parts[1]
    flag = out.get("IgnoreUnknown", "").lower()
    if flag not in ("", "0", "1", "true", "false"):
        raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES,
                       f"CNI_ARGS: IgnoreUnknown: invalid boolean {out['IgnoreUnknown']!r}")
    ignore = flag in ("1", "true")
    unknown = [k for k in out if k not in known and k != "IgnoreUnknown"]
    if unknown and not ignore:
        raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES,
                       f"CNI_ARGS: unknown key {unknown[0]!r} "
                       f"(known: {', '.join(known) or 'none'}; set IgnoreUnknown=1 to allow)")
    return {k: v for k, v in out.items() if k in known}


# The environment, as a table: variable, CmdArgs attribute, verbs that require it,
# validator (run when required, or whenever the variable is set).
ENV: tuple[tuple[str, str, frozenset[str], Callable[[str], None] | None], ...] = (
    ("CNI_COMMAND", "command", frozenset(VERBS), None),
    ("CNI_CONTAINERID", "container_id", frozenset({"ADD", "CHECK", "DEL"}), validate_container_id),
    ("CNI_NETNS", "netns", frozenset({"ADD", "CHECK"}), None),
    ("CNI_IFNAME", "ifname", frozenset({"ADD", "CHECK", "DEL"}), validate_ifname),
    ("CNI_ARGS", "args", frozenset(), None),
    ("CNI_PATH", "path", frozenset({"ADD", "CHECK", "DEL", "GC", "STATUS"}), None),
    ("CNI_NETNS_OVERRIDE", "netns_override", frozenset(), None),
)


class CmdArgs:
    """One request: the CNI variables, the config bytes, and what skel derived from them."""

    __slots__ = ("command", "container_id", "netns", "ifname", "args", "path",
                 "netns_override", "stdin", "conf", "cni_version", "exe")

    def __init__(self, command: str = "", container_id: str = "", netns: str = "",
                 ifname: str = "", args: str = "", path: str = "", netns_override: str = "",
                 stdin: bytes = b"", exe: str = "") -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args
        self.path = path
        self.netns_override = netns_override
        self.stdin = stdin
        self.exe = exe                      # the executable serving us (for delegation)
        self.conf: dict[str, Any] = {}      # stdin, decoded
        self.cni_version = version.CURRENT  # reconciled version of this request

    def replace(self, **changes: Any) -> "CmdArgs":
        """A copy with `changes`: every slot, the decoded config and version included."""
        new = CmdArgs()
        for k in self.__slots__:
            setattr(new, k, changes[k] if k in changes else getattr(self, k))
        return new

    def prev_result(self) -> "Result | None":
        raw = self.conf.get("prevResult")
        if raw is None:
            return None
        from .types import convert

        return convert.parse(self.cni_version, raw)

    def require_prev_result(self) -> "Result":
        """prevResult, for a verb that cannot work without it (a chained plugin, CHECK)."""
        prev = self.prev_result()
        if prev is None:
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           f"invalid config: prevResult: required: {self.conf.get('type')} "
                           f"{self.command} must be chained after a plugin that gives a result")
        return prev

    def valid_attachments(self) -> set[tuple[str, str]]:
        """GC: the (containerID, ifname) pairs the runtime still uses."""
        raw = self.conf.get("cni.dev/valid-attachments", self.conf.get("cni.dev/attachments"))
        if raw is None:
            return set()
        if not isinstance(raw, list):
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           "invalid config: cni.dev/valid-attachments: must be a list")
        out = set()
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("containerID"), str):
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               "invalid config: cni.dev/valid-attachments: each entry needs "
                               "containerID and ifname")
            out.add((item["containerID"], str(item.get("ifname", ""))))
        return out

    def gc_attachments(self) -> set[tuple[str, str]] | None:
        """GC: the attachments to keep, or None when the config has no list at all (an
        absent list is not an empty one: a GC without it must remove nothing)."""
        if "cni.dev/valid-attachments" not in self.conf and "cni.dev/attachments" not in self.conf:
            return None
        return self.valid_attachments()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "CmdArgs":
        """Read the table; all missing variables are reported in one CNIError 4."""
        cmd = environ.get("CNI_COMMAND", "")
        args = cls()
        missing = []
        for name, attr, required, _ in ENV:
            value = environ.get(name, "")
            setattr(args, attr, value)
            if not value and (cmd in required or name == "CNI_COMMAND"):
                missing.append(name)
        if missing:
            raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES,
                           f"required env variables [{','.join(missing)}] missing")
        return args


def about(name: str, supported: tuple[str, ...]) -> str:
    return (f"CNI {name} plugin (cni-plugins {__version__})\n"
            f"CNI protocol versions supported: {', '.join(supported)}\n")


def prepare(args: CmdArgs, supported: tuple[str, ...] = version.ALL) -> None:
    """Validate a non-VERSION request and reconcile its version, as the Go skel does."""
    if args.command not in VERBS:
        raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES, f"unknown CNI_COMMAND: {args.command}")
    try:
        conf = json.loads(args.stdin)
    except (ValueError, UnicodeDecodeError) as e:
        raise CNIError(Code.DECODING_FAILURE, f"error unmarshall network config: {e}") from e
    if not isinstance(conf, dict):
        raise CNIError(Code.DECODING_FAILURE,
                       "error unmarshall network config: expected a JSON object")
    args.conf = conf
    raw_version = conf.get("cniVersion")
    if raw_version is not None and not isinstance(raw_version, str):
        raise CNIError(Code.DECODING_FAILURE, f"error unmarshall network config: cniVersion: "
                       f"expected a string, got {json_kind(raw_version)}")
    validate_network_name(conf.get("name"))
    for name, attr, required, check in ENV:
        value = getattr(args, attr)
        if check is not None and (value or args.command in required):
            check(value)
    v = version.reconcile(conf, supported)
    args.cni_version = v
    if args.command == "CHECK" and not version.has_check(v):
        raise CNIError(Code.INCOMPATIBLE_CNI_VERSION, "config version does not allow CHECK",
                       f"config is {v!r}, CHECK needs 0.4.0 or later")
    if args.command in ("GC", "STATUS") and not version.has_gc(v):
        raise CNIError(Code.INCOMPATIBLE_CNI_VERSION,
                       f"config version does not allow {args.command}",
                       f"config is {v!r}, {args.command} needs 1.1.0 or later")
    if (args.command in ("ADD", "CHECK", "DEL") and args.netns
            and args.netns_override.lower() not in ("1", "true")):
        from .net.netns import is_own_netns

        if is_own_netns(args.netns):
            raise CNIError(Code.INVALID_NETNS,
                           "plugin's netns and netns from CNI_NETNS should not be the same",
                           args.netns)


def execute(plugin: str, args: CmdArgs) -> "Result | None":
    """Validate, then run one verb of `plugin` in this process. Raises CNIError."""
    prepare(args, plugins.supported_versions(plugin))
    mod = plugins.load(plugin)
    fn = getattr(mod, "cmd_" + args.command.lower(), None)
    if fn is None:
        return None
    result = fn(args)
    if args.command == "ADD" and result is None:
        raise CNIError(Code.INTERNAL, f"plugin {plugin} returned no result from ADD")
    return result if args.command == "ADD" else None


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=4) + "\n"


def run(plugin: str, environ: Mapping[str, str], read_stdin: Callable[[], bytes],
        exe: str = "", stderr: Callable[[str], Any] = sys.stderr.write) -> tuple[int, str]:
    """One request from a process's point of view: (exit code, stdout text)."""
    token = _ENVIRON.set(environ)
    try:
        return _run(plugin, environ, read_stdin, exe, stderr)
    finally:
        _ENVIRON.reset(token)


def _run(plugin: str, environ: Mapping[str, str], read_stdin: Callable[[], bytes],
         exe: str, stderr: Callable[[str], Any]) -> tuple[int, str]:
    cni_version = version.CURRENT
    try:
        supported = plugins.supported_versions(plugin)
        if not environ.get("CNI_COMMAND"):
            stderr(about(plugin, supported))
            return 0, ""
        args = CmdArgs.from_env(environ)
        if args.command == "VERSION":
            return 0, version.version_info(supported) + "\n"
        args.exe = exe
        try:
            args.stdin = read_stdin()
        except OSError as e:
            raise CNIError(Code.IO_FAILURE, f"error reading from stdin: {e}") from e
        try:
            result = execute(plugin, args)
        finally:
            cni_version = args.cni_version
        if result is None:
            return 0, ""
        from .types import convert

        try:
            return 0, _json(convert.dump(result, args.cni_version))
        except CNIError:
            # the ADD happened but its result cannot be said in this version (an L2-only
            # result at 0.2.0): undo it, so that a failed ADD leaves nothing behind
            undo = getattr(plugins.load(plugin), "cmd_del", None)
            if undo is not None:
                try:
                    undo(args.replace(command="DEL"))
                except Exception:  # the conversion error is the one to report
                    pass
            raise
    except CNIError as e:
        return 1, _json(e.to_json(cni_version))
    except (Exception, SystemExit) as e:  # a crash is still a CNI error, never a traceback
        if environ.get("CNI_PLUGINS_DEBUG"):
            import traceback

            stderr(traceback.format_exc())
        msg = (str(e).splitlines() or [""])[0] or type(e).__name__
        return 1, _json(CNIError(Code.INTERNAL, msg, type(e).__name__).to_json(cni_version))


def main(plugin: str, exe: str) -> None:
    """The process edge: environment and stdin in, stdout out, exit without teardown."""
    code, out = run(plugin, os.environ, sys.stdin.buffer.read, exe)
    if out:
        sys.stdout.write(out)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
