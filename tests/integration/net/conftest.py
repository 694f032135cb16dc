"""Helpers for the nftables tests: every ruleset lives in a throw-away netns."""

from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from typing import Iterator

import pytest

from cni_plugins.net.netns import NetNS


@contextmanager
def inside(ns) -> Iterator[None]:
    """Run the block (this thread only) in the test netns `ns`."""
    handle = NetNS.open(ns.path)
    try:
        with handle.enter():
            yield
    finally:
        handle.close()


def nft_cli(ns, script: str) -> None:
    """Feed `script` to `nft -f -` inside ns (one transaction, as knftables does)."""
    subprocess.run(["ip", "netns", "exec", ns.name, "nft", "-f", "-"], input=script,
                   text=True, check=True, capture_output=True)


def nft_text(ns, *what: str) -> str:
    return ns.sh("nft", "list", *(what or ("ruleset",)))


def nft_json(ns) -> list[dict]:
    """`nft -j list ruleset` without the metainfo entry."""
    out = json.loads(ns.sh("nft", "-j", "list", "ruleset"))["nftables"]
    return [o for o in out if "metainfo" not in o]


@pytest.fixture
def nsx(netns):
    """The test netns, entered by the test thread for the duration of the test."""
    with inside(netns):
        yield netns
