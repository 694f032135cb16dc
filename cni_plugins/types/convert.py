"""Hub and spoke: every version decodes to the canonical Result and encodes from it.

    parse("0.2.0", {"ip4": …})   -> Result
    dump(result, "0.4.0")        -> {"cniVersion": "0.4.0", "ips": [{"version": "4", …}]}
"""

from __future__ import annotations

from typing import Any

from ..errors import CNIError, Code
from . import Result, v020, v040, v100

CODECS = {
    "0.1.0": v020, "0.2.0": v020,
    "0.3.0": v040, "0.3.1": v040, "0.4.0": v040,
    "1.0.0": v100, "1.1.0": v100,
}


def parse(version: str, obj: Any) -> Result:
    """A result (or prevResult) in `version`, or in its own cniVersion when it has one."""
    if not isinstance(obj, dict):
        raise CNIError(Code.DECODING_FAILURE, "failed to parse result: not a JSON object")
    own = obj.get("cniVersion")
    codec = CODECS.get(own if isinstance(own, str) and own in CODECS else version)
    if codec is None:
        raise CNIError(Code.INCOMPATIBLE_CNI_VERSION, f"unsupported result version {version!r}")
    try:
        return codec.decode(obj)
    except ValueError as e:
        raise CNIError(Code.DECODING_FAILURE, f"failed to parse result: {e}") from e


def dump(result: Result, version: str) -> dict[str, Any]:
    try:
        return CODECS[version].encode(result, version)
    except v020.ConversionError as e:
        raise CNIError(Code.INTERNAL, str(e), f"result cannot be expressed in {version}") from e


def convert(obj: Any, from_version: str, to_version: str) -> dict[str, Any]:
    return dump(parse(from_version, obj), to_version)
