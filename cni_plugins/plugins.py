"""Plugin type -> module, as strings: nothing is imported until a request needs it."""

from __future__ import annotations

import importlib
from typing import Any

from . import version

REGISTRY: dict[str, str] = {
    "bandwidth": "cni_plugins.meta.bandwidth",
    "bridge": "cni_plugins.main.bridge",
    "loopback": "cni_plugins.main.loopback",
    "macvlan": "cni_plugins.main.macvlan",
    "portmap": "cni_plugins.meta.portmap",
    "ptp": "cni_plugins.main.ptp",
    "vlan": "cni_plugins.main.vlan",
    "ipvlan": "cni_plugins.main.ipvlan",
    "dummy": "cni_plugins.main.dummy",
    "educative": "cni_plugins.meta.educative",
    "host-local": "cni_plugins.ipam.host_local",
    "static": "cni_plugins.ipam.static",
    "dhcp": "cni_plugins.ipam.dhcp",
    "tuning": "cni_plugins.meta.tuning",
    "host-device": "cni_plugins.main.host_device",
    "tap": "cni_plugins.main.tap",
    "vrf": "cni_plugins.meta.vrf",
    "sbr": "cni_plugins.meta.sbr",
    "firewall": "cni_plugins.meta.firewall",
    "flannel": "cni_plugins.meta.flannel",
}

# Plugins that speak fewer versions than version.ALL; read without importing them.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "bandwidth": tuple(v for v in version.ALL if version.at_least(v, "0.3.0")),   # as Go's
    "vrf": tuple(v for v in version.ALL if version.at_least(v, "0.3.1")),         # as Go's
    "firewall": tuple(v for v in version.ALL if version.at_least(v, "0.4.0")),    # as Go's
}


def names() -> list[str]:
    return sorted(REGISTRY)


def supported_versions(name: str) -> tuple[str, ...]:
    return SUPPORTED.get(name, version.ALL)


def load(name: str) -> Any:
    try:
        path = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown plugin type {name!r}") from None
    return importlib.import_module(path)
