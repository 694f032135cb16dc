"""bandwidth without the kernel: Go's ifb names and tbf numbers, and config parsing."""

from __future__ import annotations


import pytest

from cni_plugins.errors import CNIError
from cni_plugins.meta import bandwidth
from cni_plugins.net import tc
from cni_plugins.skel import CmdArgs
from tests.fixtures.conf import cmd_args


def test_ifb_names_are_gos():
    """Read off the Go plugin 1.1.1's devices for network "bwnet"."""
    assert bandwidth.ifb_name("bwnet", "c1") == "bwp459546d14214"
    assert bandwidth.ifb_name("bwnet", "c2") == "bwpf5c260401a5f"
    assert bandwidth.ifb_name("bwnet", "c3") == "bwp6b9b77185aba"
    assert len(bandwidth.ifb_name("n" * 300, "c" * 300)) == 15


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc/net/psched of these machines: 1000 64 1000000 (15.625 ticks per µs)."""
    monkeypatch.setattr(tc, "_tick_in_usec", 15.625)


@pytest.mark.parametrize("rate,burst,want", [
    (8_000_000, 80_000, (1_000_000, 156_250, 35_000)),      # what Go programmed
    (16_000_000, 160_000, (2_000_000, 156_250, 70_000)),
    (1_000_000, 1_000_001, (125_000, 15_625_000, 128_125)),  # bits round down to bytes
    (100_000 * 1_000_000, 8 * 0xFFFFFFFF - 9,               # limit wraps at 32 bits, as Go's
     (12_500_000_000, 5_368_703, (312_500_000 + 0xFFFFFFFD) & 0xFFFFFFFF)),
])
def test_tbf_numbers(rate, burst, want, ticks):
    t = tc.Tbf.from_bits(rate, burst)
    assert (t.rate, t.buffer, t.limit) == want


def test_tbf_refuses_what_the_kernel_cannot_hold(ticks):
    with pytest.raises(ValueError, match="rounds to 0 bytes"):
        tc.Tbf.from_bits(7, 800)
    with pytest.raises(ValueError, match="to fill"):
        tc.Tbf.from_bits(8, 8 * 10**9)


def args(conf: dict) -> CmdArgs:
    return cmd_args({"type": "bandwidth", **conf})


def test_static_keys_win_even_when_zero():
    runtime = {"runtimeConfig": {"bandwidth": {"egressRate": 8000, "egressBurst": 800}}}
    assert bandwidth.load_bandwidth(args({"ingressRate": 0, **runtime})) == \
        bandwidth.Bandwidth()
    bw = bandwidth.load_bandwidth(args(runtime))
    assert bw.ingress is None and bw.egress is not None and bw.egress.rate == 1000


def test_keys_fold_case_and_null_is_zero():
    bw = bandwidth.load_bandwidth(args({"INGRESSRATE": 8000, "ingressburst": 800,
                                        "egressRate": None}))
    assert bw.ingress is not None and bw.ingress.rate == 1000 and bw.egress is None
    bw = bandwidth.load_bandwidth(args({"RuntimeConfig": {"Bandwidth": {
        "EgressRate": 8000, "EgressBurst": 800}}}))
    assert bw.egress is not None


@pytest.mark.parametrize("conf,code,msg", [
    ({"ingressRate": 8000}, 7,
     "invalid config: ingressBurst: if ingressRate is set, ingressBurst must also be set"),
    ({"egressBurst": 8000}, 7,
     "invalid config: egressRate: if egressBurst is set, egressRate must also be set"),
    ({"egressRate": 8000, "egressBurst": 8 * 0xFFFFFFFF}, 7,
     "invalid config: egressBurst: burst cannot be more than 4GB"),
    ({"ingressRate": -5, "ingressBurst": 8}, 7,
     "invalid config: ingressRate: must be a whole number of bits per second, 0 to 2^64-1"),
    ({"ingressRate": 80, "ingressBurst": 8.0}, 7,
     "invalid config: ingressBurst: expected an integer, got a number"),
    ({"ingressRate": 80, "ingressBurst": 1 << 64}, 7,
     "invalid config: ingressBurst: must be a whole number of bits, 0 to 2^64-1"),
    ({"shapedSubnets": ["10.0.0.0/8"]}, 2,
     "invalid config: shapedSubnets: not supported (every packet is shaped)"),
    ({"runtimeConfig": {"bandwidth": {"ingressBurst": 8}}}, 7,
     "invalid config: runtimeConfig.bandwidth.ingressRate: if ingressBurst is set, "
     "ingressRate must also be set"),
])
def test_bad_config(conf, code, msg):
    with pytest.raises(CNIError) as e:
        bandwidth.load_bandwidth(args(conf))
    assert (e.value.code, e.value.msg) == (code, msg)


def test_exact_key_wins_over_folded_one():
    """One rule for every plugin: an exact match first, whatever the order (was: last wins)."""
    for conf in ({"ingressRate": 8000, "INGRESSRATE": 16000, "ingressBurst": 800},
                 {"INGRESSRATE": 16000, "ingressRate": 8000, "ingressBurst": 800}):
        bw = bandwidth.load_bandwidth(args(conf))
        assert bw.ingress is not None and bw.ingress.rate == 1000
