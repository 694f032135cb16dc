# Runtime hook bundled only in the check build (build/check.sh), never in dist/:
# with CNI_PLUGINS_IMPORT_REPORT=FILE, write the sorted sys.modules to FILE when the
# process leaves (skel leaves through os._exit, which skips atexit, so wrap it too).
import atexit
import os
import sys

_report = os.environ.get("CNI_PLUGINS_IMPORT_REPORT")
if _report:
    _real_exit = os._exit

    def _write() -> None:
        with open(_report, "w", encoding="utf-8") as f:
            f.write("\n".join(sorted(sys.modules)) + "\n")

    def _exit(code: int) -> None:
        _write()
        _real_exit(code)

    os._exit = _exit
    atexit.register(_write)
