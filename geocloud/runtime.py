"""Process-level settings for long scene runs (applied by the ``geocloud`` command).

glibc's allocator gives each thread that allocates its own arena, up to 8 per core, and
memory freed in one arena is not reused by another.  A scene run has a dozen threads
(readers, model threads, mosaic, second-pass workers, one writer per product, COG
assembly) passing arrays of megabytes between them, so freed blocks pile up in arenas
no longer used: at 10000^2 px with every product, peak RSS was 1.27-1.34 GB with the
default and 1.01-1.07 GB with :data:`MALLOC_ARENAS` arenas, at the same speed
(docs/benchmarks.md).  A fixed mmap threshold instead (``MALLOC_MMAP_THRESHOLD_``) cut
RSS further but cost 50 s of page faults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: malloc arenas for a ``geocloud`` process (glibc's ``M_ARENA_MAX``).
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(n: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``n`` for the threads started from now on.

    Does nothing (returns False) when the user set ``MALLOC_ARENA_MAX`` themselves or the
    C library is not glibc.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, int(n)))
