"""Every processing default, in one typed place.

The CLI builds its options from these dataclasses (``default=TilingConfig.block_size``
etc.), so no default is ever written twice.  All of them are frozen: make a changed copy
with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import ClassVar

from .declouding import DecloudConfig
from .errors import ConfigError
from .models import DEFAULT_MODEL
from .vectorize import VectorizeConfig


@dataclass(frozen=True)
class TilingConfig:
    """How a scene is cut into blocks.

    ``block_size`` is the side of the square window a model sees (core plus halo);
    ``None`` means ``step + 2 * halo + feather``, so that blocks advance by exactly
    ``step`` pixels and line up with the 512 px internal tiles most GeoTIFFs use (each
    input tile is then decompressed once).  ``halo`` is the overlap on each side;
    ``None`` means "the model's own receptive-field halo".
    """

    block_size: int | None = None
    step: int = 512
    halo: int | None = None
    #: width of the linear blend between neighbouring blocks (0: hard seams in the middle
    #: of the overlap, i.e. crop); ``None``: the model's own (16 px for networks, whose
    #: blocks may differ by float rounding; 0 for per-pixel models, whose blocks cannot
    #: differ).  Multiples of 1/16 keep exact values exact.
    feather: int | None = None
    #: widest band of columns processed at once: memory depends on it, not on the scene
    #: size (blocks along a swath edge are computed by both neighbours).  4096 rather than
    #: 8192: with every matting product at 10000^2 the peak RSS fell from 1.23 to 1.0 GB
    #: at the same speed.
    swath_width: int = 4096
    #: the first pass's swath width for *compressed striped* inputs (GDAL's default layout):
    #: a strip holds whole rows, so every swath decodes every row again; such scenes up to
    #: this width are read in one swath, wider ones in equal swaths (the second pass keeps
    #: ``swath_width``).  0: ``swath_width``.  10000^2 DEFLATE-striped, every matting
    #: product: see docs/benchmarks.md (sixth session).
    striped_swath_width: int = 12288

    def pass1_swath_width(self, width: int, striped_compressed: bool, step: int) -> int:
        """The widest first-pass swath for a scene ``width`` px wide."""
        if not striped_compressed or self.striped_swath_width <= self.swath_width:
            return self.swath_width
        n = -(-width // self.striped_swath_width)  # equal swaths, each within the limit
        return -(-width // n) + step  # + a step: swath edges fall on block origins

    def resolve(self, model_halo: int, model_feather: int) -> tuple[int, int, int]:
        """(block size, halo, feather) for a model needing ``model_halo`` px of context."""
        halo = model_halo if self.halo is None else self.halo
        if halo < model_halo:
            raise ConfigError(
                f"halo {halo} is smaller than the model's receptive field ({model_halo} px); "
                f"pass --halo {model_halo} or more, or leave it out"
            )
        feather = model_feather if self.feather is None else self.feather
        block = self.block_size if self.block_size is not None else self.step + 2 * halo + feather
        return block, halo, feather

    def validate(self) -> None:
        if self.block_size is not None and self.block_size < 16:
            raise ConfigError(f"block size {self.block_size} is too small; pass --block-size 16 or more")
        if self.swath_width < 64:
            raise ConfigError(
                f"swath width {self.swath_width} is too small; use 64 px or more (default {TilingConfig.swath_width})"
            )
        if self.striped_swath_width < 0:
            raise ConfigError(
                f"striped swath width {self.striped_swath_width} is negative; use 0 (off) or more"
            )
        if self.feather is not None and self.feather < 0:
            raise ConfigError(f"feather {self.feather} is negative; pass --feather 0 or more")
        if self.halo is not None and self.halo < 0:
            raise ConfigError(f"halo {self.halo} is negative; pass --halo 0 or more")
        if self.halo is not None and self.block_size is not None and 2 * self.halo >= self.block_size:
            raise ConfigError(
                f"halo {self.halo} leaves no core in a {self.block_size}px block; "
                f"pass --halo below {self.block_size // 2} or a larger --block-size"
            )


@dataclass(frozen=True)
class InferenceConfig:
    """Where and how models run."""

    device: str = "auto"  # auto | cpu | cuda
    #: blocks per model call; None: :data:`CPU_BATCH` on CPU, :data:`CUDA_BATCH` on CUDA.
    batch_size: int | None = None
    #: torch threads on CPU; None: all cores but the ones the pipeline's reader, mosaic
    #: and writer threads keep busy (:meth:`resolved_threads`).
    threads: int | None = None
    #: number of reader threads feeding the model (GDAL releases the GIL).
    readers: int = 2
    #: model calls in flight, each on its own thread; None: :meth:`resolved_predictors`.
    predictors: int | None = None
    #: mixed precision for the networks (``torch.autocast``): ``auto`` (bf16 on CUDA, off
    #: on CPU), ``off``, ``bf16`` or ``fp16``; maps come out as float32 either way.
    autocast: str = "auto"

    #: On CPU one block per call was both fastest and smallest in memory (a 656 px block's
    #: working set stays in cache): at 10000^2 with every matting product, batch 1 gave
    #: 1172 MB peak RSS against 1364 MB for batch 4, and a shorter first pass.
    CPU_BATCH: ClassVar[int] = 1
    CUDA_BATCH: ClassVar[int] = 8

    AUTOCAST_MODES: ClassVar[tuple[str, ...]] = ("auto", "off", "bf16", "fp16")

    def resolved_autocast(self, device: str) -> str | None:
        """The autocast dtype name for ``device`` (None: full float32)."""
        if self.autocast == "auto":
            return "bf16" if device.startswith("cuda") else None
        return None if self.autocast == "off" else self.autocast

    def resolved_batch_size(self, device: str) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return self.CUDA_BATCH if device.startswith("cuda") else self.CPU_BATCH

    def resolved_threads(self) -> int:
        """Torch threads on CPU: ``threads``, or the core count less 2 (at least 1).

        The pipeline runs the model in one thread while others read, mosaic and write. On
        the 2-core machine at 10000^2 with every matting product, 2 torch threads competing
        with those gave a first pass of 16.7 s against 14.1 s with 1 thread.
        """
        if self.threads is not None:
            return self.threads
        return max(1, (os.cpu_count() or 1) - 2)

    def resolved_predictors(self, device: str) -> int:
        """Model calls in flight: ``predictors``, or 2 on a CPU run with one torch thread, else 1.

        With one torch thread the model would leave a core to the reader, mosaic and
        writer threads, which do not fill it; a second model thread does.  On the 2-core
        machine at 10000^2 with every matting product, the first pass took 13.1 s with 2
        against 16.6 s with 1 (16.9 against 20.3 s in a slower round; docs/benchmarks.md).
        On CUDA one stream of batches is kept.
        """
        if self.predictors is not None:
            return self.predictors
        if device != "cpu":
            return 1
        return 2 if self.resolved_threads() == 1 else 1

    def validate(self) -> None:
        if self.predictors is not None and self.predictors < 1:
            raise ConfigError(f"predictors {self.predictors} must be at least 1")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device {self.device!r} is unknown; pass --device auto, cpu or cuda")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch size {self.batch_size} must be at least 1; pass --batch-size 1 or more")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads {self.threads} must be at least 1; pass --threads 1 or more")
        if self.autocast not in self.AUTOCAST_MODES:
            raise ConfigError(
                f"autocast {self.autocast!r} is unknown; pass --autocast {', '.join(self.AUTOCAST_MODES)}"
            )


@dataclass(frozen=True)
class ThresholdConfig:
    """Turning the cloud score into a mask.

    ``method`` names a rule in :data:`geocloud.threshold.THRESHOLD_RULES`.  ``value``, when
    given, overrides the rule with a fixed threshold (``--threshold``).  ``k`` overrides
    the model's calibrated k in mu + k*sigma.
    """

    method: str = "statistical"
    value: float | None = None
    k: float | None = None
    #: grow cloud edges with the model's calibrated hysteresis (``--grow/--no-grow``; see
    #: :mod:`geocloud.threshold`).  Off for models that calibrated none.
    grow: bool = True

    def validate(self) -> None:
        if self.value is not None and not (0.0 <= self.value <= 1.0):
            raise ConfigError(f"threshold {self.value} is outside 0..1; pass --threshold between 0 and 1")
        if self.k is not None and not math.isfinite(self.k):
            raise ConfigError(f"k {self.k} is not a finite number; pass --k with a number such as 3")


@dataclass(frozen=True)
class OutputConfig:
    """What is written, and how."""

    products: tuple[str, ...] = ("mask", "score", "alpha", "clear", "stats")
    overwrite: bool = False
    #: GeoTIFF compression of the rasters: ZSTD is fast and well supported by GDAL >= 2.3.
    compress: str = "ZSTD"
    #: internal tile size of the COG outputs.
    cog_blocksize: int = 512
    #: derived rasters (the cloud reflectance r_c) are computed again while their COG is
    #: assembled, from the stored maps and cells, instead of being stored at full resolution
    #: (used when GDAL can call Python pixel functions; the outputs are the same).
    derive_in_cog: bool = True


@dataclass(frozen=True)
class ProcessConfig:
    """Everything :func:`geocloud.pipeline.process_scene` needs beyond the scene itself."""

    model: str = DEFAULT_MODEL
    sensor: str | None = None  # None: detect
    bands: tuple[int, ...] | None = None  # 1-based file bands of blue, green, red, nir; None: detect
    tiling: TilingConfig = field(default_factory=TilingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    #: the clear product: alpha_max, --refine (geocloud.declouding).
    decloud: DecloudConfig = field(default_factory=DecloudConfig)
    #: the vector product: minimum area, simplification (geocloud.vectorize).
    vector: VectorizeConfig = field(default_factory=VectorizeConfig)
    #: refuse a scene whose reflectances are mostly outside the physical range (a wrong
    #: DN scaling) before processing it (``--no-range-check`` turns it off).
    range_check: bool = True
    #: mark cloud shadow (class 2) in the mask (``--no-shadow``: the 0/1/255 mask).
    shadow: bool = True

    def validate(self) -> None:
        self.tiling.validate()
        self.inference.validate()
        self.threshold.validate()
        self.decloud.validate()
        self.vector.validate()
