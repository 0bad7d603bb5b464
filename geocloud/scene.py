"""Reading scenes: checks, metadata and windows.

* :func:`open_scene` checks a path and returns a :class:`SceneInfo` (never pixels).
* :class:`SceneReader` reads windows (padding beyond the scene with nodata), one GDAL
  handle per thread, so several threads can read at once; the threads share decoded input
  tiles through a :class:`TileCache`.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from .errors import InputError, NotARasterError, SceneNotFoundError, gdal_reason

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
    def georef_crs(self) -> CRS | None:
        """The CRS of the georeferencing: the scene's, else that of its ground control points."""
        if self.crs is not None:
            return self.crs
        if self.rpcs is None and self.gcps and self.gcps[0]:
            return self.gcps[1]
        return None

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

