"""Cloud-cover catalogues of many scenes, in parallel on dask.distributed, resumable.

``build_catalog(inputs, "catalog.gpkg")`` finds the scenes (files, folders searched
recursively, globs; GeoTIFFs and ``.tar.gz`` vendor deliveries), runs
:func:`geocloud.pipeline.process_scene` on each (one dask task per scene), and writes one
row per scene (:data:`COLUMNS`): id, path, sensor, acquisition time, the WGS84 footprint
of its valid data, cloud %, thin-cloud %, mean alpha, threshold, model, status, error...

Safety:

* every finished row is appended to ``<catalog>.journal.jsonl`` (one JSON line, flushed
  and fsynced) by the client as soon as its task completes, so a killed run loses no
  finished row; a torn last line is ignored on the next run;
* the catalogue itself is rewritten from the journal through a temporary file and
  ``os.replace`` (every ``checkpoint_s`` seconds and at the end), so it is never half-written;
* a re-run skips scenes whose journal row matches their size and mtime (or SHA-256 with
  ``fingerprint="hash"``); ``retry_errors`` re-runs failed ones;
* a scene that fails becomes an ``error`` row with a one-line message; the batch goes on.

Rows are sorted by path, and no field depends on the worker or the completion order, so
a cluster run gives the same catalogue as a serial one (timings aside, which live in
``processing_s``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import OutputConfig, ProcessConfig
from .errors import ConfigError, GeocloudError
from .outputs import atomic_output, remove_stale_partials

log = logging.getLogger(__name__)

CATALOG_FORMATS = {".csv": "csv", ".parquet": "parquet", ".gpkg": "gpkg"}

#: Columns of a catalogue, in order.
COLUMNS: tuple[str, ...] = (
    "id", "path", "status", "error", "satellite", "sensor", "calibration", "calibration_approximate",
    "acquired", "acquired_source",
    "cloud_pct", "thin_cloud_pct", "mean_alpha", "vendor_cloud_pct", "threshold", "threshold_method",
    "model", "valid_px", "cloud_px", "width", "height", "crs", "georeferencing", "sun_elevation",
    "footprint", "preview", "thumbnail", "mask", "stats", "size_bytes", "mtime", "sha256",
    "processing_s", "geocloud_version",
)  # fmt: skip

#: Columns that legitimately differ between two runs over the same data.
VOLATILE_COLUMNS = ("processing_s",)
#: Columns holding paths under the catalogue's own folders (differ between two catalogues).
OWN_OUTPUT_COLUMNS = ("thumbnail", "preview", "mask", "stats")

#: File names that are geocloud outputs or synthetic ground truth, never input scenes.
OUTPUT_SUFFIXES = (
    "_mask.tif",
    "_score.tif",
    "_alpha.tif",
    "_alpha_truth.tif",
    "_declouded.tif",
    "_ortho.tif",
)
SCENE_SUFFIXES = (".tif", ".tiff", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class CatalogConfig:
    """How a catalogue is built (the CLI maps its options onto these)."""

    process: ProcessConfig = field(
        default_factory=lambda: ProcessConfig(output=OutputConfig(products=("mask", "stats", "preview")))
    )
    #: dask worker processes of the LocalCluster; 0 runs serially in this process.
    workers: int = 2
    #: address of an existing dask scheduler (overrides ``workers``).
    scheduler: str | None = None
    #: seconds to wait for ``scheduler`` before giving up.
    connect_timeout_s: float = 20.0
    #: "stat" (size + mtime) or "hash" (SHA-256 of the file) decides "unchanged".
    fingerprint: str = "stat"
    resume: bool = True
    retry_errors: bool = False
    #: where per-scene products go (default: ``<catalog stem>_scenes`` beside the catalogue).
    outputs_dir: Path | None = None
    thumb_size: int = 256
    html: bool = True
    #: rewrite the catalogue file (from the journal) at most this often while running, seconds.
    checkpoint_s: float = 30.0
    #: extra ``process_scene`` keywords (scale, offset, sun_elevation).
    scene_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        self.process.validate()
        if self.workers < 0:
            raise ConfigError(f"--workers {self.workers} is negative; pass 0 (serial) or more")
        if self.fingerprint not in ("stat", "hash"):
            raise ConfigError(
                f"fingerprint {self.fingerprint!r} is unknown; use 'stat' (size+mtime) or 'hash'"
            )
        if self.thumb_size < 16:
            raise ConfigError(f"thumbnail size {self.thumb_size} is too small; pass 16 or more")
        if "mask" not in self.process.output.products:
            raise ConfigError("a catalogue needs the 'mask' product; add mask to --products")


# --------------------------------------------------------------------------- inputs


def _is_scene_file(p: Path) -> bool:
    n = p.name.lower()
    if not n.endswith(SCENE_SUFFIXES) or n.startswith("."):
        return False
    if re.search(r"-pan\d?\.tiff?$", n):  # the panchromatic part of a GF/ZY delivery: 1 band
        return False
    return not any(n.endswith(s) for s in OUTPUT_SUFFIXES) and not n.endswith(".partial")


def discover_scenes(inputs: Iterable[str | os.PathLike[str]], exclude: Iterable[Path] = ()) -> list[Path]:
    """Scene files from paths, folders (recursive) and glob patterns, sorted, unique.

    geocloud outputs (``*_mask.tif``...), synthetic truth and anything under ``exclude``
    (e.g. the catalogue's own output folder) are skipped.
    """
    ex = [Path(e).resolve() for e in exclude]
    found: set[Path] = set()
    for item in inputs:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            cands = [q for q in p.rglob("*") if q.is_file()]
        elif p.is_file():
            found.add(p.resolve())
            continue
        elif glob.has_magic(s):
            cands = []
            for g in sorted(glob.glob(s, recursive=True)):
                gp = Path(g)
                cands.extend([q for q in gp.rglob("*") if q.is_file()] if gp.is_dir() else [gp])
        else:
            from .errors import SceneNotFoundError

            raise SceneNotFoundError(f"input {s!r} is not a file, a folder or a glob that matches anything")
        for q in cands:
            r = q.resolve()
            if _is_scene_file(q) and not any(e == r or e in r.parents for e in ex):
                found.add(r)
    return sorted(found)


def scene_ids(paths: list[Path]) -> dict[Path, str]:
    """A unique id per scene: the file stem, plus a short path hash where stems collide."""
    stems: dict[str, list[Path]] = {}
    for p in paths:
        stems.setdefault(_stem(p), []).append(p)
    ids = {}
    for stem, ps in stems.items():
        for p in ps:
            ids[p] = stem if len(ps) == 1 else f"{stem}-{hashlib.sha1(str(p).encode()).hexdigest()[:6]}"
    return ids


def _stem(p: Path) -> str:
    n = p.name
    for suf in (".tar.gz", ".tgz", ".tiff", ".tif"):
        if n.lower().endswith(suf):
            return n[: -len(suf)]
    return p.stem


def file_fingerprint(path: Path, kind: str = "stat") -> dict[str, Any]:
    """size + mtime (ns), and the SHA-256 when ``kind == "hash"``."""
    st = path.stat()
    fp: dict[str, Any] = {"size_bytes": st.st_size, "mtime": st.st_mtime_ns, "sha256": None}
    if kind == "hash":
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        fp["sha256"] = h.hexdigest()
    return fp


def _unchanged(row: dict[str, Any], fp: dict[str, Any], kind: str) -> bool:
    if kind == "hash":
        return row.get("sha256") is not None and row.get("sha256") == fp["sha256"]
    return row.get("size_bytes") == fp["size_bytes"] and row.get("mtime") == fp["mtime"]


# ----------------------------------------------------------------------- one scene

_MODEL_CACHE: dict[Any, Any] = {}


def _model_for(config: ProcessConfig) -> Any:
    """The loaded model, once per worker process (``process_scene`` reuses it)."""
    from .plan import load_model_for

    key = (config.model, config.inference.device, config.output.products)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model_for(config)
    return _MODEL_CACHE[key]


def _acquisition(scene: Path, tags: dict[str, str], vendor: Any) -> tuple[str | None, str | None]:
    from .vendor import datetime_from_filename

    if vendor is not None and vendor.acquired is not None:
        return vendor.acquired.isoformat(), "vendor xml"
    for k, v in tags.items():
        if k.upper() in ("ACQUISITION_TIME", "ACQUISITIONTIME", "DATE_ACQUIRED", "SENSING_TIME"):
            try:
                dt = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
            except ValueError:
                continue
            return dt.isoformat(), "tags"
    from_name = datetime_from_filename(scene.name)
    if from_name is not None:
        return from_name.date().isoformat(), "file name"
    return None, None


def valid_footprint(mask_path: Path, max_side: int = 512) -> str | None:
    """WKT (WGS84 lon/lat) of the valid-data area of a geocloud mask (255 = nodata).

    Polygonised from a decimated read (at most ``max_side`` px), simplified by 1.5
    decimated pixels; ``None`` when the mask is not georeferenced or all nodata.
    """
    import numpy as np
    import rasterio
    import shapely
    from rasterio.enums import Resampling

    from .preview import preview_shape
    from .vectorize import mask_polygons, pixels_to_wgs84

    with rasterio.open(mask_path) as ds:
        h, w = preview_shape(ds.height, ds.width, max_side)
        m = ds.read(1, out_shape=(h, w), resampling=Resampling.nearest)
        crs, transform, rpcs = ds.crs, ds.transform, ds.rpcs
        sy, sx = ds.height / h, ds.width / w
    polys = mask_polygons(m != 255, 0)
    if len(polys) == 0:
        return None
    geom = shapely.union_all(polys).simplify(1.5, preserve_topology=True)
    geom = shapely.transform(geom, lambda xy: xy * np.array([sx, sy]))
    try:
        out = pixels_to_wgs84(geom, crs, transform, rpcs)
    except GeocloudError:
        return None
    return shapely.to_wkt(shapely.set_precision(out, 1e-6), rounding_precision=6)


def catalog_scene(
    path: str | os.PathLike[str],
    scene_id: str,
    outdir: str | os.PathLike[str],
    thumbs_dir: str | os.PathLike[str],
    config: ProcessConfig,
    fingerprint: str = "stat",
    thumb_size: int = 256,
    scene_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Process one scene and return its catalogue row (never raises for a bad scene).

    Runs in a dask worker; everything it needs travels in its arguments.
    """
    from .scene import without_georef_warning

    # intermediate files without georeferencing are expected; workers have no CLI filter
    with without_georef_warning():
        return _catalog_scene(
            path, scene_id, outdir, thumbs_dir, config, fingerprint, thumb_size, scene_kwargs
        )


def _catalog_scene(
    path: str | os.PathLike[str],
    scene_id: str,
    outdir: str | os.PathLike[str],
    thumbs_dir: str | os.PathLike[str],
    config: ProcessConfig,
    fingerprint: str,
    thumb_size: int,
    scene_kwargs: dict[str, Any] | None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    path = Path(path)
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(id=scene_id, path=str(path), status="error")
    workdir: Path | None = None
    try:
        row.update(file_fingerprint(path, fingerprint))
        from .pipeline import process_scene
        from .preview import PreviewConfig, downsample_rgba, render_preview, write_png, write_preview
        from .scene import open_scene
        from .vendor import find_vendor_metadata, is_archive, open_delivery

        scene = path
        vendor = None
        if is_archive(path):
            workdir = Path(tempfile.mkdtemp(prefix="geocloud-cat-"))
            delivery = open_delivery(path, workdir)
            scene, vendor = delivery.raster, delivery.metadata
        else:
            vendor = find_vendor_metadata(scene)
        info = open_scene(scene)
        out = Path(outdir) / scene_id
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*partial*"):  # left by a run that was killed on this scene
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        # The preview is rendered here, once, and the thumbnail shrunk from it (one decimated
        # read of the scene instead of two); it is the same PNG the 'preview' product writes.
        want_preview = "preview" in config.output.products
        products = tuple(p for p in config.output.products if p != "preview")
        cfg = replace(config, output=replace(config.output, products=products, overwrite=True))
        result = process_scene(scene, out, cfg, model=_model_for(cfg), **(scene_kwargs or {}))
        stats = result.stats
        mask = result.outputs["mask"][0]
        thumb = Path(thumbs_dir) / f"{scene_id}.png"
        thumb.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(thumb.parent, scene_id, [thumb])
        if want_preview:
            from .products import PRODUCTS

            rgba = render_preview(scene, mask, PreviewConfig())
            preview_path = PRODUCTS["preview"].paths(out, scene.stem)[0]
            write_png(rgba, preview_path)
            result.outputs["preview"] = [preview_path]
            write_png(downsample_rgba(rgba, thumb_size), thumb)
        else:
            write_preview(scene, thumb, mask, PreviewConfig(max_side=thumb_size))
        acquired, acq_src = _acquisition(scene, dict(info.tags), vendor)
        # thin cloud and mean alpha as the stats define them (geocloud.stats), when the matte ran
        frac, thin, alpha = stats.cloud_fraction, stats.thin_cloud_fraction, stats.mean_alpha
        row.update(
            status="ok",
            error=None,
            satellite=vendor.satellite if vendor is not None else info.tags.get("SATELLITE"),
            sensor=stats.sensor.get("sensor"),
            calibration=stats.sensor.get("calibration"),
            calibration_approximate=stats.sensor.get("approximate"),
            acquired=acquired,
            acquired_source=acq_src,
            cloud_pct=None if frac is None else round(100.0 * frac, 4),
            thin_cloud_pct=None if thin is None else round(100.0 * float(thin), 4),
            mean_alpha=None if alpha is None else round(float(alpha), 4),
            vendor_cloud_pct=vendor.cloud_percent if vendor is not None else None,
            threshold=stats.threshold.value,
            threshold_method=stats.threshold.method,
            model=stats.model.get("name"),
            valid_px=stats.pixels.valid,
            cloud_px=stats.pixels.cloud,
            width=info.width,
            height=info.height,
            crs=info.crs.to_string() if info.crs else None,
            georeferencing=info.georef_kind,
            sun_elevation=stats.sensor.get("sun_elevation"),
            footprint=valid_footprint(mask),
            preview=str(result.outputs["preview"][0]) if "preview" in result.outputs else None,
            thumbnail=str(thumb),
            mask=str(mask),
            stats=str(result.outputs["stats"][0]) if "stats" in result.outputs else None,
            geocloud_version=stats.geocloud_version,
        )
    except GeocloudError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - a bad scene must never stop the batch
        row["error"] = f"internal error {type(exc).__name__}: {exc}".splitlines()[0]
        log.debug("scene %s failed", path, exc_info=True)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    row["processing_s"] = round(time.perf_counter() - t0, 3)
    return row


# ------------------------------------------------------------------------- journal


class Journal:
    """Append-only JSON-lines record of finished rows (``<catalog>.journal.jsonl``)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, dict[str, Any]]:
        """path -> latest row; a torn last line (killed mid-write) is ignored."""
        rows: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return rows
        with self.path.open("r", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("ignoring a torn line in %s", self.path)
                    continue
                rows[row["path"]] = row
        return rows

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, default=str, separators=(",", ":")) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            if f.tell() > 0:
                # a torn previous line (no newline) must not swallow this one
                with self.path.open("rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write("\n")
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


# ------------------------------------------------------------------------- writing


def _frame(rows: list[dict[str, Any]]):  # -> pandas.DataFrame
    import pandas as pd

    df = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], columns=list(COLUMNS))
    for c in (
        "cloud_pct",
        "thin_cloud_pct",
        "mean_alpha",
        "vendor_cloud_pct",
        "threshold",
        "sun_elevation",
        "processing_s",
    ):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in ("valid_px", "cloud_px", "width", "height", "size_bytes", "mtime"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    return df  # fmt: skip


def write_catalog(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write rows (sorted by path) as csv, parquet or gpkg, atomically (tmp + os.replace)."""
    fmt = CATALOG_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"catalogue {path} has an unknown extension; use one of {', '.join(CATALOG_FORMATS)}"
        )
    rows = sorted(rows, key=lambda r: r["path"])
    df = _frame(rows)
    with atomic_output(path, keep_suffix=True, what="catalogue ") as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "parquet":
            _write_geoparquet(df, tmp)
        else:
            _write_gpkg(df, tmp)
    return path


def _write_geoparquet(df: Any, path: Path) -> None:
    """Parquet with the footprint as WKB and GeoParquet 1.0 metadata (readable by GIS tools)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    wkb = [None if w is None or w != w else shapely.to_wkb(shapely.from_wkt(w)) for w in df["footprint"]]
    table = pa.Table.from_pandas(df.drop(columns=["footprint"]), preserve_index=False)
    table = table.append_column("footprint", pa.array(wkb, type=pa.binary()))
    bbox = None
    geoms = [shapely.from_wkb(b) for b in wkb if b is not None]
    if geoms:
        b = shapely.bounds(shapely.union_all(geoms))
        bbox = [float(v) for v in b]
    geo = {
        "version": "1.0.0",
        "primary_column": "footprint",
        "columns": {"footprint": {"encoding": "WKB", "geometry_types": ["Polygon", "MultiPolygon"],
                                  "crs": _wgs84_projjson(), **({"bbox": bbox} if bbox else {})}},
    }  # fmt: skip
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = json.dumps(geo).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def _wgs84_projjson() -> dict[str, Any]:
    from pyproj import CRS

    return CRS.from_epsg(4326).to_json_dict()


def _write_gpkg(df: Any, path: Path) -> None:
    import numpy as np
    import shapely
    from pyogrio.raw import write

    geoms: list[bytes | None] = []
    for w in df["footprint"]:
        if w is None or w != w:
            geoms.append(None)
        else:
            g = shapely.from_wkt(w)
            if g.geom_type == "Polygon":
                g = shapely.MultiPolygon([g])
            geoms.append(shapely.to_wkb(g))
    cols = [c for c in COLUMNS if c != "footprint"]
    field_data = []
    for c in cols:
        s = df[c]
        if str(s.dtype) == "Int64":
            # GPKG integers cannot be null: exact int64 when complete, else float64 with NaN
            field_data.append(
                s.to_numpy(dtype="int64")
                if not s.isna().any()
                else s.to_numpy(dtype="float64", na_value=np.nan)
            )
        elif s.dtype.kind == "f":
            field_data.append(s.to_numpy(dtype="float64"))
        else:
            field_data.append(np.array([None if v is None or v != v else str(v) for v in s], dtype=object))
    write(str(path), geometry=np.array(geoms, dtype=object), field_data=field_data, fields=cols,
          crs="EPSG:4326", driver="GPKG", layer="catalog", geometry_type="MultiPolygon")  # fmt: skip


def read_catalog(path: str | os.PathLike[str]):  # -> pandas.DataFrame
    """Read a catalogue back (any of the three formats) as a pandas DataFrame."""
    import pandas as pd

    p = Path(path)
    fmt = CATALOG_FORMATS.get(p.suffix.lower())
    if fmt == "csv":
        return pd.read_csv(p)
    if fmt == "parquet":
        import shapely

        df = pd.read_parquet(p)
        df["footprint"] = [
            None if b is None else shapely.to_wkt(shapely.from_wkb(b)) for b in df["footprint"]
        ]
        return df
    if fmt == "gpkg":
        import pyogrio

        df = pyogrio.read_dataframe(p, read_geometry=False) if _has_geopandas() else None
        if df is None:
            import shapely
            from pyogrio.raw import read

            meta, _, geoms, fields = read(p)
            df = pd.DataFrame({n: f for n, f in zip(meta["fields"], fields, strict=True)})
            df["footprint"] = [None if g is None else shapely.to_wkt(shapely.from_wkb(g)) for g in geoms]
        return df
    raise ConfigError(f"catalogue {p} has an unknown extension; use one of {', '.join(CATALOG_FORMATS)}")


def _has_geopandas() -> bool:
    import importlib.util

    return importlib.util.find_spec("geopandas") is not None


# ------------------------------------------------------------------------- driving


@dataclass
class CatalogResult:
    path: Path
    html: Path | None
    rows: list[dict[str, Any]]
    processed: int
    skipped: int
    failed: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rows")
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def _open_client(cfg: CatalogConfig):  # -> (Client, LocalCluster | None)
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        try:
            return Client(cfg.scheduler, timeout=f"{cfg.connect_timeout_s}s"), None
        except OSError as exc:
            raise ConfigError(
                f"cannot reach the dask scheduler at {cfg.scheduler!r} ({exc}); check --scheduler ADDRESS "
                "(e.g. tcp://host:8786) or drop it to use a local cluster"
            ) from exc
    cluster = LocalCluster(
        n_workers=cfg.workers, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR, memory_limit=0,
    )  # fmt: skip
    return Client(cluster), cluster


def build_catalog(
    inputs: Iterable[str | os.PathLike[str]],
    catalog_path: str | os.PathLike[str],
    config: CatalogConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CatalogResult:
    """Catalogue the scenes of ``inputs`` into ``catalog_path`` (see the module docstring)."""
    cfg = config or CatalogConfig()
    cfg.validate()
    t0 = time.perf_counter()
    cat = Path(catalog_path)
    if cat.suffix.lower() not in CATALOG_FORMATS:
        raise ConfigError(
            f"catalogue {cat} has an unknown extension; use one of {', '.join(CATALOG_FORMATS)}"
        )
    cat.parent.mkdir(parents=True, exist_ok=True)
    from .outputs import check_writable_dir

    check_writable_dir(cat.parent)
    # what a killed run of this catalogue left (the scenes' own: see process_scene)
    remove_stale_partials(cat.parent, cat.stem, [cat, cat.with_suffix(".html")])
    outputs = Path(cfg.outputs_dir) if cfg.outputs_dir else cat.with_name(f"{cat.stem}_scenes")
    thumbs = cat.with_name(f"{cat.stem}_thumbs")
    scenes = discover_scenes(inputs, exclude=[outputs, thumbs])
    ids = scene_ids(scenes)
    journal = Journal(cat.with_name(cat.name + ".journal.jsonl"))
    done = journal.load() if cfg.resume else {}
    if not cfg.resume and journal.path.exists():
        journal.path.unlink()

    rows: dict[str, dict[str, Any]] = {}
    todo: list[Path] = []
    for p in scenes:
        prev = done.get(str(p))
        if prev is not None and (prev.get("status") == "ok" or not cfg.retry_errors):
            try:
                unchanged = _unchanged(prev, file_fingerprint(p, cfg.fingerprint), cfg.fingerprint)
            except OSError:
                unchanged = False
            if unchanged:
                rows[str(p)] = prev
                continue
        todo.append(p)
    skipped = len(rows)
    log.info("%d scenes: %d to process, %d unchanged", len(scenes), len(todo), skipped)

    process_cfg = cfg.process
    if process_cfg.inference.threads is None and cfg.workers > 1 and not cfg.scheduler:
        # local worker processes share the cores: split them rather than oversubscribe
        threads = max(1, (os.cpu_count() or 1) // cfg.workers - 1)
        process_cfg = replace(process_cfg, inference=replace(process_cfg.inference, threads=threads))
    args = (outputs, thumbs, process_cfg, cfg.fingerprint, cfg.thumb_size, cfg.scene_kwargs)
    n_new = 0
    failed = 0
    last_write = [time.monotonic()]

    def finish(row: dict[str, Any]) -> None:
        nonlocal n_new, failed
        journal.append(row)
        rows[row["path"]] = row
        n_new += 1
        failed += row["status"] != "ok"
        if progress is not None:
            progress(skipped + n_new, len(scenes))
        if time.monotonic() - last_write[0] >= cfg.checkpoint_s:
            write_catalog(list(rows.values()), cat)
            last_write[0] = time.monotonic()

    try:
        if todo and cfg.workers == 0 and not cfg.scheduler:
            for p in todo:
                finish(catalog_scene(p, ids[p], *args))
        elif todo:
            from distributed import as_completed

            client, cluster = _open_client(cfg)
            try:
                futures = {
                    client.submit(catalog_scene, str(p), ids[p], str(outputs), str(thumbs), *args[2:],
                                  key=f"geocloud-scene-{ids[p]}-{time.time_ns()}", pure=False): p
                    for p in todo
                }  # fmt: skip
                for fut in as_completed(futures):
                    p = futures[fut]
                    try:
                        row = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a worker died: an error row, go on
                        row = dict.fromkeys(COLUMNS)
                        row.update(id=ids[p], path=str(p), status="error",
                                   error=f"worker failure {type(exc).__name__}: {exc}".splitlines()[0])  # fmt: skip
                        row.update(file_fingerprint(p, cfg.fingerprint))
                    finish(row)
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
    finally:
        # Whatever happened, the catalogue reflects every finished row (atomically).
        current = [rows[str(p)] for p in scenes if str(p) in rows]
        write_catalog(current, cat)
    html = None
    if cfg.html:
        from .report import write_html

        html = write_html(current, cat.with_suffix(".html"), title=f"geocloud catalogue: {cat.name}")
    return CatalogResult(cat, html, sorted(current, key=lambda r: r["path"]), n_new, skipped, failed,
                         round(time.perf_counter() - t0, 3))  # fmt: skip
