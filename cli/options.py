"""Options shared by several commands, built from the library's registries and defaults."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click

from geocloud.config import InferenceConfig, OutputConfig, ProcessConfig, ThresholdConfig, TilingConfig
from geocloud.errors import ConfigError
from geocloud.models import DEFAULT_MODEL, MODELS
from geocloud.sensors import SENSORS


class FiniteFloat(click.ParamType):
    """A float that must be finite (``nan``/``inf`` are refused), optionally > ``above``."""

    name = "float"

    def __init__(self, above: float | None = None) -> None:
        self.above = above

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float) and math.isfinite(value):
            v = value
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number; pass a number such as 0.0001", param, ctx)
        if self.above is not None and v <= self.above:
            self.fail(f"{value!r} must be greater than {self.above:g}", param, ctx)
        return v


#: the most torch threads or model threads a run may ask for (a typo such as 100000 must
#: not reach the thread pool).
MAX_THREADS = 256


def parse_band_numbers(text: str | None) -> tuple[int, ...] | None:
    """``--bands "3,2,1,4"`` -> (3, 2, 1, 4); None when not given.  (The library checks the
    numbers against the scene's band count.)"""
    if not text:
        return None
    parts = [b.strip() for b in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"--bands {text!r} is not a list of band numbers; pass e.g. --bands 1,2,3,4")
    return tuple(int(p) for p in parts)


def scene_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--sensor, --bands, --scale, --offset, --sun-elevation."""
    for opt in reversed(
        [
            click.option("--sensor", type=click.Choice(list(SENSORS)), default=None,
                         help="Sensor profile (default: detected from vendor XML, tags or file name)."),
            click.option("--bands", default=None, metavar="B,G,R,N",
                         help="1-based file band numbers of blue,green,red,nir (default: from band descriptions or sensor)."),
            click.option("--scale", type=FiniteFloat(above=0.0), default=None,
                         help="Reflectance = DN * SCALE + OFFSET for every band (e.g. 0.0001); overrides the sensor's calibration."),
            click.option("--offset", type=FiniteFloat(), default=0.0, show_default=True,
                         help="See --scale (used only with --scale)."),
            click.option("--sun-elevation", type=click.FloatRange(0, 90, min_open=True), default=None,
                         help="Sun elevation in degrees (default: vendor XML, tags, Landsat MTL or "
                         "Sentinel-2 MTD_TL.xml beside the scene)."),
        ]
    ):  # fmt: skip
        f = opt(f)
    return f


def shadow_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--no-shadow, --sun-azimuth."""
    for opt in reversed(
        [
            click.option("--no-shadow", "no_shadow", is_flag=True,
                         help="Leave cloud shadow out of the mask (0 clear, 1 cloud, 255 nodata, as format 1)."),
            click.option("--sun-azimuth", type=click.FloatRange(0, 360, max_open=True), default=None,
                         help="Sun azimuth in degrees clockwise from north, for the cloud-shadow direction "
                         "(default: vendor XML, Landsat MTL or Sentinel-2 MTD_TL.xml beside the scene, "
                         "else searched from the image)."),
        ]
    ):  # fmt: skip
        f = opt(f)
    return f


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--model, --block-size, --halo, --feather, --device, --batch-size, --threads, --predictors, --autocast."""
    for opt in reversed(
        [
            click.option("--model", type=click.Choice(sorted(MODELS)), default=DEFAULT_MODEL, show_default=True,
                         help="Cloud model."),
            click.option(
                "--block-size",
                type=click.IntRange(16),
                default=TilingConfig.block_size,
                help=f"Side of the square blocks the model sees, halo included "
                f"(default: a {TilingConfig.step} px step plus the overlap).",
            ),
            click.option("--halo", type=click.IntRange(0), default=None,
                         help="Overlap on each side of a block (default: the model's receptive field)."),
            click.option("--feather", type=click.IntRange(0), default=TilingConfig.feather,
                         help="Width of the linear blend between blocks (default: the model's; 0: no blending)."),
            click.option("--device", default=InferenceConfig.device, show_default=True,
                         help="auto | cpu | cuda (auto picks CUDA when present)."),
            click.option("--batch-size", type=click.IntRange(1), default=InferenceConfig.batch_size,
                         help=f"Blocks per model call (default: {InferenceConfig.CPU_BATCH} on CPU, "
                         f"{InferenceConfig.CUDA_BATCH} on CUDA)."),
            click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=InferenceConfig.threads,
                         help="Torch threads on CPU (default: the cores less 2, at least 1)."),
            click.option("--predictors", type=click.IntRange(1, MAX_THREADS), default=InferenceConfig.predictors,
                         help="Model calls in flight, each on its own thread (default: 2 on CPU when "
                              "torch has 1 thread, else 1)."),
            click.option("--autocast", type=click.Choice(InferenceConfig.AUTOCAST_MODES), default=InferenceConfig.autocast,
                         show_default=True, help="Mixed precision for the networks (auto: bf16 on CUDA, off on CPU)."),
            click.option("--threshold", type=click.FloatRange(0, 1), default=ThresholdConfig.value,
                         help="Fixed score threshold, overriding the scene's statistical threshold."),
            click.option("--k", "k", type=FiniteFloat(), default=ThresholdConfig.k,
                         help="k of the statistical threshold mu + k*sigma (default: the model's calibrated k)."),
            click.option("--grow/--no-grow", default=ThresholdConfig.grow, show_default=True,
                         help="Grow cloud edges with the model's calibrated hysteresis (thin cloud at "
                              "cloud edges; see docs/cam.md)."),
        ]
    ):  # fmt: skip
        f = opt(f)
    return f


def process_config(*, model: str, block_size: int | None, halo: int | None, feather: int | None, device: str,
                   batch_size: int | None, threads: int | None, threshold: float | None, k: float | None,
                   grow: bool, sensor: str | None, bands: str | None, output: OutputConfig,
                   predictors: int | None = None, autocast: str = InferenceConfig.autocast,
                   **fields: Any) -> ProcessConfig:  # fmt: skip
    """The :class:`ProcessConfig` of the options :func:`model_options` and :func:`scene_options`
    add, with ``output`` and any other ProcessConfig ``fields`` (decloud, vector...)."""
    return ProcessConfig(
        model=model,
        sensor=sensor,
        bands=parse_band_numbers(bands),
        tiling=TilingConfig(block_size=block_size, halo=halo, feather=feather),
        inference=InferenceConfig(
            device=device, batch_size=batch_size, threads=threads, predictors=predictors, autocast=autocast
        ),
        threshold=ThresholdConfig(value=threshold, k=k, grow=grow),
        output=output,
        **fields,
    )
