#!/usr/bin/env python3
"""Plugin exec latency, ours against the Go reference plugins, in one alternating run.

    .venv/bin/python bench/bench.py [--bin PATH ...] [--runs N] [--only NAME[,NAME]]

Every case runs as iterations; in each, every implementation (ours, then Go; the order
flips each iteration) gets a fresh context (scratch dir, netns if the case needs one), its
setup, its verbs timed one by one, and its teardown. Only the exec of a verb is timed:
spawn, feed stdin, read stdout, reap. `--bin` names our executable (default: the venv's
cni-plugins script; dist/cni-plugins/cni-plugins for the PyInstaller build); it is repeatable
to compare builds, and each is installed as symlinks in a temp dir used as its CNI_PATH.

To add a case, append a Case to CASES: plugin type, verbs, config (a dict or a function
of the Ctx), netns / host_netns flags, extra env, setup/teardown callables, and the
expected exit status or CNI error code per verb. Every netns is named cnitest-bench-*,
and is deleted when its iteration ends, on failure, on Ctrl-C, and on SIGTERM.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(ROOT, ".venv", "bin", "cni-plugins")
DEFAULT_CNITOOL = os.path.join(ROOT, ".venv", "bin", "cnitool")
GO_DIR = "/usr/lib/cni"
NETNS_DIR = "/run/netns"
PREFIX = "cnitest-bench-"
CLONE_NEWNET = 0x40000000
WARMUP = 2


# -- the cases -------------------------------------------------------------------------


@dataclass
class Ctx:
    """One implementation's iteration of a case: what setup, config and teardown see."""

    impl: str                       # "go" or our label
    cni_path: str                   # CNI_PATH for this implementation
    tmp: str                        # scratch dir, removed after the iteration
    netns: str = ""                 # CNI_NETNS (a fresh netns when the case asks for one)
    host_netns: str = ""            # the throw-away netns the plugin runs in (host_netns cases)
    container_id: str = ""
    env: dict[str, str] = field(default_factory=dict)   # setup may add variables
    state: dict[str, Any] = field(default_factory=dict)  # free for setup/teardown


@dataclass
class Expect:
    status: int = 0                 # exit status
    code: int | None = None         # CNI error code in stdout (when status is 1)


@dataclass
class Case:
    name: str
    plugin: str                                       # CNI type: the symlink / Go binary name
    verbs: tuple[str, ...]                            # run in order, each timed separately
    config: dict[str, Any] | Callable[[Ctx], dict[str, Any]] | None = None
    netns: bool = False                               # fresh CNI_NETNS per iteration
    host_netns: bool = False                          # run the plugin in a throw-away "host" netns
    env: dict[str, str | None] = field(default_factory=dict)   # None removes a variable
    setup: Callable[[Ctx], None] | None = None        # untimed, before the first verb
    teardown: Callable[[Ctx], None] | None = None     # untimed, always, after the last verb
    expect: dict[str, Expect] = field(default_factory=dict)    # per verb; default status 0
    expect_go: dict[str, Expect] = field(default_factory=dict) # per verb, Go's where it differs
    ifname: str = "eth0"
    go_fallback: bool = False       # our CNI_PATH ends with the Go dir (a delegate we lack yet)
    prime: bool = False             # an untimed ADD of another pod first (its own netns): the
                                    # bridge, gateway address, masquerade table, IPAM store exist
    runner: Callable[[Ctx, str, str, bool], tuple[list[str], dict[str, str]]] | None = None
    # instead of exec'ing the plugin with CNI_* set: (argv, extra env) for (ctx, verb,
    # netns path, is the prime pod), e.g. a cnitool command line; stdin is then empty

    @property
    def needs_root(self) -> bool:
        return self.netns or self.host_netns


# 1.0.0: the newest version the Go plugins (Debian's 1.1.1) speak.
def _loopback_conf(version: str = "1.0.0") -> dict[str, Any]:
    return {"cniVersion": version, "name": "bench-lo", "type": "loopback"}


CASES: list[Case] = [
    Case("VERSION", "loopback", ("VERSION",), _loopback_conf()),
    # Errors found before any kernel work: the cost of a rejected request.
    Case("error: no CNI_IFNAME", "loopback", ("ADD",), _loopback_conf(),
         env={"CNI_IFNAME": None, "CNI_NETNS": f"{NETNS_DIR}/{PREFIX}absent"},
         expect={"ADD": Expect(1, 4)}),
    Case("error: bad cniVersion", "loopback", ("ADD",), _loopback_conf("9.9.9"),
         env={"CNI_NETNS": f"{NETNS_DIR}/{PREFIX}absent"},
         expect={"ADD": Expect(1, 1)}),
    # A config the plugin's model refuses (ours: 7, Go's: 999); both are pydantic models
    # on netconf, so standalone this includes pydantic's import (served: paid once).
    Case("error: portmap hostPort 0", "portmap", ("ADD",),
         {"cniVersion": "1.0.0", "name": "bench-pm", "type": "portmap",
          "runtimeConfig": {"portMappings": [{"hostPort": 0, "containerPort": 80,
                                              "protocol": "tcp"}]},
          "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.2/24"}]}},
         env={"CNI_NETNS": f"{NETNS_DIR}/{PREFIX}absent"},
         expect={"ADD": Expect(1, 7)}, expect_go={"ADD": Expect(1)}),
    Case("error: bridge mtu \"x\"", "bridge", ("ADD",),
         {"cniVersion": "1.0.0", "name": "bench-br", "type": "bridge", "mtu": "x",
          "ipam": {"type": "host-local", "subnet": "10.99.0.0/24"}},
         env={"CNI_NETNS": f"{NETNS_DIR}/{PREFIX}absent"},
         expect={"ADD": Expect(1, 7)}, expect_go={"ADD": Expect(1)}),
    Case("loopback", "loopback", ("ADD", "CHECK", "DEL"), _loopback_conf(), netns=True,
         ifname="lo"),
]


# IPAM: no netns needed (CNI_NETNS only has to be set); the store lives in the scratch dir.
# static's CHECK compares with the prevResult (what the interface plugin would pass on).
def _ipam_conf(ipam: dict[str, Any], prev: dict[str, Any] | None = None
               ) -> Callable[[Ctx], dict[str, Any]]:
    def conf(ctx: Ctx) -> dict[str, Any]:
        body = {**ipam, "dataDir": os.path.join(ctx.tmp, "ipam")} if ipam["type"] == "host-local" \
            else ipam
        c = {"cniVersion": "1.0.0", "name": "bench-ipam", "type": "bridge", "ipam": body}
        if prev:
            c["prevResult"] = prev
        return c
    return conf


_IPAM_ENV: dict[str, str | None] = {"CNI_NETNS": f"{NETNS_DIR}/{PREFIX}absent"}
CASES += [
    Case("host-local", "host-local", ("ADD", "DEL"),
         _ipam_conf({"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]]}),
         env=_IPAM_ENV),
    Case("host-local dual-stack", "host-local", ("ADD", "CHECK", "DEL"),
         _ipam_conf({"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}],
                                                      [{"subnet": "fd99::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}),
         env=_IPAM_ENV),
    Case("static", "static", ("ADD", "CHECK", "DEL"),
         _ipam_conf({"type": "static", "addresses": [{"address": "10.99.0.5/24",
                                                      "gateway": "10.99.0.1"}],
                     "routes": [{"dst": "0.0.0.0/0"}]},
                    prev={"cniVersion": "1.0.0",
                          "ips": [{"address": "10.99.0.5/24", "gateway": "10.99.0.1"}],
                          "routes": [{"dst": "0.0.0.0/0"}]}),
         env=_IPAM_ENV),
]


# bandwidth chained after a veth pair made in setup (untimed): ingress and egress limits, so
# ADD makes the tbf, the ifb, the ingress qdisc and the redirect; DEL removes the ifb.
def _bandwidth_setup(ctx: Ctx) -> None:
    subprocess.run(["ip", "link", "add", "bwveth0", "type", "veth", "peer", "name", "eth0",
                    "netns", ctx.netns], check=True, capture_output=True)
    subprocess.run(["ip", "link", "set", "bwveth0", "up"], check=True, capture_output=True)
    ctx.state["prev"] = {"cniVersion": "1.0.0", "interfaces": [
        {"name": "bwveth0"}, {"name": "eth0", "sandbox": ctx.netns}],
        "ips": [{"address": "10.99.0.2/24", "interface": 1}]}


def _bandwidth_conf(ctx: Ctx) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "bench-bw", "type": "bandwidth",
            "ingressRate": 8_000_000, "ingressBurst": 80_000,
            "egressRate": 8_000_000, "egressBurst": 80_000, "prevResult": ctx.state["prev"]}


CASES += [
    Case("bandwidth (ingress + egress)", "bandwidth", ("ADD", "CHECK", "DEL"), _bandwidth_conf,
         netns=True, host_netns=True, setup=_bandwidth_setup),
]


# tuning chained after a veth pair made in setup (untimed): a sysctl inside the pod and an
# MTU change, so ADD writes the backup file (dataDir in the scratch dir) and DEL restores it.
def _tuning_conf(ctx: Ctx) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "bench-tuning", "type": "tuning",
            "sysctl": {"net.core.somaxconn": "500"}, "mtu": 1400,
            "dataDir": os.path.join(ctx.tmp, "tuning"), "prevResult": ctx.state["prev"]}


def _veth_setup(host_end: str, addr: str = "") -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        cmds = [["link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns",
                 ctx.netns], ["link", "set", host_end, "up"]]
        if addr:
            cmds.append(["addr", "add", addr, "dev", host_end])
        for cmd in cmds:
            subprocess.run(["ip", *cmd], check=True, capture_output=True)
        ctx.state["prev"] = {"cniVersion": "1.0.0", "interfaces": [
            {"name": host_end}, {"name": "eth0", "sandbox": ctx.netns}],
            "ips": [{"address": "10.99.0.2/24", "interface": 1}]}
    return setup


CASES += [
    Case("tuning (sysctl + mtu)", "tuning", ("ADD", "CHECK", "DEL"), _tuning_conf,
         netns=True, host_netns=True, setup=_veth_setup("tnveth0")),
]


# portmap chained after a veth pair made in setup (untimed), one TCP mapping with snat, so
# ADD also sets route_localnet on the host end. Go's 1.1.1 portmap knows only iptables
# (19 iptables execs per ADD) against our one nftables transaction. "first pod": the ADD
# creates the table and chains in a fresh node; "pod 2": another pod's ADD (untimed, same
# implementation) has made them already, a node's steady state. Go's CHECK fails (it looks
# for the pod's chain in ip6tables too, even for an IPv4-only pod; for a dual-stack one it
# then wants the IPv4 rules in ip6tables): timed all the same, expected to exit 1.
def _portmap_setup(ctx: Ctx, prime: bool = False) -> None:
    for cmd in (["link", "add", "pmveth0", "type", "veth", "peer", "name", "eth0", "netns",
                 ctx.netns],
                ["link", "set", "pmveth0", "up"],
                ["addr", "add", "10.99.0.1/24", "dev", "pmveth0"]):
        subprocess.run(["ip", *cmd], check=True, capture_output=True)
    ctx.state["prev"] = {"cniVersion": "1.0.0", "interfaces": [
        {"name": "pmveth0"}, {"name": "eth0", "sandbox": ctx.netns}],
        "ips": [{"address": "10.99.0.2/24", "interface": 1}]}
    if prime:
        prev = {**ctx.state["prev"], "ips": [{"address": "10.99.0.3/24", "interface": 1}]}
        conf = _portmap_conf(ctx, 8081, prev)
        env = {**base_env(), **IMPL_ENV.get(ctx.impl, {}),
               "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "bench-prime",
               "CNI_NETNS": ctx.netns, "CNI_IFNAME": "eth0", "CNI_PATH": ctx.cni_path}
        subprocess.run([os.path.join(ctx.cni_path, "portmap")], input=json.dumps(conf).encode(),
                       env=env, check=True, capture_output=True)


def _portmap_conf(ctx: Ctx, port: int = 8080, prev: dict | None = None) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "bench-pm", "type": "portmap",
            "dataDir": os.path.join(ctx.tmp, "portmap"),
            "runtimeConfig": {"portMappings": [
                {"hostPort": port, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": prev or ctx.state["prev"]}


CASES += [
    Case("portmap (first pod)", "portmap", ("ADD", "DEL"), _portmap_conf,
         netns=True, host_netns=True, setup=_portmap_setup),
    Case("portmap (pod 2)", "portmap", ("ADD", "CHECK", "DEL"), _portmap_conf,
         netns=True, host_netns=True, setup=lambda ctx: _portmap_setup(ctx, prime=True),
         expect_go={"CHECK": Expect(1, 999)}),
]


# bridge, ptp and macvlan with host-local (ours delegates to our host-local, found in the
# same CNI_PATH; Go's to Go's), in a throw-away host netns, primed with one pod so that the
# timed ADD is a node's steady state: the bridge and its gateway address, the masquerade
# table and chain (ipMasq) and the IPAM store exist. ipMasq is Go's iptables path (1.1.1
# knows no other) against our nftables one; macvlan has no ipMasq in Go, so none here.
def _main_conf(plugin: str, masq: bool, **extra: Any) -> Callable[[Ctx], dict[str, Any]]:
    def conf(ctx: Ctx) -> dict[str, Any]:
        c = {"cniVersion": "1.0.0", "name": f"bench-{plugin}", "type": plugin, **extra,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]],
                      "dataDir": os.path.join(ctx.tmp, "ipam")}}
        if masq:
            c["ipMasq"] = True
        return c
    return conf


def _bridge_setup(ctx: Ctx) -> None:
    subprocess.run(["ip", "link", "add", "cnibench0", "type", "bridge"], check=True,
                   capture_output=True)


# macvlan's master: one end of a veth pair in the host netns, carrying the default route
# (the config names no master, so both implementations look it up, as on a plain node).
def _macvlan_setup(ctx: Ctx) -> None:
    for cmd in (["link", "add", "cnibm0", "type", "veth", "peer", "name", "cnibm1"],
                ["link", "set", "cnibm1", "up"], ["link", "set", "cnibm0", "up"],
                ["addr", "add", "192.0.2.1/24", "dev", "cnibm0"],
                ["route", "add", "default", "via", "192.0.2.254", "dev", "cnibm0"]):
        subprocess.run(["ip", *cmd], check=True, capture_output=True)


_BRIDGE = {"bridge": "cnibench0", "isGateway": True}
CASES += [
    Case("bridge+host-local", "bridge", ("ADD", "DEL"), _main_conf("bridge", False, **_BRIDGE),
         netns=True, host_netns=True, prime=True, setup=_bridge_setup),
    Case("bridge+host-local+ipMasq", "bridge", ("ADD", "DEL"),
         _main_conf("bridge", True, **_BRIDGE),
         netns=True, host_netns=True, prime=True, setup=_bridge_setup),
    Case("ptp+host-local", "ptp", ("ADD", "DEL"), _main_conf("ptp", False),
         netns=True, host_netns=True, prime=True),
    Case("ptp+host-local+ipMasq", "ptp", ("ADD", "DEL"), _main_conf("ptp", True),
         netns=True, host_netns=True, prime=True),
    Case("macvlan+host-local", "macvlan", ("ADD", "DEL"), _main_conf("macvlan", False),
         netns=True, host_netns=True, prime=True, setup=_macvlan_setup),
]

# host-device moves a host link into the pod (renamed to eth0) and back on DEL: one end of a
# veth pair made in setup, as this kernel has no dummy links. prevResult (what ADD returns)
# is in every verb's config, for CHECK. Of the other link plugins both sides have, vlan,
# ipvlan and vrf need link types this kernel lacks (they run in tests/guest); Go 1.1.1 has
# no tap and no dummy.
def _host_device_setup(ctx: Ctx) -> None:
    subprocess.run(["ip", "link", "add", "hdbench0", "type", "veth", "peer", "name",
                    "hdbench1"], check=True, capture_output=True)


def _host_device_conf(ctx: Ctx) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "bench-hd", "type": "host-device",
            "device": "hdbench0", "prevResult": {
                "cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": ctx.netns}]}}


CASES += [
    Case("host-device", "host-device", ("ADD", "CHECK", "DEL"), _host_device_conf,
         netns=True, host_netns=True, setup=_host_device_setup),
]


# A pod's whole cycle as a runtime drives it: `cnitool add|check|del` of the seed's conflist
# (bridge + host-local, tuning with a sysctl, portmap with one mapping through CAP_ARGS), in
# a throw-away host netns primed with one pod (port 8081) so that the bridge exists. Ours:
# our cnitool (the venv's Python libcni) exec'ing each --bin's plugins; Go's: the Go libcni
# driven as Go's cnitool does (tests/fixtures/go_libcni, built at start) exec'ing
# /usr/lib/cni, or, without a Go toolchain, our cnitool exec'ing Go's plugins. Go's CHECK
# exits 1 (its portmap CHECK, see above) after bridge's and tuning's have run.
CYCLE_NET = "bench-pod"
TOOLS: dict[str, list[str]] = {}             # label -> cnitool argv prefix (set in main)
TOOL_ENV: dict[str, dict[str, str]] = {}     # label -> extra env of that tool


def _cycle_setup(ctx: Ctx) -> None:
    conflist = {"cniVersion": "1.0.0", "name": CYCLE_NET, "plugins": [
        {"type": "bridge", "bridge": "cnibench0", "isGateway": True,
         "ipam": {"type": "host-local", "subnet": "10.99.0.0/16", "gateway": "10.99.0.1",
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": os.path.join(ctx.tmp, "ipam")},
         "dns": {"nameservers": ["10.99.0.1"]}},
        {"type": "tuning", "capabilities": {"mac": True}, "sysctl": {"net.core.somaxconn": "500"},
         "dataDir": os.path.join(ctx.tmp, "tuning")},
        {"type": "portmap", "capabilities": {"portMappings": True},
         "dataDir": os.path.join(ctx.tmp, "portmap")}]}
    os.mkdir(os.path.join(ctx.tmp, "net.d"))
    with open(os.path.join(ctx.tmp, "net.d", "10-bench.conflist"), "w") as f:
        json.dump(conflist, f)


def _cycle_runner(ctx: Ctx, verb: str, netns: str, prime: bool
                  ) -> tuple[list[str], dict[str, str]]:
    port = 8081 if prime else 8080
    env = {**TOOL_ENV.get(ctx.impl, {}), "NETCONFPATH": os.path.join(ctx.tmp, "net.d"),
           "CNI_CACHE_DIR": os.path.join(ctx.tmp, "cache"), "CNI_IFNAME": "eth0",
           "CAP_ARGS": json.dumps({"portMappings": [
               {"hostPort": port, "containerPort": 80, "protocol": "tcp"}]})}
    return [*TOOLS[ctx.impl], verb.lower(), CYCLE_NET, netns], env


CASES += [
    Case("pod cycle (cnitool)", "bridge", ("ADD", "CHECK", "DEL"), None,
         netns=True, host_netns=True, prime=True, setup=_cycle_setup, runner=_cycle_runner,
         expect_go={"CHECK": Expect(1)}),
]

# What masquerading costs: (ADD+DEL with ipMasq) - (ADD+DEL without), per implementation.
MASQ_PAIRS: list[tuple[str, str, str]] = [
    ("bridge", "bridge+host-local+ipMasq", "bridge+host-local"),
    ("ptp", "ptp+host-local+ipMasq", "ptp+host-local"),
]


# The issues' targets, as ratios ours/go of the medians (one line per target and our build).
# (issue, case, verbs, the largest ratio that passes, which builds: "all" or "srv" for the
# served columns only). #12's are for the fast path: the native shim and the pre-forked server.
_ERRORS = ("error: no CNI_IFNAME", "error: bad cniVersion", "error: portmap hostPort 0",
           'error: bridge mtu "x"')
_IFACES = ("bridge", "ptp", "macvlan")
TARGETS: list[tuple[str, str, tuple[str, ...], float, str]] = [
    ("#5", "portmap (pod 2)", ("ADD", "DEL"), 0.5, "all"),
    ("#5", "portmap (first pod)", ("ADD", "DEL"), 0.5, "all"),
    ("#6", "VERSION", ("VERSION",), 3.0, "all"),
    *[("#6", name, ("ADD",), 3.0, "all") for name in _ERRORS],
    ("#12", "VERSION", ("VERSION",), 0.5, "srv"),
    *[("#12", f"{p}+host-local", ("ADD",), 1.0, "srv") for p in _IFACES],
    *[("#12", f"{p}+host-local", ("ADD",), 0.7, "srv") for p in _IFACES],    # the stretch
    *[("#12", f"{p}+host-local", ("DEL",), 1.0, "srv") for p in _IFACES],
    ("#12", "portmap (pod 2)", ("ADD", "DEL"), 0.5, "srv"),
    *[("#12", name, ("ADD", "CHECK", "DEL"), 1.0, "srv")
      for name in ("loopback", "tuning (sysctl + mtu)", "bandwidth (ingress + egress)")],
]
FROZEN_SLACK_MS = 10.0     # #6: the frozen build's start-up (VERSION) within 10 ms of the venv's


# -- namespaces ------------------------------------------------------------------------

_made: set[str] = set()


def netns_add() -> str:
    name = PREFIX + uuid.uuid4().hex[:12]
    _made.add(name)                 # before the command: a half-made one is still removed
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    return name


def netns_del(name: str) -> None:
    if not name.startswith(PREFIX):
        raise ValueError(f"refusing to delete netns {name!r}: not ours")
    if os.path.lexists(os.path.join(NETNS_DIR, name)):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    _made.discard(name)


def cleanup_all() -> None:
    for name in sorted(_made):
        netns_del(name)


_libc: Any = None


def _setns(fd: int) -> None:
    global _libc
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def inside(netns_name: str) -> Iterator[None]:
    """This thread (and so the plugins it spawns) in `netns_name`; back on exit."""
    if not netns_name:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(os.path.join(NETNS_DIR, netns_name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


# -- one exec ----------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float                  # wall, spawn to reap
    cpu: float                      # user+sys of the child and the children it waited for
    status: int
    stdout: bytes
    stderr: bytes


def spawn(argv: list[str], env: dict[str, str], stdin: bytes, stderr_file: int) -> Outcome:
    """Exec `argv` (argv[0] a path) with `stdin`; timed from spawn to reap."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.ftruncate(stderr_file, 0)
    os.lseek(stderr_file, 0, os.SEEK_SET)
    actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
               (os.POSIX_SPAWN_DUP2, stderr_file, 2)]
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    os.close(in_r)
    os.close(out_w)
    try:
        os.write(in_w, stdin)       # configs are far below the pipe buffer
    except BrokenPipeError:
        pass
    os.close(in_w)
    chunks = []
    while chunk := os.read(out_r, 65536):
        chunks.append(chunk)
    _, wstatus, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t0
    os.close(out_r)
    os.lseek(stderr_file, 0, os.SEEK_SET)
    err = os.read(stderr_file, 4096)
    return Outcome(elapsed, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(wstatus),
                   b"".join(chunks), err)


# Extra environment per implementation label (set in main): for a venv, its bytecode cache
# and, with --tree, the snapshot to import cni_plugins from.
IMPL_ENV: dict[str, dict[str, str]] = {}


def base_env() -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE (set in some dev shells) would make a venv plugin compile every
    # module on every exec once its .pyc files are stale; an installed package has them.
    # SERVER_ENV: a path that cannot exist, so that a server running on this node never
    # answers for a standalone exec (the --server columns set their own).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CNI_") and k != "PYTHONDONTWRITEBYTECODE"}
    env[SERVER_ENV] = NO_SERVER
    return env


def check(case: Case, impl: str, verb: str, out: Outcome) -> str:
    """'' when the outcome is what the case expects, else a description."""
    want = case.expect.get(verb, Expect())
    if impl == "go":
        want = case.expect_go.get(verb, want)
    problem = ""
    if out.status != want.status:
        problem = f"exit {out.status}, expected {want.status}"
    elif want.code is not None:
        try:
            code = json.loads(out.stdout).get("code")
        except ValueError:
            code = None
        if code != want.code:
            problem = f"error code {code}, expected {want.code}"
    if problem:
        text = (out.stdout or out.stderr).decode(errors="replace").strip().replace("\n", " ")
        problem += f": {text[:300]}"
    return problem


def run_iteration(case: Case, impl: str, cni_path: str, go_dir: str, stderr_file: int,
                  metric: str = "wall"
                  ) -> tuple[dict[str, float], list[tuple[tuple[str, str], str]]]:
    """Setup, timed verbs, teardown for one implementation; (seconds per verb, problems)."""
    ctx = Ctx(impl=impl, cni_path=cni_path, tmp=tempfile.mkdtemp(prefix="cni-bench-"),
              container_id="bench-" + uuid.uuid4().hex[:12])
    made = []
    times: dict[str, float] = {}
    problems: list[tuple[tuple[str, str], str]] = []
    try:
        if case.host_netns:
            ctx.host_netns = netns_add()
            made.append(ctx.host_netns)
        if case.netns:
            name = netns_add()
            made.append(name)
            ctx.netns = os.path.join(NETNS_DIR, name)
        if case.setup:
            with inside(ctx.host_netns):
                case.setup(ctx)
        conf = case.config(ctx) if callable(case.config) else case.config
        stdin = json.dumps(conf).encode() if conf is not None else b""
        env = base_env()
        env.update(CNI_CONTAINERID=ctx.container_id, CNI_NETNS=ctx.netns, CNI_IFNAME=case.ifname,
                   CNI_PATH=cni_path)
        env.update(IMPL_ENV.get(impl, {}))
        env.update(ctx.env)
        for k, v in case.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        if case.go_fallback and impl != "go":
            env["CNI_PATH"] = f"{cni_path}:{go_dir}"
        plugin = os.path.join(cni_path, case.plugin)

        def command(verb: str, netns: str, prime: bool) -> tuple[list[str], dict[str, str]]:
            if case.runner:         # a runtime-side tool: it sets the CNI_* of each plugin
                argv, extra = case.runner(ctx, verb, netns, prime)
                renv = {k: v for k, v in env.items()
                        if not k.startswith("CNI_") or k == "CNI_PATH"}
                return argv, {**renv, **extra}
            if prime:
                return [plugin], dict(env, CNI_COMMAND=verb, CNI_NETNS=netns,
                                      CNI_CONTAINERID=ctx.container_id + "-prime")
            return [plugin], dict(env, CNI_COMMAND=verb)

        if case.prime:
            name = netns_add()
            made.append(name)
            argv, penv = command("ADD", os.path.join(NETNS_DIR, name), True)
            with inside(ctx.host_netns):
                out = spawn(argv, penv, stdin, stderr_file)
            if problem := check(case, impl, "ADD", out):
                problems.append(((impl, "prime ADD"), problem))
        for verb in case.verbs:
            argv, venv = command(verb, ctx.netns, False)
            with inside(ctx.host_netns):
                out = spawn(argv, venv, stdin, stderr_file)
            times[verb] = out.cpu if metric == "cpu" else out.seconds
            if problem := check(case, impl, verb, out):
                problems.append(((impl, verb), problem))
    finally:
        try:
            if case.teardown:
                with inside(ctx.host_netns):
                    case.teardown(ctx)
        finally:
            for name in made:
                netns_del(name)
            shutil.rmtree(ctx.tmp, ignore_errors=True)
    return times, problems


# -- the server fast path (issues 8, 12) ----------------------------------------------------

# The native shim every plugin link points at tries the socket named by this variable; the
# standalone columns (and throughput.py, profile_add.py: base_env) point it at a path that
# cannot exist, so a server running on this node can never answer for them.
SERVER_ENV = "CNI_PLUGINS_SOCKET"
NO_SERVER = "/dev/null/no-server.sock"
SERVER_START_TIMEOUT = 30.0


class Server:
    """`BIN serve --socket SOCK` for one build, for the whole run: the `label+srv` columns
    exec the same symlinks with SERVER_ENV=SOCK. Its stderr goes to a log next to the socket."""

    def __init__(self, label: str, binary: str, sock: str, env: dict[str, str]) -> None:
        self.label, self.sock, self.env = label, sock, env
        self.argv = [binary, "serve", "--socket", sock]
        self.log = os.path.join(os.path.dirname(sock), "serve.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss_start = 0

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.sock), mode=0o700)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log, errors="replace") as f:
                    tail = f.read()[-600:].strip()
                self.stop()
                raise SystemExit(f"bench: {' '.join(self.argv)} did not listen within "
                                 f"{SERVER_START_TIMEOUT:.0f} s: {tail or 'no output'}")
            time.sleep(0.05)
        self.rss_start = self.rss()

    def rss(self) -> int:
        """kB over the master and its workers (their --status), 0 when unknown."""
        try:
            out = subprocess.run([*self.argv, "--status", "--json"], capture_output=True,
                                 env=self.env, timeout=30).stdout
            return int(json.loads(out)["rss_kib"])
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
            return 0

    def stop(self) -> str:
        """Stop it; returns its memory and, from its --status, the time each plugin and
        verb took inside the server (p50/p90/p99 over the whole run, priming included)."""
        if not self.proc:
            return ""
        rss = self.rss()
        try:
            inside = subprocess.run([*self.argv, "--status"], capture_output=True, env=self.env,
                                    text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            inside = ""
        table = inside[inside.find("plugin "):] if "plugin " in inside else ""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        status, self.proc = self.proc.returncode, None
        return (f"server {self.label}: RSS {self.rss_start / 1024:.1f} MB after start, "
                f"{rss / 1024:.1f} MB at the end; exit {status}"
                + (f"; in-server time per plugin and verb (ms):\n{table.rstrip()}" if table else ""))


# -- reporting -----------------------------------------------------------------------------


def p90(values: list[float]) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       "")
    except OSError:
        pass
    u = os.uname()
    return (f"machine: {u.nodename}, nproc {os.cpu_count()}, kernel {u.release} {u.machine}"
            + (f", {cpu}" if cpu else "")
            + f"; load {os.getloadavg()[0]:.2f}; bench python {platform.python_version()}")


def label_for(path: str, taken: set[str]) -> str:
    real = os.path.realpath(path)
    if os.path.isdir(os.path.join(os.path.dirname(real), "_internal")):
        label = "frozen"
    else:
        with open(real, "rb") as f:
            label = "venv" if f.read(2) == b"#!" else os.path.basename(real)
    base, n = label, 2
    while label in taken:
        label, n = f"{base}{n}", n + 1
    return label


def snapshot(rev: str, directory: str) -> str:
    """cni_plugins at `rev`, extracted under `directory`; the path to put on PYTHONPATH."""
    tree = os.path.join(directory, "tree")
    os.mkdir(tree)
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "cni_plugins"],
                             capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"bench: git archive {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
    return tree


def install_links(binary: str, directory: str) -> None:
    r = subprocess.run([binary, "install", "--dir", directory], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench: {binary} install --dir {directory} failed: "
                         f"{(r.stderr or r.stdout).strip()}")


def setup_tools(opts: argparse.Namespace, impls: list[tuple[str, str]],
                bin_of: dict[str, str], linkdir: str, tree: str) -> str:
    """TOOLS/TOOL_ENV for the cnitool cases: each build's own `cnitool` (the multi-call
    binary runs it as `BIN cnitool`), else --cnitool; for Go, the Go libcni client
    (tests/fixtures/go_libcni/main.go, built here) or, without Go, --cnitool."""
    ours_tool = os.path.abspath(opts.cnitool)
    if not os.access(ours_tool, os.X_OK):
        raise SystemExit(f"bench: {ours_tool} is not executable (--cnitool)")
    env = {"PYTHONPYCACHEPREFIX": os.path.join(linkdir, "pyc")}
    if tree:
        env["PYTHONPATH"] = tree        # our cnitool's libcni from the snapshot too
    notes = []
    for label, _ in impls:
        TOOLS[label], TOOL_ENV[label] = [ours_tool], dict(env)
        b = bin_of.get(label)
        if b:                           # the build's own, with that build's environment
            benv = IMPL_ENV.get(label, {})
            probe = subprocess.run([b, "cnitool", "--help"], capture_output=True,
                                   env={**base_env(), **benv})
            if probe.returncode == 0:
                TOOLS[label], TOOL_ENV[label] = [b, "cnitool"], dict(benv)
            else:
                TOOL_ENV[label].update(benv)
            notes.append(f"{label}: {' '.join(TOOLS[label])}")
    go_tool, why = opts.go_cnitool, ""
    if not go_tool:
        spec = importlib.util.spec_from_file_location(
            "go_libcni", os.path.join(ROOT, "tests", "fixtures", "go_libcni.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        why = mod.missing()
        if not why:
            try:
                go_tool = mod.build(linkdir)
            except subprocess.CalledProcessError as e:
                why = f"go build failed: {e.stderr.decode(errors='replace').strip()[:200]}"
    if go_tool:
        TOOLS["go"], TOOL_ENV["go"] = [os.path.abspath(go_tool)], {}
        return (f"cnitool: {'; '.join(notes)} (Python libcni, exec'ing that build's plugins); "
                f"go: the Go libcni 1.1.2 as Go's cnitool drives it, exec'ing {opts.go_dir}")
    return (f"cnitool: {'; '.join(notes)}; go: {ours_tool} exec'ing {opts.go_dir} "
            f"(no Go libcni client: {why})")


def targets_report(results: dict[str, dict[tuple[str, str], list[float]]],
                   labels: list[str]) -> list[str]:
    """PASS/MISS per target and build, for the cases of this run; returns the MISS lines."""
    ours = labels[:-1]
    lines: list[tuple[str, str]] = []
    for issue, name, verbs, limit, which in TARGETS:
        samples = results.get(name)
        if not samples:
            continue
        for verb in verbs:
            go = samples.get(("go", verb))
            if not go:
                continue
            go_med = statistics.median(go)
            for lbl in ours:
                if which == "srv" and not lbl.endswith("+srv"):
                    continue
                vals = samples.get((lbl, verb))
                if not vals:
                    continue
                med = statistics.median(vals)
                ratio = med / go_med
                ok = ratio <= limit
                how = "" if ok else (f"  (target {limit * go_med:.1f} ms: "
                                     f"{med - limit * go_med:.1f} ms over, {ratio / limit:.1f}x)")
                lines.append((f"{issue:5} {name + ' ' + verb:38} {lbl:>10} {ratio:7.2f}x "
                              f"<= {limit:.1f}x  {'PASS' if ok else 'MISS'}{how}", issue))
    version = results.get("VERSION", {})
    for lbl in ours:
        if not lbl.startswith("frozen"):
            continue
        base = "venv" + lbl[len("frozen"):]
        f, v = version.get((lbl, "VERSION")), version.get((base, "VERSION"))
        if f and v:
            d = statistics.median(f) - statistics.median(v)
            ok = d <= FROZEN_SLACK_MS
            lines.append((f"{'#6':5} {'start-up: ' + lbl + ' - ' + base + ' (VERSION)':38} "
                          f"{lbl:>10} {d:+7.1f}ms <= {FROZEN_SLACK_MS:.0f}ms  "
                          f"{'PASS' if ok else 'MISS'}", "#6"))
    if lines:
        print("\ntargets (ratio = ours median / go median in this run; #12: the served columns)")
        for text, _ in sorted(lines, key=lambda t: t[1]):   # stable: by issue, in TARGETS order
            print(text, flush=True)
    return [t for t, _ in lines if "MISS" in t]


def masq_report(results: dict[str, dict[tuple[str, str], list[float]]],
                labels: list[str]) -> None:
    """(ADD+DEL with ipMasq) - (ADD+DEL without), from the medians of per-run ADD+DEL."""
    pairs = [p for p in MASQ_PAIRS if p[1] in results and p[2] in results]
    if not pairs:
        return
    ours = labels[:-1]
    print("\nmasquerading cost = median(ADD+DEL, ipMasq) - median(ADD+DEL, without), ms; "
          "ours: nftables netlink, go: iptables")
    header = f"{'plugin':28} {'':8}" + "".join(f" {lbl:>11} {'':7}" for lbl in labels)
    header += "".join(f" {lbl + '/go':>10}" for lbl in ours)
    print(header)
    for plugin, with_masq, without in pairs:
        cost: dict[str, float] = {}
        for lbl in labels:
            sums = []
            for case in (with_masq, without):
                add, dele = results[case].get((lbl, "ADD")), results[case].get((lbl, "DEL"))
                sums.append(statistics.median(a + d for a, d in zip(add, dele))
                            if add and dele else None)
            if None not in sums:
                cost[lbl] = sums[0] - sums[1]
        row = f"{plugin + ' ipMasq':28} {'ADD+DEL':8}"
        row += "".join(f" {cost[lbl]:11.1f} {'':7}" if lbl in cost else f" {'-':>11} {'':7}"
                       for lbl in labels)
        for lbl in ours:
            row += (f" {cost[lbl] / cost['go']:9.2f}x" if lbl in cost and cost.get("go", 0) > 0
                    else f" {'-':>10}")
        print(row, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", action="append", metavar="PATH",
                    help=f"our executable (repeatable; default {DEFAULT_BIN})")
    ap.add_argument("--runs", type=int, default=30, help="timed iterations per case (30)")
    ap.add_argument("--only", metavar="NAME[,NAME]",
                    help="cases whose name contains one of these (case-insensitive); "
                         "=NAME: that name exactly (=host-local: not bridge+host-local)")
    ap.add_argument("--go-dir", default=GO_DIR, help=f"the Go plugins ({GO_DIR})")
    ap.add_argument("--metric", choices=("wall", "cpu"), default="wall",
                    help="wall: spawn to reap (default); cpu: the plugin's user+sys time, "
                         "steadier on a loaded machine")
    ap.add_argument("--tree", metavar="REV",
                    help="a venv --bin imports cni_plugins from `git archive REV` in a temp dir "
                         "(PYTHONPATH) instead of the working tree others may be editing")
    ap.add_argument("--interleave", action="store_true",
                    help="run the selected cases in turn within every iteration (one table at "
                         "the end) instead of one case after the other; steadier differences "
                         "between cases, e.g. the masquerading cost")
    ap.add_argument("--cnitool", default=DEFAULT_CNITOOL,
                    help=f"our cnitool for the pod-cycle case ({DEFAULT_CNITOOL})")
    ap.add_argument("--go-cnitool", metavar="PATH",
                    help="a Go libcni client with cnitool's command line (default: build "
                         "tests/fixtures/go_libcni/main.go into the temp dir)")
    ap.add_argument("--server", action="store_true",
                    help="also run each --bin through a server of its own (`BIN serve --socket "
                         f"TMP/serve.sock`, {SERVER_ENV} set for its plugins) as label+srv")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    opts = ap.parse_args()

    if opts.list:
        for c in CASES:
            print(f"{c.name:28} {c.plugin:12} {' '.join(c.verbs)}"
                  + ("  [netns]" if c.netns else "") + ("  [host netns]" if c.host_netns else ""))
        return 0
    cases = CASES
    if opts.only:
        wanted = [w.strip().lower() for w in opts.only.split(",") if w.strip()]
        cases = [c for c in CASES
                 if any(c.name.lower() == w[1:] if w.startswith("=") else w in c.name.lower()
                        for w in wanted)]
        if not cases:
            raise SystemExit(f"bench: no case matches {opts.only!r} (see --list)")
    skipped = []
    if os.geteuid() != 0:
        skipped = [c.name for c in cases if c.needs_root]
        cases = [c for c in cases if not c.needs_root]

    bins = [os.path.abspath(b) for b in (opts.bin or [DEFAULT_BIN])]
    for b in bins:
        if not os.access(b, os.X_OK):
            raise SystemExit(f"bench: {b} is not executable")
    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # before anything is made: a signal during the setup (snapshot, links, the Go build,
    # servers) cleans up like one during the run
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even if started with it ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    linkdir = tempfile.mkdtemp(prefix="cni-bench-bin-")
    stderr_file = -1
    servers: list[Server] = []
    try:
        tree = snapshot(opts.tree, linkdir) if opts.tree else ""
        stderr_path = os.path.join(linkdir, "stderr")
        stderr_file = os.open(stderr_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        impls: list[tuple[str, str]] = []       # (label, CNI_PATH)
        bin_of: dict[str, str] = {}
        taken: set[str] = set()
        for b in bins:
            label = label_for(b, taken)
            taken.add(label)
            d = os.path.join(linkdir, label)
            install_links(b, d)
            impls.append((label, d))
            bin_of[label] = b
            IMPL_ENV[label] = {}
            if label != "frozen":
                IMPL_ENV[label]["PYTHONPYCACHEPREFIX"] = os.path.join(linkdir, "pyc")
                if tree:
                    IMPL_ENV[label]["PYTHONPATH"] = tree
        if opts.server:
            for label, d in list(impls):
                srv_label = label + "+srv"
                sock = os.path.join(linkdir, f"serve-{label}", "serve.sock")
                IMPL_ENV[srv_label] = {**IMPL_ENV[label], SERVER_ENV: sock}
                impls.append((srv_label, d))
                bin_of[srv_label] = bin_of[label]
                servers.append(Server(srv_label, bin_of[label], sock,
                                      {**base_env(), **IMPL_ENV[srv_label]}))
        impls.append(("go", opts.go_dir))
        tool_note = ""
        if any(c.runner for c in cases):
            tool_note = setup_tools(opts, impls, bin_of, linkdir, tree)
        for srv in servers:
            srv.start()
    except BaseException as e:
        for srv in servers:
            srv.stop()
        if stderr_file >= 0:
            os.close(stderr_file)
        shutil.rmtree(linkdir, ignore_errors=True)
        if isinstance(e, KeyboardInterrupt):
            print(f"bench: interrupted ({str(e) or 'Ctrl-C'}) during the setup; cleaned up",
                  file=sys.stderr)
            return 130
        raise

    now = datetime.datetime.now(datetime.timezone.utc).astimezone()
    print(f"cni-plugins bench, {now:%Y-%m-%d %H:%M:%S %Z}")
    print(machine())
    for label, _ in impls[:-1]:
        b, src = bin_of[label], ""
        if not label.startswith("frozen"):
            rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", opts.tree or "HEAD"],
                                 capture_output=True, text=True).stdout.strip()
            src = (f" (cni_plugins from {opts.tree}" + (f" = {rev}" if rev != opts.tree else "")
                   + ")" if opts.tree else f" (cni_plugins from the working tree, HEAD {rev})")
        srv = next((f" through `{' '.join(x.argv)}` (pid {x.proc.pid})" for x in servers
                    if x.label == label and x.proc), "")
        print(f"ours: {label} = {b}{src}{srv}")
    print(f"go:   {opts.go_dir}")
    if tool_note:
        print(tool_note)
    print(f"{opts.runs} timed runs per case after {WARMUP} warm-up, implementations alternating "
          f"(order flipped every run); {opts.metric} ms; ratio = ours median / go median")
    if skipped:
        print(f"skipped (need root): {', '.join(skipped)}")

    labels = [lbl for lbl, _ in impls]
    ours = labels[:-1]
    header = f"{'case':28} {'verb':8}" + "".join(f" {lbl + ' med':>11} {'p90':>7}" for lbl in labels)
    header += "".join(f" {lbl + '/go':>10}" for lbl in ours)
    print()
    print(header)
    print("-" * len(header))
    all_problems: list[str] = []
    results: dict[str, dict[tuple[str, str], list[float]]] = {}
    try:
        # --interleave: every iteration runs each case in turn, so that a change in the
        # machine's load hits all of them alike (what a difference of two cases needs).
        groups = [cases] if opts.interleave else [[c] for c in cases]
        for group in groups:
            present = {c.name: [(lbl, d) for lbl, d in impls
                                if os.access(os.path.join(d, c.plugin), os.X_OK)]
                       for c in group}
            samples_of: dict[str, dict[tuple[str, str], list[float]]] = \
                {c.name: {} for c in group}
            problems_of: dict[str, dict[tuple[str, str], str]] = {c.name: {} for c in group}
            for i in range(WARMUP + opts.runs):
                if sys.stderr.isatty():     # progress, on a terminal only
                    print(f"\r  {group[0].name if len(group) == 1 else 'all cases'}: "
                          f"iteration {i + 1}/{WARMUP + opts.runs} ", end="", file=sys.stderr,
                          flush=True)
                for case in group:
                    samples, problems = samples_of[case.name], problems_of[case.name]
                    order = present[case.name] if i % 2 == 0 else present[case.name][::-1]
                    for lbl, d in order:
                        times, probs = run_iteration(case, lbl, d, opts.go_dir, stderr_file,
                                                      opts.metric)
                        for key, text in probs:
                            problems.setdefault(key, text)   # the first per impl and verb
                        if i >= WARMUP:
                            for verb, t in times.items():
                                samples.setdefault((lbl, verb), []).append(t * 1000)
            if sys.stderr.isatty():
                print("\r\033[K", end="", file=sys.stderr, flush=True)
            for case in group:
                samples, problems = samples_of[case.name], problems_of[case.name]
                for verb in case.verbs:
                    row = f"{case.name:28} {verb:8}"
                    med = {}
                    for lbl in labels:
                        vals = samples.get((lbl, verb))
                        if vals:
                            med[lbl] = statistics.median(vals)
                            row += f" {med[lbl]:11.1f} {p90(vals):7.1f}"
                        else:
                            row += f" {'-':>11} {'-':>7}"
                    for lbl in ours:
                        if lbl in med and med.get("go"):
                            row += f" {med[lbl] / med['go']:9.2f}x"
                        else:
                            row += f" {'-':>10}"
                    print(row, flush=True)
                for (lbl, verb), text in problems.items():
                    print(f"  ! {case.name}: {lbl} {verb}: {text}", flush=True)
                all_problems += problems.values()
                results[case.name] = samples
        masq_report(results, labels)
        targets_report(results, labels)
    except KeyboardInterrupt as e:
        print(f"\nbench: interrupted ({str(e) or 'Ctrl-C'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        for srv in servers:
            print(srv.stop(), flush=True)
        cleanup_all()
        os.close(stderr_file)
        shutil.rmtree(linkdir, ignore_errors=True)
    if all_problems:
        print(f"\nbench: {len(all_problems)} unexpected outcome(s), see '!' lines", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
