"""What a run found and how, as one typed result: :class:`SceneStats`.

The stats product ``<stem>_stats.json`` is :meth:`SceneStats.to_dict` written as strict
JSON; :meth:`SceneStats.from_dict` reads it back.  The catalogue, the polygons' attributes
and the Python API read the same attributes, so a figure (the cloud fraction, the thin-cloud
fraction, the mean alpha) has one definition wherever it appears.

Thin cloud is defined once, here: a **cloud** pixel (mask 1) whose matte alpha is below
``thin_tau`` (:class:`geocloud.config.DecloudConfig`); thick cloud is the other cloud
pixels.  Both fractions are of the valid pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .threshold import ThresholdResult


@dataclass(frozen=True)
class PixelCounts:
    """Pixels of the scene by mask class."""

    total: int
    valid: int
    nodata: int
    cloud: int
    clear: int
    #: cloud-shadow pixels (counted apart from clear).
    shadow: int = 0


@dataclass(frozen=True)
class MattingSummary:
    """The thin/thick split of the cloud pixels by the matte (present when alpha was made)."""

    thin_tau: float
    alpha_max: float
    thin_cloud_pixels: int
    thick_cloud_pixels: int
    #: thin / thick cloud pixels over the valid pixels.
    thin_cloud_fraction: float | None
    thick_cloud_fraction: float | None
    #: mean alpha over the cloud pixels and over the clear pixels.
    mean_alpha_cloud: float | None
    mean_alpha_clear: float | None
    #: share of the valid pixels the ``clear`` product recovers (or keeps).
    clear_recovered_fraction: float | None
    refined: bool
    #: mean alpha over all valid pixels.
    mean_alpha: float | None = None
    #: cloud pixels with alpha <= alpha_max that the clear product leaves nodata because
    #: their inversion leaves the valid range (negative reflectance or outside the dtype).
    out_of_range_pixels: int = 0


@dataclass(frozen=True)
class ShadowSummary:
    """The scene's cloud-shadow displacement (:mod:`geocloud.shadow`), when the stage ran."""

    #: whether a displacement that explains the dark pixels next to the clouds was found.
    detected: bool
    #: the displacement from a cloud pixel to its shadow, px (rows, columns).
    dy: float | None
    dx: float | None
    distance_px: float | None
    #: direction from cloud to shadow, degrees clockwise from north.
    shadow_azimuth: float | None
    #: whether the direction came from the sun azimuth (metadata or --sun-azimuth).
    from_sun: bool
    score: float | None
    #: the decimation of the view the displacement was found on.
    view_factor: int


@dataclass(frozen=True)
class RestorationSummary:
    """The ``restored`` product's synthesised pixels (present when it was made).  They are
    not measurements: no other figure (cloud, usable, recovered) counts them."""

    #: valid pixels above alpha_max filled by the generator.
    restored_pixels: int
    #: restored_pixels over the valid pixels.
    restored_fraction: float | None
    alpha_max: float


@dataclass(frozen=True)
class InferenceSettings:
    batch_size: int
    torch_threads: int | None
    predictors: int
    autocast: str | None


@dataclass(frozen=True)
class SceneSize:
    width: int
    height: int
    bands: int
    dtype: str


@dataclass(frozen=True)
class TilingSummary:
    block_size: int
    halo: int
    feather: int
    blocks: int


@dataclass(frozen=True)
class SceneStats:
    """Everything ``<stem>_stats.json`` holds, in its order."""

    scene: str
    stem: str
    geocloud_version: str
    #: when the run finished (UTC, ISO 8601).
    created: str
    #: the radiometry used (:meth:`geocloud.sensors.Radiometry.as_dict`).
    sensor: dict[str, Any]
    #: the model (:meth:`geocloud.models.base.CloudModel.describe`).
    model: dict[str, Any]
    device: str
    inference: InferenceSettings
    size: SceneSize
    georeferencing: str
    crs: str | None
    pixels: PixelCounts
    #: cloud pixels over valid pixels (None for a scene without valid pixels).
    cloud_fraction: float | None
    threshold: ThresholdResult
    block_prob_mean: float | None
    swaths: int
    tiling: TilingSummary
    timings_s: dict[str, float]
    throughput_mpx_s: float | None
    warnings: list[str] = field(default_factory=list)
    #: product name -> file names written.
    outputs: dict[str, list[str]] = field(default_factory=dict)
    matting: MattingSummary | None = None
    #: cloud-shadow pixels over valid pixels (None when the shadow stage did not run).
    shadow_fraction: float | None = None
    #: valid pixels that are neither cloud nor cloud shadow, over valid pixels.
    usable_fraction: float | None = None
    shadow: ShadowSummary | None = None
    restoration: RestorationSummary | None = None

    @property
    def thin_cloud_fraction(self) -> float | None:
        """Thin-cloud pixels over valid pixels, when the matte ran (see the module docs)."""
        return self.matting.thin_cloud_fraction if self.matting else None

    @property
    def mean_alpha(self) -> float | None:
        """Mean matte alpha over the valid pixels, when the matte ran."""
        return self.matting.mean_alpha if self.matting else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout of the stats product (``matting`` only when the matte ran)."""
        out = asdict(self)
        for key in ("matting", "shadow", "restoration"):
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneStats:
        """Read :meth:`to_dict`'s layout back (unknown keys are ignored)."""
        nested = {
            "inference": InferenceSettings,
            "size": SceneSize,
            "pixels": PixelCounts,
            "threshold": ThresholdResult,
            "tiling": TilingSummary,
            "matting": MattingSummary,
            "shadow": ShadowSummary,
            "restoration": RestorationSummary,
        }
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            v = data[f.name]
            typ = nested.get(f.name)
            if typ is not None and isinstance(v, dict):
                names = {g.name for g in fields(typ)}
                v = typ(**{k: x for k, x in v.items() if k in names})
            kwargs[f.name] = v
        return cls(**kwargs)


__all__ = ["InferenceSettings", "MattingSummary", "RestorationSummary", "ShadowSummary", "PixelCounts", "SceneSize", "SceneStats", "TilingSummary"]
