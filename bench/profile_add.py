#!/usr/bin/env python3
"""Where an exec'd ADD of ours spends its time: imports against work, venv and frozen.

    .venv/bin/python bench/profile_add.py [--case bridge+host-local] [--tree REV]
        [--bin .venv/bin/cni-plugins] [--importtime-bin DIR/cni-plugins]
        [--frozen-bin dist/cni-plugins/cni-plugins --py-spy PATH] [--runs 5] [--top 15]

As root. The case (a name from bench.py's CASES: its config and setup) runs in a throw-away
host netns (cnitest-bench-<hex>), primed with one pod as bench.py does, and every profiled
ADD gets a fresh container netns; all of them are deleted at the end, on failure and on
Ctrl-C. Sections:

  importtime  one exec'd ADD under `-X importtime`: the venv script through its
              interpreter, and (--importtime-bin) a frozen build made with
              CNI_PLUGINS_IMPORTTIME=1 (see build/cni-plugins.spec); the sum of the
              top-level imports and the self time per top-level package;
  in process  a fresh interpreter (the venv's) that runs skel.run for a cold ADD (imports
              included) and then a warm ADD of a second pod: wall and CPU, unprofiled
              medians over --runs interpreters, then one cProfile of each (top functions);
  py-spy      (--py-spy PATH --frozen-bin BIN) a sampled profile of the frozen binary's
              exec'd ADD: the share of samples under imports, and the heaviest frames.

`-X importtime` and the profilers inflate what they measure; read shares, not milliseconds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bench.py beside this file: cases, netns helpers)

DRIVER = r"""
import cProfile, json, os, sys, time
plugin, exe, stdin_path, netns2, out = sys.argv[1:6]
stdin = open(stdin_path, "rb").read()
profile = out != "-"
res = {}
p = cProfile.Profile() if profile else None
t, c = time.perf_counter(), time.process_time()
if p: p.enable()
from cni_plugins import skel
code, text = skel.run(plugin, os.environ, lambda: stdin, exe)
if p: p.disable()
res["cold"] = (time.perf_counter() - t, time.process_time() - c, code, text[:300])
if p: p.dump_stats(out + ".cold")
env2 = dict(os.environ, CNI_CONTAINERID=os.environ["CNI_CONTAINERID"] + "-2", CNI_NETNS=netns2)
p = cProfile.Profile() if profile else None
t, c = time.perf_counter(), time.process_time()
if p: p.enable()
code, text = skel.run(plugin, env2, lambda: stdin, exe)
if p: p.disable()
res["warm"] = (time.perf_counter() - t, time.process_time() - c, code, text[:300])
if p: p.dump_stats(out + ".warm")
sys.stdout.write(json.dumps(res))
sys.stdout.flush()
os._exit(0)
"""


class Bed:
    """The throw-away host netns of one case, primed; fresh container netns on demand."""

    def __init__(self, case: bench.Case, tmp: str, prime_bin: str, env: dict[str, str]) -> None:
        self.case, self.tmp = case, tmp
        self.ctx = bench.Ctx(impl="ours", cni_path="", tmp=tmp, container_id="prof")
        self.ctx.host_netns = bench.netns_add()
        if case.netns:      # a chained plugin's case: its setup puts the pod's link there
            self.ctx.netns = os.path.join(bench.NETNS_DIR, bench.netns_add())
        if case.setup:
            with bench.inside(self.ctx.host_netns):
                case.setup(self.ctx)
        conf = case.config(self.ctx) if callable(case.config) else case.config
        self.stdin = json.dumps(conf).encode()
        self.stdin_path = os.path.join(tmp, "stdin.json")
        with open(self.stdin_path, "wb") as f:
            f.write(self.stdin)
        self.run([prime_bin], self.env("prime", env))

    def container(self) -> str:
        """A fresh netns; for a chained plugin's case (tuning, portmap), the one its setup
        prepared: every profiled ADD is then another container ID on the same pod link."""
        if self.ctx.netns and not self.case.prime:
            return self.ctx.netns
        return os.path.join(bench.NETNS_DIR, bench.netns_add())

    def env(self, tag: str, extra: dict[str, str], netns: str = "") -> dict[str, str]:
        e = bench.base_env()
        e.update(extra)
        e.update(CNI_COMMAND="ADD", CNI_CONTAINERID=f"prof-{tag}-{uuid.uuid4().hex[:8]}",
                 CNI_NETNS=netns or self.container(), CNI_IFNAME=self.case.ifname)
        return e

    def run(self, argv: list[str], env: dict[str, str], check: bool = True,
            stdin: bytes | None = None) -> subprocess.CompletedProcess:
        with bench.inside(self.ctx.host_netns):
            p = subprocess.run(argv, input=self.stdin if stdin is None else stdin, env=env,
                               capture_output=True, timeout=120)
        if check and p.returncode != 0:
            raise SystemExit(f"profile: {argv[0]} failed ({p.returncode}): "
                             f"{(p.stdout or p.stderr).decode(errors='replace')[:400]}")
        return p


def linkdir(binary: str, tmp: str, label: str) -> str:
    d = os.path.join(tmp, label)
    bench.install_links(binary, d)
    return d


def interpreter_of(script: str) -> str:
    with open(os.path.realpath(script), "rb") as f:
        first = f.readline().decode().strip()
    if not first.startswith("#!"):
        raise SystemExit(f"profile: {script} is not a script (use --importtime-bin for a build)")
    return first[2:].split()[0]


def importtime_report(stderr: str, top: int) -> None:
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|", 2)
        level = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((int(self_us), int(cum_us), name.strip(), level))
    if not rows:
        print("    (no importtime lines on stderr)")
        return
    min_level = min(r[3] for r in rows)
    total = sum(r[1] for r in rows if r[3] == min_level)
    by_pkg: collections.Counter = collections.Counter()
    for s, _, name, _ in rows:
        by_pkg[name.split(".")[0]] += s
    print(f"    {len(rows)} modules imported, {total / 1000:.1f} ms in total (top-level "
          "cumulative); self time by top-level package:")
    for pkg, us in by_pkg.most_common(top):
        print(f"      {us / 1000:7.1f} ms  {100 * us / total:4.0f}%  {pkg}")
    print("    heaviest top-level imports (cumulative):")
    for s, cum, name, level in sorted((r for r in rows if r[3] == min_level),
                                      key=lambda r: -r[1])[:8]:
        print(f"      {cum / 1000:7.1f} ms  {name}")


def pstats_report(path: str, top: int, label: str) -> None:
    st = pstats.Stats(path)
    total = st.total_tt                                   # type: ignore[attr-defined]
    marks = []
    for (fname, _, func), v in st.stats.items():            # type: ignore[attr-defined]
        base = os.path.basename(fname)
        if (func == "load" and base == "plugins.py") or func == "cmd_add":
            what = "plugin modules' import (plugins.load)" if func == "load" \
                else f"{base[:-3]}.cmd_add"
            marks.append(f"{what} {v[3] * 1000:.1f} ms")
    print(f"    {label}: {total * 1000:.1f} ms profiled; " + "; ".join(marks))
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][3])   # type: ignore[attr-defined]
    shown = 0
    print(f"      {'cum ms':>8} {'self ms':>8} {'calls':>7}  function")
    for (fname, line, func), (cc, nc, tt, ct, _) in rows:
        if "importlib" in fname or fname.startswith("<frozen") or func in ("<module>",):
            continue
        where = fname
        for marker in ("/site-packages/", "/cni_plugins/", "/lib/python3"):
            if marker in fname:
                where = fname.split(marker, 1)[1] if marker != "/cni_plugins/" \
                    else "cni_plugins/" + fname.split(marker, 1)[1]
                break
        print(f"      {ct * 1000:8.1f} {tt * 1000:8.1f} {nc:7}  {func} ({where}:{line})")
        shown += 1
        if shown >= top:
            break


def pyspy_report(path: str, top: int) -> None:
    total = imports = 0
    inclusive: collections.Counter = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(n)
            frames = stack.split(";")
            total += count
            if any(fr.startswith("_find_and_load ") for fr in frames):
                imports += count
            for fr in set(frames):
                if "importlib" not in fr and "pyimod0" not in fr:
                    inclusive[fr] += count
    if not total:
        print("    (no samples)")
        return
    print(f"    {total} samples; {100 * imports / total:.0f}% under an import "
          "(_find_and_load somewhere in the stack)")
    print("    heaviest frames (inclusive share of samples, import machinery left out):")
    shown = 0
    for fr, c in inclusive.most_common():
        if c > 0.95 * total:        # the entry point, main, skel.main/run: every sample
            continue
        print(f"      {100 * c / total:5.1f}%  {fr}")
        shown += 1
        if shown >= top:
            break


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", default="bridge+host-local", help="a bench.py case name")
    ap.add_argument("--bin", default=bench.DEFAULT_BIN, help="our venv script")
    ap.add_argument("--tree", metavar="REV", help="cni_plugins from `git archive REV` "
                    "(PYTHONPATH) for the venv runs, as bench.py --tree")
    ap.add_argument("--importtime-bin", metavar="PATH",
                    help="a frozen build made with CNI_PLUGINS_IMPORTTIME=1")
    ap.add_argument("--frozen-bin", metavar="PATH", help="the frozen build, for --py-spy")
    ap.add_argument("--py-spy", metavar="PATH", help="py-spy executable (pip install py-spy)")
    ap.add_argument("--runs", type=int, default=5, help="unprofiled interpreters (5)")
    ap.add_argument("--top", type=int, default=15)
    opts = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("profile: needs root (netns)")
    case = next((c for c in bench.CASES if c.name == opts.case), None)
    if case is None or not case.host_netns:
        raise SystemExit(f"profile: {opts.case!r} is not a host-netns case of bench.py")

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    tmp = tempfile.mkdtemp(prefix="cni-bench-prof-")
    try:
        venv_env = {"PYTHONPYCACHEPREFIX": os.path.join(tmp, "pyc")}
        if opts.tree:
            venv_env["PYTHONPATH"] = bench.snapshot(opts.tree, tmp)
        src = f"cni_plugins from {opts.tree}" if opts.tree else "cni_plugins from the work tree"
        venv_dir = linkdir(os.path.abspath(opts.bin), tmp, "venv")
        venv_plugin = os.path.join(venv_dir, case.plugin)
        print(f"profile of {case.name} ADD, load {os.getloadavg()[0]:.2f}, nproc "
              f"{os.cpu_count()}; {src}")
        bed = Bed(case, tmp, venv_plugin, dict(venv_env, CNI_PATH=venv_dir))
        for _ in range(2):          # bytecode cache warm
            bed.run([venv_plugin], bed.env("warm", dict(venv_env, CNI_PATH=venv_dir)))

        print("\n== importtime, venv script (python -X importtime) ==")
        p = bed.run([interpreter_of(opts.bin), "-X", "importtime", opts.bin, case.plugin],
                    bed.env("imp", dict(venv_env, CNI_PATH=venv_dir)))
        importtime_report(p.stderr.decode(errors="replace"), opts.top)
        if opts.importtime_bin:
            print(f"\n== importtime, frozen ({opts.importtime_bin}) ==")
            d = linkdir(os.path.abspath(opts.importtime_bin), tmp, "frozen-imp")
            bed.run([os.path.join(d, case.plugin)], bed.env("fimp", {"CNI_PATH": d}))  # warm
            p = bed.run([os.path.join(d, case.plugin)], bed.env("fimp", {"CNI_PATH": d}))
            importtime_report(p.stderr.decode(errors="replace"), opts.top)

        print(f"\n== in process, venv interpreter: skel.run cold (imports included) then warm "
              f"(a second pod, same process); medians of {opts.runs} interpreters ==")
        py = interpreter_of(opts.bin)
        exe = os.path.realpath(opts.bin)      # delegation to host-local stays in process
        samples: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
        for _ in range(opts.runs):
            p = bed.run([py, "-c", DRIVER, case.plugin, exe, bed.stdin_path, bed.container(),
                         "-"], bed.env("inproc", dict(venv_env, CNI_PATH=venv_dir)))
            res = json.loads(p.stdout)
            for k in samples:
                if res[k][2] != 0:
                    raise SystemExit(f"profile: in-process {k} ADD failed: {res[k][3]}")
                samples[k].append((res[k][0], res[k][1]))
        med = {k: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals))
               for k, vals in samples.items()}
        for k, (w, c) in med.items():
            print(f"    {k}: wall {1000 * w:7.1f} ms, cpu {1000 * c:7.1f} ms")
        print(f"    first-call cost (imports, class building; cold - warm): "
              f"cpu {1000 * (med['cold'][1] - med['warm'][1]):.1f} ms, "
              f"{100 * (1 - med['warm'][1] / med['cold'][1]):.0f}% of the cold ADD's cpu")
        prof = os.path.join(tmp, "prof")
        bed.run([py, "-c", DRIVER, case.plugin, exe, bed.stdin_path, bed.container(), prof],
                bed.env("cprof", dict(venv_env, CNI_PATH=venv_dir)))
        print("\n== cProfile (one interpreter; the profiler inflates Python-heavy code) ==")
        pstats_report(prof + ".cold", opts.top, "cold ADD")
        pstats_report(prof + ".warm", opts.top, "warm ADD")

        if opts.py_spy and opts.frozen_bin:
            print(f"\n== py-spy record (1 kHz) of an exec'd ADD, frozen ({opts.frozen_bin}) ==")
            d = linkdir(os.path.abspath(opts.frozen_bin), tmp, "frozen")
            out = os.path.join(tmp, "spy.txt")
            bed.run([os.path.join(d, case.plugin)], bed.env("fspy", {"CNI_PATH": d}))  # warm
            bed.run([opts.py_spy, "record", "--rate", "1000", "--format", "raw", "-o", out,
                     "--", os.path.join(d, case.plugin)], bed.env("fspy", {"CNI_PATH": d}))
            pyspy_report(out, opts.top)
    except KeyboardInterrupt as e:
        print(f"\nprofile: interrupted ({str(e) or 'Ctrl-C'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        bench.cleanup_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
