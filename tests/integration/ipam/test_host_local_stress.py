"""host-local under load, killed mid-write, and side by side with the Go plugin.

Every process here is exec'd through the symlink, as a runtime runs it."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from cni_plugins.ipam._ranges import parse_ip
from tests.fixtures.serve import NO_SERVER

from .helpers import GO_VERSIONS, NET, NETNS, files, finish, host_local, ips, reservations, spawn

GO = "/usr/lib/cni/host-local"
DUAL = [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/120"}]]


@pytest.fixture
def ours(plugin_dir: str) -> str:
    return os.path.join(plugin_dir, "host-local")


def assert_consistent(data_dir: Path, allow_tmp: bool = False) -> dict[str, bytes]:
    """Every file is the lock, a last_reserved_ip.<n> holding an address, or a complete
    reservation '<id>\\r\\n<ifname>' named by an address. Returns the reservations."""
    out = {}
    for name, data in files(data_dir).items():
        if name == "lock":
            assert data == b""
        elif name.startswith("last_reserved_ip."):
            parse_ip(data.decode())
        elif name.startswith(".cni-tmp-"):
            assert allow_tmp, f"temp file {name} left after a verb that held the lock"
        else:
            parse_ip(name)
            cid, sep, ifname = data.decode().partition("\r\n")
            assert sep and cid and ifname, f"{name} holds {data!r}"
            out[name] = data
    return out


def run_all(procs) -> list[tuple[int, object]]:
    return [finish(p) for p in procs]


# --- concurrency ---------------------------------------------------------------------------

def test_64_parallel_adds_then_64_parallel_dels(ours, tmp_path):
    conf = host_local(tmp_path, DUAL)
    results = run_all([spawn(ours, "ADD", conf, f"ctr{i}") for i in range(64)])
    assert all(rc == 0 for rc, _ in results), [o for rc, o in results if rc][:3]
    got = [ips(out, "1.0.0") for _, out in results]
    v4 = {g[0][0] for g in got}
    v6 = {g[1][0] for g in got}
    assert len(v4) == 64 and len(v6) == 64
    held = assert_consistent(tmp_path)
    assert len(held) == 128
    assert sorted(held.values()) == sorted(f"ctr{i}\r\neth0".encode() for i in range(64) for _ in "46")
    results = run_all([spawn(ours, "DEL", conf, f"ctr{i}") for i in range(64)])
    assert all(rc == 0 for rc, _ in results)
    assert sorted(files(tmp_path)) == ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]


@pytest.mark.oracle
def test_parallel_with_go_on_one_data_dir(ours, tmp_path):
    """Ours and Go's allocate alternately and at once from one dataDir; then each
    releases the other's reservations."""
    conf = host_local(tmp_path, DUAL)
    exes = [ours, GO]
    results = run_all([spawn(exes[i % 2], "ADD", conf, f"ctr{i}") for i in range(64)])
    assert all(rc == 0 for rc, _ in results), [o for rc, o in results if rc][:3]
    addrs = [a for _, out in results for a, _ in ips(out, "1.0.0")]
    assert len(addrs) == len(set(addrs)) == 128
    assert len(assert_consistent(tmp_path)) == 128
    results = run_all([spawn(exes[(i + 1) % 2], "DEL", conf, f"ctr{i}") for i in range(64)])
    assert all(rc == 0 for rc, _ in results)
    assert sorted(files(tmp_path)) == ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]


@pytest.mark.oracle
def test_round_robin_continues_across_implementations(ours, tmp_path):
    conf = host_local(tmp_path, [[{"subnet": "10.1.0.0/29"}]])
    seq = []
    for i in range(5):
        rc, out = finish(spawn([ours, GO][i % 2], "ADD", conf, f"c{i}"))
        assert rc == 0, out
        seq.append(ips(out, "1.0.0")[0][0])
    assert seq == [f"10.1.0.{i}/29" for i in range(2, 7)]
    for i, exe in ((1, ours), (2, GO)):          # each frees one the other made
        assert finish(spawn(exe, "DEL", conf, f"c{i}"))[0] == 0
    rc, out = finish(spawn(GO, "ADD", conf, "c5"))
    assert ips(out, "1.0.0")[0][0] == "10.1.0.3/29"        # wrapped, first free
    rc, out = finish(spawn(ours, "ADD", conf, "c6"))
    assert ips(out, "1.0.0")[0][0] == "10.1.0.4/29"
    assert finish(spawn(GO, "ADD", conf, "c7"))[0] == 1     # full for both
    assert finish(spawn(ours, "ADD", conf, "c7"))[0] == 1


# --- crash safety --------------------------------------------------------------------------

def paused(exe, verb, conf, cid, point):
    """Start a verb that stops at `point` (holding the lock); return once it is there.
    Standalone even in server mode: these tests kill the process doing the work (a killed
    server is tests/integration/serve/test_serve.py's)."""
    p = spawn(exe, verb, conf, cid, extra={"CNI_PLUGINS_TEST_PAUSE": f"{point}:60",
                                           "CNI_PLUGINS_SOCKET": NO_SERVER})
    assert p.stderr is not None
    line = p.stderr.readline().decode()
    assert f"paused at {point}" in line, line + (p.stdout.read().decode() if p.stdout else "")
    return p


def kill9(p) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    for f in (p.stdout, p.stderr):
        if f:
            f.close()


@pytest.mark.parametrize("point", ["locked", "tmpfile", "linked", "last-tmp"])
def test_kill_9_mid_add_leaves_a_usable_store(point, ours, tmp_path):
    conf = {**host_local(tmp_path, DUAL, "1.1.0")}
    assert finish(spawn(ours, "ADD", conf, "survivor"))[0] == 0
    before = reservations(tmp_path)

    kill9(paused(ours, "ADD", conf, "victim", point))
    held = assert_consistent(tmp_path, allow_tmp=True)
    assert {k: v for k, v in held.items() if v.startswith(b"survivor")} == before
    # the runtime answers a failed ADD with DEL; then GC with what it still runs
    assert finish(spawn(ours, "DEL", conf, "victim"))[0] == 0
    gc = {**conf, "cni.dev/valid-attachments": [{"containerID": "survivor", "ifname": "eth0"}]}
    assert finish(spawn(ours, "GC", gc, ""))[0] == 0
    assert assert_consistent(tmp_path) == before
    rc, out = finish(spawn(ours, "ADD", conf, "next"))
    assert rc == 0, out
    assert len(assert_consistent(tmp_path)) == 4


def test_kill_9_mid_del_then_del_again(ours, tmp_path):
    conf = host_local(tmp_path, DUAL)
    assert finish(spawn(ours, "ADD", conf, "victim"))[0] == 0
    kill9(paused(ours, "DEL", conf, "victim", "released"))     # after the first of two files
    assert len(assert_consistent(tmp_path)) == 1
    assert finish(spawn(ours, "DEL", conf, "victim"))[0] == 0
    assert reservations(tmp_path) == {}


def test_a_waiting_add_proceeds_when_the_lock_holder_is_killed(ours, tmp_path):
    conf = host_local(tmp_path, DUAL)
    holder = paused(ours, "ADD", conf, "holder", "locked")
    waiter = spawn(ours, "ADD", conf, "waiter")
    time.sleep(0.5)
    assert waiter.poll() is None, "ADD went on while another process held the lock"
    kill9(holder)
    rc, out = finish(waiter)
    assert rc == 0, out
    assert ips(out, "1.0.0")[0][0] == "10.1.0.2/24"
    assert len(assert_consistent(tmp_path)) == 2


def test_kill_9_at_random_instants(ours, tmp_path):
    conf = host_local(tmp_path, DUAL)
    rnd = random.Random(1234)
    procs = []
    for i in range(12):
        procs.append(spawn(ours, "ADD", conf, f"k{i}"))
        time.sleep(rnd.uniform(0, 0.03))
    for p in procs:
        time.sleep(rnd.uniform(0, 0.02))
        if p.poll() is None:
            kill9(p)
        else:
            finish(p)
    held = assert_consistent(tmp_path, allow_tmp=True)
    owners = [v for v in held.values()]
    assert len(set(held)) == len(held)
    for i in range(12):
        assert finish(spawn(ours, "DEL", conf, f"k{i}"))[0] == 0
    assert assert_consistent(tmp_path) == {}
    rc, out = finish(spawn(ours, "ADD", conf, "after"))
    assert rc == 0, out
    assert owners is not None


# --- the same inputs give the same results and files as Go ----------------------------------

def _scenarios(resolv: str) -> dict[str, tuple[dict, str]]:
    return {
        "dual-stack+routes+resolvConf": (
            {"ranges": DUAL, "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
             "resolvConf": resolv}, ""),
        "legacy top-level": ({"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.10",
                              "rangeEnd": "10.9.0.12", "gateway": "10.9.0.11"}, ""),
        "several ranges, wrap": ({"ranges": [[{"subnet": "10.1.0.0/30"},
                                              {"subnet": "10.2.0.0/29", "rangeEnd": "10.2.0.3"}]]},
                                 ""),
        "ipv6 /126": ({"ranges": [[{"subnet": "fd00::/126"}]]}, ""),
        "requested by CNI_ARGS": ({"ranges": DUAL}, "IgnoreUnknown=1;IP=10.1.0.77;X=y"),
        "case-insensitive keys": ({"Ranges": [[{"SUBNET": "10.1.0.0/24", "rangeStart": "10.1.0.9"}]],
                                   "ROUTES": [{"dst": "10.0.0.0/8"}]}, ""),
        "gateway outside the subnet": ({"ranges": [[{"subnet": "10.1.0.0/29",
                                                     "gateway": "10.1.1.1"}]]}, ""),
    }


STEPS = [("ADD", "a", "eth0"), ("ADD", "b", "eth0"), ("ADD", "a", "eth1"), ("DEL", "a", "eth0"),
         ("ADD", "c", "eth0"), ("ADD", "b", "eth0"), ("CHECK", "b", "eth0"),
         ("CHECK", "z", "eth0"), ("DEL", "b", "eth0"), ("DEL", "b", "eth0"), ("ADD", "d", "eth0"),
         ("ADD", "e", "eth0"), ("DEL", "a", "eth1"), ("DEL", "c", "eth0")]


SCENARIOS = _scenarios("")
# every scenario in the newest version Go speaks; the older versions on two of them
CASES = [("1.0.0", n) for n in SCENARIOS] + [
    (v, n) for v in GO_VERSIONS if v != "1.0.0"
    for n in (("legacy top-level", "ipv6 /126") if v == "0.2.0"
              else ("dual-stack+routes+resolvConf", "requested by CNI_ARGS"))]


@pytest.mark.oracle
@pytest.mark.parametrize("v, name", CASES)
def test_same_results_and_files_as_go(v, name, ours, tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\nsearch svc.local\noptions ndots:2\n")
    ipam, cni_args = _scenarios(str(resolv))[name]
    dirs = {exe: tmp_path / f"data-{i}" for i, exe in enumerate((GO, ours))}
    for verb, cid, ifname in STEPS:
        if verb == "CHECK" and v in ("0.2.0", "0.3.1"):
            continue
        replies = {}
        for exe, d in dirs.items():
            conf = host_local(d, None, v)
            conf["ipam"].update(ipam)
            step_args = cni_args if (verb, cid) == ("ADD", "a") else ""
            p = spawn(exe, verb, conf, cid, ifname,
                      extra={"CNI_ARGS": step_args} if step_args else None)
            replies[exe] = finish(p)
        (go_rc, go_out), (our_rc, our_out) = replies[GO], replies[ours]
        where = f"{verb} {cid}/{ifname}"
        assert our_rc == go_rc, f"{where}: go {go_out} ours {our_out}"
        if go_rc == 0:
            assert our_out == go_out, where
        assert files(dirs[ours]) == files(dirs[GO]), where


@pytest.mark.oracle
def test_deviation_failed_add_keeps_the_containers_earlier_addresses(ours, tmp_path):
    """Go's rollback releases everything (container, ifname) holds, including what an
    earlier ADD gave it; ours releases only what the failing ADD reserved."""
    for exe, keeps in ((GO, False), (ours, True)):
        d = tmp_path / os.path.basename(os.path.dirname(exe))
        conf = host_local(d, DUAL)
        assert finish(spawn(exe, "ADD", conf, "a"))[0] == 0
        rc, _ = finish(spawn(exe, "ADD", conf, "a", extra={"CNI_ARGS": "IP=10.1.0.50"}))
        assert rc == 1
        assert (len(reservations(d)) == 2) is keeps, exe
