"""Fault injection for rollback tests: `checkpoint("veth")` after each step of an ADD
raises when a test asked to fail there. The request's context carries the wish
(a ContextVar, so concurrent requests in one process never see each other's)."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from .errors import CNIError, Code

_FAIL_AFTER: ContextVar[str] = ContextVar("cni_plugins_fail_after", default="")


class InjectedFailure(CNIError):
    pass


def checkpoint(step: str) -> None:
    if _FAIL_AFTER.get() == step:
        raise InjectedFailure(Code.INTERNAL, f"injected failure after {step}")


@contextmanager
def fail_after(step: str) -> Iterator[None]:
    token = _FAIL_AFTER.set(step)
    try:
        yield
    finally:
        _FAIL_AFTER.reset(token)
