"""Our narrow netlink facade: links, addresses, routes, policy rules, route lookups and tc.

pyroute2's message classes (ifinfmsg, ifaddrmsg, rtmsg, fibmsg, tcmsg and its codecs) encode
and decode every request; net/transport.py sends them and reads the answers.

    with Netlink() as nl:                # bound to the netns the thread is in now
        lo = nl.link("lo")               # Link | None
        nl.link_set_up(lo.index)
        nl.addrs(lo.index)               # [Addr]

Failures raise OSError(errno) with the kernel's extended-ack text; callers wrap the
step in errors.kernel_errors("…") to get a CNIError that says what failed.
"""

from __future__ import annotations

import errno
import functools
import socket
from dataclasses import dataclass, field
from typing import Any

import netaddr
from pyroute2.netlink import nla
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from pyroute2.netlink.rtnl.tcmsg import cls_u32, sched_tbf
from pyroute2.netlink.rtnl.tcmsg import tcmsg as _tcmsg

from .transport import NLM_F_ACK, NLM_F_DUMP, NLM_F_ECHO, NLM_F_REQUEST, Socket

NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
AF_BRIDGE = 7
BRIDGE_VLAN_INFO_PVID, BRIDGE_VLAN_INFO_UNTAGGED = 0x2, 0x4
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
FR_ACT_TO_TBL = 1               # a rule's action: look the packet up in its table
IFF_UP, IFF_PROMISC, IFF_ALLMULTI = 0x1, 0x100, 0x200
IFA_F_NODAD = 0x02
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3                 # what iproute2 and the Go plugins use (pyroute2: static)
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST, RT_SCOPE_NOWHERE = 0, 253, 254, 255
RTN_UNICAST = 1
RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46
TC_H_ROOT, TC_H_INGRESS = 0xFFFFFFFF, 0xFFFFFFF1
ETH_P_ALL = 0x0003
MIRRED_EGRESS_REDIRECT = 1      # TCA_EGRESS_REDIR
# the link is gone (or never was): lookups answer None, deletions False
_NO_LINK = (errno.ENODEV, errno.ENOENT)
# the route to a destination does not exist: route_get answers None
_NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN)


def tc_handle(major: int, minor: int = 0) -> int:
    """"1:" is tc_handle(1), "ffff:" tc_handle(0xffff), "1:1" tc_handle(1, 1)."""
    return (major << 16) | minor


class tbf_options(sched_tbf.options):
    """pyroute2's tbf options and the 64-bit rate (≥ 34 Gbit/s) it lacks."""

    _nlmsg_base__compiled_nla = False
    nla_map = tuple(sched_tbf.options.nla_map) + (
        ("TCA_TBF_RATE64", "uint64"), ("TCA_TBF_PRATE64", "uint64"),
        ("TCA_TBF_BURST", "uint32"), ("TCA_TBF_PBURST", "uint32"), ("TCA_TBF_PAD", "hex"))


class tcmsg(_tcmsg):
    """pyroute2's tcmsg with tbf_options for tbf (and only its options decoded: stats
    come as bytes)."""

    _nlmsg_base__compiled_nla = False
    nla_map = (("TCA_UNSPEC", "none"), ("TCA_KIND", "asciiz"),
               ("TCA_OPTIONS", "get_options"), ("TCA_STATS", "hex"),
               ("TCA_XSTATS", "hex"), ("TCA_RATE", "hex"), ("TCA_FCNT", "hex"),
               ("TCA_STATS2", "hex"), ("TCA_STAB", "hex"), ("TCA_PAD", "hex"),
               ("TCA_DUMP_INVISIBLE", "flag"), ("TCA_CHAIN", "uint32"))

    @staticmethod
    def get_options(self: Any, *argv: Any, **kwarg: Any) -> Any:
        kind = self.get_attr("TCA_KIND")
        if kind == "tbf":
            return tbf_options
        if kind == "u32":
            return cls_u32.options
        return nla.hex


_CLASSES: dict[int, Any] = {
    RTM_NEWLINK: ifinfmsg, RTM_DELLINK: ifinfmsg, RTM_NEWADDR: ifaddrmsg,
    RTM_DELADDR: ifaddrmsg, RTM_NEWROUTE: rtmsg, RTM_DELROUTE: rtmsg,
    RTM_NEWRULE: fibmsg, RTM_DELRULE: fibmsg,
    RTM_NEWQDISC: tcmsg, RTM_DELQDISC: tcmsg, RTM_NEWTFILTER: tcmsg, RTM_DELTFILTER: tcmsg}


def _family(ip: str) -> tuple[int, int]:
    """(AF_INET or AF_INET6, its full prefix length) of an address."""
    version = _net(ip).version
    return (socket.AF_INET6, 128) if version == 6 else (socket.AF_INET, 32)


def _split(cidr: str) -> tuple[str, int, int]:
    """"10.1.0.5/24" → ("10.1.0.5", AF_INET, 24); no prefix means a host address."""
    net = _net(cidr)
    return str(net.ip), socket.AF_INET6 if net.version == 6 else socket.AF_INET, \
        net.prefixlen


def _net(text: str) -> netaddr.IPNetwork:
    try:
        return netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, TypeError) as e:
        raise ValueError(f"invalid IP address or CIDR {text!r}") from e


@dataclass
class Link:
    index: int
    name: str
    flags: int
    mtu: int
    mac: str
    kind: str
    master: int
    operstate: str = ""         # "UP", "DOWN", "LOWERLAYERDOWN", …
    peer: int = 0               # veth: the peer's ifindex (in its own netns)
    alias: str = ""
    txqlen: int = 0
    msg: Any = field(default=None, repr=False, compare=False)   # the kernel's reply

    @functools.cached_property
    def data(self) -> dict:
        """IFLA_INFO_DATA of `kind`: {"IFLA_VLAN_ID": 10, ...}, decoded when first asked
        (a bridge's has some 40 attributes: most of a link lookup's cost)."""
        return _info_data(self.msg) if self.msg is not None else {}

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def oper_up(self) -> bool:
        return self.operstate == "UP"


@dataclass
class Addr:
    index: int
    family: int                 # 4 or 6
    address: str                # CIDR "127.0.0.1/8"
    scope: int


def _link(msg: Any) -> Link:
    return Link(index=msg["index"], name=msg.get_attr("IFLA_IFNAME") or "",
                flags=msg["flags"], mtu=msg.get_attr("IFLA_MTU") or 0,
                mac=msg.get_attr("IFLA_ADDRESS") or "",
                kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "",
                master=msg.get_attr("IFLA_MASTER") or 0,
                operstate=msg.get_attr("IFLA_OPERSTATE") or "",
                peer=msg.get_attr("IFLA_LINK") or 0, alias=msg.get_attr("IFLA_IFALIAS") or "",
                txqlen=msg.get_attr("IFLA_TXQLEN") or 0, msg=msg)


def _info_data(msg: Any) -> dict:
    data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    if data is None or isinstance(data, (bytes, str)):      # kinds pyroute2 does not decode
        return {}
    return dict(data.get("attrs") or [])


def _addr(msg: Any) -> Addr:
    ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return Addr(index=msg["index"], family=6 if msg["family"] == socket.AF_INET6 else 4,
                address=f"{ip}/{msg['prefixlen']}", scope=msg["scope"])


@dataclass
class RouteEntry:
    dst: str                    # CIDR; "0.0.0.0/0" / "::/0" for default
    gw: str
    oif: int
    scope: int
    table: int
    proto: int
    priority: int
    mtu: int
    src: str = ""               # RTA_PREFSRC (vrf moves routes to its table with it)
    type: int = RTN_UNICAST
    advmss: int = 0


def _route(msg: Any) -> RouteEntry:
    v6 = msg["family"] == socket.AF_INET6
    dst = msg.get_attr("RTA_DST") or ("::" if v6 else "0.0.0.0")
    metrics = msg.get_attr("RTA_METRICS")
    mtu = metrics.get_attr("RTAX_MTU") if metrics is not None else 0
    advmss = metrics.get_attr("RTAX_ADVMSS") if metrics is not None else 0
    return RouteEntry(dst=f"{dst}/{msg['dst_len']}", gw=msg.get_attr("RTA_GATEWAY") or "",
                      oif=msg.get_attr("RTA_OIF") or 0, scope=msg["scope"],
                      table=msg.get_attr("RTA_TABLE") or msg["table"], proto=msg["proto"],
                      priority=msg.get_attr("RTA_PRIORITY") or 0, mtu=mtu or 0,
                      src=msg.get_attr("RTA_PREFSRC") or "", type=msg["type"],
                      advmss=advmss or 0)


@dataclass
class Rule:
    """A policy routing rule (`ip rule`): packets it selects are looked up in `table`."""
    family: int                 # 4 or 6
    priority: int               # FRA_PRIORITY ("pref"); the kernel picks one when 0 is asked
    table: int
    src: str = ""               # CIDR, "" for "from all"
    dst: str = ""               # CIDR, "" for "to all"
    action: int = FR_ACT_TO_TBL
    iif: str = ""
    oif: str = ""
    fwmark: int = 0


def _rule(msg: Any) -> Rule:
    def prefix(attr: str, length: int) -> str:
        ip = msg.get_attr(attr)
        return f"{ip}/{length}" if ip else ""

    return Rule(family=6 if msg["family"] == socket.AF_INET6 else 4,
                priority=msg.get_attr("FRA_PRIORITY") or 0,
                table=msg.get_attr("FRA_TABLE") or msg["table"],
                src=prefix("FRA_SRC", msg["src_len"]), dst=prefix("FRA_DST", msg["dst_len"]),
                action=msg["action"], iif=msg.get_attr("FRA_IIFNAME") or "",
                oif=msg.get_attr("FRA_OIFNAME") or "", fwmark=msg.get_attr("FRA_FWMARK") or 0)


def _common(*, mtu: int, mac: str, ns_fd: int) -> list:
    attrs: list = []
    if mtu:
        attrs.append(("IFLA_MTU", mtu))
    if mac:
        attrs.append(("IFLA_ADDRESS", mac))
    if ns_fd >= 0:
        attrs.append(("IFLA_NET_NS_FD", ns_fd))
    return attrs


class Netlink:
    """A NETLINK_ROUTE socket bound to the netns of the thread that opened it."""

    def __init__(self) -> None:
        self._sock = Socket(socket.NETLINK_ROUTE)

    def request(self, msg: Any, msg_type: int, flags: int = 0, dump: bool = False) -> list[Any]:
        """Send one request; return the decoded replies (a dump's, an echo, or none for
        an ack).

        `flags` are the request's own (NLM_F_CREATE|NLM_F_EXCL…); they share bits with
        the dump flags, hence the separate `dump`.
        """
        seq = self._sock.next_seq()
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | flags | (NLM_F_DUMP if dump else NLM_F_ACK)
        msg["header"]["sequence_number"] = seq
        msg.encode()
        replies = []
        for raw in self._sock.request(msg.data, seq, dump=dump):
            cls = _CLASSES.get(int.from_bytes(raw[4:6], "little"))
            if cls is not None:
                reply = cls(raw)
                reply.decode()
                replies.append(reply)
        return replies

    def _new(self, kind: int, **fields: Any) -> Any:
        msg = _CLASSES[kind]()
        for key, value in fields.items():
            if key == "attrs":
                msg["attrs"] = value
            else:
                msg[key] = value
        return msg

    # -- links -----------------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        """The link called `name`, or None."""
        try:
            (reply,) = self.request(self._new(RTM_NEWLINK, attrs=[("IFLA_IFNAME", name)]),
                                    RTM_GETLINK)
        except OSError as e:
            if e.errno in _NO_LINK:
                return None
            raise
        return _link(reply)

    def links(self) -> list[Link]:
        return [_link(m) for m in self.request(self._new(RTM_NEWLINK), RTM_GETLINK, dump=True)]

    def bridge_vlan(self, index: int, vid: int, *, add: bool = True, pvid: bool = False,
                    untagged: bool = False) -> None:
        """Allow (add) or remove VLAN `vid` on bridge port `index` (bridge vlan_filtering)."""
        flags = (BRIDGE_VLAN_INFO_PVID if pvid else 0) | \
            (BRIDGE_VLAN_INFO_UNTAGGED if untagged else 0)
        msg = self._new(RTM_NEWLINK, family=AF_BRIDGE, index=index, attrs=[
            ("IFLA_AF_SPEC", {"attrs": [("IFLA_BRIDGE_VLAN_INFO", {"flags": flags,
                                                                  "vid": vid})]})])
        self.request(msg, RTM_SETLINK if add else RTM_DELLINK)

    def link_by_index(self, index: int) -> Link | None:
        try:
            (reply,) = self.request(self._new(RTM_NEWLINK, index=index), RTM_GETLINK)
        except OSError as e:
            if e.errno in _NO_LINK:
                return None
            raise
        return _link(reply)

    def link_add(self, name: str, kind: str, *, mtu: int = 0, mac: str = "",
                 parent: int = 0, ns_fd: int = -1, data: list | None = None,
                 peer: dict[str, Any] | None = None, up: bool = False,
                 txqlen: int = 0) -> Link | None:
        """RTM_NEWLINK with CREATE|EXCL. `data` are IFLA_INFO_DATA attrs of `kind`;
        `peer` (veth) takes name, ns_fd, mtu, mac for the other end; `up` and `txqlen`
        are applied as it is made (`ip link add … txqueuelen N up`). Returns the new link
        as the kernel echoes it (NLM_F_ECHO, Linux 6.1+; spares a lookup), or None: an
        older kernel, or a link made in another netns (`ns_fd`)."""
        attrs: list = [("IFLA_IFNAME", name)]
        attrs += _common(mtu=mtu, mac=mac, ns_fd=ns_fd)
        if txqlen:
            attrs.append(("IFLA_TXQLEN", txqlen))
        if parent:
            attrs.append(("IFLA_LINK", parent))
        info: list = [("IFLA_INFO_KIND", kind)]
        if peer is not None:
            peer_attrs = [("IFLA_IFNAME", peer["name"])] + _common(
                mtu=peer.get("mtu", 0), mac=peer.get("mac", ""), ns_fd=peer.get("ns_fd", -1))
            data = [("VETH_INFO_PEER", {"attrs": peer_attrs})]
        if data:
            info.append(("IFLA_INFO_DATA", {"attrs": data}))
        attrs.append(("IFLA_LINKINFO", {"attrs": info}))
        # no echo for a link born elsewhere: the kernel would send it to the socket with
        # our port id in that netns, which may be another of ours expecting its own replies
        msg = self._new(RTM_NEWLINK, attrs=attrs, flags=IFF_UP if up else 0,
                        change=IFF_UP if up else 0)
        echo = self.request(msg, RTM_NEWLINK,
                            NLM_F_CREATE | NLM_F_EXCL | (NLM_F_ECHO if ns_fd < 0 else 0))
        made = [_link(m) for m in echo if m["header"]["type"] == RTM_NEWLINK]
        return next((m for m in made if m.name == name), None)

    def link_set(self, link: int | str, *, up: bool | None = None, master: int | None = None,
                 mtu: int = 0, mac: str = "", name: str = "", ns_fd: int = -1,
                 kind: str = "", data: list | None = None, port: list | None = None,
                 promisc: bool | None = None, allmulti: bool | None = None,
                 txqlen: int | None = None, alias: str | None = None) -> None:
        """Change the link `link` (its index, or its name: the kernel finds it, sparing a
        lookup). master=0 releases it from its master; `kind`+`data` change kind-specific
        attributes (bridge vlan_filtering); `port` sets bridge-port attributes
        (IFLA_BRPORT_* pairs: hairpin, isolation) through IFLA_INFO_SLAVE_DATA; `name`
        renames it (by index only)."""
        attrs: list = _common(mtu=mtu, mac=mac, ns_fd=ns_fd)
        index = link if isinstance(link, int) else 0
        if isinstance(link, str):
            if name:
                raise ValueError("a link named in the request cannot be renamed by it")
            name = link
        if name:
            attrs.append(("IFLA_IFNAME", name))
        if master is not None:
            attrs.append(("IFLA_MASTER", master))
        if kind:
            attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind),
                                                      ("IFLA_INFO_DATA", {"attrs": data or []})]}))
        if port:
            attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_SLAVE_KIND", "bridge"),
                                                      ("IFLA_INFO_SLAVE_DATA", {"attrs": port})]}))
        if txqlen is not None:
            attrs.append(("IFLA_TXQLEN", txqlen))
        if alias is not None:
            attrs.append(("IFLA_IFALIAS", alias))
        flags = change = 0
        for flag, want in ((IFF_UP, up), (IFF_PROMISC, promisc), (IFF_ALLMULTI, allmulti)):
            if want is not None:
                change |= flag
                flags |= flag if want else 0
        self.request(self._new(RTM_NEWLINK, index=index, flags=flags, change=change,
                               attrs=attrs), RTM_NEWLINK)

    def link_set_up(self, index: int, up: bool = True) -> None:
        self.link_set(index, up=up)

    def link_del(self, index: int) -> bool:
        """Delete a link; False when it is already gone."""
        try:
            self.request(self._new(RTM_NEWLINK, index=index), RTM_DELLINK)
        except OSError as e:
            if e.errno in _NO_LINK:
                return False
            raise
        return True

    def link_del_by_name(self, name: str) -> bool:
        """Delete the link called `name` (the kernel finds it: no lookup first); False
        when there is none."""
        try:
            self.request(self._new(RTM_NEWLINK, attrs=[("IFLA_IFNAME", name)]), RTM_DELLINK)
        except OSError as e:
            if e.errno in _NO_LINK:
                return False
            raise
        return True

    # -- addresses -------------------------------------------------------------------

    def addrs(self, index: int | None = None, family: int = 0) -> list[Addr]:
        af = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family, 0)
        out = [_addr(m) for m in self.request(self._new(RTM_NEWADDR, family=af),
                                              RTM_GETADDR, dump=True)]
        return [a for a in out if index is None or a.index == index]

    def addr_add(self, index: int, cidr: str, *, nodad: bool = False,
                 replace: bool = False) -> None:
        """Add "10.1.0.5/24" (EEXIST when present unless replace)."""
        ip, family, prefixlen = _split(cidr)
        attrs: list = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
        if nodad:
            attrs.append(("IFA_FLAGS", IFA_F_NODAD))
        msg = self._new(RTM_NEWADDR, family=family, prefixlen=prefixlen, index=index,
                        attrs=attrs)
        self.request(msg, RTM_NEWADDR, NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL))

    def addr_del(self, index: int, cidr: str) -> bool:
        ip, family, prefixlen = _split(cidr)
        msg = self._new(RTM_NEWADDR, family=family, prefixlen=prefixlen, index=index,
                        attrs=[("IFA_LOCAL", ip)])
        try:
            self.request(msg, RTM_DELADDR)
        except OSError as e:
            if e.errno in (errno.EADDRNOTAVAIL, *_NO_LINK):
                return False
            raise
        return True

    # -- routes ----------------------------------------------------------------------

    def routes(self, family: int = 4, table: int = RT_TABLE_MAIN) -> list[RouteEntry]:
        af = socket.AF_INET6 if family == 6 else socket.AF_INET
        out = []
        for m in self.request(self._new(RTM_NEWROUTE, family=af), RTM_GETROUTE, dump=True):
            entry = _route(m)
            if table is None or entry.table == table:
                out.append(entry)
        return out

    def route_add(self, dst: str, *, gw: str = "", oif: int = 0, scope: int | None = None,
                  table: int = RT_TABLE_MAIN, priority: int = 0, mtu: int = 0, advmss: int = 0,
                  proto: int = RTPROT_BOOT, src: str = "", replace: bool = False) -> None:
        """Add a route (EEXIST when present unless replace). dst is a CIDR."""
        msg = self._route_msg(dst, gw=gw, oif=oif, scope=scope, table=table, priority=priority,
                              mtu=mtu, advmss=advmss, proto=proto, src=src)
        self.request(msg, RTM_NEWROUTE, NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL))

    def route_del(self, dst: str, *, gw: str = "", oif: int = 0, table: int = RT_TABLE_MAIN,
                  scope: int | None = None, priority: int = 0) -> bool:
        msg = self._route_msg(dst, gw=gw, oif=oif, scope=scope if scope is not None else
                              RT_SCOPE_NOWHERE, table=table, priority=priority, proto=0)
        try:
            self.request(msg, RTM_DELROUTE)
        except OSError as e:
            if e.errno in (errno.ESRCH, *_NO_LINK):
                return False
            raise
        return True

    def _route_msg(self, dst: str, *, gw: str, oif: int, scope: int | None, table: int,
                   priority: int, proto: int, mtu: int = 0, advmss: int = 0,
                   src: str = "") -> Any:
        ip, family, dst_len = _split(dst)
        if scope is None:
            scope = RT_SCOPE_UNIVERSE if gw else RT_SCOPE_LINK
        attrs: list = []
        if dst_len:
            attrs.append(("RTA_DST", ip))
        if gw:
            attrs.append(("RTA_GATEWAY", gw))
        if oif:
            attrs.append(("RTA_OIF", oif))
        if priority:
            attrs.append(("RTA_PRIORITY", priority))
        if src:
            attrs.append(("RTA_PREFSRC", src))
        attrs.append(("RTA_TABLE", table))
        metrics = [(k, v) for k, v in (("RTAX_MTU", mtu), ("RTAX_ADVMSS", advmss)) if v]
        if metrics:
            attrs.append(("RTA_METRICS", {"attrs": metrics}))
        return self._new(RTM_NEWROUTE, family=family, dst_len=dst_len, table=table if table < 256 else 252, proto=proto,
                         scope=scope, type=RTN_UNICAST, attrs=attrs)

    # -- policy rules ----------------------------------------------------------------

    def rules(self, family: int = 0) -> list[Rule]:
        """`ip rule` of one family (4 or 6), or of both (0)."""
        af = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family, socket.AF_UNSPEC)
        out = [_rule(m) for m in self.request(self._new(RTM_NEWRULE, family=af), RTM_GETRULE,
                                              dump=True)]
        return [r for r in out if r.family in ((family,) if family else (4, 6))]

    def rule_add(self, src: str, table: int, *, priority: int = 0) -> None:
        """`ip rule add from <src> table <table> [pref <priority>]` (EEXIST when the same
        rule is there). Without a priority the kernel gives the rule the one just below
        the first rule after "local" (32765 first, as `ip rule` and Go's netlink do)."""
        self.request(self._rule_msg(src, table, priority), RTM_NEWRULE,
                     NLM_F_CREATE | NLM_F_EXCL)

    def rule_del(self, rule: Rule) -> bool:
        """Delete `rule` (as rules() listed it); False when it is already gone."""
        try:
            self.request(self._rule_msg(rule.src, rule.table, rule.priority,
                                        family=rule.family), RTM_DELRULE)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def _rule_msg(self, src: str, table: int, priority: int, family: int = 0) -> Any:
        attrs: list = [("FRA_TABLE", table)]
        src_len = 0
        if src:
            ip, af, src_len = _split(src)
            attrs.append(("FRA_SRC", ip))
        else:
            af = socket.AF_INET6 if family == 6 else socket.AF_INET
        if priority:
            attrs.append(("FRA_PRIORITY", priority))
        return self._new(RTM_NEWRULE, family=af, src_len=src_len,
                         table=table if table < 256 else 0, action=FR_ACT_TO_TBL, attrs=attrs)

    def route_get(self, ip: str) -> RouteEntry | None:
        """The route the kernel would send a packet to `ip` by (`ip route get`); None
        when there is none."""
        family, bits = _family(ip)
        msg = self._new(RTM_NEWROUTE, family=family, dst_len=bits, attrs=[("RTA_DST", ip)])
        try:
            replies = self.request(msg, RTM_GETROUTE)
        except OSError as e:
            if e.errno in _NO_ROUTE:
                return None
            raise
        return _route(replies[0]) if replies else None

    # -- traffic control -------------------------------------------------------------

    def _tc(self, **fields: Any) -> Any:
        msg = tcmsg()
        for key, value in fields.items():
            msg[key] = value
        return msg

    def qdiscs(self, index: int | None = None) -> list[Qdisc]:
        """Every qdisc of the netns, or of link `index`."""
        out = [_qdisc(m) for m in self.request(self._tc(), RTM_GETQDISC, dump=True)]
        return [q for q in out if index is None or q.index == index]

    def qdisc_add_tbf(self, index: int, *, rate: int, buffer: int, limit: int,
                      handle: int = 0x10000, parent: int = TC_H_ROOT) -> None:
        """tbf: `rate` bytes/s, `buffer` psched ticks, `limit` bytes (EEXIST when the
        link already has a qdisc there)."""
        parms = {"rate": min(rate, 0xFFFFFFFF), "buffer": buffer, "limit": limit, "mtu": 0}
        # no TCA_TBF_RTAB: the kernel computes the rate from the parameters and reads a
        # rate table only for its link-layer hint (as Go's netlink, which sends none);
        # pyroute2 builds the 256 entries in Python, ~0.4 ms a qdisc
        opts: list = [("TCA_TBF_PARMS", parms)]
        if rate > 0xFFFFFFFF:
            opts.append(("TCA_TBF_RATE64", rate))
        msg = self._tc(index=index, handle=handle, parent=parent,
                       attrs=[("TCA_KIND", "tbf"), ("TCA_OPTIONS", {"attrs": opts})])
        self.request(msg, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL)

    def qdisc_add_ingress(self, index: int) -> None:
        """The ingress qdisc ("ffff:") that filters on packets the link receives."""
        msg = self._tc(index=index, handle=tc_handle(0xFFFF), parent=TC_H_INGRESS,
                       attrs=[("TCA_KIND", "ingress")])
        self.request(msg, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL)

    def qdisc_del(self, index: int, *, parent: int = TC_H_ROOT, handle: int = 0) -> bool:
        """Delete the qdisc at `parent`; False when there is none (or no link)."""
        try:
            self.request(self._tc(index=index, parent=parent, handle=handle), RTM_DELQDISC)
        except OSError as e:
            if e.errno in (errno.EINVAL, *_NO_LINK):    # EINVAL: none but the default
                return False
            raise
        return True

    def filters(self, index: int, parent: int) -> list[Filter]:
        """The filters of link `index` attached under `parent` (e.g. tc_handle(0xffff))."""
        msg = self._tc(index=index, parent=parent)
        return [_filter(m) for m in self.request(msg, RTM_GETTFILTER, dump=True)]

    def filter_add_u32_redirect(self, index: int, *, parent: int, target: int,
                                prio: int = 1, classid: int = 0x10001,
                                protocol: int = ETH_P_ALL) -> None:
        """A u32 match-all filter on `parent` whose action is mirred egress redirect to
        link `target` (tc filter … u32 match u32 0 0 action mirred egress redirect)."""
        opts = cls_u32.get_parameters({
            "target": classid, "keys": ["0x0/0x0+0"],
            "action": [{"kind": "mirred", "direction": "egress", "action": "redirect",
                        "ifindex": target}]})
        msg = self._tc(index=index, parent=parent, info=(prio << 16) | socket.htons(protocol),
                       attrs=[("TCA_KIND", "u32"), ("TCA_OPTIONS", opts)])
        self.request(msg, RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL)

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Qdisc:
    index: int
    kind: str
    handle: int
    parent: int
    rate: int = 0               # tbf: bytes per second
    buffer: int = 0             # tbf: the bucket, in psched ticks
    limit: int = 0              # tbf: queue bytes

    @property
    def root(self) -> bool:
        return self.parent == TC_H_ROOT


@dataclass
class Filter:
    index: int
    kind: str
    parent: int
    prio: int
    protocol: int               # host order: ETH_P_ALL = 3
    handle: int
    classid: int = 0
    redirects: tuple[int, ...] = ()     # mirred egress redirect targets (ifindexes)


def _qdisc(msg: Any) -> Qdisc:
    q = Qdisc(index=msg["index"], kind=msg.get_attr("TCA_KIND") or "",
              handle=msg["handle"], parent=msg["parent"])
    opts = msg.get_attr("TCA_OPTIONS")
    if q.kind == "tbf" and opts is not None:
        parms = opts.get_attr("TCA_TBF_PARMS")
        if parms is not None:
            q.rate = opts.get_attr("TCA_TBF_RATE64") or parms["rate"]
            q.buffer, q.limit = parms["buffer"], parms["limit"]
    return q


def _filter(msg: Any) -> Filter:
    info = msg["info"]
    f = Filter(index=msg["index"], kind=msg.get_attr("TCA_KIND") or "", parent=msg["parent"],
               prio=info >> 16, protocol=socket.ntohs(info & 0xFFFF), handle=msg["handle"])
    opts = msg.get_attr("TCA_OPTIONS")
    if f.kind == "u32" and opts is not None:
        f.classid = opts.get_attr("TCA_U32_CLASSID") or 0
        acts = opts.get_attr("TCA_U32_ACT")
        for _, act in (acts["attrs"] if acts is not None else []):
            if act.get_attr("TCA_ACT_KIND") != "mirred":
                continue
            parms = act.get_nested("TCA_ACT_OPTIONS", "TCA_MIRRED_PARMS")
            if parms is not None and parms["eaction"] == MIRRED_EGRESS_REDIRECT:
                f.redirects += (parms["ifindex"],)
    return f
