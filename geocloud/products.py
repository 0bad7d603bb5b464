"""The registry of outputs ``geocloud process`` can write (``--products``).

Two kinds:

* :class:`RasterProduct`: a COG named ``<stem><suffix>``.  Either it *is* a mosaicked
  model map (``from_map``: written during the first pass, e.g. ``score``), or it is
  computed window by window in the second pass from a :class:`WindowContext` (``compute``:
  e.g. ``mask``), once the scene's threshold is known.
* :class:`FileProduct`: anything else, written once the rasters are complete
  (``write(FileContext)``: e.g. ``stats``), always through a temporary name.

Conventions (written down once): masks are uint8 with 0 clear, 1 cloud, 255 nodata;
float rasters use NaN as nodata; nodata never enters statistics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from .errors import ConfigError
from .outputs import atomic_write_text
from .scene import SceneInfo, SceneReader
from .sensors import Radiometry
from .stats import SceneStats
from .threshold import CLEAR, CLOUD, MASK_CLASSES, NODATA, SHADOW, ThresholdResult, classify_result


@dataclass
class WindowContext:
    """What a second-pass product sees for one window of the scene."""

    window: Window
    #: mosaicked model maps, name -> (k, h, w) float32, NaN where nodata
    maps: dict[str, np.ndarray]
    valid: np.ndarray
    threshold: ThresholdResult
    mask: np.ndarray
    scene: SceneInfo
    radiometry: Radiometry
    reader: SceneReader
    #: declouding settings (:class:`geocloud.declouding.DecloudConfig`: alpha_max, --refine);
    #: None means its defaults.
    decloud: Any = None
    #: reads the mosaicked maps of any window of the scene (products that need context
    #: beyond their window, such as ``--refine``); None when unavailable.
    read_maps: Callable[[Window], dict[str, np.ndarray]] | None = None
    #: results shared by the products of this window (e.g. the refined matte).
    cache: dict[str, Any] = field(default_factory=dict)
    #: pixel counts the products report (e.g. ``restored_pixels``), summed over the
    #: windows by the second pass into the scene's statistics.
    tally: dict[str, int] = field(default_factory=dict)

    def read_input(self, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The input DN of the selected bands for this window (or ``window``), and its validity."""
        return self.reader.read(self.window if window is None else window)


@dataclass(frozen=True)
class RasterLayout:
    count: int
    dtype: str
    nodata: float | int | None
    descriptions: tuple[str, ...] = ()
    resampling: str = "average"
    #: a colour table for band 1 (value -> RGBA) and tags of this product alone.
    colormap: tuple[tuple[int, tuple[int, int, int, int]], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()


#: the mask's colours in GIS viewers: clear transparent grey, cloud white, shadow dark blue.
MASK_COLOURS = {CLEAR: (0, 0, 0, 0), CLOUD: (255, 255, 255, 255), SHADOW: (20, 40, 160, 255),
                NODATA: (0, 0, 0, 0)}  # fmt: skip


def _mask_layout(info: SceneInfo, outs: dict[str, int]) -> RasterLayout:
    return RasterLayout(
        1, "uint8", NODATA, ("cloud mask",), "nearest",
        colormap=tuple(sorted(MASK_COLOURS.items())),
        tags=(("GEOCLOUD_MASK_CLASSES", ",".join(f"{k}={v}" for k, v in sorted(MASK_CLASSES.items()))),),
    )  # fmt: skip


@dataclass(frozen=True)
class RasterProduct:
    name: str
    suffix: str
    description: str
    #: model maps this product needs
    needs: tuple[str, ...]
    layout: Callable[[SceneInfo, dict[str, int]], RasterLayout]
    #: the map this product is a copy of (first pass) ...
    from_map: str | None = None
    #: ... or how to compute a window of it (second pass)
    compute: Callable[[WindowContext], np.ndarray] | None = None

    def paths(self, outdir: Path, stem: str) -> list[Path]:
        return [outdir / f"{stem}{self.suffix}"]


@dataclass
class FileContext:
    """What a file product sees once every raster is complete."""

    scene: SceneInfo
    stem: str
    outdir: Path
    #: raster product name -> path of the complete file (under its temporary name)
    rasters: dict[str, Path]
    #: the run's statistics (the stats product is their JSON).
    stats: SceneStats
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileProduct:
    name: str
    suffixes: tuple[str, ...]
    description: str
    #: raster products this one reads (they are written too, to a temporary name, if not asked for)
    needs: tuple[str, ...]
    #: writes every output to the given (temporary) paths, one per suffix
    write: Callable[[FileContext, list[Path]], None]

    def paths(self, outdir: Path, stem: str) -> list[Path]:
        return [outdir / f"{stem}{s}" for s in self.suffixes]


Product = RasterProduct | FileProduct


def _mask(ctx: WindowContext) -> np.ndarray:
    return ctx.mask[None]


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None: JSON readers other than
    Python's reject ``NaN`` and ``Infinity``, so the stats file never contains them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _write_stats(ctx: FileContext, paths: list[Path]) -> None:
    atomic_write_text(paths[0], json.dumps(strict_json(ctx.stats.to_dict()), indent=2, default=str, allow_nan=False) + "\n")


def _write_vector(ctx: FileContext, paths: list[Path]) -> None:
    from .vectorize import write_vector_product

    write_vector_product(ctx, paths)


def _write_preview(ctx: FileContext, paths: list[Path]) -> None:
    from .preview import write_preview_product

    write_preview_product(ctx, paths)


def _decloud():  # lazy: declouding imports scipy only when a matting product is asked for
    from . import declouding

    return declouding


def _clear_nodata(info: SceneInfo) -> float | int:
    return _decloud().clear_product_nodata(info)


def _restoration():  # lazy: torch is imported only when a restored product is asked for
    from . import restoration

    return restoration


def _restored_layout(info: SceneInfo, outs: dict[str, int]) -> RasterLayout:
    from .restoration import RESTORED_TAGS

    return RasterLayout(4, info.dtype, _clear_nodata(info), ("blue", "green", "red", "nir"), tags=RESTORED_TAGS)


def _restored_quality_layout(info: SceneInfo, outs: dict[str, int]) -> RasterLayout:
    from .restoration import QUALITY_CODES, QUALITY_COLOURS

    return RasterLayout(
        1, "uint8", 0, ("restored quality: 1 original, 2 inverted, 3 synthesised",), "nearest",
        colormap=QUALITY_COLOURS,
        tags=(("GEOCLOUD_QUALITY_CODES", ",".join(f"{k}={v}" for k, v in QUALITY_CODES.items())),),
    )  # fmt: skip


def mask_rule(
    maps: dict[str, np.ndarray],
    threshold: ThresholdResult,
    around: tuple[np.ndarray, tuple[slice, slice]] | None = None,
) -> np.ndarray:
    """The scene's mask for one window: cloud where the score reaches the threshold, and
    at grown cloud edges (:mod:`geocloud.threshold`).

    ``around``: the score (h', w') of the window grown by ``threshold.grow_radius`` px and
    the window's slices inside it (:func:`geocloud.tiling.grow_window`); without it the
    edges are grown within the window only.
    """
    if around is None:
        return classify_result(maps["score"][0], threshold)
    score, (ys, xs) = around
    return classify_result(score, threshold)[ys, xs]


PRODUCTS: dict[str, Product] = {
    p.name: p
    for p in (
        RasterProduct(
            name="mask",
            suffix="_mask.tif",
            description="uint8 cloud mask: 0 clear, 1 cloud, 2 cloud shadow (not with --no-shadow), 255 nodata",
            needs=("score",),
            layout=_mask_layout,
            compute=_mask,
        ),
        RasterProduct(
            name="score",
            suffix="_score.tif",
            description="float32 cloud score 0..1, NaN nodata",
            needs=("score",),
            layout=lambda info, outs: RasterLayout(1, "float32", float("nan"), ("cloud score",)),
            from_map="score",
        ),
        # ---- cloud matting (geocloud.models.matting, geocloud.declouding)
        RasterProduct(
            name="alpha",
            suffix="_alpha.tif",
            description="float32 cloud opacity alpha 0..1 (y = r_c + (1 - alpha) x), NaN nodata",
            needs=("alpha",),
            layout=lambda info, outs: RasterLayout(1, "float32", float("nan"), ("cloud opacity alpha",)),
            from_map="alpha",
        ),
        RasterProduct(
            name="reflectance",
            suffix="_reflectance.tif",
            description="float32 cloud reflectance r_c per band (blue, green, red, nir), NaN nodata",
            needs=("reflectance",),
            layout=lambda info, outs: RasterLayout(
                4,
                "float32",
                float("nan"),
                tuple(f"cloud reflectance {b}" for b in ("blue", "green", "red", "nir")),
            ),
            from_map="reflectance",
        ),
        RasterProduct(
            name="clear",
            suffix="_clear.tif",
            description="declouded scene (blue, green, red, nir) in the input's dtype and DN scale; "
            "nodata where alpha > alpha_max (0.8) or the inversion leaves the valid range",
            needs=("alpha", "reflectance"),
            layout=lambda info, outs: RasterLayout(
                4, info.dtype, _clear_nodata(info), ("blue", "green", "red", "nir")
            ),
            compute=lambda ctx: _decloud().compute_clear(ctx),
        ),
        RasterProduct(
            name="quality",
            suffix="_clear_quality.tif",
            description="uint8 confidence of the clear product: 100 (1 - alpha/alpha_max), 200 ground in "
            "cloud shadow, 0 nodata or not recovered",
            needs=("alpha", "reflectance"),  # r_c: a pixel whose inversion leaves the valid range is 0
            layout=lambda info, outs: RasterLayout(1, "uint8", 0, ("clear quality (percent)",), "nearest"),
            compute=lambda ctx: _decloud().compute_quality(ctx),
        ),
        # ---- restoration under thick cloud (geocloud.models.restore, geocloud.restoration)
        RasterProduct(
            name="restored",
            suffix="_restored.tif",
            description="the clear product with its pixels above alpha_max filled by the attentive generator "
            "(SYNTHESISED, not measurements: see restored_quality); input dtype, DN scale and nodata",
            needs=("alpha", "reflectance"),
            layout=_restored_layout,
            compute=lambda ctx: _restoration().compute_restored(ctx),
        ),
        RasterProduct(
            name="restored_quality",
            suffix="_restored_quality.tif",
            description="uint8 origin of each restored pixel: 1 original, 2 inverted (matte), 3 synthesised, 0 nodata",
            needs=("alpha", "reflectance"),
            layout=_restored_quality_layout,
            compute=lambda ctx: _restoration().compute_restored_quality(ctx),
        ),
        FileProduct(
            name="stats",
            suffixes=("_stats.json",),
            description="per-scene statistics (JSON): cloud fraction, pixel counts, threshold, sensor, model, timings",
            needs=(),
            write=_write_stats,
        ),
        FileProduct(
            name="vector",
            suffixes=("_clouds.geojson", "_clouds.gpkg"),
            description="cloud polygons from the whole mask: GeoJSON (RFC 7946, WGS84) and GeoPackage (native CRS)",
            needs=("mask",),
            write=_write_vector,
        ),
        FileProduct(
            name="preview",
            suffixes=("_preview.png",),
            description="quicklook PNG (<= 1024 px) with the clouds tinted and outlined",
            needs=("mask",),
            write=_write_preview,
        ),
    )
}


def resolve_products(names: tuple[str, ...] | list[str]) -> list[Product]:
    """Products by name, in registry order; unknown names raise with the list of choices."""
    unknown = [n for n in names if n not in PRODUCTS]
    if unknown:
        raise ConfigError(
            f"product {unknown[0]!r} is unknown; pass --products with a comma-separated list of: "
            f"{', '.join(PRODUCTS)} (or all)"
        )
    if not names:
        raise ConfigError(f"no products asked for; pass --products with some of: {', '.join(PRODUCTS)}")
    return [p for n, p in PRODUCTS.items() if n in names]
