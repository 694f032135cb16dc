"""Fixtures of the end-to-end tests: the pyinstaller bundle (built once per session when
dist/ is older than the sources, see tests/fixtures/frozen.py)."""

from __future__ import annotations

import pytest

from tests.fixtures.frozen import frozen_binary


@pytest.fixture(scope="session")
def frozen_bin() -> str:
    """Path of the bundle's cni-plugins executable (dist/ or a private build)."""
    return frozen_binary()
