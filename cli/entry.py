"""The ``geocloud`` console script: ^C is handled from the first instruction on.

Importing the command line takes about a second (rasterio, numpy, click and the
library).  A ^C in that time used to print a Python traceback; here a handler is
installed before any of it is imported, so an early ^C ends with the same one line and
exit code 130 as a later one.  Nothing is written before the command runs, so there is
nothing to clean up.  :func:`geocloud.cli.main.main` then installs the run's own handlers.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_early(signum: int, frame: object) -> None:
    sys.stderr.write("geocloud: interrupted\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGINT, _interrupted_early)
    signal.signal(signal.SIGTERM, _interrupted_early)
    from geocloud.cli.main import main as run

    run()


if __name__ == "__main__":
    main()
