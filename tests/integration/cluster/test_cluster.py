"""The seed's Kubernetes network model on a three-node flannel cluster in network namespaces
(tests/fixtures/cluster.py): six pods added through our libcni with the kube-flannel conflist,
every claim checked on real traffic from the receiving side, then every pod deleted and
nothing of theirs left on any node."""

from __future__ import annotations

import ipaddress

import pytest

from tests.fixtures.cluster import NET, Cluster, model_checks, populate

pytestmark = pytest.mark.root

EMPTY = {"links": [], "veths": [], "reservations": [], "cached results": [],
         "flannel configs": [], "portmap notes": [], "nft rules": []}


@pytest.fixture(params=["inproc", "exec"])
def cluster(request, plugin_dir, tmp_path):
    c = Cluster(str(tmp_path / "cluster"), plugin_dir, mode=request.param)
    try:
        yield c
    finally:
        c.close()


def test_the_kubernetes_network_model(cluster):
    c = cluster
    c.start_flannel(ipmasq=True)
    populate(c)
    ips = [p.ip for p in c.pods]
    assert len(set(ips)) == 6
    for p in c.pods:
        assert ipaddress.ip_address(p.ip) in ipaddress.ip_network(p.node.subnet)
        assert p.ip != p.node.gateway
    for n in c.nodes:
        assert n.leftovers()["flannel configs"] == sorted(p.cid for p in n.pods)
        assert n.plugin_rules() == ([f"ip cni_hostport {ch}: {n.pods[0].cid}"
                                     for ch in ("hostports", "masquerading", "masquerading")]
                                    if n.i == 1 else [])

    for check in model_checks(c):
        assert check.ok, f"{check.what}: {check.detail}"

    for p in list(c.pods):
        p.node.del_pod(p)
    for n in c.nodes:
        assert n.leftovers() == EMPTY, n.name
        n.teardown_masquerade()
        assert "flanneld_test" not in n.ns.sh("nft", "list", "tables")
