"""The plan of one run: what :func:`geocloud.process_scene` will read, run and write.

:func:`plan_scene` works everything out once, before a pixel is read, and returns a frozen
:class:`ScenePlan`: the scene, its radiometry, the model's spec, the blocks and swaths,
the products and the maps they need, the output paths, the device settings.  ``geocloud
info`` prints the same plan (:func:`geocloud.pipeline.describe_scene`).  Every refusal of
bad input happens here, so a refused run writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window

from ._version import __version__
from .cog import RasterSink
from .config import ProcessConfig
from .errors import ConfigError, InputError, OutputError, SensorError
from .inference import resolve_device
from .models import build_model, read_spec
from .models.base import CloudModel, ModelSpec
from .products import PRODUCTS, FileProduct, RasterProduct, resolve_products
from .scene import SceneInfo, SceneReader, open_scene
from .sensors import REFLECTANCE_RANGE, Radiometry, resolve_radiometry
from .sun import SunAngles, find_sun_metadata
from .threshold import ThresholdResult
from .tiling import Swath, Tiling, make_swaths, make_tiling

if TYPE_CHECKING:
    from .vendor.metadata import VendorMetadata

log = logging.getLogger(__name__)

#: GDAL block cache bounds (MB) unless the user sets GDAL_CACHEMAX.  GDAL's default (5%
#: of RAM) would let the cache alone outgrow the memory budget on large machines; too
#: small a cache decompresses each input tile several times.
GDAL_CACHE_MB = (96, 512)

#: most decoded input (MB) the reader threads share (very wide striped scenes would need
#: more for two rows of blocks; past this, rows are decoded again as before).
INPUT_CACHE_MB = 256

#: version of the output format, in every raster's tags (2: mask classes 0 clear, 1 cloud,
#: 2 cloud shadow, 255 nodata, with a colour table; 1: 0/1/255 without one).
OUTPUT_FORMAT = 2

#: refuse a scene when more than this fraction of its sampled valid reflectances fall
#: outside REFLECTANCE_RANGE (``--no-range-check`` overrides).
OUT_OF_RANGE_REFUSE = 0.5
#: the range check samples this many windows of RANGE_WINDOW px on a regular grid.
RANGE_SAMPLES, RANGE_WINDOW = 5, 128


@dataclass(frozen=True)
class ScenePlan:
    """Everything a run decides before reading pixels (see :func:`plan_scene`)."""

    info: SceneInfo
    config: ProcessConfig
    radiometry: Radiometry
    spec: ModelSpec
    outdir: Path
    #: product name -> the final paths it writes (the products asked for).
    wanted: Mapping[str, list[Path]]
    #: rasters to make (those asked for, and those a file product needs), and file products.
    raster_products: tuple[RasterProduct, ...]
    file_products: tuple[FileProduct, ...]
    #: the model maps the products need (and those the derived ones are formed from).
    needed_maps: frozenset[str]
    #: derived maps (formed in the second pass from stored maps and cell maps).
    derived: tuple[str, ...]
    tiling: Tiling
    #: the first pass's swaths, and the second pass's column bands.
    swaths: tuple[Swath, ...]
    bands2: tuple[Swath, ...]
    device: str
    batch_size: int
    predictors: int
    amp: str | None
    #: when the scaling is unknown (``geocloud info`` only): why, and the flag to pass.
    radiometry_missing: str | None = None
    #: the sun azimuth (degrees clockwise from north) for the shadow stage: --sun-azimuth,
    #: else the vendor XML's, else a Landsat MTL's or Sentinel-2 tile metadata's
    #: (:mod:`geocloud.sun`); None: searched from the image.
    sun_azimuth: float | None = None
    #: the sun angles of a Landsat MTL or Sentinel-2 ``MTD_TL.xml`` beside the scene, if any.
    sun: SunAngles | None = None
    #: the name the outputs are given (``<out_stem>_mask.tif``...) and the input named in the
    #: stats, when they are not the scene file's: a vendor delivery's (its folder or archive).
    out_stem: str | None = None
    source: Path | None = None

    @property
    def pixel_size_m(self) -> float | None:
        """Ground pixel size in metres (a projected CRS in metres), else None."""
        return pixel_size_m(self.info)

    @property
    def stem(self) -> str:
        return self.out_stem or self.info.path.stem

    @property
    def swath_px(self) -> int:
        """Columns of the widest first-pass swath."""
        return max(sw.c1 - sw.c0 for sw in self.swaths)

    @property
    def n_blocks(self) -> int:
        return sum(len(sw.block_cols) for sw in self.swaths) * len(self.tiling.rows.origins)

    @property
    def map_channels(self) -> dict[str, int]:
        """The stored maps (all needed maps but the derived ones), by channel count."""
        return {k: self.spec.outputs[k] for k in sorted(self.needed_maps) if k not in self.derived}

    def raster_for_map(self, name: str) -> RasterProduct | None:
        """The raster product that is the stored map ``name`` itself, if one is made."""
        return next((p for p in self.raster_products if p.from_map == name), None)

    def all_product_paths(self) -> list[Path]:
        """Every path any product of this scene could have (for ``--overwrite``'s sweep)."""
        paths = output_paths(self.info.path, self.outdir, tuple(PRODUCTS), stem=self.stem)
        return [p for ps in paths.values() for p in ps]

    def tags(self, threshold: ThresholdResult) -> dict[str, str]:
        """The metadata tags of every raster product."""
        tags = {
            "GEOCLOUD_VERSION": __version__,
            "GEOCLOUD_MODEL": self.spec.name,
            "GEOCLOUD_THRESHOLD": f"{threshold.value:.6g}",
            "GEOCLOUD_THRESHOLD_METHOD": threshold.method,
            "GEOCLOUD_SENSOR": self.radiometry.sensor,
            "GEOCLOUD_SCENE": self.info.path.name,
            # 2: the mask has the cloud-shadow class (2) and a colour table
            "GEOCLOUD_OUTPUT_FORMAT": str(OUTPUT_FORMAT),
            "GEOCLOUD_SHADOW": "on" if self.config.shadow else "off (--no-shadow)",
        }
        if self.radiometry.calibration:  # which DN -> radiance table, and whether it is approximate
            tags["GEOCLOUD_CALIBRATION"] = self.radiometry.calibration
        return tags


def output_paths(scene: str | os.PathLike[str], outdir: str | os.PathLike[str],
                 products: tuple[str, ...], *, stem: str | None = None) -> dict[str, list[Path]]:  # fmt: skip
    """Where ``geocloud process`` writes each product of ``scene`` (named after ``stem``,
    by default the scene file's)."""
    stem = stem or Path(scene).stem
    return {p.name: p.paths(Path(outdir), stem) for p in resolve_products(products)}


@dataclass(frozen=True)
class SceneMetadata:
    """The metadata files beside a scene, read once per run: CRESDA's vendor XML
    (:func:`geocloud.vendor.find_vendor_metadata`) and a Landsat MTL or Sentinel-2 tile
    metadata file (:func:`geocloud.sun.find_sun_metadata`)."""

    vendor: VendorMetadata | None
    sun: SunAngles | None

    @classmethod
    def read(cls, scene: Path) -> SceneMetadata:
        from .vendor import find_vendor_metadata

        return cls(find_vendor_metadata(scene), find_sun_metadata(scene))

    @property
    def sun_azimuth(self) -> float | None:
        """The vendor XML's sun azimuth, else the MTL's or ``MTD_TL.xml``'s, else None."""
        if self.vendor is not None and self.vendor.sun_azimuth is not None:
            return self.vendor.sun_azimuth
        return None if self.sun is None else self.sun.azimuth


def scene_radiometry(info: SceneInfo, config: ProcessConfig, *, scale: float | None = None,
                     offset: float = 0.0, sun_elevation: float | None = None,
                     metadata: SceneMetadata | None = None) -> Radiometry:  # fmt: skip
    """The scene's band order and DN->reflectance conversion (see :mod:`geocloud.sensors`);
    ``metadata``: the files beside the scene, when already read."""
    meta = metadata if metadata is not None else SceneMetadata.read(info.path)
    return resolve_radiometry(
        count=info.count, dtype=info.dtype, tags=info.tags, descriptions=info.descriptions,
        band_scales=info.scales, band_offsets=info.offsets, filename=info.path.name,
        sensor=config.sensor, bands=config.bands, scale=scale, offset=offset,
        sun_elevation=sun_elevation, vendor=meta.vendor, colorinterp=info.colorinterp,
        metadata_sun_elevation=meta.sun.elevation if meta.sun is not None else None,
    )  # fmt: skip


def gdal_cache_bytes(info: SceneInfo, block_size: int, width: int | None = None) -> int:
    """Enough GDAL block cache for two rows of blocks of the input across a swath
    ``width`` (and some for the outputs), within :data:`GDAL_CACHE_MB`."""
    itemsize = np.dtype(info.dtype).itemsize
    width = info.width if width is None else width
    need_mb = 2 * block_size * width * info.count * itemsize / 2**20 + 48
    return int(min(max(need_mb, GDAL_CACHE_MB[0]), GDAL_CACHE_MB[1])) * 2**20


@contextlib.contextmanager
def gdal_cache(plan: ScenePlan) -> Iterator[None]:
    """GDAL's block cache sized for ``plan`` for the duration of the run, then restored
    (unless the user set ``GDAL_CACHEMAX``, which is left alone)."""
    if "GDAL_CACHEMAX" in os.environ:
        yield
        return
    from rasterio.env import get_gdal_config, set_gdal_config

    before = get_gdal_config("GDAL_CACHEMAX")
    set_gdal_config("GDAL_CACHEMAX", gdal_cache_bytes(plan.info, plan.tiling.rows.size, plan.swath_px))
    try:
        yield
    finally:
        if before is not None:
            set_gdal_config("GDAL_CACHEMAX", before)


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


def striped_compressed(info: SceneInfo) -> bool:
    """A striped, compressed input (decoded a whole strip at a time)."""
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
        width = config.tiling.pass1_swath_width(info.width, striped_compressed(info), step)
    return make_swaths(tiling, width, align)


def plan_products(names: tuple[str, ...]) -> tuple[list[RasterProduct], list[FileProduct], set[str]]:
    """The raster and file products to make for ``names`` (file products may need rasters
    nobody asked for), and the model maps they need."""
    products = resolve_products(names)
    raster_products = [p for p in products if isinstance(p, RasterProduct)]
    file_products = [p for p in products if isinstance(p, FileProduct)]
    for fp in file_products:
        for name in fp.needs:
            dep = PRODUCTS[name]
            if isinstance(dep, RasterProduct) and dep not in raster_products:
                raster_products.append(dep)
    return raster_products, file_products, {"score"} | {m for p in raster_products for m in p.needs}


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


def _check_outputs_free(wanted: Mapping[str, list[Path]], config: ProcessConfig) -> None:
    if config.output.overwrite:
        return
    for paths in wanted.values():
        for out in paths:
            if out.exists():
                raise OutputError(
                    f"output {str(out)!r} already exists; pass --overwrite to replace it, or another -o"
                )


def _check_model(spec: ModelSpec, needed: set[str]) -> set[str]:
    """Refuse a model that lacks a needed map or feeds on other bands; returns the needed
    maps plus those the derived ones are formed from (stored even when no product asks)."""
    missing = needed - set(spec.outputs)
    if missing:
        raise ConfigError(
            f"model {spec.name!r} does not produce {sorted(missing)}; choose other --products or another --model"
        )
    needed = needed | {m for d in spec.derived if d in needed for m in spec.derived_from.get(d, ())}
    if tuple(spec.bands[:4]) != ("blue", "green", "red", "nir"):
        raise ConfigError(
            f"model {spec.name!r} expects bands {spec.bands}; geocloud feeds blue, green, red, nir"
        )
    return needed


def plan_scene(
    path: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    config: ProcessConfig,
    *,
    model: CloudModel | None = None,
    scale: float | None = None,
    offset: float = 0.0,
    sun_elevation: float | None = None,
    sun_azimuth: float | None = None,
    warn: Callable[[str], None] = log.warning,
    describe: bool = False,
    stem: str | None = None,
    source: str | os.PathLike[str] | None = None,
) -> tuple[ScenePlan, CloudModel | None]:
    """Check the scene, the options and the outputs, load the model, and plan the run.

    With ``describe`` (``geocloud info``): nothing is refused for existing outputs or the
    reflectance range, the model is not loaded (its spec is read from the weight sidecars,
    :func:`geocloud.models.read_spec`: no torch), and an unknown scaling is recorded in
    :attr:`ScenePlan.radiometry_missing` instead of raised.  Returns the plan and the model
    (``model`` itself when given; None when describing).  ``stem`` and ``source`` name the
    outputs and the input of a scene that came in a vendor delivery (the delivery's).
    """
    config.validate()
    resolve_products(config.output.products)  # an unknown product is refused first
    info = open_scene(path)
    outdir = Path(outdir)
    missing: str | None = None
    meta = SceneMetadata.read(info.path)
    try:
        radiometry = scene_radiometry(info, config, scale=scale, offset=offset, sun_elevation=sun_elevation,
                                      metadata=meta)  # fmt: skip
    except SensorError as exc:
        if not describe or scale is not None:
            raise
        # describe everything else, and say what is missing and which flag to pass: this is
        # when a user needs `info` (the band order does not depend on the scaling)
        radiometry = scene_radiometry(info, config, scale=1.0, sun_elevation=sun_elevation, metadata=meta)
        missing = str(exc)
    if not describe:
        if config.range_check:
            check_reflectance_range(info, radiometry)
        if not info.georeferenced:
            warn(f"{info.path.name} has no CRS, transform or RPCs: outputs keep its pixel grid only")
    wanted = output_paths(info.path, outdir, config.output.products, stem=stem)
    if not describe:
        # (the folder was created and probed by scene_lock, which process_scene holds)
        _check_outputs_free(wanted, config)
    raster_products, file_products, needed_maps = plan_products(config.output.products)
    if describe:
        config = replace(config, inference=replace(config.inference, device="cpu"))
    device = resolve_device(config.inference.device)
    if model is not None:
        spec = model.spec
    elif describe:  # the spec from the weight sidecars: neither torch nor the weights are loaded
        spec = read_spec(config.model, frozenset(needed_maps))
    else:
        model = build_model(config.model, device, needed_maps)
        spec = model.spec
    needed_maps = _check_model(spec, needed_maps)
    tiling = plan_tiling(info, config, spec)
    plan = ScenePlan(
        info=info,
        config=config,
        radiometry=radiometry,
        spec=spec,
        outdir=outdir,
        wanted=wanted,
        raster_products=tuple(raster_products),
        file_products=tuple(file_products),
        needed_maps=frozenset(needed_maps),
        derived=tuple(m for m in spec.derived if m in needed_maps),
        tiling=tiling,
        swaths=tuple(plan_swaths(info, config, tiling)),
        bands2=tuple(plan_swaths(info, config, tiling, second_pass=True)),
        device=device,
        batch_size=config.inference.resolved_batch_size(device),
        predictors=config.inference.resolved_predictors(device),
        amp=config.inference.resolved_autocast(device),
        radiometry_missing=missing,
        sun_azimuth=sun_azimuth if sun_azimuth is not None else meta.sun_azimuth,
        sun=meta.sun,
        out_stem=stem,
        source=Path(source) if source is not None else None,
    )
    return plan, model


def pixel_size_m(info: SceneInfo) -> float | None:
    """Ground pixel size in metres of a scene in a projected CRS in metres, else None."""
    crs = info.crs
    if crs is None or not crs.is_projected:
        return None
    try:
        if crs.linear_units_factor[1] != 1.0:
            return None
    except Exception:  # noqa: BLE001 - a CRS pyproj cannot describe: no pixel size
        return None
    return abs(float(info.transform.a))


__all__ = [
    "SceneMetadata",
    "ScenePlan",
    "check_reflectance_range",
    "gdal_cache",
    "input_cache_bytes",
    "load_model_for",
    "output_paths",
    "plan_products",
    "plan_scene",
    "plan_swaths",
    "plan_tiling",
    "scene_radiometry",
]
