"""Micro-benchmark of ipMasq over nftables (firewall.setup_masq / teardown_masq).

    sudo .venv/bin/python bench/masq.py [-n 200] [--cold 30] [--others 100]

Everything happens in a throw-away netns (cnitest-bench-<hex>), removed at the end.
Three numbers, medians in ms:

  warm    setup and teardown in a process that has already imported everything: one
          listing, one transaction and closing the socket each (the close waits for the
          kernel's RCU grace period after a commit, measured separately);
  cold    what a plugin exec pays for masquerading on top of its netlink work: a fresh
          interpreter that has already loaded netlink.py's classes (as bridge/ptp have),
          timed from importing firewall.masq to the end of setup_masq, then of a fresh
          teardown_masq; bytecode is cached in a temporary prefix, as a build ships it;
          for one address (v4, as bench.py's ipMasq cases) and two (v4+v6); wall, then
          the process's CPU time over the same span;
  crowded the warm numbers again with --others attachments already in the chain.

Compare the cold setup+teardown with Go's "ADD+DEL with ipMasq minus without" measured on
the same machine in the same run (the iptables path); PERFORMANCE.md has earlier figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLD = r"""
import sys, time
from cni_plugins.net import netlink, netns    # bridge/ptp have netlink loaded already
verb, ns_path, cid, ips = sys.argv[1:5]
ns = netns.NetNS.open(ns_path)
with ns.enter():
    t, c = time.perf_counter(), time.process_time()
    from cni_plugins.net.firewall import masq
    t_import = time.perf_counter()
    if verb == "setup":
        masq.setup_masq("bench", "eth0", cid, ips.split(","))
    else:
        masq.teardown_masq("bench", "eth0", cid)
    t_done, c_done = time.perf_counter(), time.process_time()
print(f"{(t_import - t) * 1e3:.3f} {(t_done - t) * 1e3:.3f} {(c_done - c) * 1e3:.3f}")
"""


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e3:7.2f}"


def warm(n: int, ips: list[str]) -> tuple[list[float], list[float]]:
    from cni_plugins.net.firewall import masq

    setups, teardowns = [], []
    for i in range(n):
        t = time.perf_counter()
        masq.setup_masq("bench", "eth0", f"warm{i}", ips)
        t2 = time.perf_counter()
        masq.teardown_masq("bench", "eth0", f"warm{i}")
        t3 = time.perf_counter()
        setups.append(t2 - t)
        teardowns.append(t3 - t2)
    return setups, teardowns


def cold(n: int, ns_path: str, ips: list[str]) -> dict[str, list[float]]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out: dict[str, list[float]] = {"import": [], "setup": [], "teardown": [],
                                   "setup_cpu": [], "teardown_cpu": []}
    with tempfile.TemporaryDirectory(prefix="cni-bench-pyc-") as pyc:
        env["PYTHONPYCACHEPREFIX"] = pyc
        for i in range(n + 1):                  # the first run fills the bytecode cache
            for verb in ("setup", "teardown"):
                line = subprocess.run([sys.executable, "-c", COLD, verb, ns_path, f"cold{i}",
                                       ",".join(ips)],
                                      env=env, check=True, capture_output=True,
                                      text=True).stdout
                imp, total, cpu = map(float, line.split())
                if i:
                    out[verb].append(total / 1e3)
                    out[verb + "_cpu"].append(cpu / 1e3)
                    if verb == "setup":
                        out["import"].append(imp / 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200, help="warm iterations")
    ap.add_argument("--cold", type=int, default=30, help="cold (fresh process) iterations")
    ap.add_argument("--others", type=int, default=100,
                    help="attachments already present for the crowded run")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")

    from cni_plugins.net import nft
    from cni_plugins.net.firewall import masq
    from cni_plugins.net.netns import NetNS

    name = "cnitest-bench-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        path = f"/run/netns/{name}"
        ns = NetNS.open(path)
        print(f"ipMasq over nftables, netns {name}; medians in ms")
        print(f"{'':34}{'setup':>8}{'teardown':>9}{'sum':>8}")
        with ns.enter():
            masq.setup_masq("bench", "eth0", "first", ["10.200.0.1/16"])   # table exists
            masq.teardown_masq("bench", "eth0", "first")
            for label, ips in (("warm, 1 address (v4)", ["10.200.0.5/16"]),
                               ("warm, 2 addresses (v4+v6)",
                                ["10.200.0.5/16", "fd00:200::5/64"])):
                s, t = warm(args.n, ips)
                print(f"{label:34}{median_ms(s):>8}{median_ms(t):>9}"
                      f"{statistics.median(s) * 1e3 + statistics.median(t) * 1e3:8.2f}")
            for i in range(args.others):
                masq.setup_masq("bench", "eth0", f"other{i}",
                                [f"10.201.{i // 250}.{i % 250 + 1}/16"])
            s, t = warm(args.n, ["10.200.0.5/16", "fd00:200::5/64"])
            label = f"warm, v4+v6, {args.others} others present"
            print(f"{label:34}{median_ms(s):>8}{median_ms(t):>9}"
                  f"{statistics.median(s) * 1e3 + statistics.median(t) * 1e3:8.2f}")
            for i in range(args.others):
                masq.teardown_masq("bench", "eth0", f"other{i}")
            release = []
            for _ in range(min(args.n, 50)):
                sock = nft.NFT()
                sock.commit(nft.Batch().add_table("inet", "bench_scratch")
                            .add_chain("inet", "bench_scratch", "c")
                            .flush_chain("inet", "bench_scratch", "c")
                            .add_rule("inet", "bench_scratch", "c", nft.accept()))
                t = time.perf_counter()
                sock.close()
                release.append(time.perf_counter() - t)
        for label, ips in (("cold process, v4 (+ import)", ["10.200.0.5/16"]),
                           ("cold process, v4+v6 (+ import)",
                            ["10.200.0.5/16", "fd00:200::5/64"])):
            c = cold(args.cold, path, ips)
            both = statistics.median(c["setup"]) + statistics.median(c["teardown"])
            print(f"{label:34}{median_ms(c['setup']):>8}{median_ms(c['teardown']):>9}"
                  f"{both * 1e3:8.2f}")
            both_cpu = statistics.median(c["setup_cpu"]) + statistics.median(c["teardown_cpu"])
            print(f"{'  the same, cpu (user+sys)':34}{median_ms(c['setup_cpu']):>8}"
                  f"{median_ms(c['teardown_cpu']):>9}{both_cpu * 1e3:8.2f}")
        print(f"  of which importing firewall.masq + nft classes: {median_ms(c['import']).strip()}"
              " ms (paid by setup and by teardown)")
        print(f"  each includes closing the socket after a commit: {median_ms(release).strip()} ms"
              " (the kernel waits for an RCU grace period; any nft/iptables-nft exec pays it)")
        ns.close()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    main()
