"""Host port forwarding (portmap) over nftables, in the layout of the Go plugin's
nftables backend, so that either implementation finds and removes the other's rules:

    table ip cni_hostport {                       # table ip6 cni_hostport for IPv6 pods
        comment "CNI portmap plugin"
        chain hostports {
            ip protocol tcp th dport 8080 dnat ip addr . port to 10.1.0.5 . 80 comment "<id>"
        }
        chain hostip_hostports {
            ip daddr 192.168.1.10 ip protocol tcp th dport 8443 dnat ip addr . port to … comment "<id>"
        }
        chain prerouting {
            type nat hook prerouting priority dstnat; policy accept;
            jump hostip_hostports
            fib daddr type local jump hostports
        }
        chain output {
            type nat hook output priority -100; policy accept;
            jump hostip_hostports
            fib daddr type local jump hostports
        }
        chain masquerading {                      # only once a pod asked for snat
            type nat hook postrouting priority srcnat; policy accept;
            ip saddr 10.1.0.0/24 ip daddr 10.1.0.5 ct status dnat masquerade comment "<id>"  # hairpin
            ip saddr 127.0.0.1 ip daddr 10.1.0.5 masquerade comment "<id>"   # from the host's lo
        }
    }

A container's rules carry its ID as their comment (Go writes exactly that), which is how
teardown finds them. The table and the five chains are shared: created on first use,
never removed. Where the rules differ from Go's nftables backend, it is to make them work:
- IPv6 rules match `meta l4proto`; Go writes `ip6 protocol`, which nft does not parse (so
  Go's IPv6 transaction fails).
- The prerouting chain checks `fib daddr type local` before jumping to hostports, as the
  output chain does and as the iptables backend does (`-m addrtype --dst-type LOCAL`);
  Go's prerouting jump has no such test and rewrites traffic the node only forwards.
- The hairpin masquerade matches the pod's whole subnet as source, as the iptables
  backend does (`-s 10.1.0.5/24`): a neighbour on the same bridge reaching the pod
  through a host port gets the answer straight over the bridge otherwise, from the
  wrong address. Go's nftables backend matches the pod's address only. Unlike the
  iptables backend, whose subnet match sits in the DNAT chain, a postrouting rule sees
  every packet to the pod, so it also requires `ct status dnat`: a neighbour reaching
  the pod directly (pod to pod) is not masqueraded.

Each call makes one listing per family and at most one transaction (more only when
another process deletes a listed rule first). Functions work in the netns the calling
thread is in; only check() decodes rules' expressions.
"""

from __future__ import annotations

import errno
from collections import namedtuple
from typing import Iterable

import netaddr

from ...errors import CNIError, Code, kernel_errors
from .. import nft

TABLE = "cni_hostport"
TABLE_COMMENT = "CNI portmap plugin"        # Go's, kept identical
HOSTPORTS = "hostports"
HOSTIP_HOSTPORTS = "hostip_hostports"
MASQUERADING = "masquerading"
PREROUTING = "prerouting"
OUTPUT = "output"
CONTAINER_CHAINS = (HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING)
FAMILIES = {4: "ip", 6: "ip6"}
PROTOCOLS = ("tcp", "udp", "sctp")
NAT_PRIORITY = {PREROUTING: -100, OUTPUT: -100, MASQUERADING: 100}
_HOOKS = {PREROUTING: "prerouting", OUTPUT: "output", MASQUERADING: "postrouting"}
# the kernel has no nf_tables: nothing of ours can be there (DEL succeeds)
_NO_NFTABLES = {errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP}


# One runtimeConfig.portMappings entry. protocol: tcp | udp | sctp; host_ip: "" (or
# 0.0.0.0 / ::) for every local address. (A named tuple: a dataclass costs a millisecond
# or two to create on these machines, a plugin exec pays it.)
Mapping = namedtuple("Mapping", "host_port container_port protocol host_ip", defaults=("",))


def parse_ip(text: str) -> netaddr.IPAddress:
    """An IP address; IPv4-mapped IPv6 counts as IPv4, as Go's To4() has it.
    ValueError when `text` is no address."""
    try:
        ip = netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, TypeError, ValueError):
        raise ValueError(f"invalid IP address {text!r}") from None
    return ip.ipv4() if ip.is_ipv4_mapped() else ip


# -- the rules -----------------------------------------------------------------------------

def hook_rules() -> list[list[dict]]:
    """The rules of the prerouting and output chains (the same in both)."""
    return [nft.jump(HOSTIP_HOSTPORTS), [*nft.fib_daddr_local(), *nft.jump(HOSTPORTS)]]


def _proto(version: int, protocol: str) -> list[dict]:
    return nft.ip_protocol(protocol) if version == 4 else nft.l4proto(protocol)


def _host_ip(m: Mapping, version: int) -> str | None:
    """The address a mapping is restricted to; "" for every address, None when its
    hostIP is of the other family (Go skips the mapping for this container IP)."""
    if not m.host_ip:
        return ""
    ip = parse_ip(m.host_ip)
    if ip.version != version:
        return None
    return "" if not int(ip) else str(ip)


def container_rules(cidr: str, mappings: Iterable[Mapping], *, snat: bool,
                    masq_all: bool = False) -> list[tuple[str, list[dict]]]:
    """(chain, expressions) of every rule one container address ("10.1.0.5/24") gets,
    in order."""
    net = nft.cidr(cidr)
    version, ip, subnet = net.version, str(net.ip), str(net.cidr)
    out: list[tuple[str, list[dict]]] = []
    masq: list[list[dict]] = []
    for m in mappings:
        host_ip = _host_ip(m, version)
        if host_ip is None:
            continue
        rule = [*_proto(version, m.protocol), *nft.th_dport(m.host_port),
                *(nft.dnat if version == 4 else nft.dnat6)(ip, m.container_port)]
        if host_ip:
            out.append((HOSTIP_HOSTPORTS, [*nft.addr("daddr", host_ip), *rule]))
        else:
            out.append((HOSTPORTS, rule))
        if snat and masq_all:
            # everything this mapping forwards, whoever sent it
            r = [*nft.addr("daddr", ip), *nft.ct_status_dnat(), *nft.l4proto(m.protocol),
                 *nft.ct_original_proto_dst(m.host_port), *nft.masq()]
            if r not in masq:
                masq.append(r)
    if snat and not masq_all:
        # hairpin (the pod, or a neighbour on its bridge, reaching it through a host
        # port), and, for IPv4, the host reaching 127.0.0.1:port: each needs a source
        # the pod answers through the node
        # `ct status dnat`: only what came through a host port; a neighbour reaching the
        # pod directly keeps its own address (no NAT between pods)
        masq.append([*nft.addr("saddr", subnet), *nft.addr("daddr", ip), *nft.ct_status_dnat(),
                     *nft.masq()])
        if version == 4:
            masq.append([*nft.addr("saddr", "127.0.0.1"), *nft.addr("daddr", ip), *nft.masq()])
    out += [(MASQUERADING, r) for r in masq]
    return out


def _by_family(cidrs: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for cidr in cidrs:
        out.setdefault(FAMILIES[nft.cidr(cidr).version], []).append(cidr)
    return out


def _hooks_in_place(rules: list[nft.Rule], want: list[bytes]) -> bool:
    for chain in (PREROUTING, OUTPUT):
        if [r.raw for r in rules if r.chain == chain] != want:
            return False
    return True


def _comment(container_id: str) -> str:
    if len(container_id.encode()) > nft.COMMENT_MAX:
        raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES,
                       f"CNI_CONTAINERID is longer than {nft.COMMENT_MAX} bytes, the longest "
                       "nftables comment, which carries it on the port-forwarding rules")
    return container_id


# -- verbs ----------------------------------------------------------------------------------

def setup(container_id: str, cidrs: Iterable[str], mappings: list[Mapping], *, snat: bool,
          masq_all: bool = False) -> None:
    """Forward the mappings to each container address (CIDRs, as in a result): one
    transaction for both families.

    Rules this container already has (an ADD repeated without DEL) are replaced. The
    hook chains are rewritten only when they differ from ours, so that a usual ADD
    deletes nothing (deleting makes the kernel wait for an RCU grace period when the
    socket closes).
    """
    comment = _comment(container_id)
    wanted = {fam: [rule for cidr in fam_cidrs
                    for rule in container_rules(cidr, mappings, snat=snat, masq_all=masq_all)]
              for fam, fam_cidrs in _by_family(cidrs).items()}
    hooks = hook_rules()
    # the kernel lists the hook chains' rules back byte for byte as we encode them, so a
    # listing tells whether they need rewriting without decoding them
    hooks_raw = [nft.encode_exprs(r) for r in hooks]

    def build(b: nft.Batch, listed: dict) -> None:
        for fam, rules in wanted.items():
            b.add_table(fam, TABLE, comment=TABLE_COMMENT)
            b.add_chain(fam, TABLE, HOSTPORTS)
            b.add_chain(fam, TABLE, HOSTIP_HOSTPORTS)
            for chain in (PREROUTING, OUTPUT) + ((MASQUERADING,) if snat else ()):
                b.add_chain(fam, TABLE, chain, type="nat", hook=_HOOKS[chain],
                            priority=NAT_PRIORITY[chain])
            if not _hooks_in_place(listed[(fam, TABLE, None)], hooks_raw):
                for chain in (PREROUTING, OUTPUT):
                    b.flush_chain(fam, TABLE, chain)
                    for exprs in hooks:
                        b.add_rule(fam, TABLE, chain, exprs)
            for chain, exprs in rules:
                b.add_rule(fam, TABLE, chain, exprs, comment=comment)

    with kernel_errors(f"set up port forwarding for container {container_id!r} in "
                       f"table {TABLE}"), nft.NFT() as sock:
        nft.delete_rules(sock, [(fam, TABLE, None) for fam in wanted],
                         lambda r: _theirs(r, comment), then=build)


def _theirs(rule: nft.Rule, container_id: str) -> bool:
    """One of the container's rules (in a container chain, its ID as the comment)."""
    return rule.comment == container_id and rule.chain in CONTAINER_CHAINS


def teardown(container_id: str) -> None:
    """Remove the container's rules from both families, in one transaction; success when
    they, the chains or the table are gone already. The shared chains stay."""
    with kernel_errors(f"tear down port forwarding for container {container_id!r}"):
        try:
            with nft.NFT() as sock:
                nft.delete_rules(sock, [(fam, TABLE, None) for fam in FAMILIES.values()],
                                 lambda r: _theirs(r, container_id))
        except OSError as e:
            if e.errno not in _NO_NFTABLES:
                raise


def check(container_id: str, cidrs: Iterable[str], mappings: list[Mapping], *, snat: bool,
          masq_all: bool = False) -> None:
    """CHECK: table, chains, hook rules and exactly this container's rules in place.
    Raises CNIError naming the first difference."""
    def fail(msg: str) -> CNIError:
        return CNIError(Code.INTERNAL,
                        f"port forwarding for container {container_id!r}: {msg}")

    with kernel_errors(f"check port forwarding for container {container_id!r}"), \
            nft.NFT() as sock:
        for fam, fam_cidrs in _by_family(cidrs).items():
            where = f"table {fam} {TABLE}"
            if sock.table(fam, TABLE) is None:
                raise fail(f"{where} is missing")
            for chain in (HOSTPORTS, HOSTIP_HOSTPORTS, PREROUTING, OUTPUT) + \
                    ((MASQUERADING,) if snat else ()):
                c = sock.chain(fam, TABLE, chain)
                if c is None:
                    raise fail(f"chain {chain} of {where} is missing")
                if chain in NAT_PRIORITY and (c.type, c.hook, c.priority) != \
                        ("nat", _HOOKS[chain], NAT_PRIORITY[chain]):
                    raise fail(f"chain {chain} of {where} is type {c.type or 'none'} hook "
                               f"{c.hook or 'none'} priority {c.priority}, not nat "
                               f"{_HOOKS[chain]} {NAT_PRIORITY[chain]}")
            rules = sock.rules(fam, TABLE)
            for chain in (PREROUTING, OUTPUT):
                _check_hook_chain(fail, where, chain, [r for r in rules if r.chain == chain])
            ours = [r for r in rules if r.comment == container_id]
            for cidr in fam_cidrs:
                for chain, exprs in container_rules(cidr, mappings, snat=snat,
                                                    masq_all=masq_all):
                    want = nft.expected(exprs)
                    found = next((r for r in ours if r.chain == chain
                                  and nft.exprs_match(want, r.exprs())), None)
                    if found is None:
                        raise fail(f"a rule for {cidr} is missing from chain {chain} of "
                                   f"{where}")
                    ours.remove(found)
            if ours:
                raise fail(f"{len(ours)} unexpected rule(s) with its comment in {where} "
                           f"(chain {ours[0].chain}, handle {ours[0].handle})")


def _check_hook_chain(fail, where: str, chain: str, rules: list[nft.Rule]) -> None:
    """The chain sends traffic to both container chains. A plain `jump hostports` (what
    the Go plugin writes into prerouting) forwards too, so it passes."""
    got = [r.exprs() for r in rules]
    jump_hostip = nft.expected(nft.jump(HOSTIP_HOSTPORTS))
    jumps = [nft.expected([*nft.fib_daddr_local(), *nft.jump(HOSTPORTS)]),
             nft.expected(nft.jump(HOSTPORTS))]
    if not any(nft.exprs_match(jump_hostip, g) for g in got):
        raise fail(f"chain {chain} of {where} does not jump to {HOSTIP_HOSTPORTS}")
    if not any(nft.exprs_match(j, g) for j in jumps for g in got):
        raise fail(f"chain {chain} of {where} does not send local traffic to {HOSTPORTS}")
