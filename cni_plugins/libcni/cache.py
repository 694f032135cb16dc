"""The result cache, in the Go libcni's layout, so that either can read what the other
wrote (a runtime may be upgraded between an ADD and its DEL).

    <cache dir>/results/<network>-<containerID>-<ifname>     dir 0700, file 0600

holds one JSON object (Go's `cachedInfo`, fields in its order, empty ones left out):

    {"kind": "cniCacheV1", "containerId": "…", "config": "<the list's bytes, base64>",
     "ifName": "eth0", "networkName": "…", "netns": "…", "cniArgs": [["K", "V"]],
     "capabilityArgs": {…}, "result": {<the ADD result, in the list's version>}}

A file from before cniCacheV1 is the bare result; it is still read. Files are written
whole into a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ..errors import CNIError, Code

DEFAULT_DIR = "/var/lib/cni"
KIND = "cniCacheV1"


@dataclass
class Attachment:
    """One network attachment of a container, as the cache records it."""

    container_id: str
    network: str
    ifname: str
    config: bytes = b""
    netns: str = ""
    cni_args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "kind": KIND,
            "containerId": self.container_id,
            "config": base64.b64encode(self.config).decode() if self.config else None,
            "ifName": self.ifname,
            "networkName": self.network,
        }
        if self.netns:
            obj["netns"] = self.netns
        if self.cni_args:
            obj["cniArgs"] = [[k, v] for k, v in self.cni_args]
        if self.capability_args:
            obj["capabilityArgs"] = self.capability_args
        if self.result:
            obj["result"] = self.result
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> "Attachment":
        """ValueError when `obj` is not a cniCacheV1 record."""
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            raise ValueError(f"kind is not {KIND!r}")
        strings = {}
        for key in ("containerId", "ifName", "networkName", "netns"):
            value = obj.get(key) or ""
            if not isinstance(value, str):
                raise ValueError(f"{key}: not a string")
            strings[key] = value
        raw_config = obj.get("config")
        if raw_config is None:
            config = b""
        elif isinstance(raw_config, str):
            try:
                config = base64.b64decode(raw_config, validate=True)
            except binascii.Error as e:
                raise ValueError(f"config: {e}") from None
        else:
            raise ValueError("config: not a base64 string")
        args = obj.get("cniArgs") or []
        if not isinstance(args, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)
                for p in args):
            raise ValueError("cniArgs: not a list of [key, value] pairs")
        caps = obj.get("capabilityArgs") or {}
        result = obj.get("result") or None
        if not isinstance(caps, dict) or not isinstance(result, (dict, type(None))):
            raise ValueError("capabilityArgs and result must be objects")
        return cls(container_id=strings["containerId"], network=strings["networkName"],
                   ifname=strings["ifName"], config=config, netns=strings["netns"],
                   cni_args=[(k, v) for k, v in args], capability_args=caps, result=result)


class ResultCache:
    def __init__(self, cache_dir: str = DEFAULT_DIR) -> None:
        self.dir = cache_dir or DEFAULT_DIR

    @property
    def results_dir(self) -> str:
        return os.path.join(self.dir, "results")

    def path(self, network: str, container_id: str, ifname: str) -> str:
        if not network or not container_id or not ifname:
            raise CNIError(Code.INVALID_ENVIRONMENT_VARIABLES,
                           f"cache file path requires network name ({network!r}), container "
                           f"ID ({container_id!r}), and interface name ({ifname!r})")
        return os.path.join(self.results_dir, f"{network}-{container_id}-{ifname}")

    def write(self, a: Attachment) -> str:
        path = self.path(a.network, a.container_id, a.ifname)
        data = json.dumps(a.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
        try:
            write_private(path, data)
        except OSError as e:
            raise CNIError(Code.IO_FAILURE,
                           f"failed to write cache file {path}: {e.strerror}") from e
        return path

    def read(self, network: str, container_id: str, ifname: str) -> Attachment | None:
        """The record, or None when there is none (or it cannot be read, as in Go);
        CNIError when the file holds something else."""
        path = self.path(network, container_id, ifname)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise CNIError(Code.DECODING_FAILURE,
                           f"failed to unmarshal cached network {network!r}: {e}") from e
        try:
            return Attachment.from_json(obj)
        except ValueError as e:
            if isinstance(obj, dict) and obj.get("kind") is None and "cniVersion" in obj:
                # before cniCacheV1 the file was the bare result
                return Attachment(container_id=container_id, network=network, ifname=ifname,
                                  result=obj)
            raise CNIError(Code.DECODING_FAILURE,
                           f"failed to unmarshal cached network {network!r}: {e}") from None

    def delete(self, network: str, container_id: str, ifname: str) -> bool:
        try:
            os.remove(self.path(network, container_id, ifname))
        except (OSError, CNIError):
            return False
        return True

    def attachments(self, container_id: str = "") -> list[Attachment]:
        """Every readable cniCacheV1 record (of `container_id` when given), by file name."""
        try:
            names = sorted(os.listdir(self.results_dir))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise CNIError(Code.IO_FAILURE,
                           f"failed to read cache dir {self.results_dir}: {e.strerror}") from e
        out = []
        for name in names:
            if name.startswith(".tmp-"):
                continue
            if container_id and f"-{container_id}-" not in name:
                continue
            try:
                with open(os.path.join(self.results_dir, name), "rb") as f:
                    a = Attachment.from_json(json.loads(f.read()))
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            if container_id and a.container_id != container_id:
                continue
            if a.ifname and a.network:
                out.append(a)
        return out


def write_private(path: str, data: bytes) -> None:
    """`data` as the whole of `path` (mode 0600, its missing directories 0700), never half
    written: a temporary name ".tmp-*" beside it, renamed over it. Raises OSError."""
    directory = os.path.dirname(path)
    _makedirs(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")  # mode 0600, a unique name
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _makedirs(path: str) -> None:
    """Create `path` and its missing parents with mode 0700, as Go's MkdirAll(…, 0700)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass
