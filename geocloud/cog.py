"""Writing Cloud-Optimised GeoTIFFs from streamed windows.

:class:`RasterSink` streams windows into a temporary tiled GeoTIFF and builds the overview
pyramid as the rows arrive (:class:`_Level`); :meth:`RasterSink.finalize` then turns it
into a COG (tiled, compressed, overviews) under the name it is given, which the output
transaction (:mod:`geocloud.outputs`) renames into place.  A map that is derived from
other maps can be computed again tile by tile while the COG is assembled, through a GDAL
Python pixel function (:func:`derived_pixels`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from .errors import GeocloudError, OutputError
from .outputs import partial_name
from .profiles import output_cog, work_tiff
from .scene import SceneInfo, without_georef_warning


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
    #: ground control points and their CRS (rasterio's ``(gcps, crs)``) of a scene
    #: georeferenced by GCPs only; written when there is no CRS.
    gcps: Any | None = None
    descriptions: tuple[str, ...] = ()
    #: overview resampling: "nearest" for classes, "average" for continuous values.
    resampling: str = "average"
    #: band 1's colour table (value -> RGBA; other values transparent black), and tags
    #: written on this raster besides those :meth:`RasterSink.finalize` is given.
    colormap: tuple[tuple[int, tuple[int, int, int, int]], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def nbytes(self) -> int:
        """Uncompressed size of the full-resolution pixels."""
        return self.width * self.height * self.count * np.dtype(self.dtype).itemsize

    @classmethod
    def like(cls, info: SceneInfo, *, count: int, dtype: str, nodata: float | int | None,
             descriptions: tuple[str, ...] = (), resampling: str = "average",
             colormap: tuple[tuple[int, tuple[int, int, int, int]], ...] = (),
             tags: tuple[tuple[str, str], ...] = ()) -> RasterSpec:  # fmt: skip
        return cls(
            width=info.width, height=info.height, count=count, dtype=dtype, nodata=nodata,
            crs=info.crs, transform=info.transform, rpcs=info.rpcs,
            gcps=info.gcps if info.crs is None else None,
            descriptions=descriptions, resampling=resampling, colormap=colormap, tags=tags,
        )  # fmt: skip


def _gcp_list(gcps: Any, crs: CRS | None) -> str:
    """The ``<GCPList>`` of a VRT: the scene's ground control points and their CRS."""
    from xml.sax.saxutils import quoteattr

    proj = f" Projection={quoteattr(crs.to_wkt())}" if crs is not None else ""
    points = "".join(
        f"<GCP Id={quoteattr(str(g.id or i + 1))} Info={quoteattr(str(g.info or ''))} "
        f'Pixel="{float(g.col)!r}" Line="{float(g.row)!r}" '
        f'X="{float(g.x)!r}" Y="{float(g.y)!r}" Z="{float(g.z or 0.0)!r}"/>'
        for i, g in enumerate(gcps)
    )
    return f"<GCPList{proj}>{points}</GCPList>"


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
        if spec.gcps is not None and spec.crs is None:
            parts.append(_gcp_list(*spec.gcps))
        all_tags = {**tags, **dict(spec.tags)}
        md = "".join(f'<MDI key="{escape(k)}">{escape(str(v))}</MDI>' for k, v in all_tags.items())
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
            colours = ""
            if b == 1 and spec.colormap:
                table = dict(spec.colormap)
                entries = "".join(
                    '<Entry c1="{}" c2="{}" c3="{}" c4="{}"/>'.format(*table.get(v, (0, 0, 0, 0))) for v in range(256)
                )
                colours = f"<ColorInterp>Palette</ColorInterp><ColorTable>{entries}</ColorTable>"
            parts.append(
                f'<VRTRasterBand dataType="{gdal_type}" band="{b}"{kind}><Description>{escape(desc)}</Description>'
                f"{colours}{nodata}{source}{ovr}</VRTRasterBand>"
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
