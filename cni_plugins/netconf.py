"""Typed network configs (pydantic), read the way Go's encoding/json fills a struct.

    class Conf(NetConf):
        bridge: str = "cni0"
        is_gateway: bool = Field(False, alias="isGateway")

    conf = load(args, Conf)     # CNIError 7 naming the field: "invalid config: ipam.ranges[0][1].subnet: …"

The decoder's rules, once for every plugin:
- keys match case-insensitively, an exact match first ("IsGateway", "MTU" load unchanged);
- unknown keys are kept (extra="allow"), in their own case;
- JSON null is the zero value: a null key is as if absent (its default applies);
- values are not coerced (strict): a string where an integer is expected is refused, and
  every type error says so in one wording: "expected an integer, got a string".

A validator raises `Invalid(msg, field=…)` (a ValueError): code 7, or `code=2` for a value
we understand but do not implement; `field` names a key under the validated value, so a
model-level check can still point at "ipam.ranges[0][0].rangeEnd".
A plugin's model is `Conf` in its module (`cni-plugins schema TYPE` prints its JSON Schema);
its optional `check()` holds what ADD refuses beyond the types and is run by
`cni-plugins validate` too. JSON is camelCase, Python snake_case (aliases). Every model
is built once, at import.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import CNIError, Code, json_kind
from .ipam import _ranges
from .skel import CmdArgs, parse_cni_args  # noqa: F401  (re-exported)
from .types import DNS as ResultDNS
from .types import Route as ResultRoute

M = TypeVar("M", bound="Model")


class Invalid(ValueError):
    """A validator's refusal: the message, the key it concerns under the value being
    validated (optional), and the CNI code (7, or 2 for an unsupported value)."""

    def __init__(self, msg: str, field: str = "", code: int = Code.INVALID_NETWORK_CONFIG,
                 details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.field = field
        self.code = int(code)
        self.details = details


# class -> ({lowercased key: the key as declared}, the declared keys); set at class creation
_KEYS: dict[type, tuple[dict[str, str], frozenset[str]]] = {}


class Model(BaseModel):
    """Base of every config model: aliases, unknown keys kept, Go's key matching and null."""

    model_config = ConfigDict(populate_by_name=True, extra="allow", strict=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        names: dict[str, str] = {}
        for name, f in cls.model_fields.items():
            key = f.alias or name
            names.setdefault(key.lower(), key)
            names.setdefault(name.lower(), name)
        _KEYS[cls] = names, frozenset(names.values())

    @model_validator(mode="before")
    @classmethod
    def _go_decoding(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = _KEYS.get(cls)
        if known is None:
            return data
        names, declared = known
        out: dict[str, Any] = {}
        for key, value in data.items():
            canonical = names.get(key.lower(), key) if isinstance(key, str) else key
            if canonical != key and canonical in data:
                canonical = key         # an exact match elsewhere wins
            if value is None and canonical in declared:
                continue                   # null: the field keeps its default, as in Go
            out.setdefault(canonical, value)
        return out


def _absolute(value: str) -> str:
    if value and not os.path.isabs(value):
        raise Invalid(f"{value!r} is not an absolute path")
    return value


AbsPath = Annotated[str, AfterValidator(_absolute)]
"""A path key: empty (the default) or absolute. A relative one would be resolved against
the cwd of whoever runs the plugin, so it is refused (code 7 naming the key)."""


def _cidr(value: str) -> str:
    try:
        return _ranges.canonical_cidr(value) if value else value
    except ValueError as e:
        raise Invalid(str(e)) from None


def _ip(value: str) -> str:
    try:
        return _ranges.canonical_ip(value) if value else value
    except ValueError as e:
        raise Invalid(str(e)) from None


CIDR = Annotated[str, AfterValidator(_cidr)]
"""An address with its prefix ("10.1.0.5/24"), printed back as Go prints it ("fd00::5/64")."""
IP = Annotated[str, AfterValidator(_ip)]
"""A bare address, printed back as Go prints it."""


class DNS(Model):
    nameservers: list[str] = Field(default_factory=list)
    domain: str = ""
    search: list[str] = Field(default_factory=list)
    options: list[str] = Field(default_factory=list)

    def to_result(self) -> ResultDNS:
        return ResultDNS(nameservers=list(self.nameservers), domain=self.domain,
                         search=list(self.search), options=list(self.options))


class Route(Model):
    """An IPAM route (ipam.routes[i]): dst required, gw optional."""

    dst: CIDR = ""
    gw: IP = ""
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: int | None = None
    scope: int | None = None

    @model_validator(mode="after")
    def _dst_required(self) -> "Route":
        if not self.dst:
            raise Invalid("a CIDR address is required", field="dst")
        return self

    def to_result(self) -> ResultRoute:
        return ResultRoute(dst=self.dst, gw=self.gw, mtu=self.mtu, advmss=self.advmss,
                           priority=self.priority, table=self.table, scope=self.scope)


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


# -- errors ------------------------------------------------------------------------------

_EXPECTED = {"int_type": "an integer", "int_from_float": "an integer",
             "int_parsing": "an integer", "string_type": "a string", "bool_type": "a boolean",
             "list_type": "a list", "tuple_type": "a list", "dict_type": "an object",
             "model_type": "an object", "model_attributes_type": "an object",
             "float_type": "a number", "is_instance_of": "an object"}


def location(loc: tuple[Any, ...] | list[Any]) -> str:
    """('ipam', 'ranges', 0, 1, 'subnet') -> 'ipam.ranges[0][1].subnet'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part:
            out += ("." if out else "") + str(part)
    return out


def problems(e: ValidationError, prefix: str = "") -> list[tuple[str, str, int, str]]:
    """Each error of `e` as (field path, message, code, details), in one wording."""
    out = []
    for err in e.errors(include_url=False):
        where = location((prefix, *err["loc"]) if prefix else err["loc"])
        kind, ctx, code, details = err["type"], err.get("ctx") or {}, 7, ""
        cause = ctx.get("error")
        if isinstance(cause, Invalid):
            where = ".".join(p for p in (where, cause.field) if p)
            msg, code, details = cause.msg, cause.code, cause.details
        elif kind in _EXPECTED:
            msg = f"expected {_EXPECTED[kind]}, got {json_kind(err['input'])}"
        elif kind == "missing":
            msg = "required"
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            bound = {"greater_than_equal": ("ge", "at least"), "less_than_equal": ("le", "at most"),
                     "greater_than": ("gt", "more than"), "less_than": ("lt", "less than")}[kind]
            msg = f"must be {bound[1]} {ctx[bound[0]]}, got {err['input']!r}"
        elif kind == "value_error":
            msg = str(cause) if cause is not None else err["msg"]
        else:
            msg = err["msg"]
        out.append((where or "config", msg, code, details))
    return out


def raise_invalid(e: ValidationError, prefix: str = "") -> None:
    """The first problem as a CNIError; when there are more, msg counts them and details
    lists them all."""
    found = problems(e, prefix)
    where, msg, code, details = found[0]
    if len(found) > 1:
        msg += f" (and {len(found) - 1} more)"
        details = "; ".join(f"{w}: {m}" for w, m, _, _ in found)
    raise CNIError(code, f"invalid config: {where}: {msg}", details) from e


def decode(data: bytes | str) -> Any:
    """JSON text -> its value; CNIError 6 (decoding failure) when it is not JSON."""
    try:
        return json.loads(data)
    except ValueError as e:                      # UnicodeDecodeError is one too
        raise CNIError(Code.DECODING_FAILURE, f"failed to parse network config: {e}") from e


def load(args: CmdArgs | bytes | str | dict, model: type[M], prefix: str = "") -> M:
    """Validate a config into `model`; CNIError 7 (2, or 6 for bad JSON) naming the
    field otherwise. `prefix` places a part of a config in the whole ("args.cni")."""
    if isinstance(args, CmdArgs):
        data: Any = args.conf           # skel decoded and checked stdin already
    elif isinstance(args, (bytes, str)):
        data = decode(args)
    else:
        data = args
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise_invalid(e, prefix)
        raise                                    # unreachable
