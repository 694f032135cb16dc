"""Fixtures of the meta-plugin tests: nodes and pods from tests/fixtures/pods.py."""

from tests.fixtures.pods import ipam_path, make_node  # noqa: F401  (fixtures)
