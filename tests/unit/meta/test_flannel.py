"""flannel without the kernel: the subnet file, the delegate config it builds (upstream's
rules), the saved config's mode, DEL without one, GC, and what ADD refuses."""

from __future__ import annotations

import json
import os
import stat

import pytest

from cni_plugins import skel
from cni_plugins.errors import CNIError
from cni_plugins.meta import flannel
from tests.fixtures.conf import cmd_args

ENV = ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
       "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")


@pytest.fixture
def paths(tmp_path):
    subnet = tmp_path / "subnet.env"
    subnet.write_text(ENV)
    return {"subnetFile": str(subnet), "dataDir": str(tmp_path / "flannel")}


def build(conf: dict, env_text: str, tmp_path) -> dict:
    (tmp_path / "s.env").write_text(env_text)
    c = flannel.load_conf(cmd_args({"type": "flannel", **conf}))
    c.check()
    return flannel.delegate_conf(c, flannel.read_subnet_env(str(tmp_path / "s.env")))


def test_the_kube_flannel_delegate(tmp_path):
    """The kube-flannel config's delegate, as upstream renders it."""
    d = build({"cniVersion": "0.3.1", "name": "cbr0",
               "delegate": {"hairpinMode": True, "isDefaultGateway": True}}, ENV, tmp_path)
    assert d == {"hairpinMode": True, "isDefaultGateway": True, "name": "cbr0",
                 "type": "bridge", "ipMasq": False, "mtu": 1450, "isGateway": True,
                 "cniVersion": "0.3.1",
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]],
                          "routes": [{"dst": "10.244.0.0/16"}]}}


def test_dual_stack_several_networks_own_ipam_and_runtime_config(tmp_path):
    env = ("FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n"
           "FLANNEL_IPV6_NETWORK=fd00:10::/56\nFLANNEL_IPV6_SUBNET=fd00:10:0:3::1/64\n"
           "FLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n")
    d = build({"name": "n", "ipam": {"dataDir": "/x", "routes": [{"dst": "192.0.2.0/24"}]},
               "runtimeConfig": {"portMappings": []},
               "delegate": {"type": "bridge", "mtu": 9000, "isGateway": False}}, env, tmp_path)
    assert d["ipMasq"] is True                        # flanneld does not masquerade: bridge does
    assert (d["mtu"], d["isGateway"]) == (9000, False)   # the delegate's own values stay
    assert d["runtimeConfig"] == {"portMappings": []}
    assert d["ipam"] == {"type": "host-local", "dataDir": "/x",
                         "ranges": [[{"subnet": "10.244.3.0/24"}],
                                    [{"subnet": "fd00:10:0:3::/64"}]],
                         "routes": [{"dst": "192.0.2.0/24"}, {"dst": "10.244.0.0/16"},
                                    {"dst": "10.245.0.0/16"}, {"dst": "fd00:10::/56"}]}


def test_another_delegate_type_is_no_gateway(tmp_path):
    d = build({"name": "n", "delegate": {"type": "ipvlan", "master": "eth0"}}, ENV, tmp_path)
    assert d["type"] == "ipvlan" and "isGateway" not in d


def test_ipv6_only(tmp_path):
    env = ("FLANNEL_IPV6_NETWORK=fd00:10::/56\nFLANNEL_IPV6_SUBNET=fd00:10:0:3::1/64\n"
           "FLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n")
    d = build({"name": "n"}, env, tmp_path)
    assert d["ipam"]["ranges"] == [[{"subnet": "fd00:10:0:3::/64"}]]


@pytest.mark.parametrize("key", ["name", "ipam"])
def test_delegate_may_not_set_name_or_ipam(key):
    c = flannel.load_conf(cmd_args({"type": "flannel", "delegate": {key: "x"}}))
    with pytest.raises(CNIError) as e:
        c.check()
    assert e.value.code == 7
    assert e.value.msg == f"invalid config: delegate.{key}: must not be set, it'll be set by flannel"


def test_delegate_type_must_be_a_string():
    c = flannel.load_conf(cmd_args({"type": "flannel", "delegate": {"type": 1}}))
    with pytest.raises(CNIError, match="delegate.type") as e:
        c.check()
    assert e.value.code == 7


@pytest.mark.parametrize("routes, ok", [(None, True), ([], True), ("x", False), (["x"], False)])
def test_own_ipam_routes_must_be_routes(routes, ok, tmp_path):
    c = flannel.load_conf(cmd_args({"type": "flannel", "ipam": {"routes": routes}}))
    if ok:
        c.check()
        return
    with pytest.raises(CNIError, match="ipam.routes") as e:
        c.check()
    assert e.value.code == 7


def test_paths_must_be_absolute():
    with pytest.raises(CNIError, match="subnetFile") as e:
        flannel.load_conf(cmd_args({"type": "flannel", "subnetFile": "run/subnet.env"}))
    assert e.value.code == 7


@pytest.mark.parametrize("text, msg", [
    ("FLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n",
     "is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_IPMASQ"),
    ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=nope\n", "FLANNEL_SUBNET: 'nope' is not a CIDR"),
    (ENV.replace("1450", "-1"), "FLANNEL_MTU: '-1' is not an MTU"),
])
def test_bad_subnet_files(tmp_path, text, msg):
    p = tmp_path / "s.env"
    p.write_text(text)
    with pytest.raises(CNIError, match=msg) as e:
        flannel.read_subnet_env(str(p))
    assert e.value.code == 7


def test_no_subnet_file_yet_is_try_again_later(tmp_path):
    with pytest.raises(CNIError) as e:
        flannel.read_subnet_env(str(tmp_path / "none"))
    assert e.value.code == 11 and "failed to read subnet file" in e.value.msg


def run(verb: str, conf: dict, cid: str = "c1", **env: str) -> tuple[int, dict | None]:
    environ = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
               "CNI_PATH": "/nonexistent", **env}
    stdin = json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "flannel", **conf})
    rc, out = skel.run("flannel", environ, stdin.encode)
    return rc, json.loads(out) if out.strip() else None


def test_del_without_a_saved_config_succeeds(paths):
    assert run("DEL", paths) == (0, None)


def test_add_saves_the_config_0600_and_keeps_it_when_the_delegate_fails(paths):
    """No bridge in CNI_PATH: the ADD fails, the saved config stays for the DEL."""
    rc, out = run("ADD", paths, CNI_NETNS="/run/netns/x")
    assert rc == 1 and "failed to find plugin 'bridge'" in out["msg"]
    saved = os.path.join(paths["dataDir"], "c1")
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(paths["dataDir"]).st_mode) == 0o700
    assert json.loads(open(saved).read())["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    assert [n for n in os.listdir(paths["dataDir"]) if n != "c1"] == []   # no temp left


def test_add_refuses_before_saving(paths):
    rc, out = run("ADD", {**paths, "delegate": {"name": "x"}}, CNI_NETNS="/run/netns/x")
    assert (rc, out["code"]) == (1, 7)
    assert not os.path.exists(paths["dataDir"])


def test_check_without_a_saved_config_is_unknown_container(paths):
    rc, out = run("CHECK", paths, CNI_NETNS="/run/netns/x")
    assert (rc, out["code"]) == (1, 3)


def test_gc_removes_the_configs_of_gone_attachments(paths):
    os.makedirs(paths["dataDir"])
    for cid in ("keep", "gone1", "gone2"):
        open(os.path.join(paths["dataDir"], cid), "w").write("{}")
    conf = {**paths, "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    assert run("GC", conf) == (0, None)
    assert os.listdir(paths["dataDir"]) == ["keep"]


def test_status_is_not_available_until_flanneld_wrote_the_subnet_file(paths, tmp_path):
    assert run("STATUS", paths) == (0, None)
    rc, out = run("STATUS", {**paths, "subnetFile": str(tmp_path / "none.env")})
    assert (rc, out["code"]) == (1, 50) and "flannel is not ready" in out["msg"]
