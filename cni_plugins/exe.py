"""The file that is running us: what the plugin links point at (install.py), what
delegation compares a plugin path with (invoke.InProcessExec), what the server's units
start (serve). Only os and sys: __main__ asks it on every request."""

from __future__ import annotations

import os
import sys


def executable() -> str:
    if getattr(sys, "frozen", False):
        return os.path.realpath(sys.executable)
    argv0 = sys.argv[0]
    if "/" not in argv0:                 # found through PATH (shutil.which costs ~10 ms)
        for d in os.environ.get("PATH", "").split(":"):
            candidate = os.path.join(d or ".", argv0)
            if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
                argv0 = candidate
                break
    return os.path.realpath(argv0)
