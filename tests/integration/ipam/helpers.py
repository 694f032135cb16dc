"""Shared by the IPAM tests: configs, the store's files, processes in parallel.

No test here needs a namespace: IPAM plugins never enter CNI_NETNS, so NETNS is a path
that does not exist (skel only refuses our own netns)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from cni_plugins import version
from tests.fixtures.run import base_env

NETNS = "/run/netns/cnitest-ipam-unused"
NET = "ipamnet"
# the versions whose results we check; 0.1.0/0.2.0 share one shape, so do 0.3.0/0.3.1
VERSIONS = ("0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
GO_VERSIONS = ("0.2.0", "0.3.1", "0.4.0", "1.0.0")       # Debian's Go plugins stop at 1.0.0


def host_local(data_dir: Path | str, ranges: Any = None, v: str = "1.0.0", name: str = NET,
               **ipam: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "host-local", "dataDir": str(data_dir)}
    if ranges is not None:
        body["ranges"] = ranges
    body.update(ipam)
    return {"cniVersion": v, "name": name, "type": "bridge", "ipam": body}


def v4(subnet: str = "10.1.2.0/24", **kw: str) -> list[list[dict[str, str]]]:
    return [[{"subnet": subnet, **kw}]]


def files(data_dir: Path | str, name: str = NET) -> dict[str, bytes]:
    d = Path(data_dir) / name
    if not d.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def reservations(data_dir: Path | str, name: str = NET) -> dict[str, bytes]:
    return {k: v for k, v in files(data_dir, name).items()
            if k != "lock" and not k.startswith("last_reserved_ip.")}


def ips(out: dict[str, Any], v: str) -> list[tuple[str, str | None]]:
    """(address, gateway) of a result in any version's shape."""
    if not version.at_least(v, "0.3.0"):
        return [(out[k]["ip"], out[k].get("gateway")) for k in ("ip4", "ip6") if k in out]
    return [(ip["address"], ip.get("gateway")) for ip in out.get("ips", [])]


def env(verb: str, cid: str, ifname: str = "eth0", cni_args: str = "",
        path: str = "/nonexistent", extra: dict[str, str] | None = None) -> dict[str, str]:
    e = base_env()
    e.update(CNI_COMMAND=verb, CNI_CONTAINERID=cid, CNI_NETNS=NETNS, CNI_IFNAME=ifname,
             CNI_PATH=path)
    if cni_args:
        e["CNI_ARGS"] = cni_args
    e.update(extra or {})
    return e


def spawn(exe: str, verb: str, conf: dict[str, Any], cid: str, ifname: str = "eth0",
          extra: dict[str, str] | None = None) -> subprocess.Popen:
    p = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env(verb, cid, ifname, extra=extra))
    assert p.stdin is not None
    p.stdin.write(json.dumps(conf).encode())
    p.stdin.close()
    return p


def finish(p: subprocess.Popen, timeout: float = 60) -> tuple[int, Any]:
    assert p.stdout is not None
    out = p.stdout.read()
    p.wait(timeout)
    p.stdout.close()
    if p.stderr:
        p.stderr.close()
    return p.returncode, json.loads(out) if out.strip() else None
