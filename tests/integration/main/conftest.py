"""Fixtures of the interface-plugin tests (tests/fixtures/pods.py)."""

from tests.fixtures.pods import ipam_path, make_node  # noqa: F401  (fixtures)
