"""flannel (meta): the node's flannel lease turned into a bridge config, and delegated.

flanneld writes the node's share of the cluster network to `subnetFile`
(default /run/flannel/subnet.env):

    FLANNEL_NETWORK=10.244.0.0/16          the cluster network (comma-separated: several)
    FLANNEL_SUBNET=10.244.1.1/24           this node's pod subnet
    FLANNEL_IPV6_NETWORK / FLANNEL_IPV6_SUBNET   the same for IPv6 (either family suffices)
    FLANNEL_MTU=1450                       the overlay's MTU
    FLANNEL_IPMASQ=true                    flanneld masquerades itself (so the bridge must not)

ADD    subnetFile read -> the delegate config built from `delegate` (type "bridge" unless
       it says otherwise; name, cniVersion and runtimeConfig carried; ipMasq = not
       FLANNEL_IPMASQ and mtu = FLANNEL_MTU unless the delegate sets them; a bridge is a
       gateway unless it says not; ipam = this config's ipam (host-local by default) with
       the node's subnets as ranges and a route to each cluster network added) -> saved
       as <dataDir>/<containerID> (0600, atomically) -> the delegate's ADD, in process
       when it is ours; its result is ours
DEL    the saved config replayed as the delegate's DEL, then removed (kept if the DEL
       fails, so a retry still has it); no saved config: success, nothing done
CHECK  the saved config, with this request's prevResult, delegated as CHECK
GC     saved configs of containers not among the valid attachments removed (libcni's GC
       has already sent DEL for each of them)
STATUS 50 (plugin not available) while the subnet file cannot be read: flanneld has no
       lease for this node yet, so an ADD would fail

As flannel-io/cni-plugin, with two differences: errors carry CNI codes (a `delegate`
setting `name` or `ipam` is code 7 naming the key; no subnet file yet is 11, try again
later), and CHECK, GC and STATUS are implemented where upstream has none.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
from typing import Any

from pydantic import Field

from .. import invoke, netconf
from ..errors import CNIError, Code
from ..netconf import AbsPath
from ..skel import CmdArgs
from ..types import Result

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"
SET_BY_FLANNEL = ("name", "ipam")            # a delegate may not set these


class Conf(netconf.NetConf):
    subnet_file: AbsPath = Field(DEFAULT_SUBNET_FILE, alias="subnetFile")
    data_dir: AbsPath = Field(DEFAULT_DATA_DIR, alias="dataDir")
    delegate: dict[str, Any] = Field(default_factory=dict)
    ipam: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]

    def check(self) -> None:
        """What ADD refuses beyond the types (DEL does without: it replays what was saved)."""
        kind = self.delegate.get("type")
        if "type" in self.delegate and not isinstance(kind, str):
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           "invalid config: delegate.type: must be a string naming the "
                           "plugin to delegate to")
        for key in SET_BY_FLANNEL:
            if key in self.delegate:
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               f"invalid config: delegate.{key}: must not be set, "
                               f"it'll be set by flannel")
        routes = self.ipam.get("routes") or []
        if not isinstance(routes, list) or not all(isinstance(r, dict) for r in routes):
            raise CNIError(Code.INVALID_NETWORK_CONFIG,
                           "invalid config: ipam.routes: expected a list of routes")


def load_conf(args: CmdArgs) -> Conf:
    return netconf.load(args, Conf)


# -- the subnet file ---------------------------------------------------------------------

class SubnetEnv:
    """What flanneld leased this node. Networks and subnets are in network form
    ("10.244.1.0/24"), as Go's net.ParseCIDR leaves them."""

    def __init__(self) -> None:
        self.networks: list[str] = []
        self.subnet = ""
        self.ip6_networks: list[str] = []
        self.ip6_subnet = ""
        self.mtu: int | None = None
        self.ipmasq: bool | None = None

    def missing(self) -> list[str]:
        out = []
        if not self.networks and not self.ip6_networks:
            out += ["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]
        if not self.subnet and not self.ip6_subnet:
            out += ["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]
        if self.mtu is None:
            out.append("FLANNEL_MTU")
        if self.ipmasq is None:
            out.append("FLANNEL_IPMASQ")
        return out


def _network(path: str, key: str, value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: subnetFile: {path}: {key}: {value!r} is not a "
                       f"CIDR") from None


def read_subnet_env(path: str) -> SubnetEnv:
    """Parse flanneld's KEY=VALUE file; CNIError 11 while it does not exist yet."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        code = Code.TRY_AGAIN_LATER if e.errno == errno.ENOENT else Code.IO_FAILURE
        raise CNIError(code, f"failed to read subnet file {path}: {e.strerror}",
                       "flanneld writes it once it has a lease for this node") from e
    env = SubnetEnv()
    for line in lines:
        key, _, value = line.partition("=")
        if key == "FLANNEL_NETWORK":
            env.networks = [_network(path, key, v) for v in value.split(",") if v.strip()]
        elif key == "FLANNEL_IPV6_NETWORK":
            env.ip6_networks = [_network(path, key, v) for v in value.split(",") if v.strip()]
        elif key == "FLANNEL_SUBNET":
            env.subnet = _network(path, key, value)
        elif key == "FLANNEL_IPV6_SUBNET":
            env.ip6_subnet = _network(path, key, value)
        elif key == "FLANNEL_MTU":
            if not value.isdigit() or int(value) > 0xFFFFFFFF:
                raise CNIError(Code.INVALID_NETWORK_CONFIG,
                               f"invalid config: subnetFile: {path}: FLANNEL_MTU: {value!r} "
                               f"is not an MTU")
            env.mtu = int(value)
        elif key == "FLANNEL_IPMASQ":
            env.ipmasq = value == "true"
    missing = env.missing()
    if missing:
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: subnetFile: {path} is missing {', '.join(missing)}")
    return env


# -- the delegate's config -----------------------------------------------------------------

def delegate_ipam(conf: Conf, env: SubnetEnv) -> dict[str, Any]:
    """This config's ipam, completed: host-local unless it names a type, one range set per
    family over the node's subnet, and a route to each cluster network after its own."""
    ipam = dict(conf.ipam)
    ipam.setdefault("type", "host-local")
    ipam["ranges"] = [[{"subnet": sn}] for sn in (env.subnet, env.ip6_subnet) if sn]
    routes = list(ipam.get("routes") or [])
    routes += [{"dst": nw} for nw in env.networks + env.ip6_networks]
    ipam["routes"] = routes
    return ipam


def delegate_conf(conf: Conf, env: SubnetEnv) -> dict[str, Any]:
    d = dict(conf.delegate)
    if "runtime_config" in conf.model_fields_set:
        d["runtimeConfig"] = conf.runtime_config
    d["name"] = conf.name
    d.setdefault("type", "bridge")
    d.setdefault("ipMasq", not env.ipmasq)      # flanneld not masquerading: the bridge does
    d.setdefault("mtu", env.mtu)
    if d["type"] == "bridge":
        d.setdefault("isGateway", True)
    if conf.cni_version:
        d["cniVersion"] = conf.cni_version
    d["ipam"] = delegate_ipam(conf, env)
    return d


# -- the saved config ------------------------------------------------------------------------

def saved_path(conf: Conf, container_id: str) -> str:
    return os.path.join(conf.data_dir, container_id)


def save(path: str, data: bytes) -> None:
    from ..libcni.cache import write_private

    try:
        write_private(path, data)
    except OSError as e:
        raise CNIError(Code.IO_FAILURE,
                       f"failed to save delegate config {path}: {e.strerror}") from e


def read_saved(path: str) -> bytes | None:
    """The saved delegate config, or None when there is none."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CNIError(Code.IO_FAILURE,
                       f"failed to read delegate config {path}: {e.strerror}") from e


def delegate_type(path: str, data: bytes) -> str | None:
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) and kind else None


def remove(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


# -- verbs -----------------------------------------------------------------------------------

def cmd_add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    conf.check()
    env = read_subnet_env(conf.subnet_file)
    d = delegate_conf(conf, env)
    data = json.dumps(d, separators=(",", ":")).encode()
    save(saved_path(conf, args.container_id), data)
    # The saved config stays when the ADD fails: the runtime's DEL that follows replays it
    # and so releases whatever the delegate left (as upstream).
    return invoke.delegate_add(d["type"], args, stdin=data)


def cmd_del(args: CmdArgs) -> None:
    conf = load_conf(args)
    path = saved_path(conf, args.container_id)
    data = read_saved(path)
    if data is None:
        return                                  # never added, or already deleted
    kind = delegate_type(path, data)
    if kind is None:
        # unreadable: nothing to replay; what it described goes with the node (as upstream)
        return
    invoke.delegate_del(kind, args, stdin=data)
    remove(path)


def cmd_check(args: CmdArgs) -> None:
    conf = load_conf(args)
    path = saved_path(conf, args.container_id)
    data = read_saved(path)
    kind = delegate_type(path, data) if data is not None else None
    if data is None or kind is None:
        raise CNIError(Code.UNKNOWN_CONTAINER,
                       f"failed to check container {args.container_id}: no delegate config "
                       f"saved in {conf.data_dir}")
    saved = json.loads(data)
    if conf.prev_result is not None:
        saved["prevResult"] = conf.prev_result
    invoke.delegate_check(kind, args, stdin=json.dumps(saved).encode())


def cmd_gc(args: CmdArgs) -> None:
    conf = load_conf(args)
    valid = {cid for cid, _ in args.valid_attachments()}
    try:
        names = os.listdir(conf.data_dir)
    except FileNotFoundError:
        return
    except OSError as e:
        raise CNIError(Code.IO_FAILURE,
                       f"failed to list delegate configs in {conf.data_dir}: {e.strerror}") from e
    for name in names:
        if name not in valid and not name.startswith(".tmp-"):
            remove(os.path.join(conf.data_dir, name))


def cmd_status(args: CmdArgs) -> None:
    conf = load_conf(args)
    try:
        read_subnet_env(conf.subnet_file)
    except CNIError as e:
        raise CNIError(Code.PLUGIN_NOT_AVAILABLE, f"flannel is not ready: {e.msg}",
                       e.details) from e
