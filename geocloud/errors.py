"""The geocloud error hierarchy.

Every error a user can cause derives from :class:`GeocloudError`, and also from the
builtin exception that matches it, so callers can catch either.  Each message names
the offending value, what was expected, and how to fix it.  The CLI turns these into a
one-line message and exit code 2; anything else is an internal error (exit code 1).
"""

from __future__ import annotations


class GeocloudError(Exception):
    """Root of all errors geocloud raises on purpose."""

    exit_code = 2


class InputError(GeocloudError, ValueError):
    """The input scene cannot be used as given (wrong bands, dtype, all nodata...)."""


class SceneNotFoundError(GeocloudError, FileNotFoundError):
    """The scene path does not exist."""


class NotARasterError(GeocloudError, OSError):
    """The file exists but is not a raster GDAL can read (or it is truncated)."""


class SensorError(GeocloudError, ValueError):
    """Unknown sensor name, or the DN scaling of an integer scene cannot be determined."""


class OutputError(GeocloudError, OSError):
    """An output cannot be written: the directory is not writable, or a file exists."""


class ModelError(GeocloudError, ValueError):
    """A model cannot be loaded, or does not match the input (bands, block size...)."""


class ConfigError(GeocloudError, ValueError):
    """An option has a value outside its allowed range."""


class ArchiveError(GeocloudError, ValueError):
    """A delivery archive is unsafe (path traversal, links, too large) or unreadable."""


def gdal_reason(exc: BaseException) -> str:
    """The first line of what GDAL said: rasterio's "Read failed. See previous exception for
    details." is replaced by that previous exception (e.g. a VRT's missing source)."""
    while "See previous exception" in str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc)
    return text.splitlines()[0] if text else "unreadable"
