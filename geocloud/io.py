"""Reading scenes window by window, and writing Cloud-Optimised GeoTIFFs safely.

* :func:`open_scene` checks a path and returns a :class:`SceneInfo` (never pixels).
* :class:`SceneReader` reads windows (padding beyond the scene with nodata), one GDAL
  handle per thread, so several threads can read at once.
* :class:`RasterSink` streams windows into a temporary tiled GeoTIFF, then
  :meth:`RasterSink.finalize` turns it into a COG (tiled, compressed, overviews) under a
  temporary name and renames it into place: an interrupted run never leaves a file that
  looks finished.
"""

from __future__ import annotations

import errno
import contextlib
import os
import re
import shutil
import socket
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from .errors import GeocloudError, InputError, NotARasterError, OutputError, SceneNotFoundError
from .profiles import output_cog, work_tiff

#: dtypes geocloud reads.
SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "float32")

#: smallest scene side geocloud accepts (a cloud score needs some context and statistics).
MIN_SCENE_SIDE = 8


@contextmanager
def without_georef_warning() -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning inside the block: for rasters that have no
    georeferencing by design (intermediates, VRTs, the L8 Biome patches) or whose missing
    georeferencing geocloud reports itself, once (:func:`open_scene`'s warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


@dataclass(frozen=True)
class SceneInfo:
    """Everything about a scene but its pixels."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    crs: CRS | None
    transform: Affine
    rpcs: Any | None
    gcps: Any | None
    tags: Mapping[str, str]
    descriptions: tuple[str | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    #: "value", "nan", "mask" (internal/external mask band), "alpha" or "none".
    nodata_kind: str
    block_shapes: tuple[tuple[int, int], ...] = field(default=())
    #: GDAL's name of the compression (e.g. "ZSTD", "DEFLATE"), None when uncompressed
    compression: str | None = None
    #: GDAL colour interpretation of each band ("gray", "red", "alpha", ...).
    colorinterp: tuple[str, ...] = ()

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None or self.rpcs is not None or bool(self.gcps and self.gcps[0])

    @property
    def georef_kind(self) -> str:
        if self.rpcs is not None and self.crs is None:
            return "rpc"
        if self.crs is not None:
            return "crs+transform" if self.transform != Affine.identity() else "crs"
        if self.gcps and self.gcps[0]:
            return "gcps"
        return "none"

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def striped(self) -> bool:
        """Stored in strips (whole rows) rather than tiles."""
        return bool(self.block_shapes) and self.block_shapes[0][1] >= self.width

    @property
    def layout(self) -> str:
        """How the file stores its pixels, e.g. "tiles of 512x512 px, ZSTD" or "strips of 1 row, DEFLATE"."""
        if not self.block_shapes:
            return "unknown"
        bh, bw = self.block_shapes[0]
        kind = f"strips of {bh} row{'s' if bh > 1 else ''}" if self.striped else f"tiles of {bw}x{bh} px"
        return f"{kind}, {self.compression or 'uncompressed'}"


def _nodata_kind(ds: rasterio.DatasetReader) -> str:
    from rasterio.enums import MaskFlags

    flags = ds.mask_flag_enums[0]
    if MaskFlags.nodata in flags:
        return "nan" if ds.nodata is not None and np.isnan(ds.nodata) else "value"
    if MaskFlags.per_dataset in flags and MaskFlags.alpha in flags:
        return "alpha"
    if MaskFlags.per_dataset in flags:
        return "mask"
    return "none"


def open_scene(path: str | os.PathLike[str]) -> SceneInfo:
    """Check that ``path`` is a readable raster geocloud can process, and describe it."""
    p = Path(path)
    if not p.exists():
        if p.is_symlink():
            try:
                p.resolve(strict=True)
            except RuntimeError:  # "Symlink loop" (Python < 3.13 raises RuntimeError)
                raise SceneNotFoundError(
                    f"scene {str(p)!r} is a symlink loop; point the link at the scene file"
                ) from None
            except OSError as exc:
                if exc.errno == 40:  # ELOOP
                    raise SceneNotFoundError(
                        f"scene {str(p)!r} is a symlink loop; point the link at the scene file"
                    ) from None
            raise SceneNotFoundError(
                f"scene {str(p)!r} is a symlink to {os.readlink(p)!r}, which does not exist; check the link"
            )
        raise SceneNotFoundError(f"scene {str(p)!r} does not exist; check the path")
    if p.is_dir():
        raise NotARasterError(f"scene {str(p)!r} is a directory; pass a GeoTIFF file")
    if p.stat().st_size == 0:
        raise NotARasterError(f"scene {str(p)!r} is an empty file (0 bytes); re-download or re-export it")
    try:
        with without_georef_warning(), rasterio.open(p) as ds:
            dtypes = set(ds.dtypes)
            info = SceneInfo(
                path=p,
                width=ds.width,
                height=ds.height,
                count=ds.count,
                dtype=ds.dtypes[0],
                nodata=ds.nodata,
                crs=ds.crs,
                transform=ds.transform,
                rpcs=ds.rpcs,
                gcps=ds.gcps if ds.gcps and ds.gcps[0] else None,
                tags=dict(ds.tags()),
                descriptions=tuple(ds.descriptions),
                scales=tuple(float(s) for s in ds.scales),
                offsets=tuple(float(o) for o in ds.offsets),
                nodata_kind=_nodata_kind(ds),
                block_shapes=tuple(tuple(b) for b in ds.block_shapes),
                compression=ds.compression.value if ds.compression else None,
                colorinterp=tuple(ci.name for ci in ds.colorinterp),
            )
            # touch the last block: truncated files fail here, not half-way through a run
            if ds.width and ds.height:
                ds.read(1, window=Window(ds.width - 1, ds.height - 1, 1, 1))
    except RasterioIOError as exc:
        msg = gdal_reason(exc)
        if "not recognized as" in msg or "not a supported file format" in msg:
            raise NotARasterError(
                f"{str(p)!r} is not a raster GDAL can read; pass a GeoTIFF (.tif)"
            ) from None
        if "No such file or directory" in msg:  # a VRT (or a sidecar) points at a missing file
            raise NotARasterError(
                f"{str(p)!r} cannot be read ({msg}); a file it refers to is missing: restore it or rebuild {p.name}"
            ) from None
        raise NotARasterError(
            f"{str(p)!r} cannot be read ({msg}); the file is probably truncated or corrupt: re-download or re-export it"
        ) from None
    if len(dtypes) > 1:
        raise InputError(
            f"scene {str(p)!r} mixes band dtypes {sorted(dtypes)}; convert it to one dtype (gdal_translate -ot)"
        )
    if info.dtype not in SUPPORTED_DTYPES:
        raise InputError(
            f"scene dtype {info.dtype} is not supported; convert it to one of {', '.join(SUPPORTED_DTYPES)} "
            "(e.g. gdal_translate -ot UInt16 or -ot Float32)"
        )
    if info.width < MIN_SCENE_SIDE or info.height < MIN_SCENE_SIDE:
        raise InputError(
            f"scene is {info.width}x{info.height} pixels; geocloud needs at least "
            f"{MIN_SCENE_SIDE}x{MIN_SCENE_SIDE}: pass a larger scene"
        )
    return info


#: input tiles larger than this (either side) are not shared between reader threads
#: (:class:`TileCache`); nor are strips taller than this.
MAX_SHARED_TILE = 1024
#: striped inputs are shared in bands of whole strips of at most this many rows and bytes
STRIP_CHUNK_ROWS = 256
STRIP_CHUNK_BYTES = 16 * 2**20


class TileCache:
    """Decoded input tiles shared by the reader threads, least recently used first out.

    Each reader thread has its own GDAL handle, and each handle its own share of GDAL's
    block cache, so two threads reading neighbouring blocks used to decompress the tiles
    those blocks share once each (about 2x the decoding work of the first pass, 2.5x for
    the clear product's windows).  Here the first thread to ask for a tile decodes it and
    the others wait for that result.  Failed loads are not kept.  ``capacity`` (bytes)
    bounds the finished tiles held; tiles being decoded are never dropped.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._entries: OrderedDict[Any, Future[tuple[np.ndarray | None, ...]]] = OrderedDict()
        self._sizes: dict[Any, int] = {}
        self._bytes = 0
        #: tiles decoded (for tests and benchmarks)
        self.loads = 0

    def get(
        self, key: Any, load: Callable[[], tuple[np.ndarray | None, ...]]
    ) -> tuple[np.ndarray | None, ...]:
        """The arrays of tile ``key`` (read-only by convention), from ``load()`` on first use."""
        with self._lock:
            fut = self._entries.get(key)
            owner = fut is None
            if fut is None:
                fut = self._entries[key] = Future()
                self.loads += 1
            else:
                self._entries.move_to_end(key)
        if not owner:
            return fut.result()
        try:
            value = load()
        except BaseException as exc:
            with self._lock:
                self._entries.pop(key, None)
            fut.set_exception(exc)
            raise
        fut.set_result(value)
        with self._lock:
            if key in self._entries:
                self._sizes[key] = sum(a.nbytes for a in value if a is not None)
                self._bytes += self._sizes[key]
                self._evict()
        return value

    def clear(self) -> None:
        """Drop the finished tiles (e.g. between passes over the scene)."""
        with self._lock:
            for key in list(self._sizes):
                del self._entries[key]
            self._sizes.clear()
            self._bytes = 0

    def _evict(self) -> None:
        for key in list(self._entries):
            if self._bytes <= self.capacity:
                break
            if key in self._sizes:  # finished: may go
                del self._entries[key]
                self._bytes -= self._sizes.pop(key)


class SceneReader:
    """Thread-safe windowed reads of selected bands with a validity mask.

    Windows may extend beyond the scene: that part is returned as 0 and invalid.
    A pixel is valid when GDAL's mask says so for every selected band and its values
    are finite.

    Tiled inputs (tiles at most :data:`MAX_SHARED_TILE` px) are read tile by tile through
    a :class:`TileCache` of ``cache_bytes`` shared by all threads, so each tile is
    decompressed once while it is in use; striped inputs likewise in bands of whole
    strips across the full width (:data:`STRIP_CHUNK_ROWS`, :data:`STRIP_CHUNK_BYTES`).
    The values are those of a windowed read.  ``cache_bytes=None`` reads every window
    straight from the file.
    """

    def __init__(self, info: SceneInfo, indexes: tuple[int, ...], cache_bytes: int | None = 64 * 2**20):
        self.info = info
        self.indexes = list(indexes)
        self._local = threading.local()
        self._handles: list[rasterio.DatasetReader] = []
        self._lock = threading.Lock()
        #: validity comes from GDAL's mask band (mask or alpha nodata), read beside the data
        self._masked = info.nodata_kind in ("mask", "alpha")
        self.tile: tuple[int, int] | None = None
        shapes = {info.block_shapes[i - 1] for i in self.indexes if i - 1 < len(info.block_shapes)}
        if cache_bytes is not None and len(shapes) == 1:
            th, tw = next(iter(shapes))
            if tw < info.width and max(th, tw) <= MAX_SHARED_TILE:
                self.tile = (th, tw)
            elif tw >= info.width and th <= MAX_SHARED_TILE:
                # striped: share bands of whole strips (each block read decodes full rows)
                row_bytes = info.width * len(self.indexes) * np.dtype(info.dtype).itemsize
                rows = min(STRIP_CHUNK_ROWS, STRIP_CHUNK_BYTES // row_bytes) // th * th
                if rows:
                    self.tile = (rows, info.width)
        self.cache = TileCache(cache_bytes) if self.tile is not None and cache_bytes is not None else None

    def _ds(self) -> rasterio.DatasetReader:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            with without_georef_warning():
                ds = rasterio.open(self.info.path)
            self._local.ds = ds
            with self._lock:
                self._handles.append(ds)
        return ds

    def _file_read(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """The file's values of ``window`` (inside the scene) and, for mask or alpha
        nodata, GDAL's mask (> 0: valid)."""
        ds = self._ds()
        block = ds.read(self.indexes, window=window)
        mask = None
        if self._masked:
            mask = ds.read_masks(self.indexes[0], window=window) > 0
        return block, mask

    def _tiled_read(self, rr0: int, cc0: int, rr1: int, cc1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`_file_read` of rows rr0:rr1, columns cc0:cc1, assembled from shared tiles."""
        assert self.tile is not None and self.cache is not None
        th, tw = self.tile
        info = self.info
        block = np.empty((len(self.indexes), rr1 - rr0, cc1 - cc0), dtype=info.dtype)
        mask = np.empty((rr1 - rr0, cc1 - cc0), dtype=bool) if self._masked else None
        for ti in range(rr0 // th, (rr1 - 1) // th + 1):
            for tj in range(cc0 // tw, (cc1 - 1) // tw + 1):
                t0, s0 = ti * th, tj * tw
                tile = Window(s0, t0, min(tw, info.width - s0), min(th, info.height - t0))
                data, tile_mask = self.cache.get((ti, tj), partial(self._file_read, tile))
                assert data is not None
                a0, a1 = max(rr0, t0), min(rr1, t0 + th)
                b0, b1 = max(cc0, s0), min(cc1, s0 + tw)
                src = (slice(a0 - t0, a1 - t0), slice(b0 - s0, b1 - s0))
                dst = (slice(a0 - rr0, a1 - rr0), slice(b0 - cc0, b1 - cc0))
                block[(slice(None), *dst)] = data[(slice(None), *src)]
                if mask is not None:
                    assert tile_mask is not None
                    mask[dst] = tile_mask[src]
        return block, mask

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Return (data (C, h, w) in the file's dtype, valid (h, w) bool) for ``window``."""
        r0, c0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, self.info.height), min(c0 + w, self.info.width)
        if rr1 <= rr0 or cc1 <= cc0:
            return np.zeros((len(self.indexes), h, w), dtype=self.info.dtype), np.zeros((h, w), dtype=bool)
        try:
            if self.cache is not None:
                block, mask = self._tiled_read(rr0, cc0, rr1, cc1)
            else:
                block, mask = self._file_read(Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
            kind = self.info.nodata_kind
            if mask is not None:
                ok = mask
            elif kind == "value":
                # GDAL's nodata-value mask, computed here rather than by a second read
                ok = np.ones(block.shape[1:], dtype=bool)
                nodatavals = self._ds().nodatavals
                for b, nd in zip(block, (nodatavals[i - 1] for i in self.indexes), strict=True):
                    if nd is not None and not np.isnan(nd):
                        ok &= b != nd
            else:
                ok = np.ones(block.shape[1:], dtype=bool)
        except RasterioIOError as exc:
            raise InputError(
                f"reading {self.info.path.name} at rows {rr0}-{rr1}, cols {cc0}-{cc1} failed "
                f"({gdal_reason(exc)}); the file is probably truncated or corrupt"
            ) from None
        if block.dtype.kind == "f":
            ok &= np.isfinite(block).all(axis=0)
            block[:, ~ok] = 0
        if (rr0, cc0, rr1, cc1) == (r0, c0, r0 + h, c0 + w):
            return block, ok
        data = np.zeros((len(self.indexes), h, w), dtype=self.info.dtype)
        valid = np.zeros((h, w), dtype=bool)
        ys, xs = slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0)
        data[:, ys, xs] = block
        valid[ys, xs] = ok
        return data, valid

    def close(self) -> None:
        with self._lock:
            for ds in self._handles:
                ds.close()
            self._handles.clear()

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class RasterSpec:
    """The georeferencing and layout of an output raster."""

    width: int
    height: int
    count: int
    dtype: str
    nodata: float | int | None
    crs: CRS | None
    transform: Affine
    rpcs: Any | None = None
    descriptions: tuple[str, ...] = ()
    #: overview resampling: "nearest" for classes, "average" for continuous values.
    resampling: str = "average"

    @property
    def nbytes(self) -> int:
        """Uncompressed size of the full-resolution pixels."""
        return self.width * self.height * self.count * np.dtype(self.dtype).itemsize

    @classmethod
    def like(cls, info: SceneInfo, *, count: int, dtype: str, nodata: float | int | None,
             descriptions: tuple[str, ...] = (), resampling: str = "average") -> RasterSpec:  # fmt: skip
        return cls(
            width=info.width, height=info.height, count=count, dtype=dtype, nodata=nodata,
            crs=info.crs, transform=info.transform, rpcs=info.rpcs,
            descriptions=descriptions, resampling=resampling,
        )  # fmt: skip


def check_writable_dir(outdir: Path, flag: str = "-o/--outdir") -> None:
    """Create ``outdir`` if needed and check that files can be created in it (errors name
    the option ``flag`` that chose it)."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"output directory {str(outdir)!r} cannot be created ({exc.strerror}); pass a writable {flag}"
        ) from None
    if not outdir.is_dir():
        raise OutputError(f"output path {str(outdir)!r} is not a directory; pass a directory to {flag}")
    probe = outdir / f".geocloud-write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"output directory {str(outdir)!r} is not writable ({exc.strerror}); pass a writable {flag}"
        ) from None


@contextlib.contextmanager
def scene_lock(outdir: Path, stem: str) -> Iterator[None]:
    """Hold an advisory lock on ``stem``'s products in ``outdir`` for the block's duration.

    A second run for the same scene and folder fails at once with :class:`OutputError`
    naming the running process (the lock file ``.STEM.geocloud-lock`` holds its host and
    pid).  The lock is ``flock`` on that file, so the system releases it when a process
    dies; the file is removed on exit.  Locks need a local file system (``flock`` on NFS
    depends on the server).
    """
    check_writable_dir(outdir)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked, as before
        yield
        return
    path = outdir / f".{stem}.geocloud-lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputError(
                f"another geocloud run ({holder}) is writing the products of {stem!r} into {str(outdir)!r}; "
                "wait for it to finish, or pass another -o"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file another run removed after we opened it
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {_HOST}".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def gdal_reason(exc: BaseException) -> str:
    """The first line of what GDAL said: rasterio's "Read failed. See previous exception for
    details." is replaced by that previous exception (e.g. a VRT's missing source)."""
    while "See previous exception" in str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc)
    return text.splitlines()[0] if text else "unreadable"


#: a write that fails with less than this free on the output's disk is reported as a full
#: disk (GDAL's TIFF errors carry no errno).
LOW_SPACE_BYTES = 64 * 2**20


def disk_full_error(outdir: Path, exc: BaseException) -> OutputError | None:
    """The :class:`OutputError` to raise instead of ``exc`` when it came from a full disk
    (ENOSPC or EDQUOT, or any failure with less than :data:`LOW_SPACE_BYTES` left where
    ``outdir`` is); ``None`` when the disk is not the cause."""
    if isinstance(exc, GeocloudError):
        return None
    try:
        free = shutil.disk_usage(outdir).free
    except OSError:
        return None
    no_space = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not (no_space or free < LOW_SPACE_BYTES):
        return None
    return OutputError(
        f"no space left on the disk of {str(outdir)!r} ({free / 2**20:.0f} MB free) while writing "
        "the outputs; free some space or pass another -o (no partial outputs were kept)"
    )


#: this host's name as it appears in temporary names (see :func:`partial_name`).
_HOST = "".join(c if c.isalnum() or c in ".-" else "_" for c in socket.gethostname()) or "host"


def _run_tag() -> str:
    """This process's mark in temporary names: host and pid, so that a later run can tell
    what a run that died on this host left behind (:func:`remove_stale_partials`)."""
    return f"{_HOST}-{os.getpid()}"


def partial_name(final: Path, *, keep_suffix: bool = False) -> Path:
    """The temporary name a file is written under before being renamed to ``final``
    (``keep_suffix``: ending in ``final``'s extension, for writers that choose the format
    from it, such as GDAL's GeoPackage driver)."""
    if keep_suffix:
        return final.with_name(f".{final.stem}.{_run_tag()}.partial{final.suffix}")
    return final.with_name(f".{final.name}.{_run_tag()}.partial")


def partial_workdir(outdir: Path, stem: str) -> Path:
    """The hidden folder of a scene run's intermediate files in ``outdir``."""
    return outdir / f".geocloud-{stem}-{_run_tag()}.partial"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill would end the process there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def remove_stale_partials(outdir: Path, stem: str, finals: Iterable[Path]) -> list[Path]:
    """Remove what runs of scene ``stem`` on this host left in ``outdir`` when they were
    killed (SIGKILL, out of memory, a dask worker stopped): the work folder of
    :func:`partial_workdir` and the temporary names of ``finals``, where the process that
    made them is gone.  A run still alive, or one of another host (a shared disk), is left
    alone.  Returns what was removed."""
    host = re.escape(f"{_HOST}-")
    patterns = [re.compile(re.escape(f".geocloud-{stem}-") + host + r"(\d+)\.partial")]
    for f in finals:
        patterns.append(re.compile(re.escape(f".{f.name}.") + host + r"(\d+)\.partial"))
        patterns.append(re.compile(re.escape(f".{f.stem}.") + host + r"(\d+)\.partial" + re.escape(f.suffix)))
    removed = []
    for entry in outdir.glob(".*.partial*"):
        match = next((m for pat in patterns if (m := pat.fullmatch(entry.name))), None)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def atomic_output(
    final: Path,
    *,
    keep_suffix: bool = False,
    what: str = "",
    errors: tuple[type[BaseException], ...] = (OSError,),
) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; when the block completes it is renamed onto
    ``final``, otherwise removed, so no file that looks finished is ever left half written.

    ``keep_suffix`` keeps ``final``'s extension at the end of the temporary name (for writers
    that choose the format from it).  ``errors`` raised in the block or by the rename become
    an :class:`OutputError` naming the file (``what`` prefixes it, e.g. ``"catalogue "``).
    """
    tmp = partial_name(final, keep_suffix=keep_suffix)
    tmp.unlink(missing_ok=True)  # a stale one would make some drivers append or refuse
    try:
        yield tmp
        os.replace(tmp, final)
    except OutputError:
        raise
    except errors as exc:
        raise OutputError(f"cannot write {what}{final} ({exc}); check the output folder") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(final: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` through a temporary file and a rename."""
    with atomic_output(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _halve(a: np.ndarray, resampling: str) -> np.ndarray:
    """2x reduction of (k, h, w) with h even: mean of 2x2 (NaN if any is NaN) or nearest."""
    if a.shape[2] % 2:
        a = np.concatenate([a, a[:, :, -1:]], axis=2)
    if resampling == "nearest":
        return a[:, ::2, ::2].copy()
    out = a[:, 0::2, 0::2].astype(np.float32)
    out += a[:, 1::2, 0::2]
    out += a[:, 0::2, 1::2]
    out += a[:, 1::2, 1::2]
    out *= np.float32(0.25)
    return out.astype(a.dtype, copy=False)


#: tile height of the intermediate rasters: the second pass's windows (256 rows) fill
#: whole tile rows, and strips are buffered up to whole tile rows (see :class:`_Level`).
WORK_TILE_ROWS = 256


class _Level:
    """One streamed raster (full resolution or an overview level) and the next level down.

    Rows arrive top to bottom within each column band (swath) ``col0``; swaths are
    independent, so a band's 2x2 reductions never straddle another's (the pipeline puts
    swath edges on multiples of ``2**levels``).  Rows are written to the file in whole
    tile rows (:data:`WORK_TILE_ROWS`), buffered per swath until then: GDAL writes a
    partly covered tile through its block cache and may read it back to complete it,
    which cost about twice the write itself.
    """

    def __init__(self, path: Path, width: int, height: int, spec: RasterSpec, min_size: int, *,
                 store: bool = True):  # fmt: skip
        """``store=False``: this level has no file (rows only feed the levels below)."""
        self.path, self.width, self.height = path, width, height
        #: per swath (its first column): next row to write, odd row carried to the next strip
        self.state: dict[int, tuple[int, np.ndarray | None]] = {}
        #: per swath: (first file row of the buffer, buffer (k, WORK_TILE_ROWS, w), rows in it)
        self.pending: dict[int, tuple[int, np.ndarray, int]] = {}
        profile: dict[str, Any] = {
            "driver": "GTiff", "width": width, "height": height, "count": spec.count,
            "dtype": spec.dtype, "nodata": spec.nodata, **work_tiff(WORK_TILE_ROWS),
        }  # fmt: skip
        self.ds: Any = None
        if store:
            # intermediate files: the georeferencing goes onto the COG from the VRT
            with without_georef_warning():
                self.ds = rasterio.open(path, "w+", **profile)
        self.spec = spec
        self.next: _Level | None = None
        if max(width, height) > min_size:
            w2, h2 = -(-width // 2), -(-height // 2)
            self.next = _Level(path.with_suffix(f".{w2}.tif"), w2, h2, spec, min_size)

    def row(self, col0: int) -> int:
        return self.state.get(col0, (0, None))[0]

    def _write(self, a: np.ndarray, col0: int, row: int) -> None:
        """Write rows ``row..`` of swath ``col0``, whole tile rows at a time."""
        if self.ds is None:
            return
        t = WORK_TILE_ROWS
        k, n, w = a.shape
        done = 0
        if col0 not in self.pending and row % t == 0:  # whole tile rows need no buffer
            done = n if row + n == self.height else n - n % t
            if done:
                self.ds.write(a[:, :done], window=Window(col0, row, w, done))
        while done < n:
            start, buf, filled = self.pending.pop(col0, None) or (row + done, None, 0)
            if buf is None:
                buf = np.empty((k, t, w), dtype=self.spec.dtype)
            elif buf.shape[2] != w:
                raise ValueError(f"swath at column {col0} changed width ({buf.shape[2]} -> {w})")
            room = min(t - filled, n - done)
            buf[:, filled : filled + room] = a[:, done : done + room]
            filled, done = filled + room, done + room
            if filled == t or start + filled == self.height:
                self.ds.write(buf[:, :filled], window=Window(col0, start, w, filled))
            else:
                self.pending[col0] = (start, buf, filled)

    def push(self, a: np.ndarray, col0: int) -> None:
        """Append rows (k, n, w) of the swath starting at column ``col0`` below what was written."""
        row, carry = self.state.get(col0, (0, None))
        self._write(a.astype(self.spec.dtype, copy=False), col0, row)
        row += a.shape[1]
        if self.next is None:
            self.state[col0] = (row, None)
            return
        if col0 % 2 or (col0 + a.shape[2] < self.width and a.shape[2] % 2):
            raise ValueError(f"swath at column {col0} (width {a.shape[2]}) is not aligned for overviews")
        if carry is not None:
            a = np.concatenate([carry, a], axis=1)
        if row == self.height and a.shape[1] % 2:
            a = np.concatenate([a, a[:, -1:]], axis=1)  # odd last row: pair it with itself
        even = a.shape[1] - a.shape[1] % 2
        self.state[col0] = (row, a[:, even:].copy() if a.shape[1] > even else None)
        if even:
            self.next.push(_halve(a[:, :even], self.spec.resampling), col0 // 2)

    def levels(self) -> list[_Level]:
        return [self] + (self.next.levels() if self.next else [])

    def close(self) -> None:
        for lv in self.levels():
            if lv.ds is not None and not lv.ds.closed:
                lv.ds.close()

    def complete(self) -> bool:
        """Every swath has been written down to the last row (and the swaths start at column 0)."""
        done = 0 in self.state and all(r == self.height for r, _ in self.state.values())
        return done and not self.pending


#: derived sinks whose COG is being assembled, by key (see :func:`derived_pixels`)
_DERIVED: dict[str, RasterSink] = {}


def _arg(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def derived_pixels(in_ar: Any, out_ar: np.ndarray, xoff: int, yoff: int, xsize: int, ysize: int,
                   raster_xsize: int, raster_ysize: int, buf_radius: int, gt: Any, **kwargs: Any) -> None:  # fmt: skip
    """GDAL's Python pixel function for the full-resolution level of a derived
    :class:`RasterSink` (the VRT of :meth:`RasterSink.finalize` names it)."""
    _DERIVED[_arg(kwargs["key"])]._fill(out_ar, xoff, yoff, xsize, ysize, int(_arg(kwargs["band"])))


def _probe_pixels(in_ar: Any, out_ar: np.ndarray, *args: Any, **kwargs: Any) -> None:
    out_ar[:] = 1.0


def _python_pixels_env() -> rasterio.Env:
    """GDAL runs the Python pixel functions of this module only (not those of any VRT)."""
    return rasterio.Env(GDAL_VRT_ENABLE_PYTHON="TRUSTED_MODULES", GDAL_VRT_PYTHON_TRUSTED_MODULES=__name__)


@cache
def python_pixel_functions() -> bool:
    """Whether this GDAL can call Python pixel functions in a VRT (it must find the running
    interpreter); derived sinks need them, and the pipeline stores every level otherwise."""
    vrt = (
        '<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Float32" band="1" '
        f'subClass="VRTDerivedRasterBand"><PixelFunctionType>{__name__}._probe_pixels</PixelFunctionType>'
        "<PixelFunctionLanguage>Python</PixelFunctionLanguage></VRTRasterBand></VRTDataset>"
    )
    try:
        with without_georef_warning(), _python_pixels_env(), rasterio.open(vrt) as ds:
            return bool(ds.read(1)[0, 0] == 1.0)
    except Exception:  # noqa: BLE001 - any failure means: not available
        return False


class RasterSink:
    """Stream full-width strips of rows into a temporary GeoTIFF, building its overview
    pyramid on the way (2x2 mean, or nearest for classes); :meth:`finalize` assembles the
    COG from them without recomputing anything.

    With ``compute`` the sink is *derived*: its full-resolution level is not stored, and
    the COG reads it from ``compute(window)`` (an array (count, h, w)) through a Python
    pixel function while it is assembled (:func:`python_pixel_functions` must be true).
    The strips written still build the overviews, so they must equal ``compute``'s values.
    This saves writing and reading back a large raster that is cheap to recompute (the
    matte's cloud reflectance: alpha times the upsampled cloud colour).

    ``workdir`` holds the intermediate files; it must be on the same file system as
    ``final`` for the final rename to be atomic (the pipeline uses a hidden folder in the
    output directory).
    """

    def __init__(self, final: Path, spec: RasterSpec, workdir: Path, *, compress: str = "ZSTD",
                 blocksize: int = 512, compute: Callable[[Window], np.ndarray] | None = None):  # fmt: skip
        self.final = final
        self.spec = spec
        self.compress = compress
        self.blocksize = blocksize
        self.compute = compute
        self.tmp = workdir / (final.stem + ".stream.tif")
        self._top = _Level(self.tmp, spec.width, spec.height, spec, blocksize, store=compute is None)
        self._lock = threading.Lock()
        #: read-only handle once sealed (reads may then run beside :meth:`finalize`)
        self._reader: rasterio.DatasetReader | None = None
        self._sealed = False
        #: derived sinks: the last window computed for the COG (GDAL asks band by band)
        self._last: tuple[tuple[int, int, int, int], np.ndarray] | None = None
        self._fill_error: BaseException | None = None
        #: this sink's name for :func:`derived_pixels` (in the VRT and in ``_DERIVED``)
        self._key = str(id(self))

    def write_window(self, array: np.ndarray, row0: int, col0: int = 0) -> None:
        """Write ``array`` (k, n, w) at rows ``row0..``, columns ``col0..``.  Within a column
        band (swath) strips must come in order, top to bottom."""
        with self._lock:
            expected = self._top.row(col0)
            if row0 != expected:
                raise ValueError(f"strip at row {row0}, column {col0} out of order (expected row {expected})")
            self._top.push(array, col0)

    def write_rows(self, array: np.ndarray, row0: int) -> None:
        """Write full-width rows ``row0..`` (k, n, width), top to bottom."""
        self.write_window(array, row0, 0)

    @staticmethod
    def overview_alignment(width: int, height: int, blocksize: int = 512) -> int:
        """Swath edges must be multiples of this for the streamed overviews (2**levels)."""
        levels = 0
        while max(width, height) > blocksize:
            width, height = -(-width // 2), -(-height // 2)
            levels += 1
        return 2**levels

    def read(self, window: Window) -> np.ndarray:
        """Read back what was written (used by the second pass); a derived sink computes it."""
        if self.compute is not None:
            return self.compute(window)
        with self._lock:
            return (self._reader or self._top.ds).read(window=window)

    def seal(self) -> None:
        """Finish writing (every row and column must have been written).  Afterwards
        :meth:`read` and :meth:`finalize` may run side by side, on different threads."""
        with self._lock:
            if self._sealed:
                return
            self._top.close()
            if not self._top.complete():
                raise ValueError(f"{self.final.name}: not every row and column was written")
            if self.compute is None:
                with without_georef_warning():
                    self._reader = rasterio.open(self.tmp)
            self._sealed = True

    def _fill(self, out: np.ndarray, xoff: int, yoff: int, xsize: int, ysize: int, band: int) -> None:
        """Band ``band`` of the full-resolution window into ``out`` (see :func:`derived_pixels`)."""
        try:
            if out.shape != (ysize, xsize):
                raise ValueError(
                    f"{self.final.name}: GDAL asked for a resampled read {out.shape} of {ysize}x{xsize}"
                )
            key = (xoff, yoff, xsize, ysize)
            if self._last is None or self._last[0] != key:
                self._last = (key, self.compute(Window(xoff, yoff, xsize, ysize)))  # type: ignore[misc]
            out[:] = self._last[1][band - 1]
        except BaseException as exc:
            # re-raised by finalize; GDAL gets a short error and stops the copy
            self._fill_error = exc
            raise RuntimeError(f"computing {self.final.name} failed") from None

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._top.close()

    def _vrt(self, tags: Mapping[str, str]) -> str:
        from xml.sax.saxutils import escape

        spec = self.spec
        gdal_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}[spec.dtype]
        parts = [f'<VRTDataset rasterXSize="{spec.width}" rasterYSize="{spec.height}">']
        if spec.crs is not None:
            parts.append(f"<SRS>{escape(spec.crs.to_wkt())}</SRS>")
        if spec.crs is not None or spec.transform != Affine.identity():
            parts.append(
                f"<GeoTransform>{', '.join(repr(v) for v in spec.transform.to_gdal())}</GeoTransform>"
            )
        md = "".join(f'<MDI key="{escape(k)}">{escape(str(v))}</MDI>' for k, v in tags.items())
        parts.append(f"<Metadata>{md}</Metadata>")
        if spec.rpcs is not None:
            rpc = "".join(f'<MDI key="{k}">{escape(str(v))}</MDI>' for k, v in spec.rpcs.to_gdal().items())
            parts.append(f'<Metadata domain="RPC">{rpc}</Metadata>')
        nodata = ""
        if spec.nodata is not None:
            nodata = f"<NoDataValue>{'nan' if isinstance(spec.nodata, float) and np.isnan(spec.nodata) else spec.nodata}</NoDataValue>"
        levels = self._top.levels()
        for b in range(1, spec.count + 1):
            desc = spec.descriptions[b - 1] if b <= len(spec.descriptions) else ""
            ovr = "".join(
                f'<Overview><SourceFilename relativeToVRT="0">{escape(str(lv.path))}</SourceFilename>'
                f"<SourceBand>{b}</SourceBand></Overview>"
                for lv in levels[1:]
            )
            if self.compute is not None:  # full resolution from derived_pixels
                kind = ' subClass="VRTDerivedRasterBand"'
                source = (
                    f"<PixelFunctionType>{__name__}.derived_pixels</PixelFunctionType>"
                    "<PixelFunctionLanguage>Python</PixelFunctionLanguage>"
                    f'<PixelFunctionArguments key="{self._key}" band="{b}"/>'
                )
            else:
                kind = ""
                source = (
                    f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(self.tmp))}</SourceFilename>'
                    f"<SourceBand>{b}</SourceBand></SimpleSource>"
                )
            parts.append(
                f'<VRTRasterBand dataType="{gdal_type}" band="{b}"{kind}><Description>{escape(desc)}</Description>'
                f"{nodata}{source}{ovr}</VRTRasterBand>"
            )
        parts.append("</VRTDataset>")
        return "".join(parts)

    def finalize(self, tags: Mapping[str, str], dest: Path | None = None, *, keep: bool = False) -> Path:
        """Assemble the COG (tiled, compressed, with the streamed overviews).

        With ``dest`` the COG is written there (the caller renames it into place later);
        without, it goes to a temporary name beside ``final`` and is renamed to ``final``.
        ``keep`` keeps the intermediate files for :meth:`read` (call :meth:`discard` later).
        """
        from rasterio.shutil import copy as rio_copy

        self.seal()
        vrt = self.tmp.with_suffix(".vrt")
        vrt.write_text(self._vrt(tags))
        out_tmp = dest if dest is not None else partial_name(self.final)
        opts = output_cog(self.compress, self.blocksize, self.spec.dtype)
        key = self._key
        try:
            with ExitStack() as stack:
                stack.enter_context(without_georef_warning())
                if self.compute is not None:
                    stack.enter_context(_python_pixels_env())
                    _DERIVED[key] = self
                    self._fill_error = None
                try:
                    rio_copy(vrt, out_tmp, driver="COG", **opts)
                except Exception:
                    if self._fill_error is not None:  # the computation failed, not GDAL
                        raise self._fill_error from None
                    raise
            if dest is None:
                os.replace(out_tmp, self.final)
        except BaseException as exc:
            if out_tmp.exists():
                out_tmp.unlink()
            if isinstance(exc, (OSError, RasterioIOError)) and not isinstance(exc, GeocloudError):
                raise OutputError(
                    f"writing {str(self.final)!r} failed ({exc}); check free disk space and permissions"
                ) from None
            raise
        finally:
            _DERIVED.pop(key, None)
            self._last = None
            if not keep:
                self.discard()
            vrt.unlink(missing_ok=True)
        return out_tmp if dest is not None else self.final

    def discard(self) -> None:
        """Close and delete the intermediate files."""
        self.close()
        for lv in self._top.levels():
            lv.path.unlink(missing_ok=True)
