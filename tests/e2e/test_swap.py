"""The README's swap of the Go suite for ours and back, run as written, in a scratch directory.

Every sh block of the README section "Installing in place of the Go plugins" runs in order,
with /opt/cni/bin, /opt/cni-plugins, /usr/local/bin/cnitool and /tmp/swapcheck moved under
tmp_path, `build/build.sh` replaced by the session's bundle, the systemd units written into a
scratch image root (`--service --root`), and a unique netns name; the "node's" plugin
directory starts as a copy of Debian's Go plugins (/usr/lib/cni).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from cni_plugins import plugins, version
from tests.fixtures.frozen import ROOT
from tests.fixtures.run import GO_DIR

pytestmark = [pytest.mark.root, pytest.mark.oracle]

SECTION = "### Installing in place of the Go plugins"


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:re.compile(r"^##+ ", re.M).search(section, len(SECTION)).start()]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def tree(d: Path) -> dict[str, str]:
    """name -> "link:<target>" or "file:<mode>:<sha256>" for the entries of d."""
    out = {}
    for p in sorted(d.iterdir()):
        if p.is_symlink():
            out[p.name] = f"link:{os.readlink(p)}"
        else:
            out[p.name] = f"file:{oct(p.stat().st_mode)}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
    return out


def versions(out: str) -> list[list[str]]:
    """supportedVersions of every VERSION answer printed in out."""
    return [json.loads(m)["supportedVersions"]
            for m in re.findall(r'^\{.*"supportedVersions".*\}$', out, re.M)]


def test_swap_in_and_back(tmp_path: Path, frozen_bin: str) -> None:
    blocks = readme_blocks()
    assert len(blocks) == 3, "README swap section: expected 3 sh blocks (swap, verify, roll back)"
    name = "cnitest-swap-" + uuid.uuid4().hex[:8]
    bindir = tmp_path / "opt" / "cni" / "bin"
    suite = tmp_path / "opt" / "cni-plugins"
    tool = tmp_path / "usr" / "local" / "bin" / "cnitool"
    root = tmp_path / "image"
    units = root / "etc" / "systemd" / "system"
    bindir.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", GO_DIR, str(bindir)], check=True)
    go = tree(bindir)
    bundle = os.path.dirname(frozen_bin)

    def rewrite(block: str) -> str:
        block = block.replace("build/build.sh\n", ":\n").replace("dist/cni-plugins", bundle)
        block = block.replace("swapcheck", name).replace(f"/tmp/{name}", str(tmp_path / name))
        for real, scratch in (("/opt/cni/bin", bindir), ("/opt/cni-plugins", suite),
                              ("/usr/local/bin/cnitool", tool)):
            block = block.replace(real, str(scratch))
        block = block.replace(" --service", f" --service --root {root}")
        outside = block.replace(f"{tmp_path}/opt/", "").replace(f"{tmp_path}/usr/", "")
        assert "/opt/" not in outside and "/usr/local" not in outside, block
        return block

    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(PATH=f"{tool.parent}:{env['PATH']}", CNI_CACHE_DIR=str(tmp_path / "cache"))

    def sh(block: str) -> str:
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", rewrite(block)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{rewrite(block)}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        return r.stdout

    try:
        # 1. swap: our types are links to the copied bundle, Go's other types untouched
        out = sh(blocks[0])
        target = str(suite / "cni-shim")
        after = tree(bindir)
        for n in plugins.names():
            assert after[n] == f"link:{target}", n
        assert {n: v for n, v in after.items() if n not in plugins.names()} == \
            {n: v for n, v in go.items() if n not in plugins.names()}
        assert tree(tmp_path / "opt" / "cni" / "bin.go-backup") == go
        assert os.readlink(tool) == str(suite / "cni-plugins")
        assert f"bridge       -> {target}" in out
        service = (units / "cni-plugins.service").read_text()
        assert f"ExecStart={suite / 'cni-plugins'} serve" in service
        assert (units / "sockets.target.wants" / "cni-plugins.socket").is_symlink()

        # 2. verify: ours answers VERSION, cnitool ADD/DEL through the links, nothing left
        out = sh(blocks[1])
        assert versions(out) == [list(version.ALL)]
        assert "127.0.0.1" in out and "lo" in out, out
        assert not os.path.exists(f"/run/netns/{name}") and not (tmp_path / name).exists()
        assert not list((tmp_path / "cache").rglob(f"{name}-*"))

        # 3. roll back: the Go suite exactly as it was, no link of ours anywhere
        out = sh(blocks[2])
        assert tree(bindir) == go
        assert not os.path.lexists(tool) and not suite.exists()
        assert not (units / "cni-plugins.service").exists()
        assert not (units / "sockets.target.wants" / "cni-plugins.socket").is_symlink()
        assert not (tmp_path / "opt" / "cni" / "bin.go-backup").exists()
        [go_versions] = versions(out)
        assert "1.1.0" not in go_versions and "1.0.0" in go_versions
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)

