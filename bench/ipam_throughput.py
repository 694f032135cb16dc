#!/usr/bin/env python3
"""host-local: allocations per second with 1, 2 and 8 parallel workers (ours exec'd and
Go's, alternating), and the cost of a host-local ADD/DEL delegated in process.

    .venv/bin/python bench/ipam_throughput.py [--adds N] [--workers 1,2,8] [--inproc N]
                                              [--bin PATH] [--go-dir /usr/lib/cni]

Throughput: for each worker count, each implementation (order flipped per round) gets a
fresh dataDir and N ADDs for distinct containers, spread over the workers, each worker
exec'ing one ADD after the other; then N DELs the same way. Reported: operations per
second (wall), and a check that no address was given twice.

In process: what our main plugins pay when CNI_PATH's host-local is this executable:
invoke.delegate_add / delegate_del pairs in a loop (skel validation, the plugin, and the
result's version round trip included), median and p90 per call, with the store already
holding 0, 110 (Kubernetes' default pods per node) and 250 reservations.
No root needed; nothing outside a temp dir is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(ROOT, ".venv", "bin", "cni-plugins")
NETNS = "/run/netns/cnitest-bench-absent"     # IPAM never enters it; skel wants it set


def conf(data_dir: str) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "bench-ipam", "type": "bridge",
                       "ipam": {"type": "host-local", "dataDir": data_dir,
                                "ranges": [[{"subnet": "10.99.0.0/16"}]]}}).encode()


def env(verb: str, cid: str, cni_path: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    e.update(CNI_COMMAND=verb, CNI_CONTAINERID=cid, CNI_NETNS=NETNS, CNI_IFNAME="eth0",
             CNI_PATH=cni_path)
    return e


def burst(exe: str, verb: str, stdin: bytes, cids: list[str], workers: int) -> tuple[float, list]:
    """Run `verb` for every container, `workers` at a time; (seconds, outputs)."""
    outs: list = [None] * len(cids)
    failures: list[str] = []

    def worker(k: int) -> None:
        for i in range(k, len(cids), workers):
            p = subprocess.run([exe], input=stdin, env=env(verb, cids[i], os.path.dirname(exe)),
                               capture_output=True)
            if p.returncode != 0:
                failures.append(p.stdout.decode()[:200])
            outs[i] = json.loads(p.stdout) if p.stdout.strip() else None

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"{exe} {verb} failed: {failures[0]}")
    return elapsed, outs


def throughput(impls: dict[str, str], adds: int, worker_counts: list[int]) -> None:
    print(f"\nthroughput: {adds} ADDs then {adds} DELs per implementation and worker count, "
          "each op one exec; ops/s (wall)")
    print(f"{'workers':>7} " + "".join(f"{n + ' ADD/s':>13} {n + ' DEL/s':>13}" for n in impls)
          + "   ADD ours/go")
    for rnd, workers in enumerate(worker_counts):
        row: dict[str, tuple[float, float]] = {}
        order = list(impls.items())
        if rnd % 2:
            order.reverse()
        for name, exe in order:
            tmp = tempfile.mkdtemp(prefix="cni-bench-ipam-")
            try:
                stdin = conf(os.path.join(tmp, "data"))
                cids = [f"bench-{name}-{workers}-{i}" for i in range(adds)]
                t_add, outs = burst(exe, "ADD", stdin, cids, workers)
                addrs = [o["ips"][0]["address"] for o in outs]
                if len(set(addrs)) != len(addrs):
                    raise SystemExit(f"{name}: an address was given twice")
                t_del, _ = burst(exe, "DEL", stdin, cids, workers)
                left = os.listdir(os.path.join(tmp, "data", "bench-ipam"))
                if sorted(left) != ["last_reserved_ip.0", "lock"]:
                    raise SystemExit(f"{name}: DEL left {sorted(left)[:5]}")
                row[name] = (adds / t_add, adds / t_del)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        ratio = row["ours"][0] / row["go"][0]
        print(f"{workers:>7} " + "".join(f"{row[n][0]:>13.1f} {row[n][1]:>13.1f}" for n in impls)
              + f"   {ratio:>10.2f}")


def inproc(bin_path: str, n: int, occupancies: list[int]) -> None:
    sys.path.insert(0, ROOT)
    from cni_plugins import invoke, skel

    def fmt(xs: list[float]) -> str:
        xs = sorted(xs)
        return (f"median {1e3 * statistics.median(xs):6.3f} ms, "
                f"p90 {1e3 * xs[max(0, int(0.9 * len(xs)) - 1)]:6.3f} ms")

    print(f"\nin process (invoke.delegate_* -> skel), {n} ADD+DEL pairs per store occupancy "
          "(an ADD reads every reservation file of the network, as Go's does; wall includes "
          "waiting for the disk: ext4 starts writeback when last_reserved_ip is replaced):")
    for held in occupancies:
        tmp = tempfile.mkdtemp(prefix="cni-bench-ipam-")
        try:
            path = os.path.join(tmp, "bin")
            os.mkdir(path)
            os.symlink(bin_path, os.path.join(path, "host-local"))
            stdin = conf(os.path.join(tmp, "data"))
            base = skel.CmdArgs(command="ADD", netns=NETNS, ifname="eth0", path=path,
                                stdin=stdin, exe=os.path.realpath(bin_path))
            for i in range(held):
                invoke.delegate_add("host-local", base.replace(container_id=f"held-{i}"))
            add, dele, add_cpu, del_cpu = [], [], [], []
            for i in range(-20, n):                 # 20 warm-up pairs
                a = base.replace(container_id=f"bench-{i + 20}")
                t0, c0 = time.perf_counter(), time.thread_time()
                r = invoke.delegate_add("host-local", a)
                t1, c1 = time.perf_counter(), time.thread_time()
                invoke.delegate_del("host-local", a)
                t2, c2 = time.perf_counter(), time.thread_time()
                assert r.ips, r
                if i >= 0:
                    add.append(t1 - t0)
                    dele.append(t2 - t1)
                    add_cpu.append(c1 - c0)
                    del_cpu.append(c2 - c1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"  {held:4} held   ADD wall {fmt(add)}; cpu {fmt(add_cpu)}")
        print(f"  {'':4}        DEL wall {fmt(dele)}; cpu {fmt(del_cpu)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=DEFAULT_BIN, help=f"our executable ({DEFAULT_BIN})")
    ap.add_argument("--go-dir", default="/usr/lib/cni")
    ap.add_argument("--adds", type=int, default=200, help="ADDs per burst (200)")
    ap.add_argument("--workers", default="1,2,8", help="worker counts (1,2,8)")
    ap.add_argument("--inproc", type=int, default=300, help="in-process ADD+DEL pairs (300; 0: skip)")
    ap.add_argument("--occupancy", default="0,110,250",
                    help="reservations already in the store for the in-process part (0,110,250)")
    ap.add_argument("--no-exec", action="store_true", help="only the in-process part")
    opts = ap.parse_args()

    print(f"host-local bench, load {os.getloadavg()[0]:.2f}, nproc {os.cpu_count()}")
    if opts.inproc:
        inproc(os.path.abspath(opts.bin), opts.inproc,
               [int(k) for k in opts.occupancy.split(",")])
    if not opts.no_exec:
        linkdir = tempfile.mkdtemp(prefix="cni-bench-bin-")
        try:
            ours = os.path.join(linkdir, "host-local")
            os.symlink(os.path.abspath(opts.bin), ours)
            impls = {"ours": ours, "go": os.path.join(opts.go_dir, "host-local")}
            throughput(impls, opts.adds, [int(w) for w in opts.workers.split(",")])
        finally:
            shutil.rmtree(linkdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
