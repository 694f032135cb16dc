"""dhcp: the address comes from the network's own DHCP server, through a lease daemon.

    cni-plugins dhcp daemon [-socketpath P] …   the daemon (see _dhcp_daemon.py), started once
                                                per node (systemd: cni-dhcp.socket)

ADD     the daemon acquires (or, for an attachment it already holds, reuses) a lease in the
        pod's netns and keeps renewing it -> ips [leased address, router as gateway], routes
        (option 121, else 33 and a default route through the router), as Go's
DEL     the daemon sends DHCPRELEASE and forgets the lease; nothing held is success
CHECK   the daemon holds a live lease for the attachment
GC      the daemon releases this network's leases of attachments not in valid-attachments
STATUS  50 when no daemon answers on ipam.daemonSocketPath

The daemon is reached on a unix socket (ipam.daemonSocketPath, default /run/cni/dhcp.sock)
and handed the pod's netns as an fd: it acts in the very namespace the runtime named, even
when this plugin runs inside the resident server. An unreachable daemon is code 11 (the
runtime may retry once it runs).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import Field, field_validator

from .. import netconf
from ..errors import CNIError, Code
from ..netconf import Invalid
from ..skel import CmdArgs
from ..types import IPConfig, Result, Route
from . import _dhcp_options as options
from . import _dhcp_wire as wire

ABOUT = "dhcp IPAM: addresses leased from the network's DHCP server by a lease daemon"

CALL_TIMEOUT = 300.0        # s: the daemon bounds an acquisition itself (-resendtimeout)


def _option(value: str) -> str:
    try:
        options.parse_name(value)
    except ValueError as e:
        raise Invalid(str(e)) from None
    return value


class Provide(netconf.Model):
    option: str = ""
    value: str = ""
    from_arg: str = Field("", alias="fromArg")

    @field_validator("option")
    @classmethod
    def _known(cls, v: str) -> str:
        return _option(v)


class Request(netconf.Model):
    skip_default: bool = Field(False, alias="skipDefault")
    option: str = ""

    @field_validator("option")
    @classmethod
    def _known(cls, v: str) -> str:
        return _option(v)


class IPAM(netconf.IPAM):
    daemon_socket_path: str = Field("", alias="daemonSocketPath")
    provide: list[Provide] = Field(default_factory=list)
    request: list[Request] = Field(default_factory=list)


class Conf(netconf.NetConf):
    ipam: IPAM = Field(default_factory=IPAM)

    @property
    def socket_path(self) -> str:
        return self.ipam.daemon_socket_path or wire.DEFAULT_SOCKET


def load_conf(args: CmdArgs) -> Conf:
    return netconf.load(args, Conf)


def attachment(args: CmdArgs, conf: Conf) -> dict[str, Any]:
    return {"containerID": args.container_id, "network": conf.name, "ifname": args.ifname}


def call(conf: Conf, body: dict[str, Any], netns_fd: int = -1,
         timeout: float = CALL_TIMEOUT) -> Any:
    """One request to the daemon; its result, or its error as the same CNIError."""
    path = conf.socket_path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(5.0)
        try:
            sock.connect(path)
        except OSError as e:
            raise CNIError(Code.TRY_AGAIN_LATER, f"failed to reach the dhcp daemon at "
                           f"{path!r}: {e.strerror or e}",
                           "is `cni-plugins dhcp daemon` running?") from None
        try:
            wire.send(sock, wire.REQUEST, body, [netns_fd] if netns_fd >= 0 else None)
            sock.settimeout(timeout)
            reply, _ = wire.recv(sock, wire.REPLY, wire.MAX_REPLY)
        except (OSError, EOFError, wire.WireError) as e:
            raise CNIError(Code.IO_FAILURE, f"failed to talk to the dhcp daemon at {path!r}: "
                           f"{e or type(e).__name__}") from None
    finally:
        sock.close()
    if not isinstance(reply, dict):
        raise CNIError(Code.IO_FAILURE, f"unexpected answer from the dhcp daemon at {path!r}")
    err = reply.get("error")
    if isinstance(err, dict):
        raise CNIError(int(err.get("code", Code.INTERNAL)), str(err.get("msg", "")),
                       str(err.get("details", "")))
    return reply.get("result")


def cni_args(raw: str) -> dict[str, str]:
    """CNI_ARGS as Go's dhcp reads them: any KEY=VALUE pairs, no key refused (the
    fromArg of `provide` may name K8S_POD_NAME or anything else)."""
    pairs = (item.split("=", 1) for item in raw.split(";") if "=" in item)
    return {k: v for k, v in pairs}


def _request_body(args: CmdArgs, conf: Conf, verb: str) -> dict[str, Any]:
    try:
        requested, provided = options.prepare(cni_args(args.args), conf.ipam.provide,
                                              conf.ipam.request)
    except ValueError as e:
        raise CNIError(Code.INVALID_NETWORK_CONFIG, f"invalid config: ipam.{e}") from None
    return {"verb": verb, **attachment(args, conf), "netns": os.path.abspath(args.netns),
            "request": requested, "provide": {str(k): v.hex() for k, v in provided.items()}}


def _with_netns(args: CmdArgs, conf: Conf, body: dict[str, Any]) -> Any:
    from ..net.netns import NetNS

    with NetNS.open(args.netns) as ns:
        return call(conf, body, ns.fd)


def to_result(lease: dict[str, Any]) -> Result:
    return Result(ips=[IPConfig(address=lease["address"], gateway=lease.get("gateway", ""))],
                  routes=[Route(dst=d, gw=g) for d, g in lease.get("routes", [])])


def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    return to_result(_with_netns(args, conf, _request_body(args, conf, "add")))


def cmd_del(args: CmdArgs) -> None:
    conf = load_conf(args)
    call(conf, {"verb": "del", **attachment(args, conf)})


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    lease = call(conf, {"verb": "check", **attachment(args, conf)})
    prev = args.prev_result()
    if prev is not None and prev.ips and lease["address"] not in {ip.address for ip in prev.ips}:
        raise CNIError(Code.INTERNAL, f"failed to find the leased address {lease['address']} "
                       f"of {args.ifname!r} in prevResult")


def cmd_gc(args: CmdArgs) -> None:
    """Without cni.dev/valid-attachments nothing is released (absent is not empty)."""
    conf = load_conf(args)
    keep = args.gc_attachments()
    if keep is None:
        return
    valid = sorted([cid, ifname] for cid, ifname in keep)
    call(conf, {"verb": "gc", "network": conf.name, "valid": valid})


def cmd_status(args: CmdArgs) -> None:
    conf = load_conf(args)
    try:
        call(conf, {"verb": "status"}, timeout=10.0)
    except CNIError as e:
        raise CNIError(Code.PLUGIN_NOT_AVAILABLE, e.msg, e.details) from None
