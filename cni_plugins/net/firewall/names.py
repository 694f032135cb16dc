"""Names, hashes and comments identical to the Go plugins', so that rules written by one
implementation are found (and removed) by the other.

    masq_comment("unit-test", "eth0", "one")
    == "6fd94d501e58f0aa-287fc69eff0574a2, net: unit-test, if: eth0, id: one"

The hashes are SHA-512 hex digests cut to length (pkg/utils in containernetworking/plugins).
"""

from __future__ import annotations

try:                            # the builtin: hashlib would load OpenSSL first (≈5 ms)
    from _sha512 import sha512
except ImportError:             # Python ≥ 3.12 renamed it
    try:
        from _sha2 import sha512            # type: ignore[import-not-found,no-redef]
    except ImportError:
        from hashlib import sha512          # type: ignore[assignment]

COMMENT_MAX = 128           # bytes; longer comments are cut, as knftables does
CHAIN_PREFIX = "CNI-"
CHAIN_MAX = 28              # iptables chain names: "CNI-" + hex, 28 characters in all


def hash_prefix(length: int, prefix: str, text: str) -> str:
    """`prefix` followed by the SHA-512 hex digest of `text`, cut to `length` characters."""
    if len(prefix) >= length or length > 128:
        raise ValueError(f"invalid hash length {length} for prefix {prefix!r}")
    return (prefix + sha512(text.encode()).hexdigest())[:length]


def network_hash(network: str) -> str:
    return hash_prefix(16, "", network)


def masq_instance(network: str, ifname: str, container_id: str) -> str:
    """The prefix of every masquerade rule comment of one attachment."""
    return f"{network_hash(network)}-{hash_prefix(16, '', ifname + ':' + container_id)}"


def cut(comment: str) -> str:
    """At most COMMENT_MAX bytes, as Go slices the string. Go would keep the bytes of a
    character cut in half; we drop them (lookups use the hash prefix, which is ASCII)."""
    raw = comment.encode()
    return raw[:COMMENT_MAX].decode(errors="ignore") if len(raw) > COMMENT_MAX else comment


def masq_comment(network: str, ifname: str, container_id: str) -> str:
    """The comment on a masquerade rule: hashes first, then a readable description."""
    def clean(s: str) -> str:
        return s.replace('"', "")

    return cut(f"{masq_instance(network, ifname, container_id)}, net: {clean(network)}, "
               f"if: {clean(ifname)}, id: {clean(container_id)}")


def chain_name(name: str, container_id: str, prefix: str = "") -> str:
    """The per-container iptables chain name: "CNI-" + prefix + hash, 28 characters."""
    return hash_prefix(CHAIN_MAX, CHAIN_PREFIX + prefix, name + container_id)


def go_quote(s: str) -> str:
    """Go's %q for the strings that end up in comments (printable runes kept as is)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif o <= 0xFFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def format_comment(name: str, container_id: str) -> str:
    """`name: "<net>" id: "<cid>"`, the comment of the Go plugins' iptables rules."""
    return f"name: {go_quote(name)} id: {go_quote(container_id)}"
