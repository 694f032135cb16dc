"""portmap without the kernel: config parsing (codes, field names, Go's key matching),
which container addresses are forwarded, and the rules per address."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.meta import portmap
from cni_plugins.net.firewall import hostport
from cni_plugins.net.firewall.hostport import Mapping
from cni_plugins.skel import CmdArgs
from cni_plugins.types import Interface, IPConfig, Result
from tests.fixtures.conf import cmd_args


def args(conf: dict[str, Any]) -> CmdArgs:
    return cmd_args({"type": "portmap", **conf}, container_id="c1", ifname="eth0")


def maps(*entries: dict) -> dict:
    return {"runtimeConfig": {"portMappings": list(entries)}}


def test_defaults_and_mappings():
    c = portmap.load_conf(args(maps({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                                    {"hostPort": 53, "containerPort": 53, "protocol": "UDP",
                                     "hostIP": "127.0.0.1"})))
    assert (c.snat, c.masq_all, c.mark_masq_bit) == (True, False, 13)
    assert c.mappings == [Mapping(8080, 80, "tcp"), Mapping(53, 53, "udp", "127.0.0.1")]


def test_keys_match_case_insensitively_exact_first():
    c = portmap.load_conf(args({"SNAT": False, "snat": True, "MasqAll": True,
                                "RUNTIMECONFIG": {"portmappings": [
                                    {"HOSTPORT": 1, "containerport": 2, "Protocol": "sctp",
                                     "hostip": "::"}]}}))
    assert (c.snat, c.masq_all) == (True, True)
    assert c.mappings == [Mapping(1, 2, "sctp", "::")]


def test_no_mappings():
    assert portmap.load_conf(args({})).mappings == []
    assert portmap.load_conf(args({"runtimeConfig": {}})).mappings == []
    assert portmap.load_conf(args(maps())).mappings == []


BAD = [
    (maps({"hostPort": 0, "containerPort": 1, "protocol": "tcp"}), 7,
     "invalid config: runtimeConfig.portMappings[0].hostPort: must be a port number from 1 to "
     "65535"),
    (maps({"hostPort": 1, "containerPort": 65536, "protocol": "tcp"}), 7,
     "invalid config: runtimeConfig.portMappings[0].containerPort: must be a port number from "
     "1 to 65535"),
    (maps({"hostPort": True, "containerPort": 1, "protocol": "tcp"}), 7,
     "invalid config: runtimeConfig.portMappings[0].hostPort: expected an integer, got a "
     "boolean"),
    (maps({"hostPort": 1.0, "containerPort": 1, "protocol": "tcp"}), 7,
     "invalid config: runtimeConfig.portMappings[0].hostPort: expected an integer, got a "
     "number"),
    (maps({"containerPort": 1, "protocol": "tcp"}), 7,
     "invalid config: runtimeConfig.portMappings[0].hostPort: must be a port number from 1 to "
     "65535"),
    (maps({"hostPort": 1, "containerPort": 1, "protocol": "icmp"}), 7,
     "invalid config: runtimeConfig.portMappings[0].protocol: unknown protocol 'icmp', "
     "expected one of tcp, udp, sctp"),
    (maps({"hostPort": 1, "containerPort": 1, "protocol": "tcp", "hostIP": "1.2.3"}), 7,
     "invalid config: runtimeConfig.portMappings[0].hostIP: invalid IP address '1.2.3'"),
    (maps({"hostPort": 1, "containerPort": 1, "protocol": "tcp", "hostIP": 5}), 7,
     "invalid config: runtimeConfig.portMappings[0].hostIP: expected a string, got a number"),
    (maps("8080:80"), 7,
     "invalid config: runtimeConfig.portMappings[0]: expected an object, got a string"),
    ({"runtimeConfig": []}, 7, "invalid config: runtimeConfig: expected an object, got a list"),
    ({"snat": 1}, 7, "invalid config: snat: expected a boolean, got a number"),
    ({"masqAll": "true"}, 7, "invalid config: masqAll: expected a boolean, got a string"),
    ({"markMasqBit": -1}, 7, "invalid config: markMasqBit: must be between 0 and 31"),
    ({"backend": "iptables"}, 2, 'invalid config: backend: "iptables" is not supported: use '
                                 '"nftables" or leave backend unset (the rules then go to '
                                 "nftables table cni_hostport, ip and ip6)"),
    ({"backend": ""}, 7, "invalid config: backend: unknown backend '', expected \"nftables\""),
    ({"externalSetMarkChain": "KUBE-MARK-MASQ"}, 2,
     "invalid config: externalSetMarkChain: not supported: it names an iptables chain, and "
     "the nftables backend masquerades without marks"),
    ({"conditionsV4": ["ip daddr != 10.0.0.0/8"]}, 2,
     "invalid config: conditionsV4: not supported: it holds nftables rule text, and this "
     "implementation builds every rule itself (it has no nft or iptables parser)"),
    ({"conditionsV6": "-d ::1"}, 7,
     "invalid config: conditionsV6: expected a list, got a string"),
    ({"snat": None, "markMasqBit": None, "runtimeConfig": None}, 0, ""),
]


@pytest.mark.parametrize("conf,code,msg", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_config(conf, code, msg):
    if not code:                        # null is the zero value: the defaults
        c = portmap.load_conf(args(conf))
        assert (c.snat, c.mark_masq_bit, c.mappings) == (True, 13, [])
        return
    with pytest.raises(CNIError) as e:
        portmap.load_conf(args(conf))
    assert (e.value.code, e.value.msg) == (code, msg)


def test_empty_conditions_are_accepted():
    portmap.load_conf(args({"conditionsV4": [], "conditionsV6": ["", " "]}))


def _result(*ips: tuple[str, int | None]) -> Result:
    return Result(interfaces=[Interface("cni0"), Interface("veth1"),
                              Interface("eth0", sandbox="/run/netns/x"),
                              Interface("net1", sandbox="/run/netns/x")],
                  ips=[IPConfig(a, interface=i) for a, i in ips])


def test_container_ips_are_the_first_of_each_family_on_ifname():
    r = _result(("10.0.0.9/24", 3), ("10.0.0.5/24", 2), ("10.0.0.6/24", 2),
                ("fd00::5/64", None), ("fd00::6/64", 2), ("192.168.0.1/24", 0))
    assert portmap.container_ips(r, "eth0") == ["10.0.0.5/24", "fd00::5/64"]
    assert portmap.container_ips(r, "net1") == ["10.0.0.9/24", "fd00::5/64"]
    assert portmap.container_ips(_result(("10.0.0.1/24", 1)), "eth0") == []


def test_container_ips_refuse_garbage():
    with pytest.raises(CNIError) as e:
        portmap.container_ips(_result(("10.0.0.300/24", 2)), "eth0")
    assert e.value.code == 7 and "prevResult.ips" in e.value.msg


def test_rules_per_address():
    ms = [Mapping(80, 8080, "tcp"), Mapping(81, 81, "udp", "192.168.1.1"),
          Mapping(82, 82, "tcp", "0.0.0.0"), Mapping(83, 83, "tcp", "fd00::1"),
          Mapping(84, 84, "tcp", "::"), Mapping(85, 85, "tcp", "::ffff:192.168.1.2")]
    v4 = hostport.container_rules("10.0.0.5/24", ms, snat=True)
    assert [c for c, _ in v4] == ["hostports", "hostip_hostports", "hostports",
                                  "hostip_hostports", "masquerading", "masquerading"]
    v6 = hostport.container_rules("fd00::5/64", ms, snat=True)
    assert [c for c, _ in v6] == ["hostports", "hostip_hostports", "hostports",
                                  "masquerading"]
    assert [c for c, _ in hostport.container_rules("fd00::5/64", ms, snat=False)] == \
        ["hostports", "hostip_hostports", "hostports"]
    masq_all = hostport.container_rules("10.0.0.5/24", ms + ms[:1], snat=True, masq_all=True)
    assert [c for c, _ in masq_all].count("masquerading") == 4     # one per forwarded port


def test_parse_ip():
    ip = hostport.parse_ip("10.1.2.3")
    assert (ip.version, ip.packed) == (4, bytes([10, 1, 2, 3]))
    ip = hostport.parse_ip("::ffff:10.1.2.3")
    assert (ip.version, ip.packed) == (4, bytes([10, 1, 2, 3]))
    assert hostport.parse_ip("fd00::1").version == 6
    for bad in ("", "10.1.2", "010.1.2.3", "fd00:::1", "10.0.0.1/24"):
        with pytest.raises(ValueError):
            hostport.parse_ip(bad)


def _attr(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes(-len(payload) % 4)


@pytest.mark.parametrize("family", [2, 10])
def test_conntrack_dump_request_filters_on_protocol_and_port(family):
    """The dump asks the kernel for one protocol's entries to one port: CTA_TUPLE_ORIG
    with the protocol and port, and a CTA_FILTER (flagged nested: the kernel requires it) whose
    original-direction flags name exactly those two."""
    from cni_plugins.net import conntrack

    tuple_orig = _attr(2, _attr(1, struct.pack("B", 17)) + _attr(3, struct.pack(">H", 5353)))
    filt = _attr(1, struct.pack("=I", (1 << 3) | (1 << 5))) + _attr(2, struct.pack("=I", 0))
    body = struct.pack(">BBH", family, 0, 0) + _attr(1, tuple_orig) \
        + _attr(25 | 0x8000, filt)
    want = struct.pack("=IHHII", 16 + len(body), (1 << 8) | 1, 0x1 | 0x300, 9, 0) + body
    assert conntrack.dump_request(17, 5353, family, 9) == want
