"""The multi-call entry point: /opt/cni/bin/<type> is a symlink to this executable.

    /opt/cni/bin/loopback                 plugin chosen by basename(argv[0])
    cni-plugins loopback                  the same, for development
    cni-plugins [--help]                  the plugin types
    cni-plugins install --dir DIR         one symlink per type (see install.py)
    cni-plugins cnitool ARGS              cnitool (also by a link named cnitool: --cnitool PATH)
    cni-plugins serve [--status]          the resident server the plugins hand work to

A plugin call first offers itself to the server (client.py; nothing heavy is imported
before that), and runs standalone here when there is none.
"""

from __future__ import annotations

import os
import sys


def executable() -> str:
    """The file that is running us: what symlinks point at and delegation compares with."""
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


def _plugin_call() -> str:
    """The plugin type this exec is a call of, or "" (help, install, serve, ...)."""
    name = os.path.basename(sys.argv[0])
    if name not in ("cni-plugins", "cnitool", "__main__.py", "entry.py") \
            and not name.startswith("python"):
        return name
    arg = sys.argv[1] if len(sys.argv) > 1 else ""
    if not arg or arg[0] in "-." or arg in ("install", "serve", "help", "cnitool"):
        return ""
    return arg


def usage() -> str:
    from . import plugins

    return ("usage: cni-plugins TYPE            run plugin TYPE (CNI_* in the environment)\n"
            "       cni-plugins install --dir DIR [--force|--uninstall|--list] [--cnitool PATH]\n"
            "       cni-plugins cnitool ...       cnitool (also through a link named cnitool)\n"
            "       or call through a symlink named after the plugin type\n\n"
            "plugin types:\n" + "".join(f"  {n}\n" for n in plugins.names()))


def main() -> None:
    stdin = None
    plugin = _plugin_call()
    if plugin and os.environ.get("CNI_COMMAND"):
        from . import client

        stdin = client.forward(plugin)      # exits when the server answered
    from . import plugins, skel

    name = os.path.basename(sys.argv[0])
    if name in plugins.REGISTRY:
        skel.main(name, executable(), stdin)
    args = sys.argv[1:]
    if name == "cnitool" or args[:1] == ["cnitool"]:     # by a cnitool link, or by name
        from .cnitool import cli as cnitool

        cnitool.main(args=args if name == "cnitool" else args[1:], prog_name="cnitool")
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        sys.exit(0)
    if args[0] == "install":
        from .install import cli

        cli.main(args=args[1:], prog_name="cni-plugins install", standalone_mode=True)
    if args[0] == "serve":
        from . import serve

        serve.main(args[1:], executable())
        sys.exit(0)
    if args[0] in plugins.REGISTRY:
        skel.main(args[0], executable(), stdin)
    sys.stderr.write(f"cni-plugins: unknown plugin type {args[0]!r}\n\n{usage()}")
    sys.exit(2)


if __name__ == "__main__":
    main()
