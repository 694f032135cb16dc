"""net/nft.py against the kernel: what the builders encode is what `nft` encodes for the
same text, transactions are all-or-nothing, listings carry handles and comments, and
failures come back as OSError naming the command (never a hang)."""

from __future__ import annotations

import errno
import subprocess
import sys
import time

import pytest

from cni_plugins.net import nft
from tests.integration.net.conftest import inside, nft_cli, nft_text

pytestmark = pytest.mark.root

# (nft rule text, our expressions) for one inet chain and one ip nat chain
INET_RULES = [
    ("ip saddr == 192.168.1.1 ip daddr != 192.168.1.0/24 masquerade",
     lambda: [*nft.nfproto(4), *nft.addr("saddr", "192.168.1.1"),
              *nft.addr("daddr", "192.168.1.0/24", "!="), *nft.masq()]),
    ("ip daddr == 224.0.0.0/4 return",
     lambda: [*nft.nfproto(4), *nft.addr("daddr", "224.0.0.0/4"), *nft.ret()]),
    ("ip6 daddr == ff00::/8 return",
     lambda: [*nft.nfproto(6), *nft.addr("daddr", "ff00::/8"), *nft.ret()]),
    ("ip saddr 10.1.2.3 ip daddr != 10.0.0.0/12 masquerade",
     lambda: [*nft.nfproto(4), *nft.addr("saddr", "10.1.2.3"),
              *nft.addr("daddr", "10.0.0.0/12", "!="), *nft.masq()]),
    ("ip daddr != 0.0.0.0/0 accept",
     lambda: [*nft.nfproto(4), *nft.addr("daddr", "0.0.0.0/0", "!="), *nft.accept()]),
    ("ip6 saddr fd00:1::5 ip6 daddr != fd00:1::/64 masquerade",
     lambda: [*nft.nfproto(6), *nft.addr("saddr", "fd00:1::5"),
              *nft.addr("daddr", "fd00:1::/64", "!="), *nft.masq()]),
    ("ip6 saddr fd00:1::5 ip6 daddr != fd00:1::/60 masquerade",
     lambda: [*nft.nfproto(6), *nft.addr("saddr", "fd00:1::5"),
              *nft.addr("daddr", "fd00:1::/60", "!="), *nft.masq()]),
    ("goto target", lambda: nft.goto("target")),
    ("counter jump target", lambda: [*nft.counter(), *nft.jump("target")]),
    ("drop", lambda: nft.drop()),
]
NAT_RULES = [
    ("fib daddr type local counter accept",
     lambda: [*nft.fib_daddr_local(), *nft.counter(), *nft.accept()]),
    ("ip saddr 10.0.0.0/8 drop", lambda: [*nft.addr("saddr", "10.0.0.0/8"), *nft.drop()]),
    # portmap's rules (the Go plugin's text)
    ("ip daddr 192.168.0.2 ip protocol tcp th dport 8083 dnat ip addr . port to 10.0.0.2 . 83",
     lambda: [*nft.addr("daddr", "192.168.0.2"), *nft.ip_protocol("tcp"), *nft.th_dport(8083),
              *nft.dnat("10.0.0.2", 83)]),
    ("ip protocol udp th dport 8082 dnat ip addr . port to 10.0.0.2 . 82",
     lambda: [*nft.ip_protocol("udp"), *nft.th_dport(8082), *nft.dnat("10.0.0.2", 82)]),
    ("meta l4proto sctp th dport 9 return",
     lambda: [*nft.l4proto("sctp"), *nft.th_dport(9), *nft.ret()]),
    ("fib daddr type local jump target",
     lambda: [*nft.fib_daddr_local(), *nft.jump("target")]),
]


def test_builders_encode_what_nft_encodes(make_netns):
    cli, ours = make_netns(), make_netns()
    nft_cli(cli, "add table inet t\nadd chain inet t target\nadd chain inet t c\n"
                 + "".join(f"add rule inet t c {text}\n" for text, _ in INET_RULES)
                 + "add table ip n\nadd chain ip n target\n"
                 + "add chain ip n out { type nat hook output priority -100 ; }\n"
                 + "".join(f"add rule ip n out {text}\n" for text, _ in NAT_RULES))
    b = nft.Batch().add_table("inet", "t").add_chain("inet", "t", "target")
    b.add_chain("inet", "t", "c")
    for _, build in INET_RULES:
        b.add_rule("inet", "t", "c", build())
    b.add_table("ip", "n").add_chain("ip", "n", "target")
    b.add_chain("ip", "n", "out", type="nat", hook="output", priority="dstnat")
    for _, build in NAT_RULES:
        b.add_rule("ip", "n", "out", build())
    with inside(ours), nft.NFT() as sock:
        sock.commit(b)
    listed = {}
    for ns in (cli, ours):
        with inside(ns), nft.NFT() as sock:
            listed[ns.name] = [r.raw for r in sock.rules("inet", "t", "c")] + \
                              [r.raw for r in sock.rules("ip", "n", "out")]
    assert len(listed[ours.name]) == len(INET_RULES) + len(NAT_RULES)
    # the kernel's own dump of each rule's expressions, byte for byte
    for i, (a, b_) in enumerate(zip(listed[cli.name], listed[ours.name])):
        assert a == b_, (INET_RULES + NAT_RULES)[i][0]
    assert nft_text(cli) == nft_text(ours)


def test_comments_and_handles_read_back(nsx):
    b = nft.Batch().add_table("inet", "t", comment="a table")
    b.add_chain("inet", "t", "c", comment="a chain")
    b.add_chain("inet", "t", "post", type="nat", hook="postrouting", priority="srcnat")
    b.add_rule("inet", "t", "c", nft.accept(), comment="first")
    b.add_rule("inet", "t", "c", nft.drop())
    b.add_rule("inet", "t", "c", nft.ret(), comment='quote " and ünïcode')
    with nft.NFT() as sock:
        sock.commit(b)
        table = sock.table("inet", "t")
        chain = sock.chain("inet", "t", "c")
        post = sock.chain("inet", "t", "post")
        rules = sock.rules("inet", "t", "c")
    assert (table.name, table.comment) == ("t", "a table")
    assert (chain.name, chain.comment, chain.hook, chain.type) == ("c", "a chain", "", "")
    assert (post.type, post.hook, post.priority, post.policy) == ("nat", "postrouting", 100,
                                                                  "accept")
    assert [r.comment for r in rules] == ["first", None, 'quote " and ünïcode']
    assert len({r.handle for r in rules}) == 3 and all(r.handle > 0 for r in rules)
    assert [r.exprs()[0][0] for r in rules] == ["immediate"] * 3
    text = nft_text(nsx)
    assert 'comment "a table"' in text and 'comment "a chain"' in text
    assert 'accept comment "first"' in text


def test_create_is_idempotent_and_rules_are_deleted_by_handle(nsx):
    def base() -> nft.Batch:
        return (nft.Batch().add_table("inet", "t", comment="x")
                .add_chain("inet", "t", "c", comment="y")
                .add_chain("inet", "t", "p", type="nat", hook="postrouting", priority=100))

    with nft.NFT() as sock:
        sock.commit(base().add_rule("inet", "t", "c", nft.accept(), comment="one"))
        sock.commit(base().add_rule("inet", "t", "c", nft.accept(), comment="two"))
        rules = sock.rules("inet", "t", "c")
        assert [r.comment for r in rules] == ["one", "two"]
        sock.commit(nft.Batch().delete_rule("inet", "t", "c", rules[0].handle))
        assert [r.comment for r in sock.rules("inet", "t", "c")] == ["two"]
        sock.commit(base().flush_chain("inet", "t", "c"))
        assert sock.rules("inet", "t", "c") == []


def test_absent_objects_read_as_empty(nsx):
    with nft.NFT() as sock:
        assert sock.table("inet", "nope") is None
        assert sock.chain("inet", "nope", "c") is None
        assert sock.rules("inet", "nope", "c") == []
        sock.commit(nft.Batch().add_table("inet", "t"))
        assert sock.chain("inet", "t", "c") is None
        assert sock.rules("inet", "t", "c") == []
        assert sock.rules("inet", "t") == []
        sock.commit(nft.Batch())                            # empty: nothing sent


def test_a_failing_command_fails_the_whole_transaction(nsx):
    b = nft.Batch().add_table("inet", "t").add_chain("inet", "t", "c")
    b.add_rule("inet", "t", "c", nft.accept())
    b.delete_rule("inet", "t", "c", 4242)
    with nft.NFT() as sock:
        with pytest.raises(OSError) as e:
            sock.commit(b)
        assert e.value.errno == errno.ENOENT
        assert "delete rule 4242 from t c" in str(e.value)
        assert sock.table("inet", "t") is None              # nothing applied
        # and the socket is still usable: leftover acks are skipped by sequence number
        sock.commit(nft.Batch().add_table("inet", "t"))
        assert sock.table("inet", "t") is not None


def test_rule_to_a_missing_chain_names_the_command(nsx):
    with nft.NFT() as sock, pytest.raises(OSError) as e:
        sock.commit(nft.Batch().add_table("inet", "t").add_rule("inet", "t", "gone",
                                                                nft.accept()))
    assert e.value.errno == errno.ENOENT and "add rule to t gone" in str(e.value)


def test_many_rules_list_fast(nsx):
    b = nft.Batch().add_table("inet", "t").add_chain("inet", "t", "c")
    for i in range(300):
        src = f"10.9.{i // 200}.{i % 200 + 1}"
        b.add_rule("inet", "t", "c", [*nft.nfproto(4), *nft.addr("saddr", src), *nft.masq()],
                   comment=f"rule {i}")
    with nft.NFT() as sock:
        sock.commit(b)
        t = time.perf_counter()
        rules = sock.rules("inet", "t", "c")                # spans several recv() calls
        took = time.perf_counter() - t
    assert [r.comment for r in rules] == [f"rule {i}" for i in range(300)]
    assert took < 0.5, f"listing 300 rules took {took * 1e3:.0f} ms"


CHURN = """
import sys
from cni_plugins.net import nft
with nft.NFT() as sock:
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    while True:
        sock.commit(nft.Batch().insert_rule("inet", "t", "c", nft.drop(), comment="churn"))
        for r in sock.rules("inet", "t", "c"):
            if r.comment == "churn":
                sock.commit(nft.Batch().delete_rule("inet", "t", "c", r.handle))
"""


def test_listing_is_consistent_while_others_commit(netns):
    """A dump spanning several reads while another process adds and removes rules at the
    head of the chain would skip or repeat rules (the kernel resumes by position): every
    listing must still hold each untouched rule exactly once. (The committer is a process,
    as on a node: a thread of this interpreter would hand it the GIL at every read.)"""
    keep = [f"keep {i}" for i in range(300)]
    with inside(netns), nft.NFT() as sock:
        b = nft.Batch().add_table("inet", "t").add_chain("inet", "t", "c")
        for c in keep:
            b.add_rule("inet", "t", "c", nft.accept(), comment=c)
        sock.commit(b)
    churn = subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-c", CHURN],
                             stdout=subprocess.PIPE)
    try:
        assert churn.stdout is not None and churn.stdout.readline() == b"ready\n"
        with inside(netns):
            for _ in range(40):
                with nft.NFT() as sock:                     # fresh socket: small 1st read
                    got = [r.comment for r in sock.rules("inet", "t", "c")
                           if r.comment != "churn"]
                assert got == keep
        assert churn.poll() is None                         # it was committing all along
    finally:
        churn.kill()
        churn.wait()


def test_without_privilege_fails_fast_instead_of_hanging(netns):
    script = ("import time, errno\n"
              "from cni_plugins.net import nft\n"
              "t = time.perf_counter()\n"
              "with nft.NFT(timeout=5) as s:\n"
              "    try:\n"
              "        s.commit(nft.Batch().add_table('inet', 't'))\n"
              "    except OSError as e:\n"
              "        print(e.errno, round(time.perf_counter() - t, 3))\n")
    out = subprocess.run(["ip", "netns", "exec", netns.name, "setpriv", "--reuid=65534",
                          "--regid=65534", "--clear-groups", sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    err, took = out.stdout.split()
    assert int(err) == errno.EPERM and float(took) < 2
