"""The multi-call entry point: /opt/cni/bin/<type> is a symlink to this executable.

    /opt/cni/bin/loopback                 plugin chosen by basename(argv[0])
    cni-plugins loopback                  the same, for development
    cni-plugins [--help]                  the plugin types
    cni-plugins install --dir DIR         one symlink per type (see install.py)
    cni-plugins cnitool ARGS              cnitool (also by a link named cnitool: --cnitool PATH)
    cni-plugins serve [--status]          the resident server the plugins hand work to
    cni-plugins dhcp daemon [-flags]      the dhcp plugin's lease daemon (also: dhcp daemon)
    cni-plugins validate PATH...          check configs offline, as libcni would load them
    cni-plugins schema TYPE               the JSON Schema of plugin TYPE's config

The runtime execs the native shim (build/shim/cni-shim.c) that the links point at; it hands
the request to `cni-plugins serve` and execs this program, standalone, when no server can
take it (as `cni-plugins TYPE`, with the stdin it already read).
"""

from __future__ import annotations

import os
import sys

from .exe import executable


def usage() -> str:
    from . import plugins

    return ("usage: cni-plugins TYPE            run plugin TYPE (CNI_* in the environment)\n"
            "       cni-plugins install --dir DIR [--force|--uninstall|--list] [--cnitool PATH]\n"
            "       cni-plugins cnitool ...       cnitool (also through a link named cnitool)\n"
            "       cni-plugins validate PATH...  check .conflist/.conf/.json files or dirs offline\n"
            "       cni-plugins schema TYPE       the JSON Schema of plugin TYPE's config\n"
            "       cni-plugins dhcp daemon ...   the dhcp plugin's lease daemon\n"
            "       or call through a symlink named after the plugin type\n\n"
            "plugin types:\n" + "".join(f"  {n}\n" for n in plugins.names()))


def dhcp_daemon(argv: list[str]) -> None:
    from .ipam import _dhcp_daemon

    sys.exit(_dhcp_daemon.main(argv))


def main() -> None:
    from . import plugins, skel

    name = os.path.basename(sys.argv[0])
    if name == "dhcp" and sys.argv[1:2] == ["daemon"]:          # as Go's: dhcp daemon -flags
        dhcp_daemon(sys.argv[2:])
    if name in plugins.REGISTRY:
        skel.main(name, executable())
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
    if args[0] in ("validate", "schema"):
        from . import confcheck

        cli = confcheck.validate_cli if args[0] == "validate" else confcheck.schema_cli
        cli.main(args=args[1:], prog_name=f"cni-plugins {args[0]}", standalone_mode=True)
    if args[0] == "serve":
        from . import serve

        serve.main(args[1:], executable())
        sys.exit(0)
    if args[:2] == ["dhcp", "daemon"]:
        dhcp_daemon(args[2:])
    if args[0] in plugins.REGISTRY:
        skel.main(args[0], executable())
    sys.stderr.write(f"cni-plugins: unknown plugin type {args[0]!r}\n\n{usage()}")
    sys.exit(2)


if __name__ == "__main__":
    main()
