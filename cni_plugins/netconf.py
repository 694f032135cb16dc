"""Typed network configs (pydantic) and CNI_ARGS.

    class Conf(NetConf):
        bridge: str = "cni0"
        is_gateway: bool = Field(False, alias="isGateway")

    conf = load(args, Conf)           # CNIError 7 naming the field, e.g. "ipam.ranges[0].subnet"

JSON is camelCase, Python snake_case (aliases). Unknown keys are kept (extra="allow"), and
keys match case-insensitively like Go's encoding/json (an exact match wins), so configs
written for the Go plugins ("IsGateway", "MTU") load unchanged.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import CNIError, Code
from .skel import CmdArgs, parse_cni_args  # noqa: F401  (re-exported)
from .types import DNS as ResultDNS

M = TypeVar("M", bound="Model")


class Model(BaseModel):
    """Base of every config model: aliases, unknown keys kept, Go's key matching."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _fold_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names: dict[str, str] = {}
        for name, f in cls.model_fields.items():
            key = f.alias or name
            names.setdefault(key.lower(), key)
        out: dict[str, Any] = {}
        for key, value in data.items():
            canonical = names.get(key.lower(), key) if isinstance(key, str) else key
            if canonical != key and canonical in data:
                canonical = key         # an exact match elsewhere wins
            out.setdefault(canonical, value)
        return out


class DNS(Model):
    nameservers: list[str] = Field(default_factory=list)
    domain: str = ""
    search: list[str] = Field(default_factory=list)
    options: list[str] = Field(default_factory=list)

    def to_result(self) -> ResultDNS:
        return ResultDNS(nameservers=list(self.nameservers), domain=self.domain,
                         search=list(self.search), options=list(self.options))


class IPAM(Model):
    type: str = ""


class NetConf(Model):
    cni_version: str = Field("", alias="cniVersion")
    name: str = ""
    type: str = ""
    capabilities: dict[str, bool] = Field(default_factory=dict)
    ipam: IPAM = Field(default_factory=IPAM)
    dns: DNS = Field(default_factory=DNS)
    runtime_config: dict[str, Any] = Field(default_factory=dict, alias="runtimeConfig")
    args: dict[str, Any] = Field(default_factory=dict)
    prev_result: dict[str, Any] | None = Field(None, alias="prevResult")


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def load(args: CmdArgs | bytes | dict, model: type[M]) -> M:
    """Validate a config into `model`; CNIError 7 (or 6) naming the field otherwise."""
    if isinstance(args, CmdArgs):
        data: Any = args.conf           # skel decoded and checked stdin already
    elif isinstance(args, (bytes, str)):
        try:
            data = json.loads(args)
        except ValueError as e:
            raise CNIError(Code.DECODING_FAILURE, f"failed to parse network config: {e}") from e
    else:
        data = args
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = _location(tuple(first["loc"])) or "config"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise CNIError(Code.INVALID_NETWORK_CONFIG,
                       f"invalid config: {where}: {first['msg']}{more}",
                       "; ".join(f"{_location(tuple(x['loc']))}: {x['msg']}" for x in e.errors())
                       ) from e
