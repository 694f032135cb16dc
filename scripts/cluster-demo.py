#!/usr/bin/env python3
"""The seed's Kubernetes network model on a three-node flannel cluster, as root:

    sudo .venv/bin/python scripts/cluster-demo.py [--exec]

Builds three "nodes" (network namespaces) on an underlay bridge, plays flanneld (subnet.env,
host-gw routes, its masquerade), adds two pods per node through our libcni with the
kube-flannel conflist, checks the model on real traffic, deletes every pod and shows what is
left (nothing). Only throw-away namespaces and a temporary directory are touched; they are
removed at the end, even after a failure. --exec runs the plugins as child processes through
their symlinks and the native shim (default: in this process, as the executable would).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.fixtures.cluster import (CLUSTER_NET, OUTSIDE_IP, Cluster, model_checks,  # noqa: E402
                                    plugin_dir, populate)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exec", action="store_true", help="plugins as child processes")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("cluster-demo: needs root (network namespaces)", file=sys.stderr)
        return 2
    os.environ.setdefault("CNI_PLUGINS_SOCKET", "/nonexistent/cluster-demo.sock")
    t0 = time.monotonic()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="cni-cluster-") as tmp:
        with Cluster(os.path.join(tmp, "cluster"), plugin_dir(os.path.join(tmp, "bin")),
                     mode="exec" if opts.exec else "inproc") as c:
            c.start_flannel(ipmasq=True)
            populate(c)
            print(f"== topology (cluster network {CLUSTER_NET}, flannel host-gw, "
                  f"FLANNEL_IPMASQ=true; plugins {'exec' if opts.exec else 'in process'})")
            print(f"   underlay bridge in {c.underlay.name}; outside host {OUTSIDE_IP} "
                  f"in {c.outside.name}")
            for n in c.nodes:
                others = ", ".join(f"{o.subnet} via {o.ip}" for o in c.nodes if o is not n)
                print(f"   {n.name} ({n.ns.name}) ul0 {n.ip}, cni0 {n.gateway}/24; "
                      f"routes {others}")
                for p in n.pods:
                    ports = ", ".join(f"hostPort {m['hostPort']}->{m['containerPort']}"
                                      for m in p.port_mappings)
                    print(f"      pod {p.cid:10} {p.ip:12} {ports}")
            print("== checks (each read on the receiving side)")
            for chk in model_checks(c):
                failed += not chk.ok
                print(f"   [{'ok' if chk.ok else 'FAIL'}] {chk.what}")
                if not chk.ok or len(chk.detail) < 100:
                    print(f"          {chk.detail}")
            print("== every pod deleted; left on each node:")
            for p in list(c.pods):
                p.node.del_pod(p)
            for n in c.nodes:
                left = {k: v for k, v in n.leftovers().items() if v}
                failed += bool(left)
                print(f"   {n.name}: {left or 'nothing (cni0 stays, as the Go bridge leaves it)'}")
                n.teardown_masquerade()
    print(f"== {'all checks passed' if not failed else f'{failed} FAILED'} "
          f"in {time.monotonic() - t0:.1f}s; namespaces and files removed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
