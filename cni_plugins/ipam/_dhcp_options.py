"""DHCP options for the dhcp plugin and its daemon: names, request/provide, routes.

Pure functions, no pyroute2: the plugin validates a config with them before it talks to the
daemon, and the daemon turns a server's ACK into a result with them.

    prepare(cni_args, provide, request) -> (requested codes, {code: bytes provided})
    routes(options) -> [(dst cidr, gw)]   option 121 (RFC 3442) wins over 33 and the router

pyroute2's decoder leaves options it has no format for (33, 121) as lists of byte values,
so both are decoded here.
"""

from __future__ import annotations

from typing import Any, Iterable

from netaddr import IPAddress, IPNetwork

SUBNET_MASK, ROUTER, HOST_NAME, STATIC_ROUTE = 1, 3, 12, 33
CLIENT_ID, CLASSLESS_STATIC_ROUTE = 61, 121

# Go's optionNameToID: names of dhcp-options(5) it accepts, beside plain numbers
NAMES = {"dhcp-client-identifier": CLIENT_ID, "subnet-mask": SUBNET_MASK, "routers": ROUTER,
         "host-name": HOST_NAME, "user-class": 77, "vendor-class-identifier": 60}
DEFAULT_REQUEST = (ROUTER, SUBNET_MASK)         # Go's requestOptionsDefault
# what the client itself sends: pad, requested address, message type, server id, the
# parameter list, end; a `provide` of one of them would make a second, conflicting copy
CLIENT_OWN = frozenset({0, 50, 53, 54, 55, 255})
MAX_VALUE = 255


def parse_name(option: str) -> int:
    """'host-name' or '12' -> 12; ValueError naming the option otherwise."""
    if option in NAMES:
        return NAMES[option]
    if option.isdigit() and 0 <= int(option) <= 255:
        return int(option)
    raise ValueError(f"can not parse option {option!r}: not a known name nor a number 0-255")


def prepare(cni_args: dict[str, str], provide: Iterable[Any],
            request: Iterable[Any]) -> tuple[list[int], dict[int, bytes]]:
    """Go's prepareOptions: the parameter request list (router and subnet mask unless an
    entry says skipDefault) and the options the client sends, `fromArg` taken from
    CNI_ARGS (winning over `value`, as in Go). `provide`/`request` entries have
    .option, .value, .from_arg / .option, .skip_default."""
    provided: dict[int, bytes] = {}
    for i, opt in enumerate(provide):
        code = parse_name(opt.option)
        if code in CLIENT_OWN:
            raise ValueError(f"provide[{i}].option: {opt.option!r} is set by the DHCP client "
                             "itself")
        if opt.value:
            if len(opt.value.encode()) > MAX_VALUE:
                raise ValueError(f"provide[{i}]: value too long for option {opt.option!r}")
            provided[code] = opt.value.encode()
        if opt.from_arg and opt.from_arg in cni_args:
            value = cni_args[opt.from_arg].encode()
            if len(value) > MAX_VALUE:
                raise ValueError(f"provide[{i}]: value too long for option {opt.option!r} "
                                 f"from CNI_ARGS {opt.from_arg!r}")
            provided[code] = value
    requested: list[int] = []
    skip_default = False
    for opt in request:
        skip_default = skip_default or opt.skip_default
        code = parse_name(opt.option)
        if code not in requested:
            requested.append(code)
    if not skip_default:
        requested += [c for c in DEFAULT_REQUEST if c not in requested]
    return requested, provided


def _raw(value: Any) -> bytes:
    """An option value as bytes: pyroute2 gives unknown options as a list of ints."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("latin-1")
    return bytes(int(b) & 0xFF for b in value)


def classless_routes(value: Any) -> list[tuple[str, str]]:
    """RFC 3442: (width, significant octets of the destination, router) repeated. A
    malformed tail is dropped, as the RFC asks of a client."""
    data, out, i = _raw(value), [], 0
    while i < len(data):
        width = data[i]
        if width > 32:
            break
        n = (width + 7) // 8
        if i + 1 + n + 4 > len(data):
            break
        dst = bytes(data[i + 1:i + 1 + n]) + bytes(4 - n)
        gw = data[i + 1 + n:i + 5 + n]
        net = IPNetwork((int.from_bytes(dst, "big"), width)).cidr
        out.append((str(net), str(IPAddress(int.from_bytes(gw, "big")))))
        i += 5 + n
    return out


def _classful(ip: IPAddress) -> int:
    first = int(ip) >> 24
    return 8 if first < 128 else 16 if first < 192 else 24 if first < 224 else 32


def static_routes(value: Any) -> list[tuple[str, str]]:
    """Option 33: (destination, router) pairs, the destination's mask its class's (Go's
    classfulSubnet)."""
    data, out = _raw(value), []
    for i in range(0, len(data) - len(data) % 8, 8):
        dst = IPAddress(int.from_bytes(data[i:i + 4], "big"))
        net = IPNetwork((int(dst), _classful(dst))).cidr
        out.append((str(net), str(IPAddress(int.from_bytes(data[i + 4:i + 8], "big")))))
    return out


def routes(options: dict[str, Any]) -> list[tuple[str, str]]:
    """Go's Routes(): option 121 alone when present (RFC 3442 says to ignore 33 and the
    router then); otherwise option 33 and a default route through the first router."""
    if options.get("classless_static_route"):
        found = classless_routes(options["classless_static_route"])
        if found:
            return found
    out = static_routes(options["static_route"]) if options.get("static_route") else []
    if gateway(options):
        out.append(("0.0.0.0/0", gateway(options)))
    return out


def gateway(options: dict[str, Any]) -> str:
    routers = options.get("router") or []
    return str(routers[0]) if routers else ""


def prefixlen(mask: str) -> int:
    ip = IPAddress(mask, 4)
    if not ip.is_netmask():
        raise ValueError(f"{mask} is not a netmask")
    return ip.netmask_bits()
