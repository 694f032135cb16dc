"""The server's memory over many requests (issues 8, 12): each worker's RSS after N ADD/DEL cycles.

    .venv/bin/python bench/serve_rss.py [--bin PATH] [--cycles 10000] [--every 1000]

As root. Starts `BIN serve` on a private socket inside a throw-away "node" netns and sends it
bridge + host-local ADD then DEL for one pod, N times, speaking the shim's protocol directly
(no exec per request: this measures the server, not process start-up). Prints every worker's
RSS (from the server's --status) at start, after a warm-up of --warmup cycles, every --every
cycles, and each worker's growth after warm-up. Every reply must be a success; at the end the pod has only lo, the node
no veth and the store no reservation. The netns and temp dir are removed on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cni_plugins import serve  # noqa: E402


def worker_rss(sock_path: str) -> dict[int, int]:
    """pid -> RSS in KiB, per worker."""
    return {w["pid"]: w["rss_kib"] for w in serve.ask_status(sock_path)["workers"]}


def mib(rss: dict[int, int]) -> str:
    return ", ".join(f"{pid}: {kib / 1024:.1f}" for pid, kib in sorted(rss.items())) + " MiB"


def request(sock_path: str, env: dict[str, str], conf: bytes, node_ns: str, pod_ns: str) -> None:
    fds = [os.open(f"/run/netns/{node_ns}", os.O_RDONLY), os.open("/proc/self/ns/mnt", os.O_RDONLY),
           os.open(f"/run/netns/{pod_ns}", os.O_RDONLY)]
    try:
        data = serve.encode_request("bridge", env, conf, "own,netns")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with s:
            s.connect(sock_path)
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))])
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    finally:
        for fd in fds:
            os.close(fd)
    reply = b"".join(chunks)
    if reply[9:10] != b"R":
        raise SystemExit(f"unexpected reply {reply[:60]!r}")
    code, n = reply[10], int.from_bytes(reply[11:15], "big")
    if code != 0:
        raise SystemExit(f"request failed: {reply[15:15 + n].decode()}")
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, ".venv/bin/cni-plugins"))
    ap.add_argument("--cycles", type=int, default=10000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--every", type=int, default=1000)
    a = ap.parse_args()

    tag = uuid.uuid4().hex[:10]
    node, pod = f"cnitest-bench-{tag}n", f"cnitest-bench-{tag}p"
    tmp = tempfile.mkdtemp(prefix="cni-serve-rss-")
    os.chmod(tmp, 0o700)
    sock_path = os.path.join(tmp, "serve.sock")
    proc = None
    try:
        for ns in (node, pod):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", node, "link", "set", "lo", "up"], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        proc = subprocess.Popen([a.bin, "serve", "--socket", sock_path], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "w"))
        for _ in range(600):
            if os.path.exists(sock_path):
                break
            time.sleep(0.05)
        plugin_dir = os.path.join(tmp, "bin")
        os.mkdir(plugin_dir)
        os.symlink(os.path.realpath(a.bin), os.path.join(plugin_dir, "host-local"))
        conf = json.dumps({"cniVersion": "1.0.0", "name": "rssnet", "type": "bridge",
                           "bridge": "cnirss0", "isGateway": True,
                           "ipam": {"type": "host-local", "subnet": "10.99.0.0/24",
                                    "dataDir": os.path.join(tmp, "ipam")}}).encode()
        base = {"CNI_CONTAINERID": "rss", "CNI_NETNS": f"/run/netns/{pod}", "CNI_IFNAME": "eth0",
                "CNI_PATH": plugin_dir, "PATH": os.environ.get("PATH", "")}
        for _ in range(600):
            try:
                start = worker_rss(sock_path)
                break
            except OSError:
                time.sleep(0.05)
        print(f"server pid {proc.pid} ({a.bin}): workers' RSS at start {mib(start)}", flush=True)
        warm: dict[int, int] = {}
        t0 = time.monotonic()
        for i in range(1, a.cycles + 1):
            request(sock_path, dict(base, CNI_COMMAND="ADD"), conf, node, pod)
            request(sock_path, dict(base, CNI_COMMAND="DEL"), conf, node, pod)
            if i == a.warmup:
                warm = worker_rss(sock_path)
                print(f"after {i:>6} cycles (warm-up): RSS {mib(warm)}", flush=True)
            elif i % a.every == 0:
                print(f"after {i:>6} cycles: RSS {mib(worker_rss(sock_path))} "
                      f"({(time.monotonic() - t0) / i * 1000:.1f} ms per cycle)", flush=True)
        end = worker_rss(sock_path)
        if set(end) != set(warm):
            raise SystemExit(f"a worker was replaced during the run: {sorted(warm)} -> {sorted(end)}")
        for pid in sorted(end):
            print(f"worker {pid}: RSS growth after warm-up {(end[pid] - warm[pid]) / 1024:+.1f} MiB "
                  f"over {a.cycles - a.warmup} cycles (start {start.get(pid, 0) / 1024:.1f}, "
                  f"warm {warm[pid] / 1024:.1f}, end {end[pid] / 1024:.1f} MiB)")
        left = subprocess.run(["ip", "-n", pod, "-o", "link"], capture_output=True, text=True).stdout
        held = [f for f in os.listdir(os.path.join(tmp, "ipam", "rssnet"))
                if f[0].isdigit()]
        if len(left.splitlines()) != 1 or held:
            raise SystemExit(f"left behind: pod links {left!r}, reservations {held}")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        for ns in (node, pod):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
