"""dummy's config without the kernel: IPAM is required, with Go's words."""

from __future__ import annotations

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.main import dummy
from tests.fixtures.conf import cmd_args as args


def test_requires_ipam_with_gos_words():
    with pytest.raises(CNIError) as e:
        dummy.read_ipam_type(args({"ipam": {}}))
    assert e.value.code == 7
    assert "dummy interface requires an IPAM configuration" in e.value.msg
    assert dummy.read_ipam_type(args({"IPAM": {"type": "host-local"}})) == "host-local"
