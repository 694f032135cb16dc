"""CNI spec versions: what we speak, and which version a config asks for.

Stdlib only: skel answers VERSION and rejects a bad cniVersion with nothing else imported.
"""

from __future__ import annotations

import json

from .errors import CNIError, Code

ALL: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"


def parse(v: str) -> tuple[int, int, int]:
    """'0.3.1' -> (0, 3, 1); ValueError for anything else."""
    parts = v.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid version {v!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(v: str, minimum: str) -> bool:
    return parse(v) >= parse(minimum)


def has_check(v: str) -> bool:
    return at_least(v, "0.4.0")


def has_gc(v: str) -> bool:
    return at_least(v, "1.1.0")


def version_info(supported: tuple[str, ...] = ALL) -> str:
    """The VERSION verb's answer."""
    return json.dumps({"cniVersion": CURRENT, "supportedVersions": list(supported)})


def _supported_list(supported: tuple[str, ...]) -> str:
    return "[" + " ".join(json.dumps(s) for s in supported) + "]"


def reconcile(conf: dict, supported: tuple[str, ...] = ALL) -> str:
    """The version this request is answered in, or CNIError 1.

    `cniVersion` absent means 0.1.0, as in the Go library; a config carrying only a
    `cniVersions` list is answered in the highest version both sides know.
    """
    raw = conf.get("cniVersion")
    if raw is None and isinstance(conf.get("cniVersions"), list):
        known = [v for v in conf["cniVersions"] if isinstance(v, str) and v in supported]
        if not known:
            raise CNIError(Code.INCOMPATIBLE_CNI_VERSION, "incompatible CNI versions",
                           f"config supports {json.dumps(conf['cniVersions'])}, "
                           f"plugin supports {_supported_list(supported)}")
        return max(known, key=parse)
    v = "0.1.0" if raw in (None, "") else raw
    if not isinstance(v, str) or v not in supported:
        raise CNIError(Code.INCOMPATIBLE_CNI_VERSION, "incompatible CNI versions",
                       f"config is {json.dumps(v)}, plugin supports {_supported_list(supported)}")
    return v
