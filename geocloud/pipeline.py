"""``process_scene``: one scene in, georeferenced products out.

Pass 1 (streaming): blocks are read on a thread pool, converted to reflectance, run
through the model in batches and blended into strip accumulators; finished strips of
every map are written to temporary rasters on a writer thread, and the score's per-cell
statistics are gathered.  Then the scene threshold is fitted.  Pass 2 reads the
mosaicked maps back strip by strip and computes the mask and other window products.
Finally every raster becomes a COG under a temporary name, file products are written,
and everything is renamed into place together.  A failure at any point removes every
temporary file and leaves existing outputs untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from ._version import __version__
from .cog import RasterSink, RasterSpec, python_pixel_functions
from .config import ProcessConfig
from .errors import ConfigError, InputError, OutputError, SensorError
from .inference import BlockResult, cpu_threads, predict_blocks, resolve_device
from .models import build_model
from .models.base import CloudModel, ModelSpec
from .mosaic import CellMosaic, Strip, StripAccumulator, upsample_cells
from .outputs import disk_full_error, partial_name, partial_workdir, remove_stale_partials, scene_lock
from .products import (
    PRODUCTS,
    FileContext,
    FileProduct,
    RasterProduct,
    WindowContext,
    mask_rule,
    resolve_products,
)
from .runtime import ThreadPool, signals_deferred
from .scene import SceneInfo, SceneReader, open_scene
from .sensors import REFLECTANCE_RANGE, Radiometry, resolve_radiometry
from .threshold import CLEAR, CLOUD, NODATA, ScoreStats, fit_threshold
from .tiling import Swath, Tiling, grow_window, make_swaths, make_tiling, swath_blocks, weight_sums

log = logging.getLogger(__name__)

#: progress(stage, done, total); stages: "infer", "classify", "write".
ProgressCallback = Callable[[str, int, int], None]

#: GDAL block cache bounds (MB) unless the user sets GDAL_CACHEMAX.  GDAL's default (5%
#: of RAM) would let the cache alone outgrow the memory budget on large machines; too
#: small a cache decompresses each input tile several times.
GDAL_CACHE_MB = (96, 512)

#: most decoded input (MB) the reader threads share (very wide striped scenes would need
#: more for two rows of blocks; past this, rows are decoded again as before).
INPUT_CACHE_MB = 256

#: rows per window in the second pass.
PASS2_ROWS = 256
#: threads computing second-pass windows (mask, clear product) side by side.
PASS2_WORKERS = 2
#: COGs assembled side by side once the second pass is done (each also compresses on
#: GDAL's own threads).
COG_WORKERS = 2
#: warn when more than this fraction of valid reflectances fall outside REFLECTANCE_RANGE.
OUT_OF_RANGE_WARN = 0.02


@dataclass
class SceneResult:
    scene: Path
    #: product name -> output paths
    outputs: dict[str, list[Path]]
    stats: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def output_paths(scene: str | os.PathLike[str], outdir: str | os.PathLike[str],
                 products: tuple[str, ...]) -> dict[str, list[Path]]:  # fmt: skip
    """Where ``geocloud process`` writes each product of ``scene``."""
    stem = Path(scene).stem
    return {p.name: p.paths(Path(outdir), stem) for p in resolve_products(products)}


def scene_radiometry(info: SceneInfo, config: ProcessConfig, *, scale: float | None = None,
                     offset: float = 0.0, sun_elevation: float | None = None) -> Radiometry:  # fmt: skip
    """The scene's band order and DN->reflectance conversion (see :mod:`geocloud.sensors`)."""
    from .vendor import find_vendor_metadata

    vendor = find_vendor_metadata(info.path)
    return resolve_radiometry(
        count=info.count, dtype=info.dtype, tags=info.tags, descriptions=info.descriptions,
        band_scales=info.scales, band_offsets=info.offsets, filename=info.path.name,
        sensor=config.sensor, bands=config.bands, scale=scale, offset=offset,
        sun_elevation=sun_elevation, vendor=vendor, colorinterp=info.colorinterp,
    )  # fmt: skip


def size_gdal_cache(info: SceneInfo, block_size: int, width: int | None = None) -> None:
    """Enough cache for two rows of blocks of the input across a swath ``width`` (and some
    for the outputs)."""
    if "GDAL_CACHEMAX" in os.environ:
        return
    from rasterio.env import set_gdal_config

    itemsize = np.dtype(info.dtype).itemsize
    width = info.width if width is None else width
    need_mb = 2 * block_size * width * info.count * itemsize / 2**20 + 48
    mb = int(min(max(need_mb, GDAL_CACHE_MB[0]), GDAL_CACHE_MB[1]))
    set_gdal_config("GDAL_CACHEMAX", mb * 2**20)


def input_cache_bytes(
    info: SceneInfo, bands: int, rows: int, width: int, tile: tuple[int, int] | None
) -> int:
    """Bytes of decoded input tiles the readers share (:class:`geocloud.scene.TileCache`):
    the ``rows`` in use at once across a swath ``width``, rounded out to whole tiles (whole
    rows for strips).  The first pass uses two rows of blocks (the row being read and the
    next one, which the read-ahead starts); the second pass one 256-row window's worth."""
    th, tw = tile or (0, 0)
    cols = info.width if tw >= info.width else width + tw
    need = (rows + th) * cols * bands * np.dtype(info.dtype).itemsize
    return min(need, INPUT_CACHE_MB * 2**20)


def plan_tiling(info: SceneInfo, config: ProcessConfig, spec: ModelSpec) -> Tiling:
    """The blocks of ``info`` for a model with ``spec`` under ``config.tiling``."""
    block_size, halo, feather = config.tiling.resolve(spec.halo, spec.feather)
    return make_tiling(info.height, info.width, block_size=block_size, halo=halo, feather=feather,
                       multiple=spec.block_multiple)  # fmt: skip


def _striped_compressed(info: SceneInfo) -> bool:
    return info.striped and info.compression is not None


def plan_swaths(
    info: SceneInfo, config: ProcessConfig, tiling: Tiling, *, second_pass: bool = False
) -> list[Swath]:
    """The first pass's swaths: ``config.tiling.swath_width`` columns, or wider for
    compressed striped inputs (:meth:`geocloud.config.TilingConfig.pass1_swath_width`);
    with ``second_pass``, the second pass's column bands (``swath_width`` whatever the
    layout: its memory grows with their width).  Edges suit the streamed overviews."""
    align = RasterSink.overview_alignment(info.width, info.height, config.output.cog_blocksize)
    width = config.tiling.swath_width
    if not second_pass:
        origins = tiling.cols.origins
        step = origins[1] - origins[0] if len(origins) > 1 else info.width
        width = config.tiling.pass1_swath_width(info.width, _striped_compressed(info), step)
    return make_swaths(tiling, width, align)


def plan_products(names: tuple[str, ...]) -> tuple[list[RasterProduct], list[FileProduct], set[str]]:
    """The raster and file products to make for ``names`` (file products may need rasters
    nobody asked for), and the model maps they need."""
    from .products import PRODUCTS

    products = resolve_products(names)
    raster_products = [p for p in products if isinstance(p, RasterProduct)]
    file_products = [p for p in products if isinstance(p, FileProduct)]
    for fp in file_products:
        for name in fp.needs:
            dep = PRODUCTS[name]
            if isinstance(dep, RasterProduct) and dep not in raster_products:
                raster_products.append(dep)
    return raster_products, file_products, {"score"} | {m for p in raster_products for m in p.needs}


class _StoredMaps(dict[str, np.ndarray]):
    """The stored maps of one window, each read from its sink when first looked up."""

    def __init__(self, sinks: dict[str, RasterSink], window: Window) -> None:
        super().__init__()
        self.sinks, self.window = sinks, window

    def __missing__(self, name: str) -> np.ndarray:
        self[name] = a = self.sinks[name].read(self.window)
        return a


def _copy_map(name: str, ctx: WindowContext) -> np.ndarray:
    """Pass-2 window of a product that copies the (derived) map ``name``."""
    return ctx.maps[name]


#: refuse a scene when more than this fraction of its sampled valid reflectances fall
#: outside REFLECTANCE_RANGE (``--no-range-check`` overrides).
OUT_OF_RANGE_REFUSE = 0.5
#: the range check samples this many windows of RANGE_WINDOW px on a regular grid.
RANGE_SAMPLES, RANGE_WINDOW = 5, 128


def check_reflectance_range(info: SceneInfo, radiometry: Radiometry) -> float:
    """Refuse a scene whose DN scaling is evidently wrong, before anything is written.

    Reads ``RANGE_SAMPLES``² small windows spread over the scene, converts them to
    reflectance and raises :class:`InputError` when most valid values lie outside
    :data:`REFLECTANCE_RANGE` (reflectance x 10000 stored as float, percent, a missing
    ``--scale``).  Returns the fraction outside (0 when nothing valid was sampled).
    """
    reader = SceneReader(info, radiometry.indexes, cache_bytes=None)
    outside = total = 0
    try:
        n = RANGE_SAMPLES
        for i in range(n):
            for j in range(n):
                r0 = int((info.height - RANGE_WINDOW) * i / max(n - 1, 1)) if info.height > RANGE_WINDOW else 0
                c0 = int((info.width - RANGE_WINDOW) * j / max(n - 1, 1)) if info.width > RANGE_WINDOW else 0
                win = Window(c0, r0, min(RANGE_WINDOW, info.width), min(RANGE_WINDOW, info.height))
                data, valid = reader.read(win)
                refl = radiometry.to_reflectance(data)[:, valid]
                lo, hi = REFLECTANCE_RANGE
                outside += int(((refl < lo) | (refl > hi) | ~np.isfinite(refl)).sum())
                total += int(refl.size)
    finally:
        reader.close()
    frac = outside / total if total else 0.0
    if frac > OUT_OF_RANGE_REFUSE:
        raise InputError(
            f"{100 * frac:.0f}% of the valid reflectances of {info.path.name} fall outside "
            f"{REFLECTANCE_RANGE[0]}..{REFLECTANCE_RANGE[1]} with its scaling ({radiometry.source}): pass "
            "--scale (e.g. --scale 0.0001 for reflectance x 10000, 0.01 for percent), or "
            "--no-range-check if the values are right"
        )
    return frac


def load_model_for(config: ProcessConfig) -> CloudModel:
    """Load ``config.model`` (plus map providers its products need) on its device, once."""
    _, _, maps = plan_products(config.output.products)
    return build_model(config.model, resolve_device(config.inference.device), maps)


class _Worker:
    """A background thread that runs queued jobs in order; errors surface in ``put``/``close``.

    ``backlog`` bounds the jobs waiting (and the arrays they hold) so the stages overlap
    without a backlog in RAM.
    """

    def __init__(self, name: str, backlog: int = 1) -> None:
        self.q: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=backlog)
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, name=f"geocloud-{name}", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            if self.error is None:
                try:
                    job()
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    self.error = exc

    def put(self, job: Callable[[], None]) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(job)

    def close(self) -> None:
        with signals_deferred():  # the caller may close what the jobs use once this returns
            self.q.put(None)
            self.t.join()
        if self.error is not None:
            raise self.error


def _close_all(workers: list[_Worker]) -> None:
    """Close every worker (each finishes its queue), then raise the first error any had."""
    errors = []
    for w in workers:
        try:
            w.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once all are closed
            errors.append(exc)
    if errors:
        raise errors[0]


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
) -> SceneResult:
    """Detect the clouds of one scene and write the products ``config.output.products``.

    ``model`` may be given to reuse a loaded model across scenes (or to inject a test
    model); otherwise ``config.model`` is loaded on ``config.inference.device``.  One run
    at a time writes a scene's products into a folder (:func:`geocloud.outputs.scene_lock`).
    """
    created = not Path(outdir).exists()
    try:
        with scene_lock(Path(outdir), Path(path).stem):
            return _process_scene(path, outdir, config, model=model, progress=progress, scale=scale,
                                  offset=offset, sun_elevation=sun_elevation)  # fmt: skip
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
) -> SceneResult:
    """:func:`process_scene` under its lock."""
    t_start = time.perf_counter()
    config = config or ProcessConfig()
    config.validate()
    warnings_out: list[str] = []

    def warn(msg: str) -> None:
        log.warning(msg)
        warnings_out.append(msg)

    products = resolve_products(config.output.products)
    info = open_scene(path)
    outdir = Path(outdir)
    stem = info.path.stem
    radiometry = scene_radiometry(info, config, scale=scale, offset=offset, sun_elevation=sun_elevation)
    if config.range_check:
        check_reflectance_range(info, radiometry)
    if not info.georeferenced:
        warn(f"{info.path.name} has no CRS, transform or RPCs: outputs keep its pixel grid only")

    # what will be written, and does any of it exist already?
    wanted: dict[str, list[Path]] = {p.name: p.paths(outdir, stem) for p in products}
    # (the folder was created and probed by scene_lock, which process_scene holds)
    if not config.output.overwrite:
        for paths in wanted.values():
            for out in paths:
                if out.exists():
                    raise OutputError(
                        f"output {str(out)!r} already exists; pass --overwrite to replace it, or another -o"
                    )

    raster_products, file_products, needed_maps = plan_products(config.output.products)
    device = resolve_device(config.inference.device)
    if model is None:
        model = build_model(config.model, device, needed_maps)
    batch_size = config.inference.resolved_batch_size(device)
    predictors = config.inference.resolved_predictors(device)
    amp = config.inference.resolved_autocast(device)
    spec = model.spec
    missing = needed_maps - set(spec.outputs)
    if missing:
        raise ConfigError(
            f"model {spec.name!r} does not produce {sorted(missing)}; choose other --products or another --model"
        )
    # the maps a derived map is formed from are stored even when no product asks for them
    needed_maps |= {m for d in spec.derived if d in needed_maps for m in spec.derived_from.get(d, ())}
    if tuple(spec.bands[:4]) != ("blue", "green", "red", "nir"):
        raise ConfigError(
            f"model {spec.name!r} expects bands {spec.bands}; geocloud feeds blue, green, red, nir"
        )
    tiling = plan_tiling(info, config, spec)
    swaths = plan_swaths(info, config, tiling)
    swath_px = max(sw.c1 - sw.c0 for sw in swaths)
    size_gdal_cache(info, tiling.rows.size, swath_px)

    stale = remove_stale_partials(outdir, stem, [f for paths in wanted.values() for f in paths])
    if stale:
        log.info(
            "removed %d temporary file(s) of killed runs: %s", len(stale), ", ".join(p.name for p in stale)
        )
    workdir = partial_workdir(outdir, stem)
    workdir.mkdir(exist_ok=True)
    partials: list[tuple[Path, Path]] = []  # (temporary, final)
    sinks: dict[str, RasterSink] = {}
    reader = SceneReader(info, radiometry.indexes)
    if reader.cache is not None:
        bands = len(radiometry.indexes)
        reader.cache.capacity = input_cache_bytes(info, bands, 2 * tiling.rows.size, swath_px, reader.tile)
    timings: dict[str, float] = {}
    cleanup = ExitStack()
    try:
        cleanup.enter_context(cpu_threads(device, config.inference.resolved_threads()))
        # ---- pass 1: infer, mosaic, write maps
        # derived maps (e.g. the matte's r_c) are formed in pass 2 from the other maps and
        # the low-resolution cell maps, which are blended here at their own resolution
        derived = [m for m in spec.derived if m in needed_maps]
        derive_in_cog = bool(derived) and config.output.derive_in_cog and python_pixel_functions()
        map_channels = {k: spec.outputs[k] for k in sorted(needed_maps) if k not in derived}
        cell_mosaic = CellMosaic(info.height, info.width, spec.cell_size, spec.cells) if derived else None
        map_sinks: dict[str, RasterSink] = {}
        for name, n in map_channels.items():
            rp = next((p for p in raster_products if p.from_map == name), None)
            final = rp.paths(outdir, stem)[0] if rp else workdir / f"{stem}_{name}.map.tif"
            lay = rp.layout(info, spec.outputs) if rp else None
            rspec = RasterSpec.like(
                info, count=n, dtype="float32", nodata=float("nan"),
                descriptions=lay.descriptions if lay else (), resampling=lay.resampling if lay else "average",
            )  # fmt: skip
            map_sinks[name] = RasterSink(final, rspec, workdir, compress=config.output.compress,
                                         blocksize=config.output.cog_blocksize)  # fmt: skip
            if rp:
                sinks[rp.name] = map_sinks[name]

        row_weights = weight_sums(tiling.rows, tiling.halo, tiling.feather)
        col_weights = weight_sums(tiling.cols, tiling.halo, tiling.feather)
        score_stats = ScoreStats(info.height, info.width, cloudy_above=spec.default_threshold)
        out_of_range = checked = valid_seen = 0
        block_probs: list[float] = []
        writer = _Worker("write")  # writes strips to the sinks
        mosaicker = _Worker("mosaic", backlog=batch_size)  # blends blocks into strips
        n_blocks = sum(len(sw.block_cols) for sw in swaths) * len(tiling.rows.origins)

        def handle(strip: Strip, sw: Swath) -> None:
            """Crop a finished strip to the swath's own columns; stats; queue the writes."""
            nonlocal valid_seen
            a, b = sw.x0 - sw.c0, sw.x1 - sw.c0
            maps = {k: v[:, :, a:b] for k, v in strip.maps.items()}
            valid_seen += int(np.count_nonzero(strip.valid[:, a:b]))
            score_stats.update(strip.row0, maps["score"][0], sw.x0)

            def job() -> None:
                for name, m in maps.items():
                    map_sinks[name].write_window(m, strip.row0, sw.x0)

            writer.put(job)

        def add_block(acc: StripAccumulator, res: BlockResult, sw: Swath) -> None:
            for strip in acc.add(res.block, res.maps, res.valid, res.region):
                handle(strip, sw)
            if cell_mosaic is not None:
                cell_mosaic.add(res.block, res.cells, sw.x0, sw.x1)

        def finish_swath(acc: StripAccumulator, sw: Swath) -> None:
            for strip in acc.finish():
                handle(strip, sw)

        t0 = time.perf_counter()
        done = 0
        try:
            try:
                for sw in swaths:
                    acc = StripAccumulator(sw.c1 - sw.c0, info.height, tiling.block_shape[0], map_channels,
                                           row_weights=row_weights, col_weights=col_weights, col0=sw.c0)  # fmt: skip
                    # closed explicitly: if the loop is left early (an error, SIGTERM), the
                    # reader threads finish before the scene reader is closed under them
                    results = predict_blocks(
                        reader, radiometry, swath_blocks(tiling, sw), model,
                        batch_size=batch_size, readers=config.inference.readers,
                        predictors=predictors,
                        reflectance_range=REFLECTANCE_RANGE,
                        device=device, amp=amp,
                    )  # fmt: skip
                    with closing(results):
                        for res in results:
                            done += 1
                            out_of_range += res.out_of_range
                            checked += res.checked
                            if res.block_prob is not None:
                                block_probs.append(res.block_prob)
                            mosaicker.put(partial(add_block, acc, res, sw))
                            if progress:
                                progress("infer", done, n_blocks)
                    mosaicker.put(partial(finish_swath, acc, sw))
                    del acc
            finally:
                mosaicker.close()
        finally:
            writer.close()
        timings["read_infer_mosaic"] = time.perf_counter() - t0

        if valid_seen == 0:
            raise InputError(
                f"scene {info.path.name} is entirely nodata (nodata={info.nodata}); "
                "check the nodata value (gdal_edit.py -a_nodata) or pass another scene"
            )
        if checked and out_of_range / checked > OUT_OF_RANGE_WARN:
            warn(
                f"{100 * out_of_range / checked:.0f}% of reflectances are outside "
                f"{REFLECTANCE_RANGE[0]}..{REFLECTANCE_RANGE[1]}: the DN scaling is probably wrong "
                f"(sensor {radiometry.sensor}, {radiometry.source}); pass --sensor or --scale"
            )

        # ---- threshold
        threshold = fit_threshold(score_stats, spec, config.threshold)

        # ---- the first pass's products become COGs on a background thread while the
        # second pass reads their intermediate files (each side with its own GDAL handle)
        tags = {
            "GEOCLOUD_VERSION": __version__,
            "GEOCLOUD_MODEL": spec.name,
            "GEOCLOUD_THRESHOLD": f"{threshold.value:.6g}",
            "GEOCLOUD_THRESHOLD_METHOD": threshold.method,
            "GEOCLOUD_SENSOR": radiometry.sensor,
            "GEOCLOUD_SCENE": info.path.name,
        }
        if radiometry.calibration:  # which DN -> radiance table, and whether it is approximate
            tags["GEOCLOUD_CALIBRATION"] = radiometry.calibration
        for s in map_sinks.values():
            s.seal()
        # the second pass's own column bands (its memory grows with their width); a striped
        # input's windows are taken row by row across all bands, so each strip is decoded once
        bands2 = plan_swaths(info, config, tiling, second_pass=True)
        if reader.cache is not None:  # the second pass starts again at the top
            reader.cache.clear()
            band_px = max(b.x1 - b.x0 for b in bands2)
            reader.cache.capacity = input_cache_bytes(info, len(radiometry.indexes), PASS2_ROWS,
                                                      band_px, reader.tile)  # fmt: skip
        # during the second pass one thread assembles them in turn (the second pass has
        # the cores); the second pass's rasters are assembled COG_WORKERS at a time after it
        early_pool = ThreadPool(1, thread_name_prefix="geocloud-cog-early")
        late_pool = ThreadPool(COG_WORKERS, thread_name_prefix="geocloud-cog")
        for pool_ in (early_pool, late_pool):  # on any failure: wait, then clean up
            cleanup.callback(pool_.shutdown, wait=True, cancel_futures=True)

        def assemble(name: str, sink: RasterSink, pool_: ThreadPool, keep: bool) -> Future[Path]:
            """Queue the COG of ``sink`` (under a temporary name; rasters only needed by file
            products stay in the work folder)."""
            dest = partial_name(sink.final) if name in wanted else workdir / sink.final.name
            if name in wanted:
                partials.append((dest, sink.final))
            return pool_.submit(sink.finalize, {**tags, "GEOCLOUD_PRODUCT": name}, dest, keep=keep)

        # only first-pass products so far; their intermediates stay for the second pass
        cog_jobs = [(name, assemble(name, sink, early_pool, True)) for name, sink in sinks.items()]

        # ---- pass 2: window products (and the products that copy a derived map)
        pass2: list[tuple[RasterProduct, Callable[[WindowContext], np.ndarray]]] = [
            (p, p.compute) for p in raster_products if p.compute is not None
        ]
        pass2 += [(p, partial(_copy_map, p.from_map)) for p in raster_products if p.from_map in derived]
        cell_maps = cell_mosaic.finish() if cell_mosaic is not None else {}
        cell_mosaic = None  # the maps above are its normalised sums; drop the rest
        counts = np.zeros(256, dtype=np.int64)
        matting_stats = None
        if "alpha" in map_sinks:  # thin/thick cloud split (docs/matting.md)
            from .declouding import MattingStats

            matting_stats = MattingStats(config.decloud)
        t0 = time.perf_counter()
        rows2 = range(0, info.height, PASS2_ROWS)
        order = (
            [(r, b) for r in rows2 for b in bands2]
            if info.striped
            else [(r, b) for b in bands2 for r in rows2]
        )
        windows = [Window(b.x0, r, b.x1 - b.x0, min(PASS2_ROWS, info.height - r)) for r, b in order]

        def read_maps(window: Window, have: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
            """The mosaicked (and derived) maps of ``window``; ``have``: maps already read for it."""
            maps = dict(have or {})
            maps.update({name: s.read(window) for name, s in map_sinks.items() if name not in maps})
            if derived:
                up = cells_up(window)
                for name in derived:
                    maps[name] = model.derive(name, maps, up)
            return maps

        def cells_up(window: Window) -> dict[str, np.ndarray]:
            """The cell maps upsampled to the pixels of ``window``."""
            r0, c0 = int(window.row_off), int(window.col_off)
            r1, c1 = r0 + int(window.height), c0 + int(window.width)
            return {k: upsample_cells(g, spec.cell_size, (r0, r1, c0, c1)) for k, g in cell_maps.items()}

        def derive_window(name: str, window: Window) -> np.ndarray:
            """The derived map ``name`` of ``window`` (as :func:`read_maps` forms it), reading
            only the stored maps it uses (for a COG that computes its full resolution)."""
            return model.derive(name, _StoredMaps(map_sinks, window), cells_up(window))

        for p, _ in pass2:
            lay = p.layout(info, spec.outputs)
            rspec = RasterSpec.like(info, count=lay.count, dtype=lay.dtype, nodata=lay.nodata,
                                    descriptions=lay.descriptions, resampling=lay.resampling)  # fmt: skip
            # a derived map's full resolution is not stored: its COG computes it again from
            # the stored maps and the cells (the pass-2 strips still build its overviews)
            compute = partial(derive_window, p.from_map) if p.from_map in derived and derive_in_cog else None
            sinks[p.name] = RasterSink(p.paths(outdir, stem)[0], rspec, workdir, compute=compute,
                                       compress=config.output.compress, blocksize=config.output.cog_blocksize)  # fmt: skip

        def classify_window(window: Window) -> tuple[Window, np.ndarray, Any, list[np.ndarray]]:
            """Mask, statistics and second-pass products of one window (runs on a worker)."""
            around = None
            have = None
            if threshold.grow_radius > 0:  # edge growing looks grow_radius px beyond the window
                ext, inner = grow_window(window, threshold.grow_radius, info.height, info.width)
                grown = map_sinks["score"].read(ext)
                around = (grown[0], inner)
                have = {"score": grown[(slice(None), *inner)]}  # the window's score: read once
            maps = read_maps(window, have)
            valid = np.isfinite(maps["score"][0])
            mask = mask_rule(maps, threshold, around)
            hist = np.zeros(256, np.int64)  # masks hold only these classes
            for cls in (CLEAR, CLOUD, NODATA):
                hist[cls] = np.count_nonzero(mask == cls)
            part = None
            if matting_stats is not None:
                part = MattingStats(config.decloud)
                part.add(mask, maps["alpha"][0])
            ctx = WindowContext(window, maps, valid, threshold, mask, info, radiometry, reader, config.decloud,
                                read_maps=read_maps)  # fmt: skip
            return window, hist, part, [compute(ctx) for _, compute in pass2]

        # windows are computed on PASS2_WORKERS threads (numpy and GDAL release the GIL), a
        # bounded number ahead, and written in order, so writing overlaps the computing; each
        # product has its own writer thread (one writer for all was the second pass's bottleneck)
        writers = [_Worker(f"write-{p.name}") for p, _ in pass2]
        try:
            with ThreadPool(PASS2_WORKERS, thread_name_prefix="geocloud-classify") as pool:
                ahead: deque[Future[tuple[Window, np.ndarray, Any, list[np.ndarray]]]] = deque()
                todo = iter(windows)
                for i in range(1, len(windows) + 1):
                    while len(ahead) < PASS2_WORKERS:
                        nxt = next(todo, None)
                        if nxt is None:
                            break
                        ahead.append(pool.submit(classify_window, nxt))
                    window, hist, part, outs = ahead.popleft().result()
                    counts += hist
                    if matting_stats is not None:
                        matting_stats.merge(part)
                    for w, (p, _), arr in zip(writers, pass2, outs, strict=True):
                        w.put(
                            partial(sinks[p.name].write_window, arr, int(window.row_off), int(window.col_off))
                        )
                    if progress:
                        progress("classify", i, len(windows))
        finally:
            _close_all(writers)
        timings["classify"] = time.perf_counter() - t0
        if reader.cache is not None:
            reader.cache.clear()

        # ---- the other rasters become COGs under temporary names, COG_WORKERS at a time,
        # the largest first (so a small one does not hold up the start of a large one)
        t0 = time.perf_counter()
        early = {name for name, _ in cog_jobs}
        late = sorted(((n, s) for n, s in sinks.items() if n not in early), key=lambda ns: -ns[1].spec.nbytes)
        cog_jobs += [(name, assemble(name, s, late_pool, False)) for name, s in late]
        raster_done: dict[str, Path] = {}
        for k, (name, job) in enumerate(cog_jobs, start=1):
            raster_done[name] = job.result()
            if progress:
                progress("write", k, len(cog_jobs))
        for s in map_sinks.values():
            s.discard()
        timings["write_cogs"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start

        valid_n = int(counts[CLEAR] + counts[CLOUD])
        stats: dict[str, Any] = {
            "scene": str(info.path),
            "stem": stem,
            "geocloud_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "sensor": radiometry.as_dict(),
            "model": model.describe(),
            "device": device,
            "inference": {
                "batch_size": batch_size,
                "torch_threads": config.inference.resolved_threads() if device == "cpu" else None,
                "predictors": predictors,
                "autocast": amp,
            },
            "size": {"width": info.width, "height": info.height, "bands": info.count, "dtype": info.dtype},
            "georeferencing": info.georef_kind,
            "crs": info.crs.to_string() if info.crs else None,
            "pixels": {
                "total": info.pixels,
                "valid": valid_n,
                "nodata": int(counts[NODATA]),
                "cloud": int(counts[CLOUD]),
                "clear": int(counts[CLEAR]),
            },
            "cloud_fraction": float(counts[CLOUD] / valid_n) if valid_n else None,
            "threshold": threshold.as_dict(),
            "block_prob_mean": float(np.mean(block_probs)) if block_probs else None,
            "swaths": len(swaths),
            "tiling": {
                "block_size": tiling.block_shape[0],
                "halo": tiling.halo,
                "feather": tiling.feather,
                "blocks": n_blocks,
            },  # fmt: skip
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "throughput_mpx_s": round(info.pixels / 1e6 / timings["total"], 3) if timings["total"] else None,
            "warnings": warnings_out,
            "outputs": {name: [p.name for p in paths] for name, paths in wanted.items()},
        }
        if matting_stats is not None:
            stats.update(matting_stats.result())

        # ---- file products (each writes to temporary paths)
        fctx = FileContext(
            info, stem, outdir, raster_done, stats, {"decloud": config.decloud, "vector": config.vector}
        )
        for fp in file_products:
            finals = fp.paths(outdir, stem)
            tmps = [partial_name(f, keep_suffix=True) for f in finals]
            fp.write(fctx, tmps)
            partials.extend(zip(tmps, finals, strict=True))

        # ---- everything complete: rename into place.  With --overwrite the scene's whole
        # product set is replaced: products of this stem that this run did not write (an
        # earlier run's, made with other settings) are removed in the same step, so a new
        # mask never sits beside an old score, stats or polygons
        stale = (
            [
                p
                for name, paths in output_paths(info.path, outdir, tuple(PRODUCTS)).items()
                if name not in wanted
                for p in paths
                if p.exists()
            ]
            if config.output.overwrite
            else []
        )
        for tmp, final in partials:
            os.replace(tmp, final)
        partials.clear()
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            log.info("--overwrite: removed %s of an earlier run", ", ".join(p.name for p in stale))
        return SceneResult(info.path, wanted, stats, warnings_out)
    except Exception as exc:
        full = disk_full_error(outdir, exc)  # (GDAL's write errors do not say why)
        if full is not None:
            raise full from exc
        raise
    finally:
        cleanup.close()
        reader.close()
        for s in sinks.values():
            s.close()
        for tmp, _ in partials:
            if tmp.exists():
                tmp.unlink()
        shutil.rmtree(workdir, ignore_errors=True)


def describe_scene(path: str | os.PathLike[str], config: ProcessConfig | None = None, *,
                   scale: float | None = None, offset: float = 0.0,
                   sun_elevation: float | None = None) -> dict[str, Any]:  # fmt: skip
    """What ``geocloud info`` prints: the scene, its radiometry and the processing plan."""
    config = config or ProcessConfig()
    info = open_scene(path)
    missing: str | None = None
    try:
        radiometry = scene_radiometry(info, config, scale=scale, offset=offset, sun_elevation=sun_elevation)
    except SensorError as exc:
        if scale is not None:
            raise
        # describe everything else, and say what is missing and which flag to pass: this is
        # when a user needs `info` (the band order does not depend on the scaling)
        radiometry = scene_radiometry(info, config, scale=1.0, sun_elevation=sun_elevation)
        missing = str(exc)

    spec = load_model_for(replace(config, inference=replace(config.inference, device="cpu"))).spec
    tiling = plan_tiling(info, config, spec)
    swaths = plan_swaths(info, config, tiling)
    plan: dict[str, Any] = {
        "model": spec.name,
        "blocks": f"{len(tiling)} blocks of {tiling.block_shape[0]}x{tiling.block_shape[1]} px "
        f"(halo {tiling.halo}, feather {tiling.feather})",
        "swaths": f"{len(swaths)} of at most {max(sw.x1 - sw.x0 for sw in swaths)} columns"
        + (
            " (compressed strips: whole rows are decoded once per swath)" if _striped_compressed(info) else ""
        ),
        "products": list(config.output.products),
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
        "crs": info.crs.to_string() if info.crs else None,
        "pixel_size": (abs(info.transform.a), abs(info.transform.e)) if info.crs else None,
        "band_descriptions": list(info.descriptions),
        "sensor": radiometry.sensor,
        "bands_used": dict(zip(("blue", "green", "red", "nir"), radiometry.indexes, strict=True)),
        "scaling": radiometry.source if missing is None else f"UNKNOWN: {missing}",
        "calibration_table": radiometry.calibration or "none (not radiance-calibrated)",
        "reflectance_gain": None if missing else [round(a, 8) for a in radiometry.a],
        "reflectance_offset": None if missing else [round(b, 8) for b in radiometry.b],
        "sun_elevation": radiometry.sun_elevation,
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
]
