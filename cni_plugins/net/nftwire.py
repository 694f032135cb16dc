"""nftables messages encoded without pyroute2, for the verbs that only list and commit.

net/nft.py encodes through pyroute2's message classes, and loading them costs more than
a whole portmap ADD is allowed to (pyroute2.netlink pulls in logging, and every message
encodes through its generic attribute machinery: ≈25 ms of imports and ≈1 ms a rule on
these machines). This module writes the same bytes from the same input — the
attribute trees nft.py's Batch and expression builders produce — with a name table and
struct, and `NFT` is nft.NFT with this encoder: listings (rules(): handles, chains and
comments) and commits work, decoding (table(), chain(), Rule.exprs()) needs nft.NFT.

    with nftwire.NFT() as sock:          # no pyroute2 module is loaded
        sock.rules("ip", "cni_hostport")
        sock.commit(batch)               # an nft.Batch
    nftwire.expressions(exprs)           # NFTA_RULE_EXPRESSIONS as the kernel lists it

tests/unit/test_nftwire.py checks every message and builder against pyroute2's encoding.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from . import nft

_HDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")

# attribute name -> (type number, encoding); names are unique across the nftables API.
# u32/s32/u64/u8: big-endian integers (u8: one byte); str: NUL-terminated; bytes: as is;
# nest: {"attrs": [...]}; exprs: NFTA_LIST_ELEMs of expressions; flags: bit names or int.
_A = {}


def _table(prefix: str, kinds: str, first: int = 1) -> None:
    for i, spec in enumerate(kinds.split(), first):
        name, _, kind = spec.partition(":")
        _A[prefix + name] = (i, kind)


_table("NFTA_TABLE_", "NAME:str FLAGS:u32 USE:u32 HANDLE:u64 PAD:bytes USERDATA:bytes")
_table("NFTA_CHAIN_", "TABLE:str HANDLE:u64 NAME:str HOOK:nest POLICY:u32 USE:u32 TYPE:str "
                      "COUNTERS:nest PAD:bytes FLAGS:u32 ID:u32 USERDATA:bytes")
_table("NFTA_HOOK_", "HOOKNUM:u32 PRIORITY:s32 DEV:str")
_table("NFTA_RULE_", "TABLE:str CHAIN:str HANDLE:u64 EXPRESSIONS:exprs COMPAT:bytes "
                     "POSITION:u64 USERDATA:bytes PAD:bytes ID:u32 POSITION_ID:u32 CHAIN_ID:u32")
_table("NFTA_EXPR_", "NAME:str DATA:nest")
_table("NFTA_DATA_", "VALUE:bytes VERDICT:nest")
_table("NFTA_VERDICT_", "CODE:s32 CHAIN:str")
_table("NFTA_PAYLOAD_", "DREG:u32 BASE:u32 OFFSET:u32 LEN:u32 SREG:u32 CSUM_TYPE:u32 "
                        "CSUM_OFFSET:u32 CSUM_FLAGS:u32")
_table("NFTA_CMP_", "SREG:u32 OP:u32 DATA:nest")
_table("NFTA_BITWISE_", "SREG:u32 DREG:u32 LEN:u32 MASK:nest XOR:nest OP:u32 DATA:nest")
_table("NFTA_IMMEDIATE_", "DREG:u32 DATA:nest")
_table("NFTA_META_", "DREG:u32 KEY:u32 SREG:u32")
_table("NFTA_NAT_", "TYPE:u32 FAMILY:u32 REG_ADDR_MIN:u32 REG_ADDR_MAX:u32 REG_PROTO_MIN:u32 "
                    "REG_PROTO_MAX:u32 FLAGS:natflags")
_table("NFTA_MASQ_", "FLAGS:natflags REG_PROTO_MIN:u32 REG_PROTO_MAX:u32")
_table("NFTA_COUNTER_", "BYTES:u64 PACKETS:u64")
_table("NFTA_FIB_", "DREG:u32 RESULT:u32 FLAGS:u32")
_table("NFTA_CT_", "DREG:u32 KEY:u32 DIRECTION:u8 SREG:u32")
_table("NFTA_LOOKUP_", "SET:str SREG:u32 DREG:u32 SET_ID:u32 FLAGS:lookupflags")
NFTA_LIST_ELEM = 1
_FLAG_BITS = {
    "natflags": ("NF_NAT_RANGE_MAP_IPS", "NF_NAT_RANGE_PROTO_SPECIFIED",
                 "NF_NAT_RANGE_PROTO_RANDOM", "NF_NAT_RANGE_PERSISTENT",
                 "NF_NAT_RANGE_PROTO_RANDOM_FULLY", "NF_NAT_RANGE_PROTO_OFFSET",
                 "NF_NAT_RANGE_NETMAP"),
    "lookupflags": ("NFT_LOOKUP_F_INV",),
}


def _attr(kind: int, payload: bytes) -> bytes:
    return _NLA.pack(4 + len(payload), kind) + payload + bytes(-len(payload) % 4)


def _flags(kind: str, value: Any) -> int:
    if isinstance(value, int):
        return value
    bits = _FLAG_BITS[kind]
    return sum(1 << bits.index(name) for name in value)


def _value(kind: str, value: Any) -> bytes:
    if kind == "u32":
        return struct.pack(">I", value)
    if kind == "s32":
        return struct.pack(">i", value)
    if kind == "u64":
        return struct.pack(">Q", value)
    if kind == "u8":
        return struct.pack("B", value)
    if kind == "str":
        return value.encode() + b"\0"
    if kind == "bytes":
        return bytes(value)
    if kind == "nest":
        return attrs(value["attrs"])
    if kind == "exprs":
        return expressions(value)
    if kind in _FLAG_BITS:
        return struct.pack(">I", _flags(kind, value))
    raise ValueError(f"unknown attribute encoding {kind!r}")


def attrs(items: list) -> bytes:
    """A list of (name, value) attributes, encoded."""
    out = []
    for name, value in items:
        try:
            number, kind = _A[name]
        except KeyError:
            raise ValueError(f"nftwire cannot encode attribute {name}") from None
        out.append(_attr(number, _value(kind, value)))
    return b"".join(out)


def expressions(exprs: list[dict[str, Any]]) -> bytes:
    """NFTA_RULE_EXPRESSIONS' payload for builder output: what the kernel lists back in
    Rule.raw for rules it stores unchanged."""
    return b"".join(_attr(NFTA_LIST_ELEM, attrs(e["attrs"])) for e in exprs)


def message(kind: int, flags: int, family: int, items: list, seq: int,
            res_id: int = 0) -> bytes:
    """One nfnetlink message: header, nfgenmsg (family, version 0, res_id), attributes."""
    body = struct.pack(">BBH", family, 0, res_id) + attrs(items)
    return _HDR.pack(_HDR.size + len(body), kind, flags, seq, 0) + body


class NFT(nft.NFT):
    """nft.NFT with this module's encoder: rules() and commit(), no pyroute2.

    table(), chain() and Rule.exprs() decode through pyroute2: use nft.NFT for those.
    """

    def __init__(self, timeout: float = 5.0) -> None:
        # nft.NFT.__init__ without loading pyroute2: commit() hands self._m.nfgen and
        # self._classes[kind] to _encode, which ignores them
        self._m = _NFGEN
        self._classes = {k: None for k in range(nft.NFT_MSG_NEWTABLE,
                                                 nft.NFT_MSG_DELRULE + 1)}
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   nft.NETLINK_NETFILTER)
        try:
            for opt in (nft.NETLINK_EXT_ACK, nft.NETLINK_CAP_ACK):
                try:
                    self._sock.setsockopt(nft.SOL_NETLINK, opt, 1)
                except OSError:
                    pass
            self._sock.settimeout(timeout)
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0
        self._buf = b""

    def _encode(self, cls: Any, kind: int, flags: int, family: int, attrs: list,
                seq: int, res_id: int = 0) -> bytes:
        return message(kind, flags, family, attrs, seq, res_id)

    def _decode(self, cls: Any, span: tuple[int, int]) -> Any:
        raise NotImplementedError("nftwire.NFT does not decode: use nft.NFT")


class _NoClasses:
    nfgen = None


_NFGEN = _NoClasses()
