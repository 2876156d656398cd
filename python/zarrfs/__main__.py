"""python -m zarrfs ARGS...: runs the zarrfs command installed with this package, for
environments whose PATH lacks the directory pip put it in (some notebook kernels)."""

import os
import sys

from . import ZarrfsError, binary


def main():
    try:
        exe = binary()
    except ZarrfsError as e:
        sys.stderr.write("zarrfs: %s\n" % e)
        return 1
    os.execv(exe, [exe] + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
