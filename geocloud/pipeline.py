"""``process_scene``: one scene in, georeferenced products out.

The run is a plan and its stages:

1. :func:`geocloud.plan.plan_scene` checks the scene, the options and the outputs, loads
   the model and works out the blocks, swaths, products and paths (a refused run writes
   nothing);
2. :class:`geocloud.passes.InferencePass` infers, mosaics and stores the model's maps;
3. :func:`geocloud.threshold.fit_threshold` fits the scene's threshold;
4. :class:`geocloud.passes.ClassifyPass` makes the mask and every window product, while
   :class:`geocloud.passes.CogAssembly` turns the first pass's rasters into COGs;
5. the file products (stats, polygons, preview) are written from the complete rasters and
   the typed :class:`geocloud.stats.SceneStats`;
6. :class:`geocloud.outputs.OutputTransaction` renames everything into place together.

A failure at any point removes every temporary file and leaves existing outputs untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .config import ProcessConfig
from .errors import InputError
from .inference import cpu_threads
from .models.base import CloudModel
from .outputs import OutputTransaction, scene_lock
from .passes import ClassifyPass, CogAssembly, InferencePass, ProgressCallback, ShadowStage
from .plan import (
    ScenePlan,
    gdal_cache,
    load_model_for,
    output_paths,
    plan_products,
    plan_scene,
    striped_compressed,
)
from .products import FileContext
from .scene import SceneReader
from .sensors import REFLECTANCE_RANGE
from .stats import InferenceSettings, PixelCounts, RestorationSummary, SceneSize, SceneStats, TilingSummary
from .threshold import CLEAR, CLOUD, NODATA, SHADOW, ThresholdResult, fit_threshold

log = logging.getLogger(__name__)

#: warn when more than this fraction of valid reflectances fall outside REFLECTANCE_RANGE.
OUT_OF_RANGE_WARN = 0.02


@dataclass
class SceneResult:
    scene: Path
    #: product name -> output paths
    outputs: dict[str, list[Path]]
    stats: SceneStats
    warnings: list[str] = field(default_factory=list)


def process_scene(
    path: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    config: ProcessConfig | None = None,
    *,
    model: CloudModel | None = None,
    progress: ProgressCallback | None = None,
    scale: float | None = None,
    offset: float = 0.0,
    sun_elevation: float | None = None,
    sun_azimuth: float | None = None,
    stem: str | None = None,
    source: str | os.PathLike[str] | None = None,
) -> SceneResult:
    """Detect the clouds of one scene and write the products ``config.output.products``.

    ``model`` may be given to reuse a loaded model across scenes (or to inject a test
    model); otherwise ``config.model`` is loaded on ``config.inference.device``.  One run
    at a time writes a scene's products into a folder (:func:`geocloud.outputs.scene_lock`).
    ``stem`` names the outputs instead of the scene file's stem, and ``source`` is the input
    the stats name instead of ``path`` (a vendor delivery's raster: see
    :func:`geocloud.vendor.delivery_scene`).
    """
    created = not Path(outdir).exists()
    try:
        with scene_lock(Path(outdir), stem or Path(path).stem):
            return _process_scene(path, outdir, config, model=model, progress=progress, scale=scale,
                                  offset=offset, sun_elevation=sun_elevation, sun_azimuth=sun_azimuth,
                                  stem=stem, source=source)  # fmt: skip
    except BaseException:
        if created:  # a refused or failed run leaves no folder it made behind either
            with contextlib.suppress(OSError):
                Path(outdir).rmdir()  # only when empty
        raise


def _process_scene(
    path: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    config: ProcessConfig | None = None,
    *,
    model: CloudModel | None = None,
    progress: ProgressCallback | None = None,
    scale: float | None = None,
    offset: float = 0.0,
    sun_elevation: float | None = None,
    sun_azimuth: float | None = None,
    stem: str | None = None,
    source: str | os.PathLike[str] | None = None,
) -> SceneResult:
    """:func:`process_scene` under its lock: the plan, then its stages."""
    t_start = time.perf_counter()
    warnings_out: list[str] = []

    def warn(msg: str) -> None:
        log.warning(msg)
        warnings_out.append(msg)

    plan, loaded = plan_scene(path, outdir, config or ProcessConfig(), model=model, scale=scale, offset=offset,
                              sun_elevation=sun_elevation, sun_azimuth=sun_azimuth, warn=warn,
                              stem=stem, source=source)  # fmt: skip
    assert loaded is not None  # (only a description plans without a model)
    model = loaded
    timings: dict[str, float] = {}
    finals = [f for paths in plan.wanted.values() for f in paths]
    with OutputTransaction(plan.outdir, plan.stem, finals) as tx, ExitStack() as stack:
        reader = SceneReader(plan.info, plan.radiometry.indexes)
        stack.callback(reader.close)
        stack.enter_context(gdal_cache(plan))
        stack.enter_context(cpu_threads(plan.device, plan.config.inference.resolved_threads()))

        t0 = time.perf_counter()
        first = InferencePass(plan, model, reader, tx.workdir)
        for s in first.map_sinks.values():
            stack.callback(s.close)
        first.run(progress)
        timings["read_infer_mosaic"] = time.perf_counter() - t0
        _check_first_pass(plan, first, warn)
        threshold = fit_threshold(first.score_stats, plan.spec, plan.config.threshold)

        # the first pass's products become COGs on a background thread while the second
        # pass reads their intermediate files (each side with its own GDAL handle)
        shadow = None
        if plan.config.shadow:
            t0 = time.perf_counter()
            shadow = ShadowStage(plan, reader, first.map_sinks["score"], threshold)
            shadow.estimate()
            timings["shadow_estimate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = ClassifyPass(plan, model, reader, first, threshold, tx.workdir, shadow)
        for s in second.sinks.values():
            stack.callback(s.close)
        # (registered after the sinks: on failure the pools are waited for before the
        # sinks they finalize are closed)
        cogs = CogAssembly(plan, tx, plan.tags(threshold), stack)
        cogs.early(first.raster_sinks())
        second.run(progress)
        timings["classify"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        cogs.late(second.sinks)
        rasters = cogs.wait(progress)
        for s in first.map_sinks.values():
            s.discard()
        timings["write_cogs"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        stats = scene_stats(plan, model, threshold, first, second, timings, warnings_out, shadow)

        # file products, each to temporary paths, from the complete rasters
        fctx = FileContext(plan.info, plan.stem, plan.outdir, rasters, stats,
                           {"decloud": plan.config.decloud, "vector": plan.config.vector})  # fmt: skip
        for fp in plan.file_products:
            finals_fp = fp.paths(plan.outdir, plan.stem)
            fp.write(fctx, [tx.temporary(f, keep_suffix=True) for f in finals_fp])

        # everything complete: rename into place.  With --overwrite the scene's whole
        # product set is replaced: products of this stem that this run did not write (an
        # earlier run's, made with other settings) are removed in the same step, so a new
        # mask never sits beside an old score, stats or polygons
        stale = [p for p in plan.all_product_paths() if p not in finals and p.exists()] if plan.config.output.overwrite else []
        tx.commit(stale)
        return SceneResult(plan.info.path, dict(plan.wanted), stats, warnings_out)


def _check_first_pass(plan: ScenePlan, first: InferencePass, warn: Any) -> None:
    """Refuse a scene without valid pixels; warn when many reflectances were out of range."""
    if first.valid_seen == 0:
        raise InputError(
            f"scene {plan.info.path.name} is entirely nodata (nodata={plan.info.nodata}); "
            "check the nodata value (gdal_edit.py -a_nodata) or pass another scene"
        )
    if first.checked and first.out_of_range / first.checked > OUT_OF_RANGE_WARN:
        rad = plan.radiometry
        warn(
            f"{100 * first.out_of_range / first.checked:.0f}% of reflectances are outside "
            f"{REFLECTANCE_RANGE[0]}..{REFLECTANCE_RANGE[1]}: the DN scaling is probably wrong "
            f"(sensor {rad.sensor}, {rad.source}); pass --sensor or --scale"
        )


def scene_stats(plan: ScenePlan, model: CloudModel, threshold: ThresholdResult, first: InferencePass,
                second: ClassifyPass, timings: dict[str, float], warnings: list[str],
                shadow: ShadowStage | None = None) -> SceneStats:  # fmt: skip
    """The run's :class:`~geocloud.stats.SceneStats` (the stats product is its JSON)."""
    info, counts, cfg = plan.info, second.counts, plan.config.inference
    valid_n = int(counts[CLEAR] + counts[CLOUD] + counts[SHADOW])
    total = timings["total"]
    return SceneStats(
        scene=str(plan.source or info.path),
        stem=plan.stem,
        geocloud_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        sensor=plan.radiometry.as_dict(),
        model=model.describe(),
        device=plan.device,
        inference=InferenceSettings(
            batch_size=plan.batch_size,
            torch_threads=cfg.resolved_threads() if plan.device == "cpu" else None,
            predictors=plan.predictors,
            autocast=plan.amp,
        ),
        size=SceneSize(width=info.width, height=info.height, bands=info.count, dtype=info.dtype),
        georeferencing=info.georef_kind,
        crs=info.georef_crs.to_string() if info.georef_crs else None,
        pixels=PixelCounts(total=info.pixels, valid=valid_n, nodata=int(counts[NODATA]),
                           cloud=int(counts[CLOUD]), clear=int(counts[CLEAR]), shadow=int(counts[SHADOW])),  # fmt: skip
        cloud_fraction=float(counts[CLOUD] / valid_n) if valid_n else None,
        threshold=threshold,
        block_prob_mean=float(np.mean(first.block_probs)) if first.block_probs else None,
        swaths=len(plan.swaths),
        tiling=TilingSummary(block_size=plan.tiling.block_shape[0], halo=plan.tiling.halo,
                             feather=plan.tiling.feather, blocks=plan.n_blocks),  # fmt: skip
        timings_s={k: round(v, 3) for k, v in timings.items()},
        throughput_mpx_s=round(info.pixels / 1e6 / total, 3) if total else None,
        warnings=warnings,
        outputs={name: [p.name for p in paths] for name, paths in plan.wanted.items()},
        matting=second.matting.summary() if second.matting is not None else None,
        shadow_fraction=float(counts[SHADOW] / valid_n) if valid_n and shadow is not None else None,
        usable_fraction=float(counts[CLEAR] / valid_n) if valid_n else None,
        shadow=shadow.summary() if shadow is not None else None,
        restoration=_restoration_summary(plan, second, valid_n),
    )


def _restoration_summary(plan: ScenePlan, second: ClassifyPass, valid_n: int) -> RestorationSummary | None:
    """The synthesised pixels of the ``restored`` products, when one was made."""
    if not any(p.name in ("restored", "restored_quality") for p in plan.raster_products):
        return None
    n = int(second.tally.get("restored_pixels", 0))
    return RestorationSummary(restored_pixels=n, restored_fraction=n / valid_n if valid_n else None,
                              alpha_max=plan.config.decloud.alpha_max)  # fmt: skip


def describe_scene(path: str | os.PathLike[str], config: ProcessConfig | None = None, *,
                   scale: float | None = None, offset: float = 0.0,
                   sun_elevation: float | None = None, sun_azimuth: float | None = None) -> dict[str, Any]:  # fmt: skip
    """What ``geocloud info`` prints: the scene, its radiometry and the processing plan
    (the plan :func:`process_scene` would follow, from :func:`geocloud.plan.plan_scene`)."""
    sp, _ = plan_scene(path, ".", config or ProcessConfig(), scale=scale, offset=offset,
                       sun_elevation=sun_elevation, sun_azimuth=sun_azimuth, describe=True)  # fmt: skip
    info, radiometry, spec, tiling, swaths, config = sp.info, sp.radiometry, sp.spec, sp.tiling, sp.swaths, sp.config
    missing = sp.radiometry_missing
    plan: dict[str, Any] = {
        "model": spec.name,
        "blocks": f"{len(tiling)} blocks of {tiling.block_shape[0]}x{tiling.block_shape[1]} px "
        f"(halo {tiling.halo}, feather {tiling.feather})",
        "swaths": f"{len(swaths)} of at most {max(sw.x1 - sw.x0 for sw in swaths)} columns"
        + (" (compressed strips: whole rows are decoded once per swath)" if striped_compressed(info) else ""),
        "products": list(config.output.products),
        "shadow": "off (--no-shadow)" if not config.shadow else (
            "searched from the image (no sun azimuth known)" if sp.sun_azimuth is None
            else f"along the sun azimuth {sp.sun_azimuth:.2f} degrees"),
        "outputs": [
            p.name for paths in output_paths(info.path, ".", config.output.products).values() for p in paths
        ],
    }
    return {
        "path": str(info.path),
        "size": f"{info.width} x {info.height} px, {info.count} bands, {info.dtype}",
        "megapixels": round(info.pixels / 1e6, 2),
        "layout": info.layout,
        "nodata": f"{info.nodata_kind}" + (f" ({info.nodata})" if info.nodata is not None else ""),
        "georeferencing": info.georef_kind,
        "crs": info.georef_crs.to_string() if info.georef_crs else None,
        **({"gcps": f"{len(info.gcps[0])} ground control points (no geotransform)"}
           if info.georef_kind == "gcps" else {}),
        "pixel_size": (abs(info.transform.a), abs(info.transform.e)) if info.crs else None,
        "band_descriptions": list(info.descriptions),
        "sensor": radiometry.sensor,
        "bands_used": dict(zip(("blue", "green", "red", "nir"), radiometry.indexes, strict=True)),
        "scaling": radiometry.source if missing is None else f"UNKNOWN: {missing}",
        "calibration_table": radiometry.calibration or "none (not radiance-calibrated)",
        "reflectance_gain": None if missing else [round(a, 8) for a in radiometry.a],
        "reflectance_offset": None if missing else [round(b, 8) for b in radiometry.b],
        "sun_elevation": radiometry.sun_elevation,
        "sun_azimuth": sp.sun_azimuth,
        "sun_metadata": sp.sun.describe() if sp.sun is not None else None,
        "plan": plan,
    }


__all__ = [
    "load_model_for",
    "plan_products",
    "ProgressCallback",
    "SceneResult",
    "describe_scene",
    "output_paths",
    "process_scene",
    "scene_stats",
]
