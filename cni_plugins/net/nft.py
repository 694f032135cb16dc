"""A small nftables client: one NETLINK_NETFILTER socket, one batch per commit.

pyroute2's nftables message and expression classes encode and decode; the socket loop
is ours, as in netlink.py. pyroute2's own NFTSocket sits on asyncio (≈90 ms of imports),
so it is never loaded; only the message classes are (≈5 ms on top of netlink.py).

    b = Batch()
    b.add_table("inet", "t", comment="…")                     # NLM_F_CREATE, no EXCL:
    b.add_chain("inet", "t", "post", type="nat",              #   adding twice is fine
                hook="postrouting", priority="srcnat")
    b.add_rule("inet", "t", "post", [*nfproto(4), *addr("saddr", "10.1.0.5"), *masq()],
               comment="…")
    with NFT() as nft:                  # bound to the netns the thread is in now
        nft.commit(b)                   # BATCH_BEGIN … END: all of it or none of it
        for r in nft.rules("inet", "t", "post"):   # [] when the table or chain is absent
            r.handle, r.comment

Failures raise OSError(errno) naming the command that failed; callers wrap the step in
errors.kernel_errors("…"). Every wait is bounded by the socket timeout: the kernel
handles a batch inside send(), so its answers are queued before send() returns.

Expression builders (meta, payload, cmp, bitwise, immediate, masq, nat, counter, lookup,
fib) and the matchers built on them (nfproto, addr, ip_protocol, l4proto, th_dport, dnat,
fib_daddr_local, verdicts) are at the end of this module, in one place, and encode what
`nft` 1.0.6 encodes for the same rule text (tests/integration/net/test_nft.py compares
the kernel's dumps byte for byte).

Closing the socket after a commit waits for the kernel's RCU grace period (5–25 ms: the
netlink release notifier flushes nf_tables' destroy work); a process exiting pays it too.
"""

from __future__ import annotations

import errno as _errno
import importlib
import os
import socket
import struct
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

from .netlink import _ext_ack_text, _pyroute2_module

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE = 0, 1, 2
NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN, NFT_MSG_DELCHAIN = 3, 4, 5
NFT_MSG_NEWRULE, NFT_MSG_GETRULE, NFT_MSG_DELRULE = 6, 7, 8
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x4, 0x10
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x200, 0x400, 0x800
NLM_F_ACK_TLVS, NLM_F_CAPPED = 0x200, 0x100
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
_HDR = struct.Struct("=IHHII")
_DUMP_ATTEMPTS = 20

FAMILIES = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
_FAMILY_NAMES = {v: k for k, v in FAMILIES.items()}
HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
_HOOK_NAMES = {v: k for k, v in HOOKS.items()}
PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
              "srcnat": 100}
COMMENT_MAX = 128               # nft and knftables refuse longer comments
UDATA_COMMENT = 0               # NFTNL_UDATA_{TABLE,CHAIN,RULE}_COMMENT: a TLV in *_USERDATA

# -- pyroute2's classes, loaded without asyncio -------------------------------------------

_lock = threading.Lock()
_msgs: types.SimpleNamespace | None = None


def _nftsocket() -> Any:
    """pyroute2.netlink.nfnetlink.nftsocket without the asyncio socket stack.

    The module subclasses NetlinkSocket (pyroute2.netlink.nlsocket: asyncio, ssl,
    multiprocessing, ≈90 ms) for NFTSocket, which we never use. Unless the real
    nlsocket is already loaded, it is stood in for by a stub during this one import and
    both names are dropped from sys.modules afterwards, so a later `import pyroute2…`
    loads the genuine modules. The caller holds _lock.
    """
    real = "pyroute2.netlink.nlsocket"
    name = "pyroute2.netlink.nfnetlink.nftsocket"
    if real in sys.modules or name in sys.modules:
        return _pyroute2_module("netlink.nfnetlink.nftsocket")
    _pyroute2_module("netlink.nfnetlink")
    stub = types.ModuleType(real)
    stub.NetlinkSocket = type("NetlinkSocket", (), {})              # type: ignore[attr-defined]
    stub.AsyncNetlinkSocket = type("AsyncNetlinkSocket", (), {})    # type: ignore[attr-defined]
    sys.modules[real] = stub
    try:
        module = importlib.import_module(name)
    finally:
        del sys.modules[real]
        sys.modules.pop(name, None)
        parent = sys.modules.get("pyroute2.netlink.nfnetlink")
        if parent is not None and getattr(parent, "nftsocket", None) is not None:
            delattr(parent, "nftsocket")
    return module


def msg_classes() -> types.SimpleNamespace:
    """Our table/chain/rule message classes over pyroute2's nfgen_msg and expressions.

    The top-level attribute tables are ours for one reason: pyroute2 decodes *_USERDATA
    as a length-prefixed string, while nftables stores a list of TLVs there. Ours keep
    the bytes (udata_comment() reads them); hooks, counters and every expression class
    are pyroute2's, with `fib` corrected (its result and flags are enum/bits swapped
    in 0.9.x, which breaks `fib daddr type local` for portmap).
    """
    global _msgs
    if _msgs is not None:
        return _msgs
    with _lock:
        if _msgs is not None:
            return _msgs
        m = _nftsocket()
        base_expr = m.nft_contains_expr.nft_expr

        class nft_fib(base_expr.nft_fib):
            _nlmsg_base__compiled_nla = False
            nla_map = (("NFTA_FIB_UNSPEC", "none"), ("NFTA_FIB_DREG", "regs"),
                       ("NFTA_FIB_RESULT", "be32"), ("NFTA_FIB_FLAGS", "be32"))

        class nft_expr(base_expr):
            _nlmsg_base__compiled_nla = False

        nft_expr.nft_fib = nft_fib      # type: ignore[attr-defined]
        expr_cls = nft_expr

        class table_msg(m.nfgen_msg):
            prefix = "NFTA_TABLE_"
            nla_map = (("NFTA_TABLE_UNSPEC", "none"), ("NFTA_TABLE_NAME", "asciiz"),
                       ("NFTA_TABLE_FLAGS", "be32"), ("NFTA_TABLE_USE", "be32"),
                       ("NFTA_TABLE_HANDLE", "be64"), ("NFTA_TABLE_PAD", "hex"),
                       ("NFTA_TABLE_USERDATA", "cdata"))

        class chain_msg(m.nfgen_msg):
            prefix = "NFTA_CHAIN_"
            nla_map = (("NFTA_CHAIN_UNSPEC", "none"), ("NFTA_CHAIN_TABLE", "asciiz"),
                       ("NFTA_CHAIN_HANDLE", "be64"), ("NFTA_CHAIN_NAME", "asciiz"),
                       ("NFTA_CHAIN_HOOK", "hook"), ("NFTA_CHAIN_POLICY", "be32"),
                       ("NFTA_CHAIN_USE", "be32"), ("NFTA_CHAIN_TYPE", "asciiz"),
                       ("NFTA_CHAIN_COUNTERS", "counters"), ("NFTA_CHAIN_PAD", "hex"),
                       ("NFTA_CHAIN_FLAGS", "be32"), ("NFTA_CHAIN_ID", "be32"),
                       ("NFTA_CHAIN_USERDATA", "cdata"))
            hook = m.nft_chain_msg.hook
            counters = m.nft_chain_msg.counters

        class rule_msg(m.nfgen_msg):
            prefix = "NFTA_RULE_"
            nla_map = (("NFTA_RULE_UNSPEC", "none"), ("NFTA_RULE_TABLE", "asciiz"),
                       ("NFTA_RULE_CHAIN", "asciiz"), ("NFTA_RULE_HANDLE", "be64"),
                       ("NFTA_RULE_EXPRESSIONS", "*nft_expr"), ("NFTA_RULE_COMPAT", "hex"),
                       ("NFTA_RULE_POSITION", "be64"), ("NFTA_RULE_USERDATA", "cdata"),
                       ("NFTA_RULE_PAD", "hex"), ("NFTA_RULE_ID", "be32"),
                       ("NFTA_RULE_POSITION_ID", "be32"), ("NFTA_RULE_CHAIN_ID", "be32"))
            nft_expr = expr_cls

        _msgs = types.SimpleNamespace(nfgen=m.nfgen_msg, table=table_msg, chain=chain_msg,
                                      rule=rule_msg)
        return _msgs


# -- userdata (comments) -----------------------------------------------------------------

def udata_comment(comment: str | bytes) -> bytes:
    """The *_USERDATA bytes nft writes for `comment "…"`: one TLV, NUL-terminated."""
    raw = comment.encode() if isinstance(comment, str) else comment
    if len(raw) > COMMENT_MAX:
        raise ValueError(f"comment longer than {COMMENT_MAX} bytes: {raw[:40]!r}…")
    raw += b"\0"
    return bytes((UDATA_COMMENT, len(raw))) + raw


def comment_of(udata: bytes | None) -> str | None:
    """The comment TLV of a *_USERDATA blob, or None."""
    if not udata:
        return None
    off = 0
    while off + 2 <= len(udata):
        kind, length = udata[off], udata[off + 1]
        value = udata[off + 2:off + 2 + length]
        if kind == UDATA_COMMENT:
            return value.rstrip(b"\0").decode(errors="replace")
        off += 2 + length
    return None


# -- records -----------------------------------------------------------------------------

@dataclass
class Table:
    family: str
    name: str
    handle: int
    comment: str | None = None


@dataclass
class Chain:
    family: str
    table: str
    name: str
    handle: int
    type: str = ""              # "" for a regular chain
    hook: str = ""
    priority: int | None = None
    policy: str = ""
    comment: str | None = None


@dataclass
class Rule:
    family: str
    table: str
    chain: str
    handle: int
    comment: str | None
    raw: bytes = field(default=b"", repr=False)     # the NFTA_RULE_EXPRESSIONS payload

    def exprs(self) -> list[tuple[str, dict[str, Any]]]:
        """The expressions, decoded on demand (pyroute2 takes ≈1 ms a rule, so listing
        a chain only reads handles and comments)."""
        return decode_exprs(self.raw)


def _attrs(data: bytes, off: int, end: int) -> Any:
    """(type, payload offset, payload end) for each attribute in data[off:end]."""
    while off + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            return
        yield kind & 0x3FFF, off + 4, min(off + length, end)
        off += (length + 3) & ~3


def _cstr(data: bytes, off: int, end: int) -> str:
    return data[off:end].split(b"\0", 1)[0].decode(errors="replace")


def _scan_rule(data: bytes, off: int, end: int, family: str) -> Rule:
    """A NEWRULE dump message read without pyroute2: table, chain, handle, comment."""
    table = chain = ""
    handle = 0
    udata = raw = b""
    for kind, a, b in _attrs(data, off + _HDR.size + 4, end):
        if kind == 1:
            table = _cstr(data, a, b)
        elif kind == 2:
            chain = _cstr(data, a, b)
        elif kind == 3:
            (handle,) = struct.unpack_from(">Q", data, a)
        elif kind == 4:
            raw = data[a:b]
        elif kind == 7:
            udata = data[a:b]
    fam = _FAMILY_NAMES.get(data[off + _HDR.size], family)
    return Rule(fam, table, chain, handle, comment_of(udata), raw)


def decode_exprs(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """summary() of an NFTA_RULE_EXPRESSIONS payload, through pyroute2's classes."""
    if not raw:
        return []
    cls = msg_classes().rule
    attr = struct.pack("=HH", 4 + len(raw), 4 | 0x8000) + raw
    hdr = _HDR.pack(_HDR.size + 4 + len(attr), 0, 0, 0, 0) + bytes(4)
    msg = cls(hdr + attr)
    msg.decode()
    return summary(msg.get_attr("NFTA_RULE_EXPRESSIONS") or [])


def _plain(value: Any) -> Any:
    """A decoded nla as plain data: nested attributes become dicts, bytes stay bytes."""
    if hasattr(value, "get") and isinstance(value.get("attrs"), list):
        return {name: _plain(v) for name, v in value["attrs"]}
    return value


def summary(exprs: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """[(name, {attr: value})] for decoded expressions (NFTA_RULE_EXPRESSIONS)."""
    out = []
    for e in exprs:
        data = e.get_attr("NFTA_EXPR_DATA")
        out.append((e.get_attr("NFTA_EXPR_NAME"), _plain(data) if data is not None else {}))
    return out


def expected(exprs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """What summary() gives for builder output once the kernel has it: encode a rule
    message with these expressions and decode it again."""
    cls = msg_classes().rule
    msg = cls()
    msg["attrs"] = [("NFTA_RULE_EXPRESSIONS", exprs)]
    msg.encode()
    back = cls(msg.data)
    back.decode()
    return summary(back.get_attr("NFTA_RULE_EXPRESSIONS") or [])


def exprs_match(want: list[tuple[str, dict]], have: list[tuple[str, dict]]) -> bool:
    """True when `have` (from the kernel) holds `want`'s expressions, in order, each with
    at least `want`'s attributes (the kernel adds defaults such as NFTA_BITWISE_OP)."""
    def sub(a: Any, b: Any) -> bool:
        if isinstance(a, dict):
            return isinstance(b, dict) and all(k in b and sub(v, b[k]) for k, v in a.items())
        return a == b

    return len(want) == len(have) and all(
        wn == hn and sub(wd, hd) for (wn, wd), (hn, hd) in zip(want, have))


# -- batches -----------------------------------------------------------------------------

def _family(name: str) -> int:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown nftables family {name!r}") from None


class Batch:
    """Commands for one transaction, in order. Nothing happens until NFT.commit()."""

    def __init__(self) -> None:
        self.cmds: list[tuple[int, int, str, list, int]] = []   # type, flags, what, attrs, family

    def __len__(self) -> int:
        return len(self.cmds)

    def _add(self, kind: int, flags: int, family: str, what: str, attrs: list) -> "Batch":
        self.cmds.append((kind, flags, f"{what} in {family}", attrs, _family(family)))
        return self

    def add_table(self, family: str, name: str, *, comment: str | None = None) -> "Batch":
        attrs: list = [("NFTA_TABLE_NAME", name), ("NFTA_TABLE_FLAGS", 0)]
        if comment is not None:
            attrs.append(("NFTA_TABLE_USERDATA", udata_comment(comment)))
        return self._add(NFT_MSG_NEWTABLE, NLM_F_CREATE, family, f"add table {name}", attrs)

    def add_chain(self, family: str, table: str, name: str, *, type: str = "",
                  hook: str = "", priority: int | str | None = None, policy: str = "",
                  comment: str | None = None) -> "Batch":
        """A regular chain, or a base chain when type/hook/priority are given."""
        attrs: list = [("NFTA_CHAIN_TABLE", table), ("NFTA_CHAIN_NAME", name)]
        if hook:
            prio = PRIORITIES[priority] if isinstance(priority, str) else int(priority or 0)
            attrs.append(("NFTA_CHAIN_HOOK", {"attrs": [("NFTA_HOOK_HOOKNUM", HOOKS[hook]),
                                                        ("NFTA_HOOK_PRIORITY", prio)]}))
        if policy:
            attrs.append(("NFTA_CHAIN_POLICY", {"drop": 0, "accept": 1}[policy]))
        if type:
            attrs.append(("NFTA_CHAIN_TYPE", type))
        if comment is not None:
            attrs.append(("NFTA_CHAIN_USERDATA", udata_comment(comment)))
        return self._add(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family,
                         f"add chain {table} {name}", attrs)

    def flush_chain(self, family: str, table: str, chain: str) -> "Batch":
        attrs = [("NFTA_RULE_TABLE", table), ("NFTA_RULE_CHAIN", chain)]
        return self._add(NFT_MSG_DELRULE, 0, family, f"flush chain {table} {chain}", attrs)

    def add_rule(self, family: str, table: str, chain: str, exprs: list[dict[str, Any]], *,
                 comment: str | bytes | None = None) -> "Batch":
        """Append a rule (exprs from the builders below)."""
        attrs: list = [("NFTA_RULE_TABLE", table), ("NFTA_RULE_CHAIN", chain),
                       ("NFTA_RULE_EXPRESSIONS", exprs)]
        if comment is not None:
            attrs.append(("NFTA_RULE_USERDATA", udata_comment(comment)))
        return self._add(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family,
                         f"add rule to {table} {chain}", attrs)

    def insert_rule(self, family: str, table: str, chain: str, exprs: list[dict[str, Any]], *,
                    comment: str | bytes | None = None) -> "Batch":
        """Put a rule at the head of the chain."""
        attrs: list = [("NFTA_RULE_TABLE", table), ("NFTA_RULE_CHAIN", chain),
                       ("NFTA_RULE_EXPRESSIONS", exprs)]
        if comment is not None:
            attrs.append(("NFTA_RULE_USERDATA", udata_comment(comment)))
        return self._add(NFT_MSG_NEWRULE, NLM_F_CREATE, family,
                         f"insert rule into {table} {chain}", attrs)

    def delete_rule(self, family: str, table: str, chain: str, handle: int) -> "Batch":
        attrs = [("NFTA_RULE_TABLE", table), ("NFTA_RULE_CHAIN", chain),
                 ("NFTA_RULE_HANDLE", handle)]
        return self._add(NFT_MSG_DELRULE, 0, family,
                         f"delete rule {handle} from {table} {chain}", attrs)

    def delete_chain(self, family: str, table: str, name: str) -> "Batch":
        attrs = [("NFTA_CHAIN_TABLE", table), ("NFTA_CHAIN_NAME", name)]
        return self._add(NFT_MSG_DELCHAIN, 0, family, f"delete chain {table} {name}", attrs)

    def delete_table(self, family: str, name: str) -> "Batch":
        return self._add(NFT_MSG_DELTABLE, 0, family, f"delete table {name}",
                         [("NFTA_TABLE_NAME", name)])


# -- the socket --------------------------------------------------------------------------

class NFT:
    """A NETLINK_NETFILTER socket bound to the netns of the thread that opened it."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._m = msg_classes()
        m = self._m
        self._classes = {NFT_MSG_NEWTABLE: m.table, NFT_MSG_DELTABLE: m.table,
                         NFT_MSG_NEWCHAIN: m.chain, NFT_MSG_DELCHAIN: m.chain,
                         NFT_MSG_NEWRULE: m.rule, NFT_MSG_DELRULE: m.rule}
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   NETLINK_NETFILTER)
        try:
            for opt in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):   # error text; no echoed request
                try:
                    self._sock.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:
                    pass
            self._sock.settimeout(timeout)
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0
        self._buf = b""

    # -- transport ---------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _encode(self, cls: Any, kind: int, flags: int, family: int, attrs: list,
                seq: int, res_id: int = 0) -> bytes:
        msg = cls()
        msg["nfgen_family"] = family
        msg["version"] = 0
        msg["res_id"] = res_id
        msg["attrs"] = attrs
        msg["header"]["type"] = kind
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = seq
        msg.encode()
        return bytes(msg.data)

    def _recv(self) -> bytes:
        try:
            return self._sock.recv(1 << 16)
        except socket.timeout:
            raise OSError(_errno.ETIMEDOUT, "no answer from nftables (netlink timeout)") \
                from None

    @staticmethod
    def _error(data: bytes, off: int, end: int, flags: int) -> tuple[int, str]:
        """(errno, extended-ack text) of an NLMSG_ERROR at off; errno 0 for an ack."""
        (err,) = struct.unpack_from("=i", data, off + _HDR.size)
        text = ""
        if err and flags & NLM_F_ACK_TLVS:
            inner = struct.unpack_from("=I", data, off + _HDR.size + 4)[0]
            tlv = off + _HDR.size + 4 + (_HDR.size if flags & NLM_F_CAPPED
                                        else (inner + 3) & ~3)
            text = _ext_ack_text(data, tlv, end)
        return -err, text

    def _messages(self, data: bytes) -> Any:
        off = 0
        while off + _HDR.size <= len(data):
            length, mtype, mflags, mseq, _ = _HDR.unpack_from(data, off)
            if length < _HDR.size:
                raise OSError(_errno.EPROTO, "malformed netlink reply")
            end = min(off + length, len(data))
            yield off, end, mtype, mflags, mseq
            off = (off + length + 3) & ~3

    def _get(self, kind: int, family: int, attrs: list, dump: bool) -> list[tuple[int, int]]:
        """One GET request: (offset, end) of each reply in self._buf ([] when the object
        is missing); the replies of a dump may span several reads, hence the buffer.

        A dump that spans several reads while another process commits can skip or repeat
        rules (the kernel resumes it by position); the kernel flags it NLM_F_DUMP_INTR and
        it is taken again, after a pause that grows (1, 2, ... ms) so that a node whose pods
        commit back to back still leaves a gap for it.
        """
        for attempt in range(_DUMP_ATTEMPTS):
            replies, interrupted = self._get_once(kind, family, attrs, dump)
            if not interrupted:
                return replies
            time.sleep(0.001 * (attempt + 1))
        raise OSError(_errno.EAGAIN, "nftables ruleset kept changing during a listing")

    def _get_once(self, kind: int, family: int, attrs: list,
                  dump: bool) -> tuple[list[tuple[int, int]], bool]:
        seq = self._next_seq()
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        cls = self._classes[kind - 1]                   # GET* = NEW* + 1
        self._sock.send(self._encode(cls, (NFNL_SUBSYS_NFTABLES << 8) | kind, flags, family,
                                     attrs, seq))
        chunks: list[bytes] = []
        replies: list[tuple[int, int]] = []
        base = 0
        interrupted = False
        while True:
            data = self._recv()
            for off, end, mtype, mflags, mseq in self._messages(data):
                if mseq != seq:
                    continue
                interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                if mtype == NLMSG_DONE:
                    self._buf = b"".join(chunks + [data])
                    return replies, interrupted
                if mtype == NLMSG_ERROR:
                    err, text = self._error(data, off, end, mflags)
                    self._buf = b"".join(chunks + [data])
                    if err in (0, _errno.ENOENT):
                        return replies, interrupted
                    raise OSError(err, os.strerror(err) + (f" ({text})" if text else ""))
                replies.append((base + off, base + end))
            chunks.append(data)
            base += len(data)

    def _decode(self, cls: Any, span: tuple[int, int]) -> Any:
        msg = cls(self._buf[span[0]:span[1]])
        msg.decode()
        return msg

    def commit(self, batch: Batch) -> None:
        """Send the batch as one transaction; raise OSError for the first command that
        failed (then nothing of the batch was applied).

        Only the last command asks for an ack: the kernel reports every failing command
        anyway, in order, before that ack, and one ack per command would overflow the
        receive buffer for large batches (ENOBUFS at a few hundred rules).
        """
        if not batch.cmds:
            return
        nfgen = self._m.nfgen
        begin = self._next_seq()
        parts = [self._encode(nfgen, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, [], begin,
                              NFNL_SUBSYS_NFTABLES)]
        whats: dict[int, str] = {}
        for i, (kind, flags, what, attrs, family) in enumerate(batch.cmds):
            seq = self._next_seq()
            ack = NLM_F_ACK if i == len(batch.cmds) - 1 else 0
            parts.append(self._encode(self._classes[kind], (NFNL_SUBSYS_NFTABLES << 8) | kind,
                                      NLM_F_REQUEST | ack | flags, family, attrs, seq))
            whats[seq] = what
        last = self._seq
        end_seq = self._next_seq()
        parts.append(self._encode(nfgen, NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, [], end_seq,
                                  NFNL_SUBSYS_NFTABLES))
        self._sock.send(b"".join(parts))
        failed: tuple[int, str, str] | None = None
        while True:
            data = self._recv()
            for off, end, mtype, mflags, mseq in self._messages(data):
                if mtype != NLMSG_ERROR or not begin <= mseq <= end_seq:
                    continue
                err, text = self._error(data, off, end, mflags)
                if mseq in (begin, end_seq):
                    # against the batch itself: no privilege, no nf_tables, commit failed
                    if err:
                        raise OSError(err, os.strerror(err) + (f" ({text})" if text else "")
                                      + " (nftables transaction)")
                    continue
                if err and failed is None:
                    failed = (err, text, whats[mseq])
                if mseq == last:
                    if failed is not None:
                        err, text, what = failed
                        raise OSError(err, os.strerror(err) + (f" ({text})" if text else "")
                                      + f" ({what})")
                    return

    # -- reading -----------------------------------------------------------------------

    def table(self, family: str, name: str) -> Table | None:
        replies = self._get(NFT_MSG_GETTABLE, _family(family),
                            [("NFTA_TABLE_NAME", name)], dump=False)
        if not replies:
            return None
        m = self._decode(self._m.table, replies[0])
        return Table(family, m.get_attr("NFTA_TABLE_NAME"), m.get_attr("NFTA_TABLE_HANDLE"),
                     comment_of(m.get_attr("NFTA_TABLE_USERDATA")))

    def chain(self, family: str, table: str, name: str) -> Chain | None:
        replies = self._get(NFT_MSG_GETCHAIN, _family(family),
                            [("NFTA_CHAIN_TABLE", table), ("NFTA_CHAIN_NAME", name)],
                            dump=False)
        if not replies:
            return None
        m = self._decode(self._m.chain, replies[0])
        hook = m.get_attr("NFTA_CHAIN_HOOK")
        policy = m.get_attr("NFTA_CHAIN_POLICY")
        return Chain(family, table, name, m.get_attr("NFTA_CHAIN_HANDLE"),
                     type=m.get_attr("NFTA_CHAIN_TYPE") or "",
                     hook=_HOOK_NAMES.get(hook.get_attr("NFTA_HOOK_HOOKNUM"), "")
                     if hook is not None else "",
                     priority=hook.get_attr("NFTA_HOOK_PRIORITY") if hook is not None else None,
                     policy={0: "drop", 1: "accept"}.get(policy, "") if policy is not None
                     else "",
                     comment=comment_of(m.get_attr("NFTA_CHAIN_USERDATA")))

    def rules(self, family: str, table: str, chain: str | None = None) -> list[Rule]:
        """The rules of one chain (or of the whole table), in order; [] when absent.
        The kernel filters the dump by table and chain."""
        attrs: list = [("NFTA_RULE_TABLE", table)]
        if chain is not None:
            attrs.append(("NFTA_RULE_CHAIN", chain))
        spans = self._get(NFT_MSG_GETRULE, _family(family), attrs, dump=True)
        return [_scan_rule(self._buf, off, end, family) for off, end in spans]

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "NFT":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- expressions -------------------------------------------------------------------------
# Each builder returns a list of expressions (pyroute2's nested-attribute form), so a
# rule is a concatenation: [*nfproto(4), *addr("saddr", ip), *masq()].

NFT_REG_VERDICT, NFT_REG_1, NFT_REG_2 = 0, 1, 2
NFT_REG32_00 = 8                # 32-bit registers: 8, 9, …; NFT_REG_1 spans 8–11
NFT_PAYLOAD_LL_HEADER, NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER = 0, 1, 2
NFT_META_NFPROTO, NFT_META_L4PROTO, NFT_META_IIFNAME, NFT_META_OIFNAME = 15, 16, 6, 7
NFT_META_MARK = 3
NF_ACCEPT, NF_DROP = 1, 0
NFT_CONTINUE, NFT_BREAK, NFT_JUMP, NFT_GOTO, NFT_RETURN = -1, -2, -3, -4, -5
NFT_NAT_SNAT, NFT_NAT_DNAT = 0, 1
NF_NAT_RANGE_MAP_IPS, NF_NAT_RANGE_PROTO_SPECIFIED = 0x1, 0x2
NF_NAT_RANGE_PROTO_RANDOM_FULLY = 0x10
NFT_FIB_RESULT_OIF, NFT_FIB_RESULT_OIFNAME, NFT_FIB_RESULT_ADDRTYPE = 1, 2, 3
NFTA_FIB_F_SADDR, NFTA_FIB_F_DADDR, NFTA_FIB_F_IIF, NFTA_FIB_F_OIF = 1, 2, 8, 16
RTN_LOCAL = 2
_L4PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}
_CMP_OPS = {"==": 0, "!=": 1, "<": 2, "<=": 3, ">": 4, ">=": 5}
# (offset of saddr, daddr; address length) in the network header
_IP_FIELDS = {4: (12, 16, 4), 6: (8, 24, 16)}


def expr(name: str, *attrs: tuple[str, Any]) -> dict[str, Any]:
    """One expression: NFTA_EXPR_NAME plus its NFTA_<NAME>_* attributes."""
    prefix = f"NFTA_{name.upper()}_"
    return {"attrs": [("NFTA_EXPR_NAME", name),
                      ("NFTA_EXPR_DATA", {"attrs": [(prefix + k, v) for k, v in attrs]})]}


def _value(data: bytes) -> dict[str, Any]:
    return {"attrs": [("NFTA_DATA_VALUE", data)]}


def meta(key: int, dreg: int = NFT_REG_1) -> list[dict[str, Any]]:
    return [expr("meta", ("DREG", dreg), ("KEY", key))]


def payload(base: int, offset: int, length: int, dreg: int = NFT_REG_1) -> list[dict]:
    return [expr("payload", ("DREG", dreg), ("BASE", base), ("OFFSET", offset),
                 ("LEN", length))]


def cmp(op: str, data: bytes, sreg: int = NFT_REG_1) -> list[dict[str, Any]]:
    return [expr("cmp", ("SREG", sreg), ("OP", _CMP_OPS[op]), ("DATA", _value(data)))]


def bitwise(mask: bytes, xor: bytes | None = None, sreg: int = NFT_REG_1,
            dreg: int = NFT_REG_1) -> list[dict[str, Any]]:
    return [expr("bitwise", ("SREG", sreg), ("DREG", dreg), ("LEN", len(mask)),
                 ("MASK", _value(mask)), ("XOR", _value(xor or bytes(len(mask)))))]


def immediate(data: bytes, dreg: int = NFT_REG_1) -> list[dict[str, Any]]:
    return [expr("immediate", ("DREG", dreg), ("DATA", _value(data)))]


def verdict(code: int, chain: str = "") -> list[dict[str, Any]]:
    inner: list = [("NFTA_VERDICT_CODE", code)]
    if chain:
        inner.append(("NFTA_VERDICT_CHAIN", chain))
    return [expr("immediate", ("DREG", NFT_REG_VERDICT),
                 ("DATA", {"attrs": [("NFTA_DATA_VERDICT", {"attrs": inner})]}))]


def accept() -> list[dict[str, Any]]:
    return verdict(NF_ACCEPT)


def drop() -> list[dict[str, Any]]:
    return verdict(NF_DROP)


def ret() -> list[dict[str, Any]]:
    return verdict(NFT_RETURN)


def jump(chain: str) -> list[dict[str, Any]]:
    return verdict(NFT_JUMP, chain)


def goto(chain: str) -> list[dict[str, Any]]:
    return verdict(NFT_GOTO, chain)


def masq(flags: int = 0) -> list[dict[str, Any]]:
    return [expr("masq", *((("FLAGS", flags),) if flags else ()))]


def nat(kind: int, family: int, reg_addr: int = 0, reg_proto: int = 0,
        flags: int = 0) -> list[dict[str, Any]]:
    """snat/dnat from registers (load them with immediate() first)."""
    attrs: list = [("TYPE", kind), ("FAMILY", family)]
    if reg_addr:
        attrs.append(("REG_ADDR_MIN", reg_addr))
    if reg_proto:
        attrs.append(("REG_PROTO_MIN", reg_proto))
    if flags:
        attrs.append(("FLAGS", flags))
    return [expr("nat", *attrs)]


def counter() -> list[dict[str, Any]]:
    return [expr("counter", ("BYTES", 0), ("PACKETS", 0))]


def lookup(set_name: str, sreg: int = NFT_REG_1, dreg: int | None = None,
           invert: bool = False) -> list[dict[str, Any]]:
    attrs: list = [("SET", set_name), ("SREG", sreg)]
    if dreg is not None:
        attrs.append(("DREG", dreg))
    if invert:
        attrs.append(("FLAGS", {"NFT_LOOKUP_F_INV"}))
    return [expr("lookup", *attrs)]


def fib(result: int, flags: int, dreg: int = NFT_REG_1) -> list[dict[str, Any]]:
    """`fib daddr type` is fib(NFT_FIB_RESULT_ADDRTYPE, NFTA_FIB_F_DADDR) then a 4-byte
    host-order cmp against RTN_LOCAL (see fib_daddr_local)."""
    return [expr("fib", ("DREG", dreg), ("RESULT", result), ("FLAGS", flags))]


def fib_daddr_local() -> list[dict[str, Any]]:
    """`fib daddr type local` (portmap's hook chains)."""
    return [*fib(NFT_FIB_RESULT_ADDRTYPE, NFTA_FIB_F_DADDR),
            *cmp("==", struct.pack("=I", RTN_LOCAL))]


# -- matchers (what nft emits for the same text) -----------------------------------------

def nfproto(version: int) -> list[dict[str, Any]]:
    """`meta nfproto ipv4|ipv6`: the dependency nft adds before ip/ip6 matches in inet."""
    return [*meta(NFT_META_NFPROTO), *cmp("==", bytes((2 if version == 4 else 10,)))]


def parse_cidr(cidr: str) -> tuple[int, bytes, int]:
    """"10.1.0.5/24" → (4, packed address, 24); no prefix means a host address."""
    ip, _, plen = cidr.partition("/")
    version = 6 if ":" in ip else 4
    packed = socket.inet_pton(socket.AF_INET6 if version == 6 else socket.AF_INET, ip)
    bits = len(packed) * 8
    prefix = int(plen) if plen else bits
    if not 0 <= prefix <= bits:
        raise ValueError(f"invalid prefix length in {cidr!r}")
    return version, packed, prefix


def network(packed: bytes, prefix: int) -> bytes:
    """The address with its host bits cleared."""
    bits = len(packed) * 8
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
    return (int.from_bytes(packed, "big") & mask).to_bytes(len(packed), "big")


def addr(field_name: str, cidr: str, op: str = "==") -> list[dict[str, Any]]:
    """`ip|ip6 saddr|daddr [!=] ADDR[/PREFIX]`, encoded as nft does: a whole address is
    compared as is, a byte-aligned prefix by loading only its bytes, any other prefix
    through a bitwise mask. (In an inet table, put nfproto() first.)"""
    version, packed, prefix = parse_cidr(cidr)
    soff, doff, size = _IP_FIELDS[version]
    offset = soff if field_name == "saddr" else doff
    if prefix == size * 8:
        return [*payload(NFT_PAYLOAD_NETWORK_HEADER, offset, size), *cmp(op, packed)]
    net = network(packed, prefix)
    if prefix % 8 == 0 and prefix:
        n = prefix // 8
        return [*payload(NFT_PAYLOAD_NETWORK_HEADER, offset, n), *cmp(op, net[:n])]
    mask = network(b"\xff" * size, prefix)
    return [*payload(NFT_PAYLOAD_NETWORK_HEADER, offset, size), *bitwise(mask),
            *cmp(op, net)]


def ip_protocol(proto: str | int) -> list[dict[str, Any]]:
    """`ip protocol tcp` (ip family; an inet table needs nfproto(4) before it)."""
    num = _L4PROTOS[proto] if isinstance(proto, str) else proto
    return [*payload(NFT_PAYLOAD_NETWORK_HEADER, 9, 1), *cmp("==", bytes((num,)))]


def l4proto(proto: str | int) -> list[dict[str, Any]]:
    """`meta l4proto tcp` (any family)."""
    num = _L4PROTOS[proto] if isinstance(proto, str) else proto
    return [*meta(NFT_META_L4PROTO), *cmp("==", bytes((num,)))]


def th_dport(port: int) -> list[dict[str, Any]]:
    """`th dport 8080`: the transport header's destination port (tcp, udp, sctp)."""
    return [*payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2), *cmp("==", struct.pack(">H", port))]


def dnat(ip: str, port: int) -> list[dict[str, Any]]:
    """`dnat ip addr . port to <ip> . <port>` (ip6 for an IPv6 address), as nft encodes it:
    the address in reg 1, the port in the next free 32-bit register, no flags.
    (Checked against nft 1.0.6 for IPv4; that nft aborts on the IPv6 form.)"""
    version, packed, _ = parse_cidr(ip)
    port_reg = NFT_REG32_00 + len(packed) // 4
    return [*immediate(packed, NFT_REG_1), *immediate(struct.pack(">H", port), port_reg),
            *nat(NFT_NAT_DNAT, 2 if version == 4 else 10, reg_addr=NFT_REG_1,
                 reg_proto=port_reg)]


# -- conntrack matches (portmap's masqAll) -------------------------------------------------

NFT_CT_STATUS, NFT_CT_PROTO_DST = 2, 12
IP_CT_DIR_ORIGINAL, IP_CT_DIR_REPLY = 0, 1
IPS_DST_NAT = 0x20


def ct(key: int, direction: int | None = None, dreg: int = NFT_REG_1) -> list[dict[str, Any]]:
    """Load a conntrack key (optionally of one direction's tuple) into a register."""
    attrs: list = [("DREG", dreg), ("KEY", key)]
    if direction is not None:
        attrs.append(("DIRECTION", direction))
    return [expr("ct", *attrs)]


def ct_status_dnat() -> list[dict[str, Any]]:
    """`ct status dnat`: the connection's destination was rewritten."""
    return [*ct(NFT_CT_STATUS), *bitwise(struct.pack("=I", IPS_DST_NAT)),
            *cmp("!=", bytes(4))]


def ct_original_proto_dst(port: int) -> list[dict[str, Any]]:
    """`ct original proto-dst 8080`: the port the connection was first addressed to."""
    return [*ct(NFT_CT_PROTO_DST, IP_CT_DIR_ORIGINAL), *cmp("==", struct.pack(">H", port))]


def dnat6(ip: str, port: int) -> list[dict[str, Any]]:
    """`dnat ip6 to [<ip>]:<port>` as nft encodes it: the address in reg 1, the port in
    reg 2 (the next 128-bit register). The kernel lists registers back in this form,
    not as dnat()'s 32-bit port register for IPv6 (reg 12, the same storage), so rule
    comparisons (CHECK) need it. nft also sends the proto-specified flag, which the
    kernel sets by itself for a rule with a port register."""
    version, packed, _ = parse_cidr(ip)
    if version != 6:
        raise ValueError(f"dnat6 needs an IPv6 address, not {ip!r}")
    return [*immediate(packed, NFT_REG_1), *immediate(struct.pack(">H", port), NFT_REG_2),
            *nat(NFT_NAT_DNAT, 10, reg_addr=NFT_REG_1, reg_proto=NFT_REG_2)]
