#!/usr/bin/env python3
"""Pods per second: bridge + host-local ADD then DEL for 200 pods, 1, 2 and 8 workers, ours
against Go's, with a duplicate-IP check.

    .venv/bin/python bench/throughput.py [--pods 200] [--workers 1,2,8] [--bin PATH ...]
                                         [--tree REV] [--go-dir /usr/lib/cni] [--timeout 1500]

As root. Each round (a worker count and an implementation; the order of the
implementations flips every round) gets its own throw-away "host" netns, a fresh dataDir
and one fresh netns per pod, all made before the clock starts (cnitest-bench-<hex>). The
bridge (cnibench0, isGateway) does not exist yet: the first ADDs of the round make it,
concurrently when there are several workers. Timed: N ADDs for distinct containers spread
over the workers, each worker exec'ing one plugin after the other; then the N DELs the same
way. Reported per burst: pods/s (wall), and the plugins' CPU per pod (user+sys of every
child reaped during the burst: steadier than wall when other work loads the machine).

Checked: every exec exits 0; no address is handed out twice (the duplicate count is printed
and must be 0); after the ADDs every pod's veth is on the bridge, after the DELs none is,
and the store holds no reservation. Bounded: each exec has --exec-timeout, the whole run
--timeout; past either the run stops. Every netns it made is deleted at the end of its
round, and on failure, Ctrl-C, SIGTERM or SIGHUP; the links live inside them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (netns helpers, install, snapshot, machine line)

BRIDGE = "cnibench0"
NET = "bench-tput"


class Stop(Exception):
    pass


def config(data_dir: str) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": BRIDGE,
                       "isGateway": True,
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]],
                                "dataDir": data_dir}}).encode()


def netns_batch(names: list[str], verb: str) -> None:
    """`ip netns add|del` for many names in one `ip -batch` (200 in ~0.2 s)."""
    for n in names:
        if not n.startswith(bench.PREFIX):
            raise ValueError(f"refusing netns {n!r}: not ours")
    if verb == "add":
        bench._made.update(names)               # before: a half-made batch is still removed
    lines = "".join(f"netns {verb} {n}\n" for n in names)
    p = subprocess.run(["ip", "-force", "-batch", "-"], input=lines.encode(),
                       capture_output=True, timeout=120)
    if verb == "del":
        bench._made.difference_update(names)
    elif p.returncode != 0:
        raise SystemExit(f"throughput: ip netns add: {p.stderr.decode().strip()[:300]}")


class Round:
    """One implementation at one worker count: its host netns, pods, store, and results."""

    def __init__(self, label: str, cni_path: str, extra_env: dict[str, str], pods: int,
                 exec_timeout: float, deadline: float) -> None:
        self.label, self.cni_path, self.pods = label, cni_path, pods
        self.exec_timeout, self.deadline = exec_timeout, deadline
        self.tmp = tempfile.mkdtemp(prefix="cni-bench-tput-")
        self.data_dir = os.path.join(self.tmp, "ipam")
        self.stdin = config(self.data_dir)
        tag = uuid.uuid4().hex[:6]
        self.netns = [f"{bench.PREFIX}{tag}-{i:04d}" for i in range(pods)]
        self.host = ""
        try:
            self.host = bench.netns_add()
            netns_batch(self.netns, "add")
        except BaseException:
            self.close()
            raise
        self.cids = [f"bench-{tag}-{i:04d}" for i in range(pods)]
        self.env = bench.base_env()
        self.env.update(extra_env)
        self.env.update(CNI_PATH=cni_path, CNI_IFNAME="eth0")
        self.plugin = os.path.join(cni_path, "bridge")
        self.stop = threading.Event()

    def close(self) -> None:
        try:
            netns_batch(self.netns, "del")
        finally:
            if self.host:
                bench.netns_del(self.host)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def burst(self, verb: str, workers: int) -> tuple[float, float, list[Any]]:
        """`verb` for every pod, `workers` at a time: (wall s, children's cpu s, outputs)."""
        outs: list[Any] = [None] * self.pods
        failures: list[str] = []

        def worker(k: int) -> None:
            try:
                with bench.inside(self.host):
                    for i in range(k, self.pods, workers):
                        if self.stop.is_set() or failures:
                            return
                        if time.monotonic() > self.deadline:
                            failures.append("the run's --timeout passed")
                            return
                        env = dict(self.env, CNI_COMMAND=verb, CNI_CONTAINERID=self.cids[i],
                                   CNI_NETNS=os.path.join(bench.NETNS_DIR, self.netns[i]))
                        p = subprocess.run([self.plugin], input=self.stdin, env=env,
                                           capture_output=True, timeout=self.exec_timeout)
                        if p.returncode != 0:
                            failures.append(f"{verb} {self.cids[i]}: exit {p.returncode}: "
                                            + (p.stdout or p.stderr).decode(errors="replace")
                                            .strip().replace("\n", " ")[:300])
                            return
                        outs[i] = json.loads(p.stdout) if p.stdout.strip() else None
            except subprocess.TimeoutExpired as e:
                failures.append(f"{verb}: an exec ran over {e.timeout} s")
            except Exception as e:  # noqa: BLE001  (reported by the main thread)
                failures.append(f"{verb}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=worker, args=(k,), daemon=True)
                   for k in range(workers)]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        except BaseException:
            self.stop.set()                   # the workers finish the exec they are in
            for t in threads:
                t.join(self.exec_timeout + 5)
            raise
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if failures:
            raise Stop(f"{self.label}, {workers} worker(s): {failures[0]}")
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        return wall, cpu, outs

    def ports(self) -> int:
        """veths enslaved to the bridge in the host netns."""
        with bench.inside(self.host):
            p = subprocess.run(["ip", "-j", "link", "show", "master", BRIDGE],
                               capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            return 0                          # no bridge: no port
        return len(json.loads(p.stdout or "[]"))

    def reservations(self) -> list[str]:
        d = os.path.join(self.data_dir, NET)
        if not os.path.isdir(d):
            return []
        return [f for f in os.listdir(d) if f not in ("lock",)
                and not f.startswith("last_reserved_ip")]


def run_round(label: str, cni_path: str, extra_env: dict[str, str], pods: int, workers: int,
              exec_timeout: float, deadline: float) -> dict[str, Any]:
    r = Round(label, cni_path, extra_env, pods, exec_timeout, deadline)
    try:
        t_add, cpu_add, outs = r.burst("ADD", workers)
        addrs = [ip["address"].split("/")[0] for o in outs for ip in (o or {}).get("ips", [])]
        dups = len(addrs) - len(set(addrs))
        missing = sum(1 for o in outs if not (o or {}).get("ips"))
        ports = r.ports()
        held = len(r.reservations())
        t_del, cpu_del, _ = r.burst("DEL", workers)
        return {"add": pods / t_add, "del": pods / t_del, "cpu_add": 1000 * cpu_add / pods,
                "cpu_del": 1000 * cpu_del / pods, "dups": dups, "missing": missing,
                "ports_after_add": ports, "held_after_add": held,
                "ports_after_del": r.ports(), "held_after_del": len(r.reservations())}
    finally:
        r.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", action="append", metavar="PATH",
                    help=f"our executable (repeatable; default {bench.DEFAULT_BIN})")
    ap.add_argument("--tree", metavar="REV", help="venv: cni_plugins from `git archive REV` "
                    "(as bench.py --tree)")
    ap.add_argument("--go-dir", default=bench.GO_DIR)
    ap.add_argument("--pods", type=int, default=200, help="pods per round (200)")
    ap.add_argument("--workers", default="1,2,8", help="worker counts (1,2,8)")
    ap.add_argument("--exec-timeout", type=float, default=60, help="seconds per exec (60)")
    ap.add_argument("--timeout", type=float, default=1500,
                    help="seconds for the whole run (1500)")
    ap.add_argument("--server", action="store_true",
                    help="also each --bin through a server of its own, as bench.py --server")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("throughput: needs root (netns)")
    deadline = time.monotonic() + opts.timeout
    worker_counts = [int(w) for w in opts.workers.split(",") if w.strip()]

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    bins = [os.path.abspath(b) for b in (opts.bin or [bench.DEFAULT_BIN])]
    linkdir = tempfile.mkdtemp(prefix="cni-bench-bin-")
    failed = False
    servers: list[bench.Server] = []
    try:
        tree = bench.snapshot(opts.tree, linkdir) if opts.tree else ""
        impls: list[tuple[str, str, dict[str, str]]] = []
        taken: set[str] = set()
        for b in bins:
            label = bench.label_for(b, taken)
            taken.add(label)
            d = os.path.join(linkdir, label)
            bench.install_links(b, d)
            extra: dict[str, str] = {}
            if label != "frozen":
                extra["PYTHONPYCACHEPREFIX"] = os.path.join(linkdir, "pyc")
                if tree:
                    extra["PYTHONPATH"] = tree
            impls.append((label, d, extra))
        if opts.server:             # as bench.py --server: label+srv through BIN serve
            for label, d, extra in list(impls):
                sock = os.path.join(linkdir, f"serve-{label}", "serve.sock")
                sextra = {**extra, bench.SERVER_ENV: sock}
                impls.append((label + "+srv", d, sextra))
                servers.append(bench.Server(label + "+srv", bins[len(servers)], sock,
                                            {**bench.base_env(), **sextra}))
            for srv in servers:
                srv.start()
        impls.append(("go", opts.go_dir, {}))

        now = datetime.datetime.now(datetime.timezone.utc).astimezone()
        print(f"cni-plugins throughput, {now:%Y-%m-%d %H:%M:%S %Z}")
        print(bench.machine())
        for (label, _, _), b in zip(impls, bins + [srv.argv[0] for srv in servers]):
            print(f"ours: {label} = {b}" + (f" (cni_plugins from {opts.tree})"
                                            if tree and not label.startswith("frozen") else "")
                  + (" through its server" if label.endswith("+srv") else ""))
        print(f"go:   {opts.go_dir}")
        print(f"bridge + host-local, {opts.pods} pods per round: ADD burst then DEL burst; "
              "pods/s (wall) and the plugins' cpu ms per pod; dup = addresses given twice")

        for label, d, extra in impls:               # untimed: bytecode cache, page cache
            run_round(label, d, extra, 4, 1, opts.exec_timeout, deadline)

        print(f"\n{'workers':>7} {'impl':10} {'ADD/s':>7} {'DEL/s':>7} {'ADD cpu':>8} "
              f"{'DEL cpu':>8} {'dup':>4}  checks")
        rows: dict[tuple[int, str], dict[str, Any]] = {}
        for rnd, workers in enumerate(worker_counts):
            order = impls if rnd % 2 == 0 else impls[::-1]
            for label, d, extra in order:
                res = run_round(label, d, extra, opts.pods, workers, opts.exec_timeout,
                                deadline)
                rows[(workers, label)] = res
                problems = []
                if res["dups"]:
                    problems.append(f"{res['dups']} DUPLICATE address(es)")
                if res["missing"]:
                    problems.append(f"{res['missing']} ADD result(s) without an address")
                if res["ports_after_add"] != opts.pods:
                    problems.append(f"{res['ports_after_add']} ports on the bridge after ADD")
                if res["held_after_add"] != opts.pods:
                    problems.append(f"{res['held_after_add']} reservations after ADD")
                if res["ports_after_del"] or res["held_after_del"]:
                    problems.append(f"after DEL {res['ports_after_del']} ports, "
                                    f"{res['held_after_del']} reservations")
                failed |= bool(problems)
                print(f"{workers:>7} {label:10} {res['add']:7.1f} {res['del']:7.1f} "
                      f"{res['cpu_add']:8.1f} {res['cpu_del']:8.1f} {res['dups']:>4}  "
                      + ("; ".join(problems) if problems else
                         f"ok ({opts.pods} ports, {opts.pods} reservations; none after DEL)"),
                      flush=True)
        print(f"\n{'workers':>7} " + "".join(f" {lbl + ' ADD/go':>14} {lbl + ' DEL/go':>14}"
                                             for lbl, _, _ in impls[:-1]))
        for workers in worker_counts:
            go = rows[(workers, "go")]
            print(f"{workers:>7} " + "".join(
                f" {rows[(workers, lbl)]['add'] / go['add']:13.2f}x"
                f" {rows[(workers, lbl)]['del'] / go['del']:13.2f}x" for lbl, _, _ in impls[:-1]))
        total_dups = sum(r["dups"] for r in rows.values())
        print(f"\nduplicate addresses over all rounds: {total_dups}"
              + (" (checked: none)" if total_dups == 0 else " -- FAILED"))
        failed |= total_dups != 0
    except Stop as e:
        print(f"\nthroughput: stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"\nthroughput: interrupted ({str(e) or 'Ctrl-C'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        for srv in servers:
            print(srv.stop(), flush=True)
        bench.cleanup_all()
        shutil.rmtree(linkdir, ignore_errors=True)
    if failed:
        print("throughput: a check failed, see the rows above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
