"""GC through cnitool (libcni) with the real chain of tests/integration/meta/test_gc.py:
bridge(ipMasq, macspoofchk, host-local) -> portmap -> bandwidth -> tuning, in a throw-away
node. Cached attachments that are not valid get their DEL first (with the cached result),
then every plugin a GC with the valid ones, which also removes what no cache recorded;
`--all` is the node reboot: nothing is valid any more."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.pods import Node, ipam_path, make_node, veths_settled  # noqa: F401
from tests.fixtures.run import base_env
from tests.integration.meta.test_gc import (
    MAPPING, NETS, Pod, add, assert_state, confs, lose,
)

pytestmark = pytest.mark.root

CNITOOL = os.path.join(os.path.dirname(sys.executable), "cnitool")


def cid(netns: str) -> str:
    return "cnitool-" + hashlib.sha512(netns.encode()).hexdigest()[:20]


class Tool:
    def __init__(self, node: Node, tmp: Path) -> None:
        self.node, self.state = node, str(tmp / "state")
        self.netdir, self.cache = tmp / "net.d", tmp / "cache"
        self.netdir.mkdir()
        for net in NETS:
            plugins = [{k: v for k, v in c.items() if k not in ("cniVersion", "name")}
                       for c in confs(node, net, self.state).values()]
            (self.netdir / f"10-{net}.conflist").write_text(json.dumps(
                {"cniVersion": "1.1.0", "name": net, "plugins": plugins}))

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        env = base_env(drop=("CAP_ARGS", "NETCONFPATH"))
        env.update(NETCONFPATH=str(self.netdir), CNI_PATH=self.node.path,
                   CNI_CACHE_DIR=str(self.cache),
                   CAP_ARGS=json.dumps({"portMappings": MAPPING}))
        proc = subprocess.run(["ip", "netns", "exec", self.node.host.name, CNITOOL, *args],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def add(self, net: str) -> Pod:
        ns = self.node.pod()
        r = json.loads(self("add", net, ns.path, "--json").stdout)
        return Pod(net, cid(ns.path), ns, r["ips"][0]["address"].split("/")[0])

    def cached(self) -> set[str]:
        d = self.cache / "results"
        return {p.name for p in d.iterdir()} if d.is_dir() else set()

    def gc(self, net: str, *flags: str) -> list[str]:
        out = json.loads(self("gc", net, "--json", *flags).stdout)
        return [r["containerID"] for r in out["removed"]]


@pytest.fixture
def tool(make_node: Any, tmp_path: Path) -> Tool:  # noqa: F811
    return Tool(make_node(), tmp_path)


def test_cnitool_gc_dels_the_cached_orphans_then_gcs_the_plugins(tool: Tool, run) -> None:
    keep, gone = tool.add("gcnet"), tool.add("gcnet")
    other = tool.add("othernet")
    # an attachment no cache knows of (its runtime lost the cache): only plugin GC finds it
    uncached = add(run, tool.node, "gcnet", "uncached", tool.state)
    assert_state(tool.node, tool.state, [keep, gone, other, uncached])
    lose(gone, uncached)
    veths_settled(tool.node.host)
    assert tool.gc("gcnet") == [gone.cid]          # keep's netns exists: it is valid
    assert_state(tool.node, tool.state, [keep, other])
    assert tool.cached() == {f"gcnet-{keep.cid}-eth0", f"othernet-{other.cid}-eth0"}
    assert tool.gc("gcnet") == []
    assert_state(tool.node, tool.state, [keep, other])


def test_cnitool_gc_all_after_a_reboot(tool: Tool) -> None:
    pods = [tool.add("gcnet"), tool.add("gcnet"), tool.add("othernet")]
    lose(*pods)                                     # every netns gone, state dirs kept
    veths_settled(tool.node.host)
    assert sorted(tool.gc("gcnet", "--all")) == sorted([pods[0].cid, pods[1].cid])
    assert_state(tool.node, tool.state, [pods[2]])
    assert tool.cached() == {f"othernet-{pods[2].cid}-eth0"}
    assert tool.gc("othernet", "--all") == [pods[2].cid]
    assert_state(tool.node, tool.state, [])
    assert tool.cached() == set()
