"""Cloud polygons from the final, mosaicked cloud mask.

Polygons are built from the whole mask, never block by block: a cloud crossing a block
border is one polygon.  When the mask fits the memory budget it is polygonised in one
go (GDAL's polygonize, 4-connected, holes kept).  Otherwise it is read in horizontal
strips; the polygons that touch a strip border are kept "open" and unioned with the
pieces of the next strip that touch the same border, so the result equals the one-go
result (tests check both paths give the same geometry).

Everything happens in pixel coordinates (exact integers, so pieces meet exactly) and is
mapped to the native CRS at the end.  Then every geometry is made valid
(``shapely.make_valid``), optionally simplified (tolerance in pixels, topology kept) and
filtered by a minimum area.

Outputs:

* ``<stem>_clouds.geojson``: RFC 7946, WGS84 lon/lat, exterior rings counter-clockwise,
  7 decimals (~1 cm), no ``crs`` member.
* ``<stem>_clouds.gpkg``: the native CRS (layer ``clouds``), written with pyogrio.

Both are written under a temporary name and renamed into place.
Masks use the project convention: uint8, 0 clear, 1 cloud, 255 nodata (other values,
e.g. a thin-cloud class, are selected with ``VectorizeConfig.classes``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon

from .errors import ConfigError, InputError
from .outputs import atomic_output

log = logging.getLogger(__name__)

VECTOR_FORMATS = ("geojson", "gpkg")
#: polygons made, and GeoJSON features encoded, this many at a time (bounds the memory
#: their Python objects take; larger batches are no faster).
BATCH = 50_000


@dataclass(frozen=True)
class VectorizeConfig:
    """How cloud polygons are built and written."""

    #: mask values that count as cloud.
    classes: tuple[int, ...] = (1,)
    #: drop polygons smaller than this, in square metres (square pixels if not georeferenced).
    min_area_m2: float = 0.0
    #: Douglas-Peucker tolerance in pixels (0: keep the exact pixel edges).
    simplify_px: float = 0.0
    #: largest mask (bytes, ~1 byte per pixel plus polygonize overhead) read in one go.
    memory_budget_mb: float = 512.0
    #: which files to write.
    formats: tuple[str, ...] = VECTOR_FORMATS
    #: decimals of GeoJSON lon/lat (7 ~ 1 cm).
    precision: int = 7

    def validate(self) -> None:
        if self.min_area_m2 < 0:
            raise ConfigError(f"minimum area {self.min_area_m2} is negative; pass --min-area 0 or more (m2)")
        if self.simplify_px < 0:
            raise ConfigError(
                f"simplification {self.simplify_px} is negative; pass --simplify 0 or more (pixels)"
            )
        if self.memory_budget_mb <= 0:
            raise ConfigError(f"memory budget {self.memory_budget_mb} MB must be positive")
        bad = [f for f in self.formats if f not in VECTOR_FORMATS]
        if bad or not self.formats:
            raise ConfigError(
                f"vector format {bad or self.formats} is unknown; use {', '.join(VECTOR_FORMATS)}"
            )


# ----------------------------------------------------------------------------- core


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the polygons of a mask and their
    GeoJSON are made: its passes over those millions of acyclic objects (geometries,
    coordinate lists, feature dicts) took 15-25 % of the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_POLYGON = int(shapely.GeometryType.POLYGON)
_COLLECTIONS = (int(shapely.GeometryType.MULTIPOLYGON), int(shapely.GeometryType.GEOMETRYCOLLECTION))


def mask_polygons(binary: np.ndarray, row0: int) -> np.ndarray:
    """Polygons (pixel coordinates: x = col, y = row) of the True pixels of a strip, as an
    array.  They are built :data:`BATCH` at a time from the rings GDAL's polygonize gives:
    building them one by one (``shapely.geometry.shape``) took 70 µs each, a minute for the
    300 000 polygons of a noisy 3 Mpx mask, and the batches bound the memory the rings
    take as Python lists."""
    from rasterio.features import shapes
    from rasterio.transform import Affine

    if not binary.any():
        return np.empty(0, dtype=object)
    found = shapes(
        binary.astype(np.uint8), mask=binary, connectivity=4, transform=Affine.translation(0, row0)
    )
    batches = [np.empty(0, dtype=object)]
    while batch := [geom["coordinates"] for geom, _ in islice(found, BATCH)]:
        batches.append(_polygons_from_rings(batch))
    return np.concatenate(batches)


def _polygons_from_rings(polygons: list[Any]) -> np.ndarray:
    """Shapely polygons from GeoJSON-style coordinates (per polygon, a list of rings)."""
    rings = list(chain.from_iterable(polygons))
    xy = np.array(list(chain.from_iterable(rings)), dtype=np.float64).reshape(-1, 2)
    ring_offsets = np.zeros(len(rings) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, rings), dtype=np.int64, count=len(rings)), out=ring_offsets[1:])
    polygon_offsets = np.zeros(len(polygons) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, polygons), dtype=np.int64, count=len(polygons)), out=polygon_offsets[1:])
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, (ring_offsets, polygon_offsets))


def _polygon_parts(geoms: Any) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty polygons in ``geoms`` (a geometry or an array of them), multi-part
    geometries and collections broken into their parts, in the order of ``geoms``, with the
    index in ``geoms`` each came from; points and lines (from ``make_valid`` of degenerate
    rings) are dropped."""
    geoms = np.atleast_1d(np.asarray(geoms, dtype=object))
    src = np.arange(len(geoms))
    found, found_src = [], []
    while len(geoms):
        kind = shapely.get_type_id(geoms)
        keep = (kind == _POLYGON) & ~shapely.is_empty(geoms)
        found.append(geoms[keep])
        found_src.append(src[keep])
        nested = np.isin(kind, _COLLECTIONS)
        geoms, index = shapely.get_parts(geoms[nested], return_index=True)
        src = src[nested][index]
    sources = np.concatenate(found_src)
    order = np.argsort(sources, kind="stable")
    return np.concatenate(found)[order], sources[order]


def _made_valid(geoms: np.ndarray) -> np.ndarray:
    """``geoms`` with each invalid one replaced by the polygons of ``make_valid``, in order."""
    bad = ~shapely.is_valid(geoms)
    if not bad.any():
        return geoms
    parts, src = _polygon_parts(shapely.make_valid(geoms[bad]))
    position = np.concatenate([np.flatnonzero(~bad), np.flatnonzero(bad)[src]])
    return np.concatenate([geoms[~bad], parts])[np.argsort(position, kind="stable")]


def polygons_from_strips(strips: Iterable[tuple[int, np.ndarray]], height: int) -> Iterator[np.ndarray]:
    """Pixel-space polygons of a binary mask given as (row0, strip) pieces top to bottom,
    as arrays of the polygons complete so far.

    Pieces touching a strip border are unioned with the next strip's pieces, so every
    connected cloud is one polygon whatever the strip height.
    """
    open_polys = np.empty(0, dtype=object)
    for row0, strip in strips:
        row1 = row0 + strip.shape[0]
        polys = mask_polygons(strip, row0)
        on_top = shapely.bounds(polys)[:, 1] <= row0 if row0 > 0 else np.zeros(len(polys), dtype=bool)
        top, rest = polys[on_top], polys[~on_top]
        if len(open_polys) and len(top):
            merged = _polygon_parts(shapely.union_all(np.concatenate([open_polys, top])))[0]
        else:
            merged = np.concatenate([open_polys, top])
        done = np.concatenate([rest, merged])
        if row1 < height:
            still_open = shapely.bounds(done)[:, 3] >= row1
            open_polys, done = done[still_open], done[~still_open]
        else:
            open_polys = np.empty(0, dtype=object)
        yield done
    yield open_polys


def _mask_strips(
    path: Path, classes: tuple[int, ...], strip_rows: int, progress: Callable[[int, int], None] | None
) -> Iterator[tuple[int, np.ndarray]]:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        h, w = ds.height, ds.width
        n = math.ceil(h / strip_rows)
        for i in range(n):
            r0 = i * strip_rows
            rows = min(strip_rows, h - r0)
            arr = ds.read(1, window=Window(0, r0, w, rows))
            yield r0, np.isin(arr, classes)
            if progress is not None:
                progress(i + 1, n)


@dataclass
class CloudPolygons:
    """Valid cloud polygons in the mask's native CRS, with their pixel-space origin."""

    geometries: list[Polygon]
    areas_m2: list[float]
    crs: Any  # rasterio CRS or None
    rpcs: Any  # rasterio RPC or None (L1A masks: RPCs only)
    transform: Any  # Affine pixel -> native
    pixel_geometries: list[Polygon]
    #: each polygon's class ("cloud", "cloud shadow"); empty means all "cloud".
    classes: list[str] = field(default_factory=list)
    #: the ground control points (rasterio GCPs) of a mask georeferenced by GCPs only:
    #: ``geometries`` are then in their CRS (``crs``), through GDAL's GCP transformer.
    gcps: Any = None

    def __len__(self) -> int:
        return len(self.geometries)

    def class_names(self) -> list[str]:
        return self.classes if len(self.classes) == len(self.geometries) else ["cloud"] * len(self.geometries)

    def plus(self, other: CloudPolygons, name: str) -> CloudPolygons:
        """These polygons followed by ``other``'s, whose class is ``name``."""
        return replace(
            self,
            geometries=[*self.geometries, *other.geometries],
            areas_m2=[*self.areas_m2, *other.areas_m2],
            pixel_geometries=[*self.pixel_geometries, *other.pixel_geometries],
            classes=[*self.class_names(), *([name] * len(other))],
        )


@_gc_paused()
def cloud_polygons(
    mask_path: str | os.PathLike[str],
    config: VectorizeConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    strip_rows: int | None = None,
) -> CloudPolygons:
    """Polygonise the cloud classes of a whole mask file (see the module docstring).

    ``strip_rows`` forces the strip-wise path with that strip height (tests); by default
    the mask is read in one go when it fits ``config.memory_budget_mb``.
    """
    import rasterio

    cfg = config or VectorizeConfig()
    cfg.validate()
    path = Path(mask_path)
    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"mask {path} cannot be opened ({exc}); pass a geocloud *_mask.tif") from exc
    with ds:
        h, w = ds.height, ds.width
        crs, transform, rpcs = ds.crs, ds.transform, ds.rpcs
        gcps, gcp_crs = ds.gcps if crs is None and rpcs is None and ds.gcps[0] else (None, None)
        if ds.count != 1 or ds.dtypes[0] != "uint8":
            raise InputError(f"mask {path} has {ds.count} band(s) of {ds.dtypes[0]}; expected one uint8 band")
    budget_rows = max(
        1, int(cfg.memory_budget_mb * 1024**2 / (6 * max(w, 1)))
    )  # ~6 bytes/pixel in polygonize
    rows = strip_rows or (h if budget_rows >= h else budget_rows)
    log.debug("vectorising %s (%dx%d) in strips of %d rows", path, w, h, rows)
    raw = polygons_from_strips(_mask_strips(path, cfg.classes, rows, progress), h)

    georef = crs is not None and not transform.is_identity
    if gcps is not None and gcp_crs is None:
        log.warning("%s has ground control points without a CRS: polygons in pixel coordinates", path)
        gcps = None
    px_area = abs(transform.a * transform.e - transform.b * transform.d) if georef else 1.0
    pix = _made_valid(np.concatenate(list(raw)))
    if cfg.simplify_px > 0:
        pix = _made_valid(shapely.simplify(pix, cfg.simplify_px, preserve_topology=True))
    area_px = shapely.area(pix)
    keep = ~shapely.is_empty(pix) & (area_px > 0)
    pix, area_px = pix[keep], area_px[keep]
    native = _affine(pix, transform) if georef else _gcp_map(pix, gcps) if gcps is not None else pix
    if gcps is not None:  # areas measured in the GCP CRS (the transform is not affine)
        crs, georef = gcp_crs, True
        if not gcp_crs.is_geographic:
            area_px, px_area = shapely.area(native), 1.0
    if georef and crs.is_geographic:
        from pyproj import Geod

        geod = Geod(ellps="WGS84")
        areas = np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in native], dtype=np.float64)
    elif georef:
        areas = area_px * px_area * _linear_unit_m(crs) ** 2
    else:
        areas = area_px
    keep = areas >= cfg.min_area_m2
    pix, native, areas = pix[keep], native[keep], areas[keep]
    # top to bottom, then left to right (stable: ties keep GDAL's order)
    bounds = shapely.bounds(pix)
    order = np.argsort(bounds[:, 0], kind="stable")
    order = order[np.argsort(bounds[order, 1], kind="stable")]
    return CloudPolygons(
        geometries=list(native[order]),
        areas_m2=[float(a) for a in areas[order]],
        crs=crs if georef else None,
        rpcs=rpcs if not georef else None,
        transform=transform,
        pixel_geometries=list(pix[order]),
        gcps=gcps,
    )


def _linear_unit_m(crs: Any) -> float:
    try:
        return float(crs.linear_units_factor[1])
    except Exception:  # CRS without linear units
        return 1.0


def _gcp_map(geom: Any, gcps: Any) -> Any:
    """Pixel-space geometries (x = col, y = row) -> the GCPs' CRS, with GDAL's GCP
    transformer (the polynomial that gdalwarp and QGIS fit to the same points)."""
    from rasterio.transform import GCPTransformer

    tr = GCPTransformer(gcps)

    def fn(xy: np.ndarray) -> np.ndarray:
        if not len(xy):
            return xy
        xs, ys = tr.xy(xy[:, 1], xy[:, 0], offset="ul")
        return np.column_stack([np.asarray(xs, float), np.asarray(ys, float)])

    return shapely.transform(geom, fn)


def _affine(geom: Any, transform: Any) -> Any:
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    return shapely.transform(geom, fn)


def pixels_to_wgs84(geom: Any, crs: Any, transform: Any, rpcs: Any, gcps: Any = None) -> Any:
    """A pixel-space geometry (x = col, y = row), or an array of them, in WGS84 lon/lat,
    valid, exterior rings counter-clockwise (RFC 7946).  Uses the CRS + transform, else the
    RPCs, else the ground control points ``gcps`` (whose CRS is then ``crs``); raises
    :class:`InputError` when there is none.  One transformer serves all."""
    if gcps is not None and crs is not None and rpcs is None and transform.is_identity:
        from pyproj import CRS, Transformer

        tr = Transformer.from_crs(CRS.from_user_input(crs.to_wkt()), "EPSG:4326", always_xy=True)
        geom = _gcp_map(geom, gcps)

        def fn(xy: np.ndarray) -> np.ndarray:
            x, y = tr.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

    elif crs is not None and not transform.is_identity:
        from pyproj import CRS, Transformer

        tr = Transformer.from_crs(CRS.from_user_input(crs.to_wkt()), "EPSG:4326", always_xy=True)

        def fn(xy: np.ndarray) -> np.ndarray:
            x, y = tr.transform(*_affine_xy(xy, transform))
            return np.column_stack([x, y])

    elif rpcs is not None:
        from rasterio.transform import RPCTransformer

        rt = RPCTransformer(rpcs)

        def fn(xy: np.ndarray) -> np.ndarray:
            xs, ys = rt.xy(xy[:, 1], xy[:, 0], offset="ul")
            return np.column_stack([np.asarray(xs, float), np.asarray(ys, float)])

    else:
        raise InputError(
            "the mask has no CRS, no RPCs and no GCPs, so its clouds cannot be placed on Earth; "
            "GeoJSON (RFC 7946) needs WGS84: write --products vector with gpkg only, or georeference the scene"
        )
    w = shapely.transform(geom, fn)  # all coordinates of all geometries in one call
    bad = ~shapely.is_valid(w)
    if np.any(bad):
        w = np.where(bad, shapely.make_valid(w), w) if isinstance(w, np.ndarray) else shapely.make_valid(w)
    return shapely.orient_polygons(w, exterior_cw=False)


def _affine_xy(xy: np.ndarray, t: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = xy[:, 0], xy[:, 1]
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def to_wgs84(polys: CloudPolygons) -> list[Any]:
    """The polygons in WGS84 lon/lat, valid, exterior rings counter-clockwise."""
    if not polys.pixel_geometries:
        return []
    arr = np.array(polys.pixel_geometries, dtype=object)
    return list(pixels_to_wgs84(arr, polys.crs, polys.transform, polys.rpcs, polys.gcps))


def _geojson_coordinates(geoms: np.ndarray, precision: int) -> list[Any]:
    """The GeoJSON ``coordinates`` of each polygon or multipolygon of ``geoms``, rounded to
    ``precision`` decimals, as nested lists sliced from one array of all coordinates (per
    coordinate in Python, this took 160 µs a polygon)."""
    kind = shapely.get_type_id(geoms)
    parts, owner = shapely.get_parts(geoms, return_index=True)  # a polygon is its own part
    rings, ring_owner = shapely.get_rings(parts, return_index=True)  # exterior, then holes
    counts = shapely.get_num_coordinates(rings)
    xy = np.round(shapely.get_coordinates(rings), precision).tolist()
    ends = np.cumsum(counts).tolist()
    starts = [0, *ends[:-1]]
    polygon_rings: list[list[Any]] = [[] for _ in range(len(parts))]
    for i, a, b in zip(ring_owner.tolist(), starts, ends, strict=True):
        polygon_rings[i].append(xy[a:b])
    out: list[Any] = [[] for _ in range(len(geoms))]
    for i, rings_ in zip(owner.tolist(), polygon_rings, strict=True):
        out[i].append(rings_)
    return [o[0] if k == _POLYGON else o for o, k in zip(out, kind.tolist(), strict=True)]


@_gc_paused()
def write_geojson(
    polys: CloudPolygons,
    path: str | os.PathLike[str],
    properties: dict[str, Any] | None = None,
    precision: int = 7,
) -> Path:
    """Write RFC 7946 GeoJSON (WGS84) atomically.  Features are encoded and written
    :data:`BATCH` at a time, so the text and the Python objects of only one batch are in
    memory."""
    path = Path(path)
    wgs = np.array(to_wgs84(polys), dtype=object)
    ids = np.arange(len(wgs))
    names = polys.class_names()
    if len(wgs):
        # snap to the output precision, then orient (RFC 7946).  Rounding each coordinate
        # keeps nearly every polygon valid; GEOS's precision reduction, 8x slower, mends
        # the others, and what is smaller than the precision vanishes (its id is skipped)
        grid = 10.0**-precision
        snapped = shapely.set_precision(wgs, grid, mode="pointwise")
        bad = ~shapely.is_valid(snapped)
        snapped[bad] = shapely.set_precision(wgs[bad], grid)
        wgs = shapely.orient_polygons(snapped, exterior_cw=False)
        ids = np.flatnonzero(~shapely.is_empty(wgs))
        wgs = wgs[ids]
    tail: dict[str, Any] = {}
    if properties:
        tail["geocloud"] = properties  # foreign member (RFC 7946 section 6.1)
    if len(wgs):
        b = shapely.bounds(wgs)
        tail["bbox"] = [round(float(b[:, 0].min()), precision), round(float(b[:, 1].min()), precision),
                        round(float(b[:, 2].max()), precision), round(float(b[:, 3].max()), precision)]  # fmt: skip
    sep = (",", ":")
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write('{"type":"FeatureCollection","features":[')
        for start in range(0, len(wgs), BATCH):
            part = wgs[start : start + BATCH]
            kinds = [
                "Polygon" if k == _POLYGON else "MultiPolygon" for k in shapely.get_type_id(part).tolist()
            ]
            feats = [
                {"type": "Feature", "id": i + 1,
                 "properties": {"id": i + 1, "class": names[i], "area_m2": round(polys.areas_m2[i], 2)},
                 "geometry": {"type": kind, "coordinates": xy}}
                for i, kind, xy in zip(ids[start : start + BATCH].tolist(), kinds,
                                       _geojson_coordinates(part, precision), strict=True)
            ]  # fmt: skip
            f.write(("," if start else "") + json.dumps(feats, separators=sep)[1:-1])
        f.write("]")
        for key, value in tail.items():
            f.write(f",{json.dumps(key)}:{json.dumps(value, separators=sep)}")
        f.write("}")
    return path


#: GeoPackage 1.2: GDAL < 3.7 (QGIS 3.22/3.28 LTR on Debian 12, Ubuntu 22.04) opens GDAL's default
#: 1.4 with a "may only be partially supported" warning on every open; 1.2 opens silently everywhere.
GPKG_DATASET_OPTIONS = {"VERSION": "1.2"}


def write_gpkg(polys: CloudPolygons, path: str | os.PathLike[str], layer: str = "clouds") -> Path:
    """Write a GeoPackage in the mask's native CRS (WGS84 for RPC-only masks) atomically."""
    from pyogrio.raw import write

    path = Path(path)
    if polys.crs is not None:
        geoms, crs = polys.geometries, polys.crs.to_wkt()
    elif polys.rpcs is not None:
        geoms, crs = to_wgs84(polys), "EPSG:4326"
    else:
        geoms, crs = polys.geometries, None
    multi = np.array(geoms, dtype=object)
    single = shapely.get_type_id(multi) == _POLYGON
    multi[single] = shapely.multipolygons(multi[single], indices=np.arange(int(single.sum())))
    ids = np.arange(1, len(multi) + 1, dtype=np.int64)
    # pyogrio raises its own DataSourceError types; the GPKG driver needs the .gpkg suffix
    with atomic_output(path, keep_suffix=True, errors=(Exception,)) as tmp, warnings.catch_warnings():
        # a scene without georeferencing is already reported once, by the pipeline
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        write(
            str(tmp),
            geometry=np.array(shapely.to_wkb(multi), dtype=object)
            if len(multi)
            else np.array([], dtype=object),
            field_data=[
                ids,
                np.array(polys.class_names(), dtype=object),
                np.array(polys.areas_m2, dtype=np.float64),
            ],
            fields=["id", "class", "area_m2"],
            crs=crs,
            driver="GPKG",
            layer=layer,
            geometry_type="MultiPolygon",
            dataset_options=GPKG_DATASET_OPTIONS,
        )
    return path


def write_cloud_vectors(
    mask_path: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    stem: str,
    config: VectorizeConfig | None = None,
    properties: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Polygonise ``mask_path`` and write ``<stem>_clouds.geojson``/``.gpkg`` into ``outdir``.

    Returns ``{"vector_geojson": path, "vector_gpkg": path}`` for the formats written.
    A mask with neither CRS nor RPCs gets only the GeoPackage (in pixel coordinates);
    the GeoJSON is skipped with a log warning, as RFC 7946 demands WGS84.
    """
    cfg = config or VectorizeConfig()
    polys = cloud_polygons(mask_path, cfg, progress)
    outdir = Path(outdir)
    out: dict[str, Path] = {}
    if "geojson" in cfg.formats:
        if polys.crs is None and polys.rpcs is None:
            log.warning("%s is not georeferenced: no GeoJSON written (RFC 7946 needs WGS84)", mask_path)
        else:
            out["vector_geojson"] = write_geojson(
                polys, outdir / f"{stem}_clouds.geojson", properties, cfg.precision
            )
    if "gpkg" in cfg.formats:
        out["vector_gpkg"] = write_gpkg(polys, outdir / f"{stem}_clouds.gpkg")
    return out


def write_vector_product(ctx: Any, paths: list[Path]) -> None:
    """The ``vector`` product of :mod:`geocloud.products`: GeoJSON and GeoPackage.

    ``ctx`` is a :class:`geocloud.products.FileContext`; ``ctx.options["vector"]`` may hold
    a :class:`VectorizeConfig` (min area, simplification).  ``paths`` are the temporary
    paths of ``<stem>_clouds.geojson`` and ``<stem>_clouds.gpkg``.  A mask that cannot be
    placed on Earth gets an empty FeatureCollection that says why.
    """
    cfg = ctx.options.get("vector") or VectorizeConfig()
    polys = cloud_polygons(ctx.rasters["mask"], cfg)
    if ctx.stats is not None and ctx.stats.pixels.shadow:  # the shadow class, as its own features
        from .threshold import SHADOW

        polys = polys.plus(cloud_polygons(ctx.rasters["mask"], replace(cfg, classes=(SHADOW,))), "cloud shadow")
    stats = ctx.stats
    props = {
        "scene": ctx.scene.path.name,
        "model": stats.model.get("name") if stats else None,
        "threshold": stats.threshold.value if stats else None,
        "min_area_m2": cfg.min_area_m2,
        "simplify_px": cfg.simplify_px,
    }
    geojson, gpkg = paths
    if polys.crs is None and polys.rpcs is None:
        log.warning(
            "%s is not georeferenced: the GeoJSON is empty (RFC 7946 needs WGS84)", ctx.scene.path.name
        )
        doc = {"type": "FeatureCollection", "features": [],
               "geocloud": {**props, "note": "scene not georeferenced; see the GeoPackage (pixel coordinates)"}}  # fmt: skip
        Path(geojson).write_text(json.dumps(doc), encoding="utf-8")
    else:
        write_geojson(polys, geojson, props, cfg.precision)
    write_gpkg(polys, gpkg)
