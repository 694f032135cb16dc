"""educative: the seed's debug plugin. Chain it anywhere; it appends what it was called
with to the file named by `cniOutput` and passes the previous result on unchanged."""

from __future__ import annotations


from pydantic import Field

from .. import netconf
from ..errors import CNIError, Code
from ..netconf import AbsPath
from ..skel import CmdArgs
from ..types import Result

BLOCK = """
CNI Command: {command}
ContainerID: {args.container_id}
Netns: {args.netns}
IfName: {args.ifname}
Args: {args.args}
Path: {args.path}
StdinData: {stdin}
----------------------
"""


class Conf(netconf.NetConf):
    cni_output: AbsPath = Field("", alias="cniOutput")


def _log(args: CmdArgs) -> None:
    path = netconf.load(args, Conf).cni_output
    if not path:
        return
    text = BLOCK.format(command=args.command, args=args, stdin=args.stdin.decode(errors="replace"))
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise CNIError(Code.IO_FAILURE, f"failed to open cniOutput {path!r}: {e.strerror}") from e


def cmd_add(args: CmdArgs) -> Result:
    _log(args)
    return args.prev_result() or Result()


def cmd_del(args: CmdArgs) -> None:
    _log(args)


def cmd_check(args: CmdArgs) -> None:
    _log(args)
