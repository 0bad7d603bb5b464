"""The two passes over a scene, and the assembly of their COGs.

* :class:`InferencePass` (pass 1, streaming): blocks are read on a thread pool, converted
  to reflectance, run through the model in batches and blended into strip accumulators;
  finished strips of every map go to temporary rasters on a writer thread, and the score's
  per-cell statistics are gathered for the threshold.
* :class:`ClassifyPass` (pass 2): the mosaicked maps are read back window by window; each
  window gets its mask, its statistics and every window product, computed on two threads
  and written in order by one writer thread per product.
* :class:`CogAssembly` turns the rasters into COGs under temporary names: the first pass's
  during the second pass, the others after it, largest first.

A new raster product plugs into the second pass through :class:`geocloud.products.RasterProduct`
(its ``compute`` sees a :class:`geocloud.products.WindowContext`); see docs/architecture.md.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack, closing
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from .cog import RasterSink, RasterSpec, python_pixel_functions
from .inference import BlockResult, predict_blocks
from .models.base import CloudModel
from .mosaic import CellMosaic, Strip, StripAccumulator, upsample_cells
from .plan import ScenePlan, input_cache_bytes
from .products import RasterProduct, WindowContext, mask_rule
from .runtime import ThreadPool, signals_deferred
from .scene import SceneReader
from .sensors import REFLECTANCE_RANGE
from .shadow import ShadowConfig, ShadowShift, pooled_shift, shadow_mask
from .stats import ShadowSummary
from .threshold import CLEAR, CLOUD, NODATA, SHADOW, ScoreStats, ThresholdResult, classify_result
from .tiling import Swath, grow_window, swath_blocks, weight_sums

log = logging.getLogger(__name__)

#: progress(stage, done, total); stages: "infer", "classify", "write".
ProgressCallback = Callable[[str, int, int], None]

#: rows per window in the second pass.
PASS2_ROWS = 256
#: threads computing second-pass windows (mask, clear product) side by side.
PASS2_WORKERS = 2
#: COGs assembled side by side once the second pass is done (each also compresses on
#: GDAL's own threads).
COG_WORKERS = 2


class Worker:
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


def close_all(workers: list[Worker]) -> None:
    """Close every worker (each finishes its queue), then raise the first error any had."""
    errors = []
    for w in workers:
        try:
            w.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once all are closed
            errors.append(exc)
    if errors:
        raise errors[0]


class InferencePass:
    """Pass 1: infer every block, blend, write the stored maps, gather score statistics.

    After :meth:`run`: ``map_sinks`` hold the mosaicked maps (sealed), ``score_stats`` the
    per-cell statistics, ``cell_maps`` the blended low-resolution cell maps of a model with
    derived maps, and the counters what the blocks saw.
    """

    def __init__(self, plan: ScenePlan, model: CloudModel, reader: SceneReader, workdir: Path) -> None:
        self.plan, self.model, self.reader = plan, model, reader
        info, spec, out = plan.info, plan.spec, plan.config.output
        self.map_sinks: dict[str, RasterSink] = {}
        for name, n in plan.map_channels.items():
            rp = plan.raster_for_map(name)
            final = rp.paths(plan.outdir, plan.stem)[0] if rp else workdir / f"{plan.stem}_{name}.map.tif"
            lay = rp.layout(info, spec.outputs) if rp else None
            rspec = RasterSpec.like(
                info, count=n, dtype="float32", nodata=float("nan"),
                descriptions=lay.descriptions if lay else (), resampling=lay.resampling if lay else "average",
            )  # fmt: skip
            self.map_sinks[name] = RasterSink(final, rspec, workdir, compress=out.compress,
                                              blocksize=out.cog_blocksize)  # fmt: skip
        # derived maps (e.g. the matte's r_c) are formed in pass 2 from the other maps and
        # the low-resolution cell maps, which are blended here at their own resolution
        self.cell_mosaic = CellMosaic(info.height, info.width, spec.cell_size, spec.cells) if plan.derived else None
        self.cell_maps: dict[str, np.ndarray] = {}
        self.score_stats = ScoreStats(info.height, info.width, cloudy_above=spec.default_threshold)
        self.out_of_range = self.checked = self.valid_seen = 0
        self.block_probs: list[float] = []
        self._writer: Worker | None = None

    def raster_sinks(self) -> dict[str, RasterSink]:
        """The stored maps that are products themselves, by product name."""
        return {rp.name: sink for name, sink in self.map_sinks.items() if (rp := self.plan.raster_for_map(name))}

    def run(self, progress: ProgressCallback | None = None) -> None:
        plan = self.plan
        tiling = plan.tiling
        if self.reader.cache is not None:
            bands = len(plan.radiometry.indexes)
            self.reader.cache.capacity = input_cache_bytes(plan.info, bands, 2 * tiling.rows.size,
                                                           plan.swath_px, self.reader.tile)  # fmt: skip
        row_weights = weight_sums(tiling.rows, tiling.halo, tiling.feather)
        col_weights = weight_sums(tiling.cols, tiling.halo, tiling.feather)
        self._writer = writer = Worker("write")  # writes strips to the sinks
        mosaicker = Worker("mosaic", backlog=plan.batch_size)  # blends blocks into strips
        n_blocks = plan.n_blocks
        done = 0
        try:
            try:
                for sw in plan.swaths:
                    acc = StripAccumulator(sw.c1 - sw.c0, plan.info.height, tiling.block_shape[0],
                                           plan.map_channels, row_weights=row_weights, col_weights=col_weights,
                                           col0=sw.c0)  # fmt: skip
                    # closed explicitly: if the loop is left early (an error, SIGTERM), the
                    # reader threads finish before the scene reader is closed under them
                    results = predict_blocks(
                        self.reader, plan.radiometry, swath_blocks(tiling, sw), self.model,
                        batch_size=plan.batch_size, readers=plan.config.inference.readers,
                        predictors=plan.predictors, reflectance_range=REFLECTANCE_RANGE,
                        device=plan.device, amp=plan.amp,
                    )  # fmt: skip
                    with closing(results):
                        for res in results:
                            done += 1
                            self.out_of_range += res.out_of_range
                            self.checked += res.checked
                            if res.block_prob is not None:
                                self.block_probs.append(res.block_prob)
                            mosaicker.put(partial(self._add_block, acc, res, sw))
                            if progress:
                                progress("infer", done, n_blocks)
                    mosaicker.put(partial(self._finish_swath, acc, sw))
                    del acc
            finally:
                mosaicker.close()
        finally:
            writer.close()
        for s in self.map_sinks.values():
            s.seal()
        if self.cell_mosaic is not None:
            self.cell_maps = self.cell_mosaic.finish()
            self.cell_mosaic = None  # the maps above are its normalised sums; drop the rest

    def _handle(self, strip: Strip, sw: Swath) -> None:
        """Crop a finished strip to the swath's own columns; stats; queue the writes."""
        a, b = sw.x0 - sw.c0, sw.x1 - sw.c0
        maps = {k: v[:, :, a:b] for k, v in strip.maps.items()}
        self.valid_seen += int(np.count_nonzero(strip.valid[:, a:b]))
        self.score_stats.update(strip.row0, maps["score"][0], sw.x0)
        sinks = self.map_sinks

        def job() -> None:
            for name, m in maps.items():
                sinks[name].write_window(m, strip.row0, sw.x0)

        assert self._writer is not None
        self._writer.put(job)

    def _add_block(self, acc: StripAccumulator, res: BlockResult, sw: Swath) -> None:
        for strip in acc.add(res.block, res.maps, res.valid, res.region):
            self._handle(strip, sw)
        if self.cell_mosaic is not None:
            self.cell_mosaic.add(res.block, res.cells, sw.x0, sw.x1)

    def _finish_swath(self, acc: StripAccumulator, sw: Swath) -> None:
        for strip in acc.finish():
            self._handle(strip, sw)


#: the shadow stage's decimated view is at most this many px on its long side.
SHADOW_VIEW_PX = 2048
#: rows of the scene read at a time to build that view.
SHADOW_VIEW_ROWS = 512


def shadow_view_factor(height: int, width: int) -> int:
    """The pooling factor of the view the shadow displacement is searched on: at most
    :data:`SHADOW_VIEW_PX` px on the long side, 1 when a side would pool to nothing."""
    f = max(1, -(-max(height, width) // SHADOW_VIEW_PX))
    return 1 if height // f == 0 or width // f == 0 else f


class ShadowStage:
    """Cloud shadow (:mod:`geocloud.shadow`) between the threshold and the second pass.

    :meth:`estimate` finds the scene's shadow displacement on a decimated view of the
    reflectance and the cloud mask (at most ``SHADOW_VIEW_PX`` on a side: bounded memory
    on any scene), along the sun azimuth when it is known; :meth:`apply` then marks the
    shadow class on each second-pass window, from the window and a halo as long as the
    shadows can reach (so the class does not depend on the window layout).
    """

    def __init__(self, plan: ScenePlan, reader: SceneReader, score: RasterSink, threshold: ThresholdResult,
                 config: ShadowConfig | None = None) -> None:  # fmt: skip
        self.plan, self.reader, self.score, self.threshold = plan, reader, score, threshold
        self.config = config or ShadowConfig()
        info = plan.info
        self.factor = shadow_view_factor(info.height, info.width)
        self.shift: ShadowShift | None = None
        self.halo = 0

    def _cloud(self, score: np.ndarray) -> np.ndarray:
        return classify_result(score, self.threshold) == CLOUD

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(mean reflectance (4, h, w) of the valid pixels, valid pixels, valid cloud pixels,
        factor) of the scene pooled ``factor`` x ``factor`` (:func:`geocloud.shadow.pooled_shift`
        reads it); the last rows and columns that do not fill a cell are left out.  DN are
        averaged, then converted (the conversion is linear)."""
        info, f, rad = self.plan.info, self.factor, self.plan.radiometry
        h, w = info.height // f, info.width // f
        dn_sum = np.zeros((4, h, w), np.float32)
        n_ok = np.zeros((h, w), np.float32)
        n_cloud = np.zeros((h, w), np.float32)
        rows = max(f, SHADOW_VIEW_ROWS // f * f)

        def pool(a: np.ndarray) -> np.ndarray:  # (..., nh*f, w*f) -> (..., nh, w) sums
            lead = a.shape[:-2]
            a = a.reshape(*lead, a.shape[-2], w, f).sum(axis=-1, dtype=np.float32)
            return a.reshape(*lead, a.shape[-2] // f, f, w).sum(axis=-2)

        for r0 in range(0, h * f, rows):
            nh = min(rows, h * f - r0) // f
            win = Window(0, r0, w * f, nh * f)
            dn, ok = self.reader.read(win)
            x = dn.astype(np.float32)
            x *= ok
            k = r0 // f
            dn_sum[:, k : k + nh] = pool(x)
            n_ok[k : k + nh] = pool(ok.astype(np.float32))
            n_cloud[k : k + nh] = pool((self._cloud(self.score.read(win)[0]) & ok).astype(np.float32))
        mean_dn = dn_sum / np.maximum(n_ok, 1)
        return rad.to_reflectance(mean_dn), n_ok, n_cloud, f

    def estimate(self) -> ShadowShift | None:
        """The scene's shadow displacement (px, full resolution), or None when no shadow is
        detectable; sets the halo :meth:`apply` reads around each window."""
        plan = self.plan
        self.shift = pooled_shift(*self.view(), sun_azimuth=plan.sun_azimuth,
                                  sun_elevation=plan.radiometry.sun_elevation, pixel_size=plan.pixel_size_m,
                                  config=self.config)  # fmt: skip
        self.halo = self.config.halo(self.shift) if self.shift is not None else 0
        return self.shift

    def apply(self, window: Window, mask: np.ndarray) -> None:
        """Mark the shadow class on the clear pixels of ``mask`` (the window's mask)."""
        if self.shift is None:
            return
        info = self.plan.info
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        e0, e1 = max(0, r0 - self.halo), min(info.height, r1 + self.halo)
        f0, f1 = max(0, c0 - self.halo), min(info.width, c1 + self.halo)
        ext = Window(f0, e0, f1 - f0, e1 - e0)
        score = self.score.read(ext)[0]
        cloud = self._cloud(score)
        if not cloud.any():
            return
        dn, valid = self.reader.read(ext)
        refl = self.plan.radiometry.to_reflectance(dn)
        shadow = shadow_mask(refl, cloud, valid & np.isfinite(score), self.shift, self.config)
        core = shadow[r0 - e0 : r1 - e0, c0 - f0 : c1 - f0]
        mask[core & (mask == CLEAR)] = SHADOW

    def summary(self) -> ShadowSummary:
        s = self.shift
        return ShadowSummary(
            detected=s is not None,
            dy=None if s is None else round(s.dy, 2),
            dx=None if s is None else round(s.dx, 2),
            distance_px=None if s is None else round(s.distance, 2),
            shadow_azimuth=None if s is None else round(s.shadow_azimuth, 1),
            from_sun=bool(s.from_sun) if s is not None else self.plan.sun_azimuth is not None,
            score=None if s is None else round(s.score, 4),
            view_factor=self.factor,
        )


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


class ClassifyPass:
    """Pass 2: the mask (with the shadow class when a :class:`ShadowStage` is given), its
    statistics and every window product, window by window.

    ``sinks`` receives a sink per second-pass product (by product name).  After
    :meth:`run`: ``counts`` (pixels per mask class) and ``matting`` (the thin/thick split,
    when alpha is stored).
    """

    def __init__(self, plan: ScenePlan, model: CloudModel, reader: SceneReader, first: InferencePass,
                 threshold: ThresholdResult, workdir: Path, shadow: ShadowStage | None = None) -> None:  # fmt: skip
        self.plan, self.model, self.reader, self.threshold = plan, model, reader, threshold
        self.shadow = shadow
        self.map_sinks, self.cell_maps = first.map_sinks, first.cell_maps
        info, spec, out = plan.info, plan.spec, plan.config.output
        derive_in_cog = bool(plan.derived) and out.derive_in_cog and python_pixel_functions()
        products: list[tuple[RasterProduct, Callable[[WindowContext], np.ndarray]]] = [
            (p, p.compute) for p in plan.raster_products if p.compute is not None
        ]
        products += [(p, partial(_copy_map, p.from_map)) for p in plan.raster_products if p.from_map in plan.derived]
        self.products = products
        self.sinks: dict[str, RasterSink] = {}
        for p, _ in products:
            lay = p.layout(info, spec.outputs)
            rspec = RasterSpec.like(info, count=lay.count, dtype=lay.dtype, nodata=lay.nodata,
                                    descriptions=lay.descriptions, resampling=lay.resampling,
                                    colormap=lay.colormap, tags=lay.tags)  # fmt: skip
            # a derived map's full resolution is not stored: its COG computes it again from
            # the stored maps and the cells (the pass-2 strips still build its overviews)
            compute = partial(self.derive_window, p.from_map) if p.from_map in plan.derived and derive_in_cog else None
            self.sinks[p.name] = RasterSink(p.paths(plan.outdir, plan.stem)[0], rspec, workdir, compute=compute,
                                            compress=out.compress, blocksize=out.cog_blocksize)  # fmt: skip
        self.counts = np.zeros(256, dtype=np.int64)
        #: the counts the products reported (:attr:`WindowContext.tally`), summed.
        self.tally: dict[str, int] = {}
        self.matting: Any = None
        if "alpha" in self.map_sinks:  # thin/thick cloud split (docs/matting.md)
            from .declouding import MattingStats

            self.matting = MattingStats(plan.config.decloud)

    def windows(self) -> list[Window]:
        """The second pass's windows, in the order that suits the input's layout."""
        info = self.plan.info
        rows = range(0, info.height, PASS2_ROWS)
        bands = self.plan.bands2
        order = [(r, b) for r in rows for b in bands] if info.striped else [(r, b) for b in bands for r in rows]
        return [Window(b.x0, r, b.x1 - b.x0, min(PASS2_ROWS, info.height - r)) for r, b in order]

    def read_maps(self, window: Window, have: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The mosaicked (and derived) maps of ``window``; ``have``: maps already read for it."""
        maps = dict(have or {})
        maps.update({name: s.read(window) for name, s in self.map_sinks.items() if name not in maps})
        if self.plan.derived:
            up = self.cells_up(window)
            for name in self.plan.derived:
                maps[name] = self.model.derive(name, maps, up)
        return maps

    def cells_up(self, window: Window) -> dict[str, np.ndarray]:
        """The cell maps upsampled to the pixels of ``window``."""
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        size = self.plan.spec.cell_size
        return {k: upsample_cells(g, size, (r0, r1, c0, c1)) for k, g in self.cell_maps.items()}

    def derive_window(self, name: str, window: Window) -> np.ndarray:
        """The derived map ``name`` of ``window`` (as :meth:`read_maps` forms it), reading
        only the stored maps it uses (for a COG that computes its full resolution)."""
        return self.model.derive(name, _StoredMaps(self.map_sinks, window), self.cells_up(window))

    def classify(self, window: Window) -> tuple[Window, np.ndarray, Any, list[np.ndarray]]:
        """Mask, statistics and second-pass products of one window (runs on a worker)."""
        plan, threshold = self.plan, self.threshold
        around = None
        have = None
        if threshold.grow_radius > 0:  # edge growing looks grow_radius px beyond the window
            ext, inner = grow_window(window, threshold.grow_radius, plan.info.height, plan.info.width)
            grown = self.map_sinks["score"].read(ext)
            around = (grown[0], inner)
            have = {"score": grown[(slice(None), *inner)]}  # the window's score: read once
        maps = self.read_maps(window, have)
        valid = np.isfinite(maps["score"][0])
        mask = mask_rule(maps, threshold, around)
        if self.shadow is not None:
            self.shadow.apply(window, mask)
        hist = np.zeros(256, np.int64)  # masks hold only these classes
        for cls in (CLEAR, CLOUD, SHADOW, NODATA):
            hist[cls] = np.count_nonzero(mask == cls)
        ctx = WindowContext(window, maps, valid, threshold, mask, plan.info, plan.radiometry, self.reader,
                            plan.config.decloud, read_maps=self.read_maps)  # fmt: skip
        outs = [compute(ctx) for _, compute in self.products]
        part = None
        if self.matting is not None:  # what the clear product recovers (computed once per window)
            from .declouding import window_clear

            part = type(self.matting)(plan.config.decloud)
            clear = window_clear(ctx)[1:] if "reflectance" in maps else None  # r_c is made for clear
            part.add(mask, maps["alpha"][0], clear)
        return window, hist, (part, ctx.tally), outs

    def run(self, progress: ProgressCallback | None = None) -> None:
        """Windows are computed on PASS2_WORKERS threads (numpy and GDAL release the GIL), a
        bounded number ahead, and written in order, so writing overlaps the computing; each
        product has its own writer thread (one writer for all was the second pass's bottleneck)."""
        plan, reader = self.plan, self.reader
        if reader.cache is not None:  # the second pass starts again at the top
            reader.cache.clear()
            band_px = max(b.x1 - b.x0 for b in plan.bands2)
            reader.cache.capacity = input_cache_bytes(plan.info, len(plan.radiometry.indexes), PASS2_ROWS,
                                                      band_px, reader.tile)  # fmt: skip
        windows = self.windows()
        writers = [Worker(f"write-{p.name}") for p, _ in self.products]
        try:
            with ThreadPool(PASS2_WORKERS, thread_name_prefix="geocloud-classify") as pool:
                ahead: deque[Future[tuple[Window, np.ndarray, Any, list[np.ndarray]]]] = deque()
                todo = iter(windows)
                for i in range(1, len(windows) + 1):
                    while len(ahead) < PASS2_WORKERS:
                        nxt = next(todo, None)
                        if nxt is None:
                            break
                        ahead.append(pool.submit(self.classify, nxt))
                    window, hist, (part, tally), outs = ahead.popleft().result()
                    self.counts += hist
                    for k, v in tally.items():
                        self.tally[k] = self.tally.get(k, 0) + v
                    if self.matting is not None:
                        self.matting.merge(part)
                    for w, (p, _), arr in zip(writers, self.products, outs, strict=True):
                        w.put(partial(self.sinks[p.name].write_window, arr, int(window.row_off),
                                      int(window.col_off)))  # fmt: skip
                    if progress:
                        progress("classify", i, len(windows))
        finally:
            close_all(writers)
        if reader.cache is not None:
            reader.cache.clear()


class CogAssembly:
    """Rasters become COGs under temporary names on background threads.

    :meth:`early` queues the first pass's products while the second pass runs (one thread:
    the second pass has the cores; their intermediates stay for it to read); :meth:`late`
    queues the rest, ``COG_WORKERS`` at a time, the largest first (so a small one does not
    hold up the start of a large one).  Rasters that only file products need stay in the
    work folder.  ``stack`` shuts the pools down (waiting) however the run ends.
    """

    def __init__(self, plan: ScenePlan, tx: Any, tags: dict[str, str], stack: ExitStack) -> None:
        self.plan, self.tx, self.tags = plan, tx, tags
        self.early_pool = ThreadPool(1, thread_name_prefix="geocloud-cog-early")
        self.late_pool = ThreadPool(COG_WORKERS, thread_name_prefix="geocloud-cog")
        for pool_ in (self.early_pool, self.late_pool):  # on any failure: wait, then clean up
            stack.callback(pool_.shutdown, wait=True, cancel_futures=True)
        self.jobs: list[tuple[str, Future[Path]]] = []

    def _submit(self, name: str, sink: RasterSink, pool_: ThreadPool, keep: bool) -> None:
        if name in self.plan.wanted:
            dest = self.tx.temporary(sink.final)
        else:
            dest = self.tx.workdir / sink.final.name
        self.jobs.append((name, pool_.submit(sink.finalize, {**self.tags, "GEOCLOUD_PRODUCT": name}, dest,
                                             keep=keep)))  # fmt: skip

    def early(self, sinks: dict[str, RasterSink]) -> None:
        for name, sink in sinks.items():
            self._submit(name, sink, self.early_pool, True)

    def late(self, sinks: dict[str, RasterSink]) -> None:
        for name, sink in sorted(sinks.items(), key=lambda ns: -ns[1].spec.nbytes):
            self._submit(name, sink, self.late_pool, False)

    def wait(self, progress: ProgressCallback | None = None) -> dict[str, Path]:
        """The complete rasters (temporary paths), by product name."""
        done: dict[str, Path] = {}
        t0 = time.perf_counter()
        for k, (name, job) in enumerate(self.jobs, start=1):
            done[name] = job.result()
            if progress:
                progress("write", k, len(self.jobs))
        log.debug("COGs assembled in %.2f s", time.perf_counter() - t0)
        return done


__all__ = ["ClassifyPass", "CogAssembly", "InferencePass", "ProgressCallback", "Worker", "close_all"]
