"""podman 4.3.1 (CNI backend) driving our pyinstaller bundle, end to end.

podman's `cni_plugin_dirs` is a directory of the links `install` makes, and nothing else: each
resolves to the bundle's native shim (checked), so every plugin podman execs is ours and goes
through the shim; its conflist is bridge (+ host-local) + portmap + tuning. Two
busybox containers per cniVersion (--rootfs, nothing pulled), each checked for: an address
reserved in our host-local's dataDir, ping both ways and from the node, a published port on
127.0.0.1, on the node's address and from the other container, `-p 127.0.0.1:P:80` not
reachable on the node's address, connectivity after `podman network reload` and after
`podman restart`, and nothing left after `podman rm -f` (veth, netns, reservation, cached
result, nftables rule).

The "served" variant runs the same scenario (cniVersion 1.0.0) with the bundle's server
socket-activated as the units of `install --service` say (systemd-socket-activate standing in
for systemd on a private socket, the service's ExecStart= run on the first connection, which
is the first plugin exec), and CNI_PLUGINS_SOCKET names that socket to the shims. The other
variants name the session's socket (none: the shims exec the bundle standalone). podman
execs the plugins with its own environment (plus the CNI_* variables), but the DEL after a
container's process exits is often made by `podman container cleanup`, which conmon starts
with an environment of its own (PATH, CONTAINERS_CONF, HOME, ...): that DEL would go to the
default socket. So the variable is also in containers.conf's `[engine] env`, which every
podman reading that file applies when its environment lacks the variable. The server's
counters must then account for every ADD and DEL of the scenario.

The kube-flannel test runs podman on the conflist kube-flannel ships (`cbr0`: flannel with
its delegate, then portmap), text unchanged, so every path is a default one: podman, conmon and
the plugins run in a mount namespace where /run/flannel (the test's subnet.env) and
/var/lib/cni (flannel's saved configs, host-local's reservations, podman's cache) are the
test's directories. Two containers, addresses from FLANNEL_SUBNET, each seeing the other's own
address (no NAT), published ports on the node, nothing left after `podman rm -f`; standalone
and served.

podman runs inside a throw-away "node" netns (nsenter --net, same mount namespace) with its
own containers.conf, storage and runroot under a temp dir, so neither the host's network nor
the system podman's containers are touched. Recipe: /work/shared/podman/README.md.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.fixtures.runtime import (INDEX, ActivatedServer, Node, best_effort, busybox_rootfs,
                                    free_subnet, kill_started_from, need_packages, plugin_links,
                                    remove_tree)
from tests.fixtures.serve import NO_SERVER

pytestmark = [pytest.mark.root, pytest.mark.runtime]

VERSIONS = ("0.3.1", "0.4.0", "1.0.0")       # podman 4.3's libcni cannot DEL a 1.1.0 cache
PUBLIC, LOCAL = 18080, 18081                 # -p PUBLIC:80 on c1, -p 127.0.0.1:LOCAL:80 on c2
RESULTS = "/var/lib/cni/results"             # podman's libcni cache: not configurable
SERVED = "1.0.0"                             # the version also run through the activated server
VARIANTS = [(v, False) for v in VERSIONS] + [(SERVED, True)]


class Podman:
    """podman with a private config, storage and runroot, run in the node's netns."""

    def __init__(self, work: Path, node: Node, plugin_dir: str, net: str, v: str,
                 server: ActivatedServer | None = None, conflist: str | None = None,
                 prefix: list[str] | None = None) -> None:
        """`conflist`: the network's text as is (then `net` must be its name), instead of
        our bridge + portmap + tuning list; `prefix`: how to enter the node (its netns by
        default)."""
        self.work, self.node, self.net, self.server = work, node, net, server
        self.prefix = prefix or node.prefix()
        self.socket = server.socket if server else os.environ.get("CNI_PLUGINS_SOCKET", NO_SERVER)
        # conmon's `podman container cleanup` gets the socket from here (see the docstring)
        engine_env = f'env = ["CNI_PLUGINS_SOCKET={self.socket}"]'
        self.subnet = ipaddress.ip_network(free_subnet())
        self.gateway = str(self.subnet.network_address + 1)
        self.bridge = "cnipm" + uuid.uuid4().hex[:8]
        self.data_dir = work / "ipam"
        self.rootfs = busybox_rootfs(str(work / "rootfs"))
        (work / "net.d").mkdir()
        (work / "net.d" / f"10-{net}.conflist").write_text(conflist or json.dumps({
            "cniVersion": v, "name": net, "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": str(self.subnet)}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.data_dir)}},
                {"type": "portmap", "capabilities": {"portMappings": True},
                 "dataDir": str(work / "portmap")},
                {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"},
                 "dataDir": str(work / "tuning")},
            ]}, indent=1))
        (work / "containers.conf").write_text(f"""
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugin_dir}"]
network_config_dir = "{work / 'net.d'}"
default_network = "{net}-unused"
[engine]
runtime = "runc"
events_logger = "none"
{engine_env}
static_dir = "{work / 'storage' / 'libpod'}"
tmp_dir = "{work / 'runroot' / 'libpod-tmp'}"
volume_path = "{work / 'storage' / 'volumes'}"
""")

    def __call__(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        env = {**os.environ, "CONTAINERS_CONF": str(self.work / "containers.conf"),
               "CNI_PLUGINS_SOCKET": self.socket}
        r = subprocess.run([*self.prefix, "podman", "--root", str(self.work / "storage"),
                            "--runroot", str(self.work / "runroot"), "--storage-driver", "vfs",
                            *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {r.returncode}:\n{r.stderr}{r.stdout}")
        return r.stdout

    def run(self, name: str, publish: str) -> str:
        return self("run", "-d", "--name", name, "--network", self.net, "-p", publish,
                    "--rootfs", self.rootfs, "/bin/httpd", "-f", "-p", "80", "-h", "/www").strip()

    def exec(self, name: str, *cmd: str, check: bool = True) -> str:
        return self("exec", name, *cmd, check=check)

    def ip(self, name: str) -> str:
        out = self.exec(name, "ip", "-4", "-o", "addr", "show", "eth0")
        return out.split("inet ", 1)[1].split("/", 1)[0]

    def reservations(self) -> dict[str, str]:
        """ip -> owner ("<container ID>\\r\\n<ifname>", Go's layout), from host-local's files."""
        d = self.data_dir / self.net
        if not d.is_dir():
            return {}
        return {p.name: p.read_bytes().decode() for p in d.iterdir()
                if p.name != "lock" and not p.name.startswith("last_reserved_ip")}

    def http_from(self, name: str, host: str, port: int) -> str:
        """GET / from inside a container (busybox nc, bounded)."""
        return self.exec(name, "sh", "-c", f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 {host} {port}',
                         check=False)


@pytest.fixture(scope="module")
def podman_ready() -> None:
    need_packages("podman", "runc", "busybox-static")


@pytest.fixture(scope="module")
def bundle_dir(frozen_bin: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A plugin directory holding only the links `install` makes: to the bundle's shim."""
    return plugin_links(str(tmp_path_factory.mktemp("podman-cni-bin")), frozen_bin)


@pytest.fixture
def pm(podman_ready: None, bundle_dir: str, frozen_bin: str,
       request: pytest.FixtureRequest) -> Iterator[Podman]:
    v, served = request.param
    work = Path(tempfile.mkdtemp(prefix="cnitest-podman-"))     # 0700: the socket's parent
    node = Node()
    net = "cnitest-pm-" + uuid.uuid4().hex[:8]
    p = srv = None
    try:
        if served:
            srv = ActivatedServer(str(work / "serve"), frozen_bin).start()
        p = Podman(work, node, bundle_dir, net, v, srv)
        yield p
    finally:
        if p is not None:
            best_effort(p, "rm", "-f", "-t", "0", "--all", timeout=120, check=False)
            best_effort(kill_started_from, str(work))   # conmon, if rm could not stop it
        if srv is not None:
            best_effort(srv.stop)                       # SIGTERM, then SIGKILL after 60 s
        node.delete()
        for f in Path(RESULTS).glob(f"{net}-*") if os.path.isdir(RESULTS) else ():
            f.unlink()
        remove_tree(str(work))


def sandbox(pm: Podman, name: str) -> str:
    return pm("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", name).strip()


def check_connectivity(pm: Podman, c1: str, c2: str, when: str) -> tuple[str, str]:
    """Addresses from our host-local, ping both ways and from the node, the published ports."""
    ip1, ip2 = pm.ip("c1"), pm.ip("c2")
    assert {ip1, ip2} <= set(map(str, pm.subnet.hosts())), when
    assert pm.reservations() == {ip1: f"{c1}\r\neth0", ip2: f"{c2}\r\neth0"}, when
    pm.exec("c2", "ping", "-c1", "-W2", ip1)
    pm.exec("c1", "ping", "-c1", "-W2", ip2)
    for ip in (ip1, ip2):
        pm.node.sh("ping", "-c1", "-W2", ip)
    node = pm.node
    assert node.curl(f"http://127.0.0.1:{PUBLIC}/").stdout == INDEX, when
    assert node.curl(f"http://{node.addr}:{PUBLIC}/").stdout == INDEX, when
    assert pm.http_from("c2", node.addr, PUBLIC).endswith(INDEX), when        # other container
    assert node.curl(f"http://127.0.0.1:{LOCAL}/").stdout == INDEX, when
    r = node.curl(f"http://{node.addr}:{LOCAL}/", timeout=2)          # -p 127.0.0.1:LOCAL only
    assert r.returncode != 0 and INDEX not in r.stdout, when
    return ip1, ip2


@pytest.mark.parametrize("pm", VARIANTS, indirect=True,
                         ids=lambda p: f"[{p[0]}{'-served' if p[1] else ''}]")
def test_podman_end_to_end(pm: Podman) -> None:
    assert pm("info", "--format", "{{.Host.NetworkBackend}}").strip() == "cni"
    [inspect] = json.loads(pm("network", "inspect", pm.net))
    assert inspect["network_interface"] == pm.bridge
    assert [s["subnet"] for s in inspect["subnets"]] == [str(pm.subnet)]

    c1 = pm.run("c1", f"{PUBLIC}:80")
    c2 = pm.run("c2", f"127.0.0.1:{LOCAL}:80")
    check_connectivity(pm, c1, c2, "after run")
    assert pm.exec("c1", "cat", "/proc/sys/net/core/somaxconn").strip() == "512"      # tuning
    rules = pm.node.ruleset()
    assert "table inet cni_plugins_masquerade" in rules            # our bridge's nft ipMasq
    assert c1 in rules and c2 in rules                  # portmap's rules, commented with the ID

    pm("network", "reload", "--all", timeout=120)
    check_connectivity(pm, c1, c2, "after network reload")
    pm("restart", "-t", "0", "c1", timeout=120)
    check_connectivity(pm, c1, c2, "after restart")

    sandboxes = [sandbox(pm, "c1"), sandbox(pm, "c2")]
    assert all(os.path.exists(s) for s in sandboxes)
    pm("rm", "-f", "-t", "0", "c1", "c2", timeout=120)
    assert pm.node.veths() == []
    assert not any(os.path.exists(s) for s in sandboxes)
    assert pm.reservations() == {}
    assert list(Path(RESULTS).glob(f"{pm.net}-*")) == []
    rules = pm.node.ruleset()
    assert c1 not in rules and c2 not in rules
    if pm.server is not None:
        check_served(pm.server)


def check_served(srv: ActivatedServer) -> None:
    """Every plugin call of the scenario went through the server, which the first of them
    started (socket activation), and which then stops cleanly."""
    counts = srv.served()
    # 5 ADDs and 5 DELs per plugin: run c1, c2; reload (DEL+ADD each); restart c1; rm -f both.
    # A call that ran standalone (the variable lost on the way) is missing here.
    for plugin in ("bridge", "portmap", "tuning"):
        assert (counts.get((plugin, "ADD")), counts.get((plugin, "DEL"))) == (5, 5), counts
        assert counts.get((plugin, "VERSION"), 0) > 0, counts
    srv.stop_activated()


# -- the kube-flannel conflist, unchanged ------------------------------------------------------

# kube-flannel.yml's cni-conf.json, as upstream ships it (kube-flannel-cfg ConfigMap)
KUBE_FLANNEL = """{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
"""
FLANNEL_NETWORK = ipaddress.ip_network("10.244.0.0/16")
CGI = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%s\\n" "$REMOTE_ADDR"\n'


class Confinement:
    """A mount namespace in which /run/flannel and /var/lib/cni are this test's directories
    (kube-flannel's list names no paths: flannel reads /run/flannel/subnet.env and saves
    under /var/lib/cni/flannel, host-local reserves under /var/lib/cni/networks, podman
    caches under /var/lib/cni/results). A `sleep` holds it between podman calls; podman,
    conmon and the `podman container cleanup` it starts all live in it. /run/flannel is made
    on the host as a mount point if missing, and removed again."""

    def __init__(self, work: Path) -> None:
        self.run_dir, self.lib_dir = work / "run-flannel", work / "var-lib-cni"
        self.run_dir.mkdir()
        self.lib_dir.mkdir()
        self.made_mount_point = not os.path.isdir("/run/flannel")
        os.makedirs("/run/flannel", exist_ok=True)
        script = ('mount --bind "$1" /run/flannel && mount --bind "$2" /var/lib/cni && '
                  'echo ready && exec sleep infinity')
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
             str(self.run_dir), str(self.lib_dir)],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("the confinement's bind mounts failed")

    def prefix(self, node: Node) -> list[str]:
        return ["nsenter", f"--target={self.proc.pid}", "--mount", f"--net={node.path}"]

    def exists(self, path: str) -> bool:
        """Whether `path` exists as the confinement sees it."""
        return os.path.exists(f"/proc/{self.proc.pid}/root{path}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.made_mount_point:
            best_effort(os.rmdir, "/run/flannel")


@pytest.fixture
def fpm(podman_ready: None, bundle_dir: str, frozen_bin: str,
        request: pytest.FixtureRequest) -> Iterator[tuple[Podman, Confinement, str]]:
    served = request.param
    work = Path(tempfile.mkdtemp(prefix="cnitest-podman-flannel-"))
    node = Node()
    box = p = srv = None
    try:
        box = Confinement(work)
        subnet = f"10.244.{uuid.uuid4().int % 250 + 1}.1/24"
        (box.run_dir / "subnet.env").write_text(
            f"FLANNEL_NETWORK={FLANNEL_NETWORK}\nFLANNEL_SUBNET={subnet}\n"
            "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
        if served:
            srv = ActivatedServer(str(work / "serve"), frozen_bin).start()
        p = Podman(work, node, bundle_dir, "cbr0", "0.3.1", srv, conflist=KUBE_FLANNEL,
                   prefix=box.prefix(node))
        os.makedirs(f"{p.rootfs}/www/cgi-bin")
        Path(f"{p.rootfs}/www/cgi-bin/ip").write_text(CGI)
        os.chmod(f"{p.rootfs}/www/cgi-bin/ip", 0o755)
        yield p, box, subnet
    finally:
        if p is not None:
            best_effort(p, "rm", "-f", "-t", "0", "--all", timeout=120, check=False)
            best_effort(kill_started_from, str(work))
        if srv is not None:
            best_effort(srv.stop)
        if box is not None:
            box.close()
        node.delete()
        remove_tree(str(work))


@pytest.mark.parametrize("fpm", [False, True], indirect=True,
                         ids=lambda served: "[served]" if served else "[standalone]")
def test_podman_kube_flannel_conflist(fpm: tuple[Podman, Confinement, str]) -> None:
    """podman runs two containers on the kube-flannel network: addresses from the node's
    FLANNEL_SUBNET, container to container without NAT (the receiver's REMOTE_ADDR is the
    sender's own address), a published port on the node, and nothing left after rm -f."""
    pm, box, subnet = fpm
    net = ipaddress.ip_interface(subnet).network
    lib = box.lib_dir
    [inspect] = json.loads(pm("network", "inspect", "cbr0"))
    assert inspect["name"] == "cbr0" and inspect["driver"] == "flannel", inspect

    c1 = pm.run("c1", f"{PUBLIC}:80")
    c2 = pm.run("c2", f"127.0.0.1:{LOCAL}:80")
    ip1, ip2 = pm.ip("c1"), pm.ip("c2")
    gateway = str(ipaddress.ip_interface(subnet).ip)
    hosts = set(map(str, net.hosts())) - {gateway}
    assert {ip1, ip2} <= hosts and ip1 != ip2, (ip1, ip2, subnet)
    assert sorted(p.name for p in (lib / "networks" / "cbr0").iterdir()
                  if p.name[0].isdigit()) == sorted([ip1, ip2])     # host-local's default dir
    assert sorted(os.listdir(lib / "flannel")) == sorted([c1, c2])  # flannel's saved configs
    assert len(os.listdir(lib / "results")) == 2                    # podman's libcni cache
    assert box.exists("/run/flannel/subnet.env")        # the test's, at the default path
    if box.made_mount_point:
        assert os.listdir("/run/flannel") == []         # the host's view: nothing written there
    routes = pm.exec("c1", "ip", "-4", "route")
    assert f"default via {gateway}" in routes and f"{FLANNEL_NETWORK} via {gateway}" in routes
    assert "mtu 1450" in pm.exec("c1", "ip", "link", "show", "eth0")

    # container to container, no NAT: each side sees the other's own address
    assert pm.http_from("c2", ip1, 80).endswith(INDEX)
    assert peer_seen(pm, "c2", ip1) == ip2
    assert peer_seen(pm, "c1", ip2) == ip1
    # the published ports, on the node
    node = pm.node
    assert node.curl(f"http://{node.addr}:{PUBLIC}/").stdout == INDEX
    assert node.curl(f"http://127.0.0.1:{PUBLIC}/").stdout == INDEX
    assert node.curl(f"http://127.0.0.1:{LOCAL}/").stdout == INDEX
    rules = node.ruleset()
    assert c1 in rules and c2 in rules                  # portmap's rules, commented with the ID

    sandboxes = [sandbox(pm, "c1"), sandbox(pm, "c2")]
    assert all(box.exists(s) for s in sandboxes)
    pm("rm", "-f", "-t", "0", "c1", "c2", timeout=120)
    assert node.veths() == []
    assert not any(box.exists(s) for s in sandboxes)
    assert [p.name for p in (lib / "networks" / "cbr0").iterdir() if p.name[0].isdigit()] == []
    assert os.listdir(lib / "flannel") == []
    assert os.listdir(lib / "results") == []
    rules = node.ruleset()
    assert c1 not in rules and c2 not in rules
    if pm.server is not None:
        counts = pm.server.served()
        # run c1, c2; rm -f both. bridge and host-local run inside flannel's request.
        for plugin in ("flannel", "portmap"):
            assert (counts.get((plugin, "ADD")), counts.get((plugin, "DEL"))) == (2, 2), counts
        assert not any(p == "bridge" for p, _ in counts), counts
        pm.server.stop_activated()


def peer_seen(pm: Podman, name: str, host: str) -> str:
    """From container `name`, GET the CGI of the httpd on `host` that answers the peer
    address it saw (busybox httpd's REMOTE_ADDR, "[::ffff:a.b.c.d]" on its v6 socket)."""
    out = pm.exec(name, "sh", "-c",
                  f'printf "GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n" | nc -w 3 {host} 80', check=False)
    assert out.startswith("HTTP/1.") and " 200 " in out.splitlines()[0], out
    return out.strip().splitlines()[-1].strip("[]").removeprefix("::ffff:")
