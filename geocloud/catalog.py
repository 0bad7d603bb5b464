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

CATALOG_FORMATS = {".csv": "csv", ".parquet": "parquet", ".gpkg": "gpkg", ".json": "stac"}

#: Row statuses: processed, failed, and rasters that are not scenes (masks, label files...).
STATUSES = ("ok", "error", "skipped")
#: A scene needs blue, green, red and near-infrared bands.
MIN_SCENE_BANDS = 4

#: Columns of a catalogue, in order.
COLUMNS: tuple[str, ...] = (
    "id", "path", "status", "error", "warnings", "satellite", "sensor", "calibration", "calibration_approximate",
    "acquired", "acquired_source",
    "cloud_pct", "shadow_pct", "usable_pct", "thin_cloud_pct", "mean_alpha", "vendor_cloud_pct", "threshold",
    "threshold_method",
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
    #: dask worker processes of the LocalCluster; 0 runs serially in this process; "auto"
    #: picks what measures fastest on this machine (:func:`auto_workers`).
    workers: int | str = "auto"
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
    #: globs a scene file must match (any of them; none: every scene file), and globs that exclude
    #: it, matched against the file name, or the end of its path when they hold a '/'.
    patterns: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    #: also write a static STAC catalogue (catalog.json + one Item per scene) into this folder.
    stac_dir: Path | None = None

    def validate(self) -> None:
        self.process.validate()
        if self.workers != "auto":
            if isinstance(self.workers, bool) or not isinstance(self.workers, int):
                raise ConfigError(f"--workers {self.workers!r} is not a number; pass auto, 0 (serial) or 1..{usable_cores()}")
            if self.workers < 0:
                raise ConfigError(f"--workers {self.workers} is negative; pass auto, 0 (serial) or 1..{usable_cores()}")
            if self.workers > usable_cores() and not self.scheduler:
                raise ConfigError(
                    f"--workers {self.workers} is more than the {usable_cores()} cores this process may use; "
                    f"pass auto, 0 (serial) or 1..{usable_cores()}"
                )
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


def _glob_match(path: Path, pattern: str) -> bool:
    """``pattern`` against the file name, or against the end of the path when it holds a '/'
    (``labels/*.tif``); a pattern starting with '/' or '*' may also match the whole path."""
    from fnmatch import fnmatchcase

    if "/" not in pattern:
        return fnmatchcase(path.name, pattern)
    return path.match(pattern) or fnmatchcase(path.as_posix(), pattern)


def discover_scenes(
    inputs: Iterable[str | os.PathLike[str]],
    exclude: Iterable[Path] = (),
    patterns: Iterable[str] = (),
    excludes: Iterable[str] = (),
) -> list[Path]:
    """Scene files from paths, folders (recursive) and glob patterns, sorted, unique.

    geocloud outputs (``*_mask.tif``...), synthetic truth and anything under ``exclude``
    (e.g. the catalogue's own output folder) are skipped; so are files that match none of
    ``patterns`` (when given) or any of ``excludes`` (see :func:`_glob_match`).
    """
    ex = [Path(e).resolve() for e in exclude]
    pats, exs = tuple(patterns), tuple(excludes)

    def selected(q: Path) -> bool:
        return (not pats or any(_glob_match(q, g) for g in pats)) and not any(_glob_match(q, g) for g in exs)

    found: set[Path] = set()
    for item in inputs:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            cands = [q for q in p.rglob("*") if q.is_file()]
        elif p.is_file():
            if selected(p.absolute()):
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
            if _is_scene_file(q) and not any(e == r or e in r.parents for e in ex) and selected(q.absolute()):
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


def iso_mtime(mtime_ns: int) -> str:
    """A file time as ISO 8601 in UTC, to the microsecond (``2024-05-01T10:20:30.123456Z``)."""
    from datetime import UTC, timedelta

    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=mtime_ns // 1000)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def file_fingerprint(path: Path, kind: str = "stat") -> dict[str, Any]:
    """size + mtime (ISO 8601, UTC), and the SHA-256 when ``kind == "hash"``."""
    st = path.stat()
    fp: dict[str, Any] = {"size_bytes": st.st_size, "mtime": iso_mtime(st.st_mtime_ns), "sha256": None}
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
        gcps = None
        if crs is None and rpcs is None and ds.gcps[0]:  # georeferenced by GCPs only
            gcps, crs = ds.gcps
        sy, sx = ds.height / h, ds.width / w
    polys = mask_polygons(m != 255, 0)
    if len(polys) == 0:
        return None
    geom = shapely.union_all(polys).simplify(1.5, preserve_topology=True)
    geom = shapely.transform(geom, lambda xy: xy * np.array([sx, sy]))
    try:
        out = pixels_to_wgs84(geom, crs, transform, rpcs, gcps)
    except GeocloudError:
        return None
    return shapely.to_wkt(shapely.set_precision(out, 1e-6), rounding_precision=6)


def not_a_scene(path: Path) -> str | None:
    """Why a raster cannot be a scene (too few bands: a mask, a label file, a PAN band), or None.

    Only GeoTIFFs are looked at (a delivery archive is opened later); a file GDAL cannot
    read is left to the pipeline, which reports it as an error.
    """
    import rasterio

    if not path.name.lower().endswith((".tif", ".tiff")):
        return None
    try:
        with rasterio.Env(CPL_LOG=os.devnull), rasterio.open(path) as ds:
            count, dtype = ds.count, ds.dtypes[0]
    except Exception:  # noqa: BLE001 - unreadable: an error row, from the pipeline
        return None
    if count >= MIN_SCENE_BANDS:
        return None
    what = "a mask or label raster?" if count == 1 and dtype == "uint8" else "not a 4-band B/G/R/NIR scene"
    return f"{count} {dtype} band{'s' if count > 1 else ''}, a scene needs {MIN_SCENE_BANDS} ({what})"


#: file names of GaoFen / ZiYuan-3 products, which come with a vendor XML.
_VENDOR_NAME = re.compile(r"^(GF\d|ZY3|ZY-3|ZY02C)", re.I)


def _archive_error(path: Path, exc: BaseException) -> str:
    from .vendor.delivery import corrupt_archive_error

    return f"ArchiveError: {corrupt_archive_error(path, exc)}".splitlines()[0]


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


def _result_columns(result: Any, scene: Path, info: Any, vendor: Any, thumb: Path) -> dict[str, Any]:
    """The catalogue columns of a processed scene, from its typed stats (one definition of
    each figure: :mod:`geocloud.stats`)."""
    stats, mask = result.stats, result.outputs["mask"][0]
    acquired, acq_src = _acquisition(scene, dict(info.tags), vendor)
    frac, thin, alpha = stats.cloud_fraction, stats.thin_cloud_fraction, stats.mean_alpha
    return dict(
        status="ok",
        error=None,
        satellite=vendor.satellite if vendor is not None else info.tags.get("SATELLITE"),
        sensor=stats.sensor.get("sensor"),
        calibration=stats.sensor.get("calibration"),
        calibration_approximate=stats.sensor.get("approximate"),
        acquired=acquired,
        acquired_source=acq_src,
        cloud_pct=None if frac is None else round(100.0 * frac, 4),
        shadow_pct=None if stats.shadow_fraction is None else round(100.0 * stats.shadow_fraction, 4),
        usable_pct=None if stats.usable_fraction is None else round(100.0 * stats.usable_fraction, 4),
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
        crs=info.georef_crs.to_string() if info.georef_crs else None,
        georeferencing=info.georef_kind,
        sun_elevation=stats.sensor.get("sun_elevation"),
        footprint=valid_footprint(mask),
        preview=str(result.outputs["preview"][0]) if "preview" in result.outputs else None,
        thumbnail=str(thumb),
        mask=str(mask),
        stats=str(result.outputs["stats"][0]) if "stats" in result.outputs else None,
        geocloud_version=stats.geocloud_version,
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
    notes: list[str] = []
    try:
        row.update(file_fingerprint(path, fingerprint))
        reason = not_a_scene(path)
        if reason is not None:
            row.update(status="skipped", error=reason)
            row["processing_s"] = round(time.perf_counter() - t0, 3)
            return row
        from .pipeline import process_scene
        from .preview import PreviewConfig, downsample_rgba, render_preview, write_png, write_preview
        from .scene import open_scene
        from .vendor import find_vendor_metadata, is_archive, open_delivery

        scene = path
        vendor = None
        if is_archive(path):
            import tarfile
            import zlib

            workdir = Path(tempfile.mkdtemp(prefix="geocloud-cat-"))
            try:
                delivery = open_delivery(path, workdir)
            except (EOFError, tarfile.TarError, zlib.error) as exc:
                row["error"] = _archive_error(path, exc)
                return row
            scene = delivery.raster
            vendor = find_vendor_metadata(scene, problems=notes)
            if vendor is None and not notes:
                notes.append(f"the delivery {path.name} holds no vendor XML")
        else:
            vendor = find_vendor_metadata(scene, problems=notes)
            if vendor is None and not notes and _VENDOR_NAME.match(scene.name):
                notes.append(f"no vendor XML beside {scene.name}")
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
        if notes:  # the XML the scene was not calibrated with, and the rule it was
            used = stats.sensor.get("calibration") or stats.sensor.get("source")
            notes[-1] += f"; calibrated with: {used or 'no DN calibration (reflectance input)'}"
        notes.extend(str(w) for w in stats.warnings if w)
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
        row.update(_result_columns(result, scene, info, vendor, thumb))
        # every product file, for the STAC assets (kept in the journal, not a table column)
        row["products"] = {k: [str(v) for v in vs] for k, vs in result.outputs.items()}
    except GeocloudError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - a bad scene must never stop the batch
        row["error"] = f"internal error {type(exc).__name__}: {exc}".splitlines()[0]
        if any(n.startswith("vendor XML ignored") for n in notes):
            # GDAL reads a <stem>.xml sidecar too, and fails on a malformed one
            row["error"] = f"{row['error']} (the vendor XML beside the scene is malformed: fix or remove it)"
        log.debug("scene %s failed", path, exc_info=True)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        row["warnings"] = " | ".join(dict.fromkeys(notes)) or None
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
        "shadow_pct",
        "usable_pct",
        "thin_cloud_pct",
        "mean_alpha",
        "vendor_cloud_pct",
        "threshold",
        "sun_elevation",
        "processing_s",
    ):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in ("valid_px", "cloud_px", "width", "height", "size_bytes"):
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
    if fmt == "stac":
        from .stac import item_collection

        with atomic_output(path, keep_suffix=True, what="catalogue ") as tmp:
            tmp.write_text(json.dumps(item_collection(rows), indent=1), encoding="utf-8")
        return path
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
    from .vectorize import GPKG_DATASET_OPTIONS

    write(str(path), geometry=np.array(geoms, dtype=object), field_data=field_data, fields=cols,
          crs="EPSG:4326", driver="GPKG", layer="catalog", geometry_type="MultiPolygon",
          dataset_options=GPKG_DATASET_OPTIONS)  # fmt: skip


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
    if fmt == "stac":
        from .stac import rows_from_items

        return pd.DataFrame(rows_from_items(json.loads(p.read_text(encoding="utf-8"))), columns=list(COLUMNS))
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
    #: scenes processed by this run (ok, error or skipped)
    processed: int
    #: rows kept from the journal (the scene did not change since)
    unchanged: int
    #: rasters that are not scenes (status ``skipped``)
    skipped: int
    #: rows with status ``error``, in the whole catalogue
    failed: int
    seconds: float
    #: worker processes used (0: serial) and why
    workers: int = 0
    workers_reason: str = ""
    stac: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rows")
        d["scenes"] = len(self.rows)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: below this many cores a serial run (one process, the model's threads on every core) beats
#: worker processes: measured with benchmarks/bench_catalog.py (docs/benchmarks.md).
AUTO_MIN_CORES_FOR_WORKERS = 8
#: intra-op threads per worker process when ``auto`` chooses workers.
AUTO_THREADS_PER_WORKER = 4


def auto_workers(n_scenes: int, cfg: ProcessConfig | None = None, cores: int | None = None) -> tuple[int, str]:
    """``--workers auto``: (worker processes, why).

    Serial (0) on fewer than :data:`AUTO_MIN_CORES_FOR_WORKERS` cores, for a single scene,
    and on a GPU (one process keeps the model on the device); else one worker per
    :data:`AUTO_THREADS_PER_WORKER` cores, at most one per scene.
    """
    cores = usable_cores() if cores is None else cores
    device = getattr(getattr(cfg, "inference", None), "device", "cpu") if cfg is not None else "cpu"
    if device not in ("cpu", "auto") or (device == "auto" and _cuda_available()):
        return 0, "serial: the model runs on the GPU in this process"
    if n_scenes <= 1:
        return 0, "serial: one scene to do"
    if cores < AUTO_MIN_CORES_FOR_WORKERS:
        return 0, f"serial: {cores} cores (worker processes pay off from {AUTO_MIN_CORES_FOR_WORKERS})"
    n = max(1, min(n_scenes, cores // AUTO_THREADS_PER_WORKER))
    return n, f"{n} workers of {AUTO_THREADS_PER_WORKER} threads on {cores} cores"


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch build with CUDA: CPU
        return False


def _quiet_dask() -> None:
    """dask's own loggers print tracebacks of worker and comm failures: not for the user
    (the failure becomes the scene's error row); ``--debug`` brings them back."""
    if log.isEnabledFor(logging.DEBUG):
        return
    for name in ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler",
                 "distributed.core", "distributed.comm", "distributed.client", "tornado", "asyncio"):  # fmt: skip
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _open_client(cfg: CatalogConfig, workers: int):  # -> (Client, LocalCluster | None)
    from distributed import Client, LocalCluster

    _quiet_dask()
    if cfg.scheduler:
        try:
            return Client(cfg.scheduler, timeout=f"{cfg.connect_timeout_s}s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(
                f"cannot reach the dask scheduler at {cfg.scheduler!r} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                "check --scheduler ADDRESS (e.g. tcp://host:8786) or drop it to use a local cluster"
            ) from None
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.CRITICAL, memory_limit=0,
    )  # fmt: skip
    return Client(cluster), cluster


def _nothing_matched(inputs: list[str], patterns: tuple[str, ...], excludes: tuple[str, ...]) -> GeocloudError:
    from .errors import SceneNotFoundError

    sel = "".join(f" --pattern {g!r}" for g in patterns) + "".join(f" --exclude {g!r}" for g in excludes)
    return SceneNotFoundError(
        f"nothing to catalogue: no scene file (.tif, .tiff, .tar.gz, .tgz) under {', '.join(map(repr, inputs))}"
        f"{sel}; check the paths and globs"
    )


def _split_done(
    scenes: list[Path], done: dict[str, dict[str, Any]], cfg: CatalogConfig
) -> tuple[dict[str, dict[str, Any]], list[Path]]:
    """(rows of the journal kept as they are: the scene is unchanged, by path; the scenes to process)."""
    rows: dict[str, dict[str, Any]] = {}
    todo: list[Path] = []
    for p in scenes:
        prev = done.get(str(p))
        if prev is not None and (prev.get("status") in ("ok", "skipped") or not cfg.retry_errors):
            try:
                unchanged = _unchanged(prev, file_fingerprint(p, cfg.fingerprint), cfg.fingerprint)
            except OSError:
                unchanged = False
            if unchanged:
                rows[str(p)] = prev
                continue
        todo.append(p)
    return rows, todo


def _run_on_cluster(client: Any, todo: list[Path], ids: dict[Path, str], args: tuple[Any, ...],
                    cfg: CatalogConfig, finish: Callable[[dict[str, Any]], None]) -> None:  # fmt: skip
    """One dask task per scene; ``finish`` each row as it completes (a dead worker: an error row)."""
    from distributed import as_completed

    outputs, thumbs = args[0], args[1]
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


def build_catalog(
    inputs: Iterable[str | os.PathLike[str]],
    catalog_path: str | os.PathLike[str],
    config: CatalogConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CatalogResult:
    """Catalogue the scenes of ``inputs`` into ``catalog_path`` (see the module docstring).

    Raises :class:`~geocloud.errors.SceneNotFoundError` when no scene file matches (nothing
    is written then), :class:`ConfigError` for a bad option or an unreachable scheduler
    (nothing is written either).  Paths in the rows are absolute.
    """
    cfg = config or CatalogConfig()
    cfg.validate()
    t0 = time.perf_counter()
    inputs = [str(i) for i in inputs]
    cat = Path(catalog_path).absolute()
    if cat.suffix.lower() not in CATALOG_FORMATS:
        raise ConfigError(
            f"catalogue {cat} has an unknown extension; use one of {', '.join(CATALOG_FORMATS)}"
        )
    outputs = (Path(cfg.outputs_dir) if cfg.outputs_dir else cat.with_name(f"{cat.stem}_scenes")).absolute()
    thumbs = cat.with_name(f"{cat.stem}_thumbs")
    scenes = discover_scenes(inputs, exclude=[outputs, thumbs], patterns=cfg.patterns, excludes=cfg.excludes)
    if not scenes:
        raise _nothing_matched(inputs, cfg.patterns, cfg.excludes)
    cat.parent.mkdir(parents=True, exist_ok=True)
    from .outputs import check_writable_dir

    check_writable_dir(cat.parent)
    # what a killed run of this catalogue left (the scenes' own: see process_scene)
    remove_stale_partials(cat.parent, cat.stem, [cat, cat.with_suffix(".html")])
    ids = scene_ids(scenes)
    journal = Journal(cat.with_name(cat.name + ".journal.jsonl"))
    done = journal.load() if cfg.resume else {}
    if not cfg.resume and journal.path.exists():
        journal.path.unlink()

    rows, todo = _split_done(scenes, done, cfg)
    n_unchanged = len(rows)
    log.info("%d scenes: %d to process, %d unchanged", len(scenes), len(todo), n_unchanged)

    if cfg.scheduler:
        workers, why = -1, f"the dask scheduler at {cfg.scheduler}"
    elif cfg.workers == "auto":
        workers, why = auto_workers(len(todo), cfg.process)
    else:
        workers, why = int(cfg.workers), "--workers"
    log.info("workers: %s (%s)", max(workers, 0), why)
    process_cfg = cfg.process
    if process_cfg.inference.threads is None and workers > 1:
        # local worker processes share the cores: split them rather than oversubscribe
        threads = max(1, usable_cores() // workers - (0 if cfg.workers == "auto" else 1))
        process_cfg = replace(process_cfg, inference=replace(process_cfg.inference, threads=threads))
    args = (outputs, thumbs, process_cfg, cfg.fingerprint, cfg.thumb_size, cfg.scene_kwargs)
    n_new = 0
    last_write = [time.monotonic()]

    def finish(row: dict[str, Any]) -> None:
        nonlocal n_new
        journal.append(row)
        rows[row["path"]] = row
        n_new += 1
        if progress is not None:
            progress(n_unchanged + n_new, len(scenes))
        if time.monotonic() - last_write[0] >= cfg.checkpoint_s:
            write_catalog(list(rows.values()), cat)
            last_write[0] = time.monotonic()

    # the client is opened before anything is written: an unreachable scheduler leaves no file
    client = cluster = None
    if todo and workers != 0:
        client, cluster = _open_client(cfg, max(workers, 0))
    try:
        if todo and client is None:
            for p in todo:
                finish(catalog_scene(p, ids[p], *args))
        elif todo:
            try:
                _run_on_cluster(client, todo, ids, args, cfg, finish)
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
    stac = None
    if cfg.stac_dir is not None:
        from .stac import write_stac_catalog

        stac = write_stac_catalog(current, Path(cfg.stac_dir), title=f"geocloud catalogue: {cat.name}")
    ordered = sorted(current, key=lambda r: r["path"])
    return CatalogResult(
        cat, html, ordered, processed=n_new, unchanged=n_unchanged,
        skipped=sum(r.get("status") == "skipped" for r in ordered),
        failed=sum(r.get("status") == "error" for r in ordered),
        seconds=round(time.perf_counter() - t0, 3), workers=max(workers, 0), workers_reason=why, stac=stac,
    )  # fmt: skip
