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

import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping

from .errors import ConfigError, InputError
from .io import atomic_output, atomic_write_text

log = logging.getLogger(__name__)

VECTOR_FORMATS = ("geojson", "gpkg")


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


def _shapes(binary: np.ndarray, row0: int) -> list[Polygon]:
    """Polygons (pixel coordinates: x = col, y = row) of the True pixels of a strip."""
    from rasterio.features import shapes
    from rasterio.transform import Affine

    if not binary.any():
        return []
    data = binary.astype(np.uint8)
    out = []
    for geom, _ in shapes(data, mask=binary, connectivity=4, transform=Affine.translation(0, row0)):
        out.append(shapely.geometry.shape(geom))
    return out


def _explode(geom: Any) -> list[Polygon]:
    if geom is None or geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom]
    if hasattr(geom, "geoms"):
        out: list[Polygon] = []
        for g in geom.geoms:
            out.extend(_explode(g))
        return out
    return []  # points/lines from make_valid of degenerate rings


def polygons_from_strips(strips: Iterable[tuple[int, np.ndarray]], height: int) -> Iterator[Polygon]:
    """Pixel-space polygons of a binary mask given as (row0, strip) pieces top to bottom.

    Pieces touching a strip border are unioned with the next strip's pieces, so every
    connected cloud is one polygon whatever the strip height.
    """
    open_polys: list[Polygon] = []
    for row0, strip in strips:
        row1 = row0 + strip.shape[0]
        polys = _shapes(strip, row0)
        top = [p for p in polys if row0 > 0 and p.bounds[1] <= row0]
        rest = [p for p in polys if not (row0 > 0 and p.bounds[1] <= row0)]
        merged = _explode(shapely.union_all(open_polys + top)) if (open_polys and top) else open_polys + top
        new_open = []
        for p in rest + merged:
            if row1 < height and p.bounds[3] >= row1:
                new_open.append(p)
            else:
                yield p
        open_polys = new_open
    yield from open_polys


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

    def __len__(self) -> int:
        return len(self.geometries)


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
        if ds.count != 1 or ds.dtypes[0] != "uint8":
            raise InputError(f"mask {path} has {ds.count} band(s) of {ds.dtypes[0]}; expected one uint8 band")
    budget_rows = max(
        1, int(cfg.memory_budget_mb * 1024**2 / (6 * max(w, 1)))
    )  # ~6 bytes/pixel in polygonize
    rows = strip_rows or (h if budget_rows >= h else budget_rows)
    log.debug("vectorising %s (%dx%d) in strips of %d rows", path, w, h, rows)
    raw = polygons_from_strips(_mask_strips(path, cfg.classes, rows, progress), h)

    georef = crs is not None and not transform.is_identity
    px_area = abs(transform.a * transform.e - transform.b * transform.d) if georef else 1.0
    geodesic = georef and crs.is_geographic
    pix_out, geoms, areas = [], [], []
    for p in raw:
        parts = _explode(shapely.make_valid(p)) if not p.is_valid else [p]
        for q in parts:
            if cfg.simplify_px > 0:
                q2 = q.simplify(cfg.simplify_px, preserve_topology=True)
                qs = _explode(shapely.make_valid(q2)) if not q2.is_valid else [q2]
            else:
                qs = [q]
            for r in qs:
                if r.is_empty or r.area == 0:
                    continue
                native = _affine(r, transform) if georef else r
                if geodesic:
                    from pyproj import Geod

                    area = abs(Geod(ellps="WGS84").geometry_area_perimeter(native)[0])
                elif georef:
                    area = r.area * px_area * _linear_unit_m(crs) ** 2
                else:
                    area = r.area
                if area < cfg.min_area_m2:
                    continue
                pix_out.append(r)
                geoms.append(native)
                areas.append(float(area))
    order = sorted(range(len(pix_out)), key=lambda i: (pix_out[i].bounds[1], pix_out[i].bounds[0]))
    return CloudPolygons(
        geometries=[geoms[i] for i in order],
        areas_m2=[areas[i] for i in order],
        crs=crs if georef else None,
        rpcs=rpcs if not georef else None,
        transform=transform,
        pixel_geometries=[pix_out[i] for i in order],
    )


def _linear_unit_m(crs: Any) -> float:
    try:
        return float(crs.linear_units_factor[1])
    except Exception:  # CRS without linear units
        return 1.0


def _affine(geom: Any, transform: Any) -> Any:
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    return shapely.transform(geom, fn)


def pixels_to_wgs84(geom: Any, crs: Any, transform: Any, rpcs: Any) -> Any:
    """A pixel-space geometry (x = col, y = row), or an array of them, in WGS84 lon/lat,
    valid, exterior rings counter-clockwise (RFC 7946).  Uses the CRS + transform, else the
    RPCs; raises :class:`InputError` when there is neither.  One transformer serves all."""
    if crs is not None and not transform.is_identity:
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
            "the mask has no CRS and no RPCs, so its clouds cannot be placed on Earth; "
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
    return list(pixels_to_wgs84(arr, polys.crs, polys.transform, polys.rpcs))


def _round_coords(obj: Any, nd: int) -> Any:
    if isinstance(obj, (list, tuple)):
        if obj and isinstance(obj[0], float):
            return [round(v, nd) for v in obj]
        return [_round_coords(v, nd) for v in obj]
    return obj


def write_geojson(
    polys: CloudPolygons,
    path: str | os.PathLike[str],
    properties: dict[str, Any] | None = None,
    precision: int = 7,
) -> Path:
    """Write RFC 7946 GeoJSON (WGS84) atomically."""
    path = Path(path)
    feats = []
    wgs = to_wgs84(polys)
    if wgs:
        # snap to the output precision keeping the geometries valid, then orient (RFC 7946)
        arr = np.array(wgs, dtype=object)
        wgs = list(shapely.orient_polygons(shapely.set_precision(arr, 10.0**-precision), exterior_cw=False))
    for i, (g, area) in enumerate(zip(wgs, polys.areas_m2, strict=True)):
        if g.is_empty:  # smaller than the output precision
            continue
        geom = mapping(g)
        geom = {
            "type": geom["type"],
            "coordinates": _round_coords(json.loads(json.dumps(geom["coordinates"])), precision),
        }
        feats.append(
            {"type": "Feature", "id": i + 1, "properties": {"id": i + 1, "class": "cloud", "area_m2": round(area, 2)},
             "geometry": geom}
        )  # fmt: skip
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": feats}
    if properties:
        doc["geocloud"] = properties  # foreign member (RFC 7946 section 6.1)
    if feats:
        b = np.array([shapely.bounds(g) for g in wgs])
        doc["bbox"] = [round(float(b[:, 0].min()), precision), round(float(b[:, 1].min()), precision),
                       round(float(b[:, 2].max()), precision), round(float(b[:, 3].max()), precision)]  # fmt: skip
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")))
    return path


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
    multi = [g if isinstance(g, MultiPolygon) else MultiPolygon([g]) for g in geoms]
    ids = np.arange(1, len(multi) + 1, dtype=np.int64)
    # pyogrio raises its own DataSourceError types; the GPKG driver needs the .gpkg suffix
    with atomic_output(path, keep_suffix=True, errors=(Exception,)) as tmp, warnings.catch_warnings():
        # a scene without georeferencing is already reported once, by the pipeline
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        write(
            str(tmp),
            geometry=np.array(shapely.to_wkb(multi), dtype=object) if multi else np.array([], dtype=object),
            field_data=[
                ids,
                np.array(["cloud"] * len(multi), dtype=object),
                np.array(polys.areas_m2, dtype=np.float64),
            ],
            fields=["id", "class", "area_m2"],
            crs=crs,
            driver="GPKG",
            layer=layer,
            geometry_type="MultiPolygon",
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
    stats = ctx.stats or {}
    props = {
        "scene": ctx.scene.path.name,
        "model": (stats.get("model") or {}).get("name"),
        "threshold": (stats.get("threshold") or {}).get("value"),
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
