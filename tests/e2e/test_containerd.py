"""containerd 1.6 `ctr run --cni` driving our pyinstaller bundle: ADD, connectivity, and the
DEL that ctr sends with an empty CNI_NETNS once the task is gone.

A private containerd (own config, root, state and socket under a temp dir; CRI off; native
snapshotter) runs in a throw-away "node" netns, never the system service. ctr reads its
CNI config only from /etc/cni/net.d and plugins only from /opt/cni/bin and /usr/lib/cni, so
each ctr call runs in a private mount namespace where those are the test's directories
(and /usr/lib/cni, Go's plugins on Debian, an empty one: every plugin run is ours). The
image is a docker archive built here from busybox-static and imported with `ctr image
import`; nothing is pulled. Recipe: /work/shared/podman/README.md.

The plugin directory holds the links `install` makes, each resolving to the bundle's native
shim (checked). The "served" variant runs the same scenario with the bundle's server
socket-activated as the units of `install --service` say (systemd-socket-activate on a private
socket; the first plugin exec starts it), CNI_PLUGINS_SOCKET naming it in ctr's environment
(go-cni execs the plugins from ctr, with its environment, for the ADD and for --rm's DEL);
the server must then have counted each plugin's ADD and DEL. The standalone variant names
the session's socket (none: the shims exec the bundle standalone).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.fixtures.runtime import (INDEX, ActivatedServer, Node, best_effort, busybox_rootfs,
                                    free_subnet, kill_started_from, need_packages, plugin_links,
                                    remove_tree)
from tests.fixtures.serve import NO_SERVER

pytestmark = [pytest.mark.root, pytest.mark.runtime]

IMAGE = "docker.io/cnitest/busybox:e2e"
NAMESPACE = "cnitest"
RESULTS = "/var/lib/cni/results"            # go-cni's libcni cache
RUN_DIR = "/run/containerd"                 # the shim's socket dir (fixed in 1.6): s/, fifo/
PLUGINS = ("bridge", "tuning", "educative")     # the conflist's, in order


def docker_archive(rootfs: str, path: str) -> None:
    """A one-layer docker-archive tarball (manifest.json, config, layer.tar) of rootfs."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.add(rootfs, arcname=".")
    data = layer.getvalue()
    diff_id = hashlib.sha256(data).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [IMAGE],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as t:
        for name, blob in ((f"{diff_id}/layer.tar", data), (config_name, config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(blob), 0o644, int(time.time())
            t.addfile(info, io.BytesIO(blob))


class Containerd:
    """A private containerd in the node netns, and ctr with the test's CNI dirs."""

    def __init__(self, work: Path, node: Node, frozen_bin: str, net: str,
                 server: ActivatedServer | None = None) -> None:
        self.work, self.node, self.net, self.server = work, node, net, server
        socket = server.socket if server else os.environ.get("CNI_PLUGINS_SOCKET", NO_SERVER)
        self.env = {**os.environ, "CNI_PLUGINS_SOCKET": socket}     # ctr's: the plugins'
        self.sock = str(work / "c.sock")
        self.subnet = free_subnet()
        self.data_dir = work / "ipam"
        self.log = work / "cni.log"                 # educative: what each plugin call got
        for d in ("opt/cni/bin", "net.d", "empty", "fifo", "runc"):
            (work / d).mkdir(parents=True)
        plugin_links(str(work / "opt" / "cni" / "bin"), frozen_bin)
        (work / "net.d" / "10-ctr.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": net, "plugins": [
                {"type": "bridge", "bridge": "cnictr" + uuid.uuid4().hex[:8], "isGateway": True,
                 "ipMasq": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.data_dir)}},
                {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"},
                 "dataDir": str(work / "tuning")},
                {"type": "educative", "cniOutput": str(self.log)},
            ]}))
        disabled = ", ".join(f'"{p}"' for p in (
            "io.containerd.grpc.v1.cri", "io.containerd.internal.v1.tracing",
            "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"))
        (work / "config.toml").write_text(f"""version = 2
root = "{work / 'root'}"
state = "{work / 'state'}"
disabled_plugins = [{disabled}]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = "{work / 'debug.sock'}"
[metrics]
  address = ""
""")
        with open(work / "containerd.log", "w") as logf:
            self.daemon = subprocess.Popen(
                [*node.prefix(), "containerd", "--config", str(work / "config.toml")],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"containerd did not start:\n{self.daemon_log()}")
            time.sleep(0.1)

    def daemon_log(self) -> str:
        return (self.work / "containerd.log").read_text()[-3000:]

    def ctr_argv(self, *args: str) -> list[str]:
        """ctr in a private mount namespace (our CNI dirs at its fixed paths), in the node."""
        w = self.work
        script = (f"mount --bind {w / 'opt'} /opt && mount --bind {w / 'empty'} /usr/lib/cni && "
                  f"mount --bind {w / 'net.d'} /etc/cni/net.d && "
                  f'exec nsenter --net={self.node.path} ctr -a {self.sock} -n {NAMESPACE} "$@"')
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "ctr", *args]

    def ctr(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        r = subprocess.run(self.ctr_argv(*args), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, env=self.env)
        if check and r.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {r.returncode}:\n{r.stderr}{r.stdout}")
        return r.stdout

    def run_args(self, cid: str, *cmd: str) -> list[str]:
        return self.ctr_argv("run", "--rm", "--cni", "--snapshotter", "native",
                             "--fifo-dir", str(self.work / "fifo"),
                             "--runc-root", str(self.work / "runc"), IMAGE, cid, *cmd)

    def reservations(self) -> dict[str, str]:
        d = self.data_dir / self.net
        if not d.is_dir():
            return {}
        return {p.name: p.read_bytes().decode() for p in d.iterdir()
                if p.name != "lock" and not p.name.startswith("last_reserved_ip")}

    def calls(self) -> list[tuple[str, str, str]]:
        """(command, container ID, netns) of every plugin call educative logged."""
        text = self.log.read_text() if self.log.exists() else ""
        return re.findall(r"CNI Command: (\w+)\nContainerID: (.*)\nNetns: (.*)\n", text)

    def stop(self) -> None:
        for line in self.ctr("task", "ls", "-q", check=False).split():
            self.ctr("task", "kill", "-s", "SIGKILL", line, check=False)
        for line in self.ctr("container", "ls", "-q", check=False).split():
            self.ctr("task", "delete", "-f", line, check=False)
            self.ctr("container", "rm", line, check=False)
        self.daemon.terminate()
        try:
            self.daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait(timeout=10)
        kill_started_from(self.sock)            # shims of our containerd, if any is left


@pytest.fixture
def ctrd(frozen_bin: str, request: pytest.FixtureRequest) -> Iterator[Containerd]:
    served = request.param
    need_packages("containerd", "runc", "busybox-static")
    run_dir_existed = os.path.exists(RUN_DIR)
    made_net_d = not os.path.isdir("/etc/cni/net.d")    # ctr's fixed path: a mount point here
    if made_net_d:
        os.makedirs("/etc/cni/net.d")
    work = Path(tempfile.mkdtemp(prefix="cnitest-ctrd-"))
    node = Node()
    net = "cnitest-ctr-" + uuid.uuid4().hex[:8]
    c = srv = None
    try:
        if served:
            srv = ActivatedServer(str(work / "serve"), frozen_bin).start()
        c = Containerd(work, node, frozen_bin, net, srv)
        yield c
    finally:
        if c is not None:
            best_effort(c.stop)
        if srv is not None:
            best_effort(srv.stop)                       # SIGTERM, then SIGKILL after 60 s
        node.delete()
        for f in Path(RESULTS).glob(f"{net}-*") if os.path.isdir(RESULTS) else ():
            f.unlink()
        remove_tree(str(work))
        if not run_dir_existed:                  # what the shims made there, if empty now
            for d in (f"{RUN_DIR}/runc/{NAMESPACE}", f"{RUN_DIR}/runc", f"{RUN_DIR}/s",
                      f"{RUN_DIR}/fifo", RUN_DIR):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        if made_net_d:
            for d in ("/etc/cni/net.d", "/etc/cni"):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


@pytest.mark.parametrize("ctrd", [False, True], indirect=True,
                         ids=["standalone", "served"])
def test_ctr_run_cni(ctrd: Containerd) -> None:
    image = ctrd.work / "busybox.tar"
    docker_archive(busybox_rootfs(str(ctrd.work / "rootfs")), str(image))
    ctrd.ctr("image", "import", "--snapshotter", "native", str(image))
    assert IMAGE in ctrd.ctr("image", "ls", "-q").split()

    cid = "t" + uuid.uuid4().hex[:8]
    full_id = f"{NAMESPACE}-{cid}"                          # go-cni's container ID
    fg = subprocess.Popen(ctrd.run_args(cid, "/bin/httpd", "-f", "-p", "80", "-h", "/www"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          stdin=subprocess.DEVNULL, env=ctrd.env)
    try:
        deadline = time.monotonic() + 60
        while not ctrd.reservations():
            assert fg.poll() is None, f"ctr run exited {fg.returncode}: {fg.stdout.read()}"
            assert time.monotonic() < deadline, "no address reserved within 60 s"
            time.sleep(0.2)
        [(ip, owner)] = ctrd.reservations().items()
        assert owner == f"{full_id}\r\neth0"
        # ADD: the address, the route out, tuning's sysctl; node <-> container
        deadline = time.monotonic() + 20
        while ctrd.node.curl(f"http://{ip}/").stdout != INDEX:      # httpd may still be starting
            assert time.monotonic() < deadline, f"no http answer from {ip}"
            time.sleep(0.3)
        ctrd.node.sh("ping", "-c1", "-W2", ip)
        ex = ["task", "exec", "--fifo-dir", str(ctrd.work / "fifo"), "--exec-id"]
        assert ctrd.ctr(*ex, "e1", cid, "cat", "/proc/sys/net/core/somaxconn").strip() == "512"
        gateway = ip.rsplit(".", 1)[0] + ".1"
        ctrd.ctr(*ex, "e2", cid, "ping", "-c1", "-W2", gateway)
        ctrd.ctr(*ex, "e3", cid, "ping", "-c1", "-W2", ctrd.node.addr)
        assert full_id in ctrd.node.ruleset()                   # bridge's ipMasq rule
        veths = ctrd.node.veths()
        assert len(veths) == 1

        # the task dies; ctr (--rm) then sends DEL with no netns, the container's being gone
        ctrd.ctr("task", "kill", "-s", "SIGKILL", cid)
        fg.wait(timeout=60)
    finally:
        if fg.poll() is None:
            fg.kill()
            fg.wait()
    calls = ctrd.calls()
    assert [c[0] for c in calls] == ["ADD", "DEL"], calls
    assert calls[0][1] == calls[1][1] == full_id
    assert calls[0][2].startswith("/proc/") and calls[1][2] == "", calls    # netns-less DEL
    assert ctrd.reservations() == {}
    assert ctrd.node.veths() == []
    assert full_id not in ctrd.node.ruleset()
    assert list(Path(RESULTS).glob(f"{ctrd.net}-*")) == []
    assert ctrd.ctr("container", "ls", "-q").split() == []
    if ctrd.server is not None:
        check_served(ctrd.server)


def check_served(srv: ActivatedServer) -> None:
    """The ADD and the DEL of each plugin went through the server, which the ADD started
    (socket activation), and which then stops cleanly."""
    counts = srv.served()
    # a call that ran standalone (the variable lost on the way) is missing here
    for plugin in PLUGINS:
        assert (counts.get((plugin, "ADD")), counts.get((plugin, "DEL"))) == (1, 1), counts
    srv.stop_activated()
