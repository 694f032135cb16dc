"""The one error type of the project, and the CNI codes it carries.

    code  name                           raised when
    ----  -----------------------------  -------------------------------------------------
       1  INCOMPATIBLE_CNI_VERSION       config's cniVersion unknown or not supported
       2  UNSUPPORTED_FIELD              a config field we understand but do not implement
       3  UNKNOWN_CONTAINER              CNI_CONTAINERID missing or unknown
       4  INVALID_ENVIRONMENT_VARIABLES  CNI_* missing or malformed
       5  IO_FAILURE                     a file or socket could not be read or written
       6  DECODING_FAILURE               stdin (or a delegate's output) is not valid JSON
       7  INVALID_NETWORK_CONFIG         a config value is wrong; the message names the field
       8  INVALID_NETNS                  CNI_NETNS is not a network namespace, or is ours
      11  TRY_AGAIN_LATER                transient: the runtime may retry
      50  PLUGIN_NOT_AVAILABLE           STATUS: the plugin cannot serve ADDs now
      51  LIMITED_CONNECTIVITY           STATUS: ADD would work with reduced connectivity
     999  INTERNAL                       anything unexpected (the Go library's ErrInternal)

Raise `CNIError(code, msg, details)` where the code is known. Kernel (netlink, setns)
failures go through `kernel_errors()`, the one place that maps an errno to a code.
"""

from __future__ import annotations

import errno as _errno
import os
from contextlib import contextmanager
from enum import IntEnum
from typing import Iterator


class Code(IntEnum):
    INCOMPATIBLE_CNI_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT_VARIABLES = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_NETWORK_CONFIG = 7
    INVALID_NETNS = 8
    TRY_AGAIN_LATER = 11
    PLUGIN_NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    INTERNAL = 999


class CNIError(Exception):
    """A CNI error: printed by skel as {"cniVersion","code","msg","details"}."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def to_json(self, cni_version: str) -> dict[str, object]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg,
                "details": self.details}

    @classmethod
    def from_json(cls, obj: object) -> "CNIError":
        """Rebuild an error a delegate printed; it passes through unchanged."""
        if isinstance(obj, dict) and isinstance(obj.get("code"), int):
            return cls(obj["code"], str(obj.get("msg", "")), str(obj.get("details", "")))
        raise ValueError("not a CNI error object")


def json_kind(value: object) -> str:
    """What a decoded JSON value is, for "expected an integer, got a string"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


# errno -> code; everything else a kernel says is INTERNAL, with the errno in details.
_TRANSIENT = {_errno.EAGAIN, _errno.EBUSY, _errno.EINTR, _errno.ENOBUFS, _errno.ENOMEM,
              _errno.ETIMEDOUT}
_IO = {_errno.EPERM, _errno.EACCES, _errno.EROFS, _errno.EIO}


def code_for_errno(err: int | None) -> Code:
    if err in _TRANSIENT:
        return Code.TRY_AGAIN_LATER
    if err in _IO:
        return Code.IO_FAILURE
    return Code.INTERNAL


@contextmanager
def kernel_errors(what: str) -> Iterator[None]:
    """Turn an OSError from netlink, setns or /proc into a CNIError saying what failed.

    `with kernel_errors(f"set link {name!r} up"): nl.link_set(...)`
    gives msg "failed to set link 'eth0' up: No such device".
    """
    try:
        yield
    except OSError as e:
        reason = e.strerror or os.strerror(e.errno or 0)
        raise CNIError(code_for_errno(e.errno), f"failed to {what}: {reason}",
                       _errno.errorcode.get(e.errno or 0, "")) from e


class ErrorList:
    """Collect failures and go on (DEL, GC); raise one CNIError at the end."""

    def __init__(self) -> None:
        self.errors: list[CNIError] = []

    @contextmanager
    def collect(self) -> Iterator[None]:
        try:
            yield
        except CNIError as e:
            self.errors.append(e)

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        if len(self.errors) == 1:
            raise self.errors[0]
        raise CNIError(self.errors[0].code, "; ".join(e.msg for e in self.errors),
                       "; ".join(e.details for e in self.errors if e.details))
