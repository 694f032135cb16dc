"""Markers and session fixtures.

    root            needs root and network namespaces (skipped otherwise, with the reason)
    oracle          runs the Go reference plugins from /usr/lib/cni (skipped when absent)
    kernel("vlan")  needs a link type this kernel may lack: skipped here, run in the guest

Exec'd plugin calls go through links to the native shim (build/shim), as on a node.
CNI_PLUGINS_BIN=/path/to/cni-plugins runs them against another build of the multi-call
executable (the pyinstaller bundle, with its cni-shim beside it) instead of the venv's.
CNI_PLUGINS_TEST_SERVE=1 points the shims at one `cni-plugins serve` started for the session
(the fast path); otherwise they find no server and exec the standalone executable.
"""

from __future__ import annotations

import os

import pytest

from tests.fixtures.kernel import kernel_has
from tests.fixtures.run import GO_DIR, Runner, our_shim
from tests.fixtures.serve import NO_SERVER, ServerProcess

pytest_plugins = ["tests.fixtures.netns"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root") and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root for network namespaces"))
        if item.get_closest_marker("oracle") and not os.path.isdir(GO_DIR):
            item.add_marker(pytest.mark.skip(
                reason=f"Go reference plugins not installed in {GO_DIR} "
                       "(apt-get install containernetworking-plugins)"))
        for mark in item.iter_markers("kernel"):
            kind = mark.args[0]
            if not kernel_has(kind):
                item.add_marker(pytest.mark.skip(
                    reason=f"kernel lacks {kind} links: run in the guest (tests/guest/run)"))


@pytest.fixture(scope="session", autouse=True)
def serve_mode(tmp_path_factory: pytest.TempPathFactory):
    """The session's mode: a server for every exec'd plugin call, or none at all."""
    if os.environ.get("CNI_PLUGINS_TEST_SERVE") != "1" or os.geteuid() != 0:
        os.environ["CNI_PLUGINS_SOCKET"] = NO_SERVER
        yield None
        return
    srv = ServerProcess(str(tmp_path_factory.mktemp("serve"))).start()
    os.environ["CNI_PLUGINS_SOCKET"] = srv.socket
    try:
        yield srv
    finally:
        st = srv.status()
        code = srv.stop()
        log = srv.read_log()
        odd = [line for line in log.splitlines() if "refused:" in line or "request failed:" in line]
        SERVE_SUMMARY.append(f"server mode: {st['requests']} requests served, {st['refused']} "
                             f"refused, RSS {st['rss_kib'] // 1024} MiB, exit {code}")
        SERVE_SUMMARY.extend(odd[-20:] if code == 0 else log[-4000:].splitlines())


SERVE_SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    for line in SERVE_SUMMARY:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CNI_PATH directory holding one symlink per plugin type, as `install` makes it."""
    d = tmp_path_factory.mktemp("cni-bin")
    exe = our_shim()
    for name in __import__("cni_plugins.plugins", fromlist=["names"]).names():
        os.symlink(exe, d / name)
    return str(d)


@pytest.fixture
def run(plugin_dir: str) -> Runner:
    """run("loopback", "ADD", conf, netns=…) through the symlink, as a runtime does."""
    return Runner(plugin_dir, mode="exec")


@pytest.fixture
def run_inproc(plugin_dir: str) -> Runner:
    """The same request served in this process (skel.run), delegation in-process too."""
    return Runner(plugin_dir, mode="inproc")


@pytest.fixture
def run_go() -> Runner:
    """The Go reference plugins, same calling convention."""
    return Runner(GO_DIR, mode="exec")
