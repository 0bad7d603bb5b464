"""Process-level settings for long scene runs (applied by the ``geocloud`` command).

glibc's allocator is tuned in three ways, each unless the user set its environment
variable (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``),
which then wins:

* **Arenas capped at** :data:`MALLOC_ARENAS`.  glibc gives each thread that allocates its
  own arena, up to 8 per core, and memory freed in one arena is not reused by another.  A
  scene run has a dozen threads (readers, model threads, mosaic, second-pass workers, one
  writer per product, COG assembly) passing arrays of megabytes between them, so freed
  blocks piled up in arenas no longer used: at 10000^2 px with every product, peak RSS was
  1.27-1.34 GB with the default and 1.01-1.07 GB with 2 arenas, at the same speed.
* **Large blocks reused, not mapped afresh**: the mmap threshold fixed at
  :data:`MMAP_THRESHOLD` (where glibc's dynamic one stops) and the trim threshold at
  :data:`TRIM_THRESHOLD`.  By default glibc maps a fresh region for each block above a
  threshold that starts at 128 KB, and gives freed memory back to the system, so the
  multi-megabyte arrays and tensors a run allocates and frees per block (and GDAL's
  buffers while it writes the COGs) were page-faulted in again each time: 230 000-300 000
  faults per 100 Mpx on the 2-core VM, 150 000-170 000 with the thresholds fixed.  At
  10000^2 with every product that was faster in 8 of 11 alternating pairs, by about 1-2 s
  and 2-4 CPU-s, with the same peak RSS (docs/benchmarks.md).  (A *low* fixed threshold,
  128 KB or 1 MB, is the opposite: less RSS but 30-60 s of page faults.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any

#: malloc arenas for a ``geocloud`` process (glibc's ``M_ARENA_MAX``).
MALLOC_ARENAS = 2
#: blocks up to this size come from the arenas (glibc's ``M_MMAP_THRESHOLD``; 32 MiB is
#: as far as glibc's own dynamic threshold goes on 64-bit systems).
MMAP_THRESHOLD = 32 * 2**20
#: free memory at the top of an arena kept for reuse up to this size (``M_TRIM_THRESHOLD``).
TRIM_THRESHOLD = 2**30

# parameter numbers from glibc's malloc.h, with the environment variable that sets each
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_SETTINGS = (
    ("MALLOC_ARENA_MAX", _M_ARENA_MAX, MALLOC_ARENAS),
    ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD),
)


def _mallopt() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def tune_malloc() -> dict[str, int]:
    """Apply the settings above for the allocations from now on (call it before the worker
    threads start); returns those set, by environment variable name.

    A setting the user chose through its environment variable is left alone; with a C
    library that is not glibc nothing is set.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return {}
    return {
        env: value for env, param, value in _SETTINGS if env not in os.environ and mallopt(param, int(value))
    }
