"""`cni-plugins validate` and `cni-plugins schema`: configs checked offline as libcni loads
them, one `FILE: FIELD: message` line per problem; every plugin's JSON Schema."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from cni_plugins import confcheck, plugins

SEED = pathlib.Path(__file__).parent.parent / "fixtures" / "seed" / "10-educative-plugin.conflist"

BRIDGE = {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
          "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/16"}]],
                   "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/var/lib/cni/networks"}}
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
TUNING = {"type": "tuning", "capabilities": {"mac": True},
          "sysctl": {"net.core.somaxconn": "500"}}
BANDWIDTH = {"type": "bandwidth", "capabilities": {"bandwidth": True}}
GOOD = {"cniVersion": "1.0.0", "name": "dbnet", "plugins": [BRIDGE, PORTMAP, TUNING, BANDWIDTH]}
LEGACY = {"cniVersion": "0.4.0", "name": "legacy", "type": "ptp", "ipMasq": True,
          "ipam": {"type": "static", "addresses": [{"address": "10.10.0.5/24",
                                                    "gateway": "10.10.0.1"}]}}


def write(d: pathlib.Path, name: str, body: Any) -> pathlib.Path:
    p = d / name
    p.write_text(body if isinstance(body, str) else json.dumps(body))
    return p


def cli(*argv: str) -> tuple[int, list[str], list[str]]:
    r = CliRunner().invoke(confcheck.validate_cli, list(argv))
    return r.exit_code, r.stdout.splitlines(), r.stderr.splitlines()


def lines(tmp_path: pathlib.Path, body: Any, name: str = "10-net.conflist") -> list[str]:
    rc, out, _ = cli(str(write(tmp_path, name, body)))
    assert rc == 1, out
    return out


# --- good files ------------------------------------------------------------------------


def test_good_conflist_and_legacy_conf(tmp_path):
    rc, out, err = cli(str(write(tmp_path, "10-net.conflist", GOOD)),
                       str(write(tmp_path, "20-legacy.conf", LEGACY)))
    assert (rc, out, err) == (0, ["10-net.conflist: ok", "20-legacy.conf: ok"], [])


def test_the_seeds_conflist(tmp_path):
    """flannel, educative and portmap: every plugin of the seed's list is ours and checks."""
    rc, out, err = cli(str(SEED))
    assert (rc, out, err) == (0, ["10-educative-plugin.conflist: ok"], [])


def test_a_type_not_ours_is_noted_not_failed(tmp_path):
    rc, out, err = cli(str(write(tmp_path, "10-net.conflist",
                                 {**GOOD, "plugins": [{"type": "calico"}]})))
    assert (rc, out) == (0, ["10-net.conflist: ok"])
    assert err == ["10-net.conflist: plugins[0]: type 'calico' is not "
                   "implemented here: not checked"]


def test_through_the_executable(tmp_path):
    write(tmp_path, "10-net.conflist", {**GOOD, "plugins": [{**BRIDGE, "mtu": "1500"}]})
    p = subprocess.run([sys.executable, "-m", "cni_plugins", "validate", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stdout == "10-net.conflist: plugins[0].mtu: expected an integer, got a string\n"


# --- bad files -------------------------------------------------------------------------


def ranges(*subnets: Any) -> dict:
    return {**BRIDGE, "ipam": {"type": "host-local",
                               "ranges": [[{"subnet": s} for s in subnets]]}}


@pytest.mark.parametrize("body, want", [
    ('{"name": "x", "plugins": [', ["config: failed to parse network config: "]),
    ("[]", ["config: expected an object, got a list"]),
    ({"cniVersion": "1.0.0", "plugins": [BRIDGE]}, ["name: required"]),
    ({**GOOD, "name": "../etc"}, ["name: invalid characters found in network name: '../etc'"]),
    ({**GOOD, "name": 5}, ["name: expected a string, got a number"]),
    ({**GOOD, "cniVersion": 1}, ["cniVersion: expected a string, got a number"]),
    ({**GOOD, "cniVersion": "9.9.9"}, ["cniVersion: unsupported version '9.9.9' (libcni supports 0.1.0, "]),
    ({**GOOD, "cniVersions": "1.0.0"}, ["cniVersions: expected a list, got a string"]),
    ({**GOOD, "cniVersions": ["1.0.0", 7]}, ["cniVersions[1]: expected a string, got a number"]),
    ({**GOOD, "cniVersions": ["1.0"]}, ["cniVersions[0]: '1.0' is not a version (x.y.z)"]),
    ({"name": "n", "cniVersions": ["9.9.9"], "plugins": [PORTMAP]},
     ["cniVersions: none of ['9.9.9'] is supported (libcni supports "]),
    ({**GOOD, "plugins": []}, ["plugins: empty: a network needs at least one plugin"]),
    ({**GOOD, "plugins": {"type": "bridge"}}, ["plugins: expected a list, got an object"]),
    ({**GOOD, "disableCheck": "maybe"}, ["disableCheck: expected a boolean, got a string"]),
    ({**GOOD, "plugins": [{"bridge": "cni0"}]}, ["plugins[0].type: required: the plugin's type"]),
    ({**GOOD, "plugins": [PORTMAP, {**BRIDGE, "hairpinMode": "yes"}]},
     ["plugins[1].hairpinMode: expected a boolean, got a string"]),
    ({**GOOD, "plugins": [PORTMAP, ranges("10.1.0.0")]},
     ["plugins[1].ipam.ranges[0][0].subnet: '10.1.0.0' is not in CIDR notation"]),
    ({**GOOD, "plugins": [ranges("10.1.0.0/24", 5)]},
     ["plugins[0].ipam.ranges[0][1].subnet: expected a string, got a number"]),
    ({**GOOD, "plugins": [ranges("10.1.0.0/16", "10.1.2.0/24")]},
     ["plugins[0].ipam.ranges[0][1]: range 10.1.2.1-10.1.2.254 overlaps range"]),
    ({**GOOD, "plugins": [{**BRIDGE, "ipam": {**BRIDGE["ipam"], "dataDir": "rel"}}]},
     ["plugins[0].ipam.dataDir: 'rel' is not an absolute path"]),
    ({**GOOD, "plugins": [{**PORTMAP, "capabilities": {"portMappings": "yes"}}]},
     ["plugins[0].capabilities.portMappings: expected a boolean, got a string"]),
    ({**GOOD, "plugins": [{**PORTMAP, "capabilities": ["portMappings"]}]},
     ["plugins[0].capabilities: expected an object, got a list"]),
    ({**GOOD, "plugins": [{**PORTMAP, "backend": "iptables"}]},
     ['plugins[0].backend: "iptables" is not supported']),
    ({**GOOD, "cniVersion": "0.2.0", "plugins": [BANDWIDTH]},
     ["plugins[0].type: bandwidth does not speak cniVersion 0.2.0"]),
    ({**GOOD, "plugins": [{"type": "vlan", "vlanId": 5, "ipam": {"type": "static"}}]},
     ['plugins[0].master: "master" field is required']),
    ({**GOOD, "plugins": [{**BRIDGE, "mtu": -1}, {**TUNING, "mtu": "x"}]},
     ["plugins[0].mtu: must be at least 0, got -1",
      "plugins[1].mtu: expected an integer, got a string"]),
])
def test_bad_conflist(body, want, tmp_path):
    out = lines(tmp_path, body)
    assert len(out) == len(want), out
    for line, w in zip(out, want):
        assert line.startswith(f"10-net.conflist: {w}"), line


def test_bad_legacy_conf(tmp_path):
    out = lines(tmp_path, {**LEGACY, "ipam": {"type": "static", "addresses": [{}]}},
                name="20-legacy.conf")
    assert out == ["20-legacy.conf: ipam.addresses[0].address: a CIDR address is required"]
    out = lines(tmp_path, {"cniVersion": "0.4.0", "name": "x"}, name="20-legacy.conf")
    assert out == ["20-legacy.conf: type: required: the plugin's type"]


def test_plugins_from_the_networks_directory(tmp_path):
    """libcni adds <dir>/<name>/*.conf to a conflist's plugins; they are checked too."""
    write(tmp_path, "10-net.conflist", {"cniVersion": "1.0.0", "name": "dbnet"})
    (tmp_path / "dbnet").mkdir()
    write(tmp_path / "dbnet", "10-portmap.conf", {**PORTMAP, "markMasqBit": 40})
    rc, out, _ = cli(str(tmp_path))
    assert rc == 1
    assert out == ["10-net.conflist: dbnet/10-portmap.conf.markMasqBit: must be between 0 "
                   "and 31"]


def test_directory_with_mixed_files(tmp_path):
    write(tmp_path, "10-good.conflist", GOOD)
    write(tmp_path, "20-bad.conflist", {**GOOD, "plugins": [{**PORTMAP, "snat": 1}]})
    write(tmp_path, "30-legacy.conf", LEGACY)
    write(tmp_path, "40-broken.json", "{")
    write(tmp_path, "README.md", "not a config")
    shutil.copy(SEED, tmp_path / "50-seed.conflist")
    rc, out, err = cli(str(tmp_path))
    assert rc == 1
    assert out[:4] == ["10-good.conflist: ok",
                       "20-bad.conflist: plugins[0].snat: expected a boolean, got a number",
                       "50-seed.conflist: ok",
                       "30-legacy.conf: ok"]              # libcni's order: lists first
    assert out[4].startswith("40-broken.json: config: failed to parse network config: ")
    assert len(out) == 5 and err == []


def test_empty_directory_is_an_error(tmp_path):
    rc, out, err = cli(str(tmp_path))
    assert rc == 1 and "no .conflist, .conf or .json files" in "\n".join(err)


# --- schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("plugin_type", plugins.names())
def test_every_type_has_a_schema(plugin_type):
    s = confcheck.schema(plugin_type)
    jsonschema.Draft202012Validator.check_schema(s)
    assert {"cniVersion", "name", "type", "ipam", "dns"} <= set(s["properties"])


SCHEMA_CASES = [(p["type"], {"cniVersion": "1.0.0", "name": "dbnet", **p})
                for p in GOOD["plugins"]] + [
    ("ptp", LEGACY), ("static", LEGACY), ("host-local", {"name": "n", **BRIDGE}),
    ("portmap", {"name": "n", **PORTMAP, "runtimeConfig": {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]}}),
    ("educative", json.loads(SEED.read_text())["plugins"][1]),
    ("vlan", {"name": "n", "type": "vlan", "master": "eth0", "vlanId": 42, "mtu": 1400,
              "ipam": {"type": "static"}}),
]


@pytest.mark.parametrize("plugin_type, conf", SCHEMA_CASES,
                         ids=[f"{t}-{i}" for i, (t, _) in enumerate(SCHEMA_CASES)])
def test_schema_accepts_the_configs_the_models_accept(plugin_type, conf):
    jsonschema.validate(conf, confcheck.schema(plugin_type))
    confcheck.model_of(plugin_type).model_validate(conf)


@pytest.mark.parametrize("plugin_type, conf", [
    ("bridge", {"name": "n", "type": "bridge", "mtu": "1500"}),
    ("portmap", {"name": "n", "type": "portmap", "snat": 1}),
    ("host-local", {"name": "n", "ipam": {"type": "host-local", "ranges": [{"subnet": "x"}]}}),
])
def test_schema_refuses_wrong_types(plugin_type, conf):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(conf, confcheck.schema(plugin_type))


def test_schema_cli():
    r = CliRunner().invoke(confcheck.schema_cli, ["host-local"])
    assert r.exit_code == 0
    assert json.loads(r.stdout) == confcheck.schema("host-local")
    r = CliRunner().invoke(confcheck.schema_cli, ["calico"])
    assert r.exit_code == 1 and "unknown plugin type 'calico'" in r.stderr


def test_plugin_problems_are_listed_with_the_networks(tmp_path):
    """A network that libcni refuses (a protocol key of one plugin) still has its other
    sections checked as their plugins: one run, every problem."""
    body = {"cniVersion": "1.0.0", "name": "n", "plugins": [
        {**BRIDGE, "mtu": "x"}, {**PORTMAP, "capabilities": {"portMappings": "yes"}}]}
    assert lines(tmp_path, body) == [
        "10-net.conflist: plugins[1].capabilities.portMappings: expected a boolean, got a "
        "string",
        "10-net.conflist: plugins[0].mtu: expected an integer, got a string"]
