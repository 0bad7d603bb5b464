"""Process-level settings for long scene runs (applied by the ``geocloud`` command).

**Signals.**  :func:`exit_on_signals` makes SIGTERM (a scheduler, ``kill``) unwind the run
like ^C, so every temporary file is removed.  The exception is raised in the main thread
wherever it happens to be, so a few steps that must not be cut in half hold it back until
they are done (:func:`signals_deferred`): above all the start of a worker thread.  A
``ThreadPoolExecutor`` interrupted while it starts a thread keeps a thread running that
it no longer knows of, and ``shutdown(wait=True)`` cannot wait for it; the run then closed
the scene under that thread's read and died of a segmentation fault (5 of 100 runs sent
SIGTERM in their first blocks on a loaded 2-core machine; none of 80 since).  :class:`ThreadPool` is the
executor whose ``submit`` and ``shutdown`` hold signals back.

**GDAL's messages.**  :func:`quiet_gdal` sends what GDAL prints by itself to ``os.devnull``.

**Memory.**  glibc's allocator is tuned in three ways, each unless the user set its environment
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

import contextlib
import ctypes
import ctypes.util
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

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


def quiet_gdal() -> bool:
    """Send the messages GDAL prints itself to ``os.devnull`` (``CPL_LOG``), unless the user
    set ``CPL_LOG`` or asked for GDAL's debug output (``CPL_DEBUG``); returns whether it did.

    GDAL prints an error with its own handler when it happens in a thread where rasterio
    has not installed one: a full disk during a run gave 120 lines of ``_tiffWriteProc: No
    space left on device`` and ``ERROR 1: TIFFWriteDirectoryTagData`` before geocloud's one
    line.  Every such failure still reaches geocloud as an exception, reported in one line.
    Call it before GDAL prints anything (it reads ``CPL_LOG`` once).
    """
    if "CPL_LOG" in os.environ or os.environ.get("CPL_DEBUG", "").upper() in ("ON", "YES", "TRUE", "1"):
        return False
    os.environ["CPL_LOG"] = os.devnull
    return True


# ---- signals
#: the signals :func:`exit_on_signals` handles: SIGINT raises KeyboardInterrupt (as
#: Python's own handler does), the others SystemExit(128 + signal number).
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_deferring = 0  # depth of signals_deferred() sections (main thread only)
_pending: int | None = None  # a signal that arrived inside one


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _deferring:
        _pending = signum
        return
    _raise_for(signum)


def exit_on_signals() -> None:
    """Install the handler for :data:`HANDLED_SIGNALS` (main thread only, as Python's
    ``signal.signal`` requires)."""
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, _on_signal)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back a signal handled by :func:`exit_on_signals` until the block has ended,
    then raise it.  Only the main thread gets Python signals, so elsewhere this does
    nothing; sections nest."""
    global _deferring, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            _raise_for(signum)


class ThreadPool(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` that a signal cannot interrupt half-way through starting a
    thread (inside ``submit``) or waiting for its threads (``shutdown``): the signal is
    raised as soon as that step is done, so ``shutdown(wait=True)`` really waits for every
    thread the pool started."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        with signals_deferred():
            return super().submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with signals_deferred():
            super().shutdown(wait=wait, cancel_futures=cancel_futures)
