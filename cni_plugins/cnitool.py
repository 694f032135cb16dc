"""cnitool: attach a network namespace to a CNI network and detach it, without a runtime.

The Go cnitool's commands and environment, on top of libcni; beyond it: a readable
default output and `--json`, `cnitool list`, distinct exit codes, `--valid` for gc.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import click

from . import libcni
from .errors import CNIError
from .libcni import CNIConfig, RuntimeConf, cache, conf

if TYPE_CHECKING:
    from .types import Result

EXIT_OK = 0
EXIT_FAILED = 1      # a plugin, the cache or a version check said no
EXIT_USAGE = 2       # bad command line, CNI_ARGS or CAP_ARGS
EXIT_CONFIG = 3      # the network is not found, or its configuration is invalid

EXIT_CODES = f"""
\b
Exit codes:
  {EXIT_OK}  success
  {EXIT_FAILED}  the operation failed (a plugin's error, with its CNI code)
  {EXIT_USAGE}  usage error (arguments, CNI_ARGS, CAP_ARGS)
  {EXIT_CONFIG}  network not found or its configuration invalid
"""

MAIN_HELP = f"""Add, check, remove, gc or status network interfaces from a network namespace.

Runs the plugins of the network NETWORK, found in NETCONFPATH (default
{conf.DEFAULT_DIR}), from the directories of CNI_PATH, as a container runtime
would. ADD results are cached in CACHE_DIR/results (default {cache.DEFAULT_DIR}),
in the Go libcni's format, for DEL and CHECK.

\b
Examples:
  ip netns add pod1
  export CNI_PATH=/opt/cni/bin NETCONFPATH=/etc/cni/net.d
  cnitool list
  cnitool add mynet /run/netns/pod1
  CAP_ARGS='{{"portMappings":[{{"hostPort":8080,"containerPort":80,"protocol":"tcp"}}]}}' \\
      cnitool add mynet /run/netns/pod1 -i eth1 --json
  cnitool check mynet /run/netns/pod1
  cnitool del mynet /run/netns/pod1
  cnitool gc mynet --valid cnitool-0123456789abcdef0123/eth0
  cnitool status mynet
{EXIT_CODES}"""


def _fail(ctx: click.Context, err: CNIError, exit_code: int) -> NoReturn:
    if ctx.params.get("as_json"):
        click.echo(json.dumps({"code": err.code, "msg": err.msg, "details": err.details}, indent=4))
    else:
        click.echo(f"cnitool: {err.msg}", err=True)
        if err.details:
            click.echo(f"  details: {err.details}", err=True)
        click.echo(f"  (CNI error code {err.code})", err=True)
    ctx.exit(exit_code)


# --- options shared by the commands ----------------------------------------------------

def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "as_json", is_flag=True,
                     help="Print JSON (errors too, on stdout).")(f)
    f = click.option("--cache-dir", envvar="CNI_CACHE_DIR", default=cache.DEFAULT_DIR,
                     show_default=True, metavar="DIR",
                     help="Where results are cached (env CNI_CACHE_DIR).")(f)
    f = click.option("--cni-path", envvar="CNI_PATH", default="", metavar="DIRS",
                     help="Colon-separated plugin directories (env CNI_PATH).")(f)
    f = click.option("--netconfpath", envvar="NETCONFPATH", default=conf.DEFAULT_DIR,
                     show_default=True, metavar="DIR",
                     help="Network configuration directory (env NETCONFPATH).")(f)
    return f


def _attachment(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--container-id", default="", metavar="ID",
                     help="Container ID (default: cnitool- and the first 20 hex digits of "
                          "the sha512 of the netns path, as the Go cnitool).")(f)
    f = click.option("--cap-args", envvar="CAP_ARGS", default="", metavar="JSON",
                     help="Capability arguments as a JSON object (env CAP_ARGS).")(f)
    f = click.option("--cni-args", envvar="CNI_ARGS", default="", metavar="K=V;…",
                     help="CNI_ARGS for the plugins (env CNI_ARGS).")(f)
    f = click.option("-i", "--ifname", envvar="CNI_IFNAME", default="eth0", show_default=True,
                     help="Interface name in the namespace (env CNI_IFNAME).")(f)
    return f


def _load(ctx: click.Context, netconfpath: str, network: str) -> conf.NetworkConfigList:
    try:
        return conf.load(netconfpath, network)
    except CNIError as e:
        _fail(ctx, e, EXIT_CONFIG)


def _runtime(netns: str, ifname: str, cni_args: str, cap_args: str,
             container_id: str) -> RuntimeConf:
    args = []
    if cni_args:
        try:
            args = libcni.parse_cni_args(cni_args)
        except CNIError as e:
            raise click.BadParameter(e.msg, param_hint="CNI_ARGS") from None
    caps: dict[str, Any] = {}
    if cap_args:
        try:
            caps = json.loads(cap_args)
        except ValueError as e:
            raise click.BadParameter(f"not JSON: {e}", param_hint="CAP_ARGS") from None
        if not isinstance(caps, dict):
            raise click.BadParameter("must be a JSON object", param_hint="CAP_ARGS")
    netns = os.path.abspath(netns)
    return RuntimeConf(container_id or libcni.container_id_for_netns(netns), netns=netns,
                       ifname=ifname, args=args, capability_args=caps)


def _cni(cni_path: str, cache_dir: str) -> CNIConfig:
    from .invoke import RawExec

    return CNIConfig(cni_path, cache_dir=cache_dir,
                     exec=RawExec(stderr=lambda s: click.echo(s, err=True, nl=False)))


def _attachment_json(net: conf.NetworkConfigList, rt: RuntimeConf) -> dict[str, str]:
    return {"network": net.name, "containerID": rt.container_id, "netns": rt.netns,
            "ifname": rt.ifname}


# --- readable output ---------------------------------------------------------------------

def describe(result: "Result") -> list[str]:
    """The result as an operator reads it: interfaces, addresses, routes, DNS."""
    lines = []
    names = {i: iface.name for i, iface in enumerate(result.interfaces)}
    if result.interfaces:
        lines.append("Interfaces:")
        for i, iface in enumerate(result.interfaces):
            where = f"  in {iface.sandbox}" if iface.sandbox else "  on the host"
            extra = "".join(f"  {label} {value}" for label, value in
                            (("mac", iface.mac), ("mtu", iface.mtu)) if value)
            lines.append(f"  [{i}] {iface.name}{extra}{where}")
    if result.ips:
        lines.append("Addresses:")
        for ip in result.ips:
            gw = f"  gateway {ip.gateway}" if ip.gateway else ""
            on = f"  on {names.get(ip.interface, f'[{ip.interface}]')}" \
                if ip.interface is not None else ""
            lines.append(f"  {ip.address}{gw}{on}")
    if result.routes:
        lines.append("Routes:")
        for r in result.routes:
            parts = [r.dst] + [f"{label} {value}" for label, value in
                               (("via", r.gw), ("mtu", r.mtu), ("metric", r.priority),
                                ("table", r.table), ("scope", r.scope)) if value]
            lines.append("  " + "  ".join(str(p) for p in parts))
    dns = result.dns
    if dns.nameservers or dns.domain or dns.search or dns.options:
        parts = [f"{label} {' '.join(v) if isinstance(v, list) else v}" for label, v in
                 (("nameservers", dns.nameservers), ("domain", dns.domain),
                  ("search", dns.search), ("options", dns.options)) if v]
        lines.append("DNS: " + "; ".join(parts))
    return lines or ["(the plugins returned an empty result)"]


# --- the commands --------------------------------------------------------------------------

@click.group(help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"],
                                               "max_content_width": 100})
def cli() -> None:
    pass


@cli.command(epilog=EXIT_CODES)
@click.argument("network")
@click.argument("netns")
@_attachment
@_common
@click.pass_context
def add(ctx: click.Context, network: str, netns: str, ifname: str, cni_args: str,
        cap_args: str, container_id: str, netconfpath: str, cni_path: str, cache_dir: str,
        as_json: bool) -> None:
    """Attach NETNS to NETWORK: ADD through every plugin, in order; print the result.

    \b
    Example:
      cnitool add mynet /run/netns/pod1
      cnitool add mynet /run/netns/pod1 --json | jq -r '.ips[0].address'
    """
    from .types import convert

    net = _load(ctx, netconfpath, network)
    rt = _runtime(netns, ifname, cni_args, cap_args, container_id)
    cni = _cni(cni_path, cache_dir)
    try:
        result = cni.add_network_list(net, rt)
        v = cni.version_for(net)
    except CNIError as e:
        _fail(ctx, e, EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(convert.dump(result, v), indent=4))
        return
    click.echo(f"Added {rt.ifname} in {rt.netns} to network {net.name} "
               f"(container {rt.container_id}, CNI {v})")
    for line in describe(result):
        click.echo(line)


@cli.command(epilog=EXIT_CODES)
@click.argument("network")
@click.argument("netns")
@_attachment
@_common
@click.pass_context
def check(ctx: click.Context, network: str, netns: str, ifname: str, cni_args: str,
          cap_args: str, container_id: str, netconfpath: str, cni_path: str, cache_dir: str,
          as_json: bool) -> None:
    """CHECK that NETNS is still attached to NETWORK as the cached ADD result says.

    \b
    Example:
      cnitool check mynet /run/netns/pod1 && echo still attached
    """
    net = _load(ctx, netconfpath, network)
    rt = _runtime(netns, ifname, cni_args, cap_args, container_id)
    try:
        _cni(cni_path, cache_dir).check_network_list(net, rt)
    except CNIError as e:
        _fail(ctx, e, EXIT_FAILED)
    if as_json:
        click.echo(json.dumps({**_attachment_json(net, rt), "check": "ok"}, indent=4))
    else:
        skipped = " (disableCheck: nothing run)" if net.disable_check else ""
        click.echo(f"{rt.ifname} in {rt.netns} is attached to network {net.name}{skipped}")


@cli.command("del", epilog=EXIT_CODES)
@click.argument("network")
@click.argument("netns")
@_attachment
@_common
@click.pass_context
def delete(ctx: click.Context, network: str, netns: str, ifname: str, cni_args: str,
           cap_args: str, container_id: str, netconfpath: str, cni_path: str, cache_dir: str,
           as_json: bool) -> None:
    """Detach NETNS from NETWORK: DEL through every plugin, in reverse order.

    The cached ADD result is handed to the plugins, and removed when all succeeded.

    \b
    Example:
      cnitool del mynet /run/netns/pod1
    """
    net = _load(ctx, netconfpath, network)
    rt = _runtime(netns, ifname, cni_args, cap_args, container_id)
    try:
        _cni(cni_path, cache_dir).del_network_list(net, rt)
    except CNIError as e:
        _fail(ctx, e, EXIT_FAILED)
    if as_json:
        click.echo(json.dumps({**_attachment_json(net, rt), "deleted": True}, indent=4))
    else:
        click.echo(f"Deleted {rt.ifname} in {rt.netns} from network {net.name}")


def _valid_pair(ctx: click.Context, param: click.Parameter,
                values: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        cid, sep, ifname = v.partition("/")
        if not cid or not sep or not ifname:
            raise click.BadParameter(f"{v!r}: expected CONTAINERID/IFNAME")
        out.append((cid, ifname))
    return out


def _live_attachments(cni: CNIConfig, network: str) -> list[tuple[str, str]]:
    """The network's cached attachments whose netns path is still there."""
    try:
        cached = cni.get_cached_attachments()
    except CNIError:
        return []
    return [(a.container_id, a.ifname) for a in cached
            if a.network == network and a.netns and os.path.exists(a.netns)]


@cli.command(epilog=EXIT_CODES)
@click.argument("network")
@click.argument("netns", required=False)
@click.option("--valid", "valid", multiple=True, metavar="CONTAINERID/IFNAME",
              callback=_valid_pair,
              help="An attachment still in use (repeatable): these are the valid ones. "
                   "Without --valid, the cached attachments whose netns still exists.")
@click.option("--all", "gc_all", is_flag=True,
              help="Nothing of NETWORK is valid any more (a node reboot): DEL every cached "
                   "attachment, and the plugins remove all they hold for the network.")
@_common
@click.pass_context
def gc(ctx: click.Context, network: str, netns: str | None, valid: list[tuple[str, str]],
       gc_all: bool, netconfpath: str, cni_path: str, cache_dir: str, as_json: bool) -> None:
    """Garbage-collect NETWORK: DEL every cached attachment that is not valid, then GC
    every plugin with the valid ones.

    Valid are those named by --valid; without it, the cached attachments whose netns
    still exists; with --all, none. (The Go cnitool has no such notion: it DELs every cached
    attachment.) NETNS is accepted for the Go cnitool's syntax and not used.

    \b
    Examples:
      cnitool gc mynet                 # pods whose netns is gone
      cnitool gc mynet --all           # after a reboot: nothing is valid
      cnitool gc mynet --valid cnitool-0123456789abcdef0123/eth0
    """
    if gc_all and valid:
        raise click.UsageError("--all and --valid exclude each other")
    net = _load(ctx, netconfpath, network)
    cni = _cni(cni_path, cache_dir)
    keep = [] if gc_all else list(valid) if valid else _live_attachments(cni, net.name)
    try:
        removed = cni.gc_network_list(net, keep)
    except CNIError as e:
        _fail(ctx, e, EXIT_FAILED)
    if as_json:
        click.echo(json.dumps({"network": net.name, "removed": [
            {"containerID": c, "ifname": i} for c, i in removed]}, indent=4))
        return
    if net.disable_gc:
        click.echo(f"network {net.name}: disableGC is set, nothing done")
        return
    click.echo(f"network {net.name}: removed {len(removed)} stale attachment(s)")
    for c, i in removed:
        click.echo(f"  {c} {i}")


@cli.command(epilog=EXIT_CODES)
@click.argument("network")
@click.argument("netns", required=False)
@_common
@click.pass_context
def status(ctx: click.Context, network: str, netns: str | None, netconfpath: str,
           cni_path: str, cache_dir: str, as_json: bool) -> None:
    """Ask every plugin of NETWORK whether it is ready for ADDs (STATUS, CNI 1.1.0).

    Before 1.1.0 there is no STATUS and the network counts as ready. NETNS is not used.

    \b
    Example:
      cnitool status mynet || echo not ready
    """
    net = _load(ctx, netconfpath, network)
    try:
        _cni(cni_path, cache_dir).status_network_list(net)
    except CNIError as e:
        _fail(ctx, e, EXIT_FAILED)
    if as_json:
        click.echo(json.dumps({"network": net.name, "status": "ready"}, indent=4))
    else:
        click.echo(f"network {net.name}: ready")


@cli.command("list", epilog=EXIT_CODES)
@_common
@click.pass_context
def list_(ctx: click.Context, netconfpath: str, cni_path: str, cache_dir: str,
          as_json: bool) -> None:
    """List the networks of NETCONFPATH, in load order, with what is wrong with them.

    Files that do not parse, and networks hidden by an earlier file of the same name,
    are shown. With CNI_PATH set, every plugin is also looked up and asked VERSION.
    Exits 3 when a file is invalid.

    \b
    Example:
      CNI_PATH=/opt/cni/bin cnitool list
    """
    try:
        entries = conf.scan(netconfpath)
    except CNIError as e:
        _fail(ctx, e, EXIT_CONFIG)
    cni = _cni(cni_path, cache_dir) if cni_path else None
    rows = []
    for entry in entries:
        row: dict[str, Any] = {"file": entry.path, "name": None, "cniVersion": None,
                               "plugins": [], "status": "ok", "error": None}
        net = entry.net
        if net is None:
            row.update(status="invalid", error=str(entry.error))
        else:
            row.update(name=net.name, cniVersion=net.cni_version,
                       plugins=[p.type for p in net.plugins])
            if entry.shadowed_by:
                row.update(status="shadowed", error=f"network {net.name!r} is already "
                                                    f"defined in {entry.shadowed_by}")
            elif cni is not None:
                try:
                    cni.validate_network_list(net)
                    row["cniVersion"] = cni.version_for(net)
                except CNIError as err:
                    row.update(status="invalid", error=str(err))
        rows.append(row)
    bad = any(r["status"] == "invalid" for r in rows)
    if as_json:
        click.echo(json.dumps(rows, indent=4))
    elif not rows:
        click.echo(f"no network configurations in {netconfpath}")
    else:
        _table(rows)
    ctx.exit(EXIT_CONFIG if bad else EXIT_OK)


def _table(rows: list[dict[str, Any]]) -> None:
    cells = [("NAME", "CNI", "STATUS", "PLUGINS", "FILE")]
    for r in rows:
        cells.append((r["name"] or "-", r["cniVersion"] or "-", r["status"],
                      ",".join(r["plugins"]) or "-", os.path.basename(r["file"])))
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    for c in cells:
        click.echo("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=False)) + "  " + c[4])
    for r in rows:
        if r["error"]:
            click.echo(f"{os.path.basename(r['file'])}: {r['error']}")


def main() -> None:
    cli.main(prog_name="cnitool")


if __name__ == "__main__":
    main()
