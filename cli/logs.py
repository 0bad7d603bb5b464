"""One-line log messages on stderr for the command layer."""

from __future__ import annotations

import logging
import sys
import warnings


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"geocloud: {record.levelname.lower()}: {record.getMessage()}"


def setup_logging(quiet: bool, debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    root = logging.getLogger("geocloud")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING)
    if not debug:
        warnings.filterwarnings("ignore", module="rasterio")
