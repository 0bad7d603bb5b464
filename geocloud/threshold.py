"""Scene-level thresholds that turn the cloud score into a mask.

Statistics are gathered on the *mosaicked* score over a fixed grid of cells
(:data:`CELL_SIZE` px), so the threshold does not depend on the block size.  For each
cell :class:`ScoreStats` keeps the valid count, the sum and the sum of squares of the
score, and the number of pixels above the model's default threshold.

Rules (:data:`THRESHOLD_RULES`, chosen with ``ThresholdConfig.method``):

``statistical`` (default)
    ``t = mu + k * sigma`` of the score over *clear-sky cells*: cells at least half valid in
    which fewer than :data:`CLEAR_CELL_MAX_CLOUDY` of the pixels exceed the model's
    default threshold.  ``k`` is the model's calibrated ``threshold_k`` (or ``--k``).  With
    fewer than :data:`MIN_CLEAR_CELLS` clear-sky cells (an overcast scene) the model's
    training statistics ``clear_mu``/``clear_sigma`` are used instead.  The result is
    clamped to ``[CLAMP_LOW, CLAMP_HIGH] * default_threshold`` so that a hazy scene cannot
    push it to extremes.
``fixed``
    the model's ``default_threshold``.

``--threshold`` overrides any rule with a fixed value.  The value used, its method and
inputs are recorded in the stats JSON and the raster tags.

**Growing cloud edges** (hysteresis, the model's calibrated ``grow_ratio`` and
``grow_radius``; ``--no-grow`` turns it off).  A pixel whose score reaches the lower
threshold ``grow_ratio * t`` is cloud too when a pixel at or above ``t`` lies within
``grow_radius`` pixels of it (Chebyshev distance: a square window).  This keeps the thin
cloud at the edges of clouds, whose score falls off more slowly than cloud does, without
lowering the threshold everywhere.  It is local, so a mask window needs the score
``grow_radius`` pixels around it (:func:`classify` with a grown array) and the mask does
not depend on how the scene is cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy.ndimage import maximum_filter

from .config import ThresholdConfig
from .models.base import ModelSpec

#: side of the cells, in pixels: 64 so that a 256 px chip has 16 cells, and a 200 Mpx scene
#: 49 000 (four small arrays).  With 256 px cells a chip was a single cell and never had
#: the MIN_CLEAR_CELLS clear-sky cells the scene's own statistics need.
CELL_SIZE = 64
CLEAR_CELL_MAX_CLOUDY = 0.01
MIN_CLEAR_CELLS = 4
CLAMP_LOW, CLAMP_HIGH = 0.5, 1.5


@dataclass(frozen=True)
class ThresholdResult:
    value: float
    method: str
    mu: float | None = None
    sigma: float | None = None
    k: float | None = None
    clear_cells: int = 0
    cells: int = 0
    #: edge growing: the lower threshold and the radius in pixels (None / 0: off).
    grow_low: float | None = None
    grow_radius: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class ScoreStats:
    """Per-cell running statistics of the mosaicked score.

    Only pixels at even scene rows and columns are counted (a fixed 1-in-4 sample, the same
    whatever the block size), which keeps the statistics cheap on 100+ megapixel scenes.
    """

    def __init__(self, height: int, width: int, cloudy_above: float, cell: int = CELL_SIZE):
        self.cell = cell
        self.ncols = -(-width // cell)
        self.nrows = -(-height // cell)
        n = self.nrows * self.ncols
        self.cloudy_above = np.float32(cloudy_above)
        self.count = np.zeros(n, dtype=np.int64)
        self.total = np.zeros(n, dtype=np.float64)
        self.total_sq = np.zeros(n, dtype=np.float64)
        self.above = np.zeros(n, dtype=np.int64)

    def update(self, row0: int, score: np.ndarray, col0: int = 0) -> None:
        """Add a window of the score at rows ``row0..``, columns ``col0..`` (NaN = nodata)."""
        rfirst, cfirst = row0 % 2, col0 % 2
        sub = score[rfirst::2, cfirst::2]
        if sub.size == 0:
            return
        rows = np.arange(row0 + rfirst, row0 + score.shape[0], 2) // self.cell
        cols = np.arange(col0 + cfirst, col0 + score.shape[1], 2) // self.cell
        col_starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
        cell_cols = cols[col_starts]
        ok = np.isfinite(sub)
        s = np.where(ok, sub, np.float32(0))
        per_row = [
            np.add.reduceat(a, col_starts, axis=1, dtype=dt)
            for a, dt in (
                (ok, np.int64),
                (s, np.float64),
                (s * s, np.float64),
                (s > self.cloudy_above, np.int64),
            )
        ]
        # rows of the window that fall in the same row of cells are summed together
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        for acc, a in zip((self.count, self.total, self.total_sq, self.above), per_row, strict=True):
            grouped = np.add.reduceat(a, starts, axis=0)
            for g, r in enumerate(rows[starts]):
                acc[r * self.ncols + cell_cols] += grouped[g]

    @property
    def valid_pixels(self) -> int:
        """Valid pixels in the sample (about a quarter of the scene's)."""
        return int(self.count.sum())

    def clear_cells(self) -> np.ndarray:
        full = (self.cell // 2) ** 2
        frac = np.divide(self.above, self.count, out=np.ones(len(self.count)), where=self.count > 0)
        return (self.count >= full // 2) & (frac < CLEAR_CELL_MAX_CLOUDY)


def _statistical(stats: ScoreStats, spec: ModelSpec, cfg: ThresholdConfig) -> ThresholdResult:
    k = spec.threshold_k if cfg.k is None else cfg.k
    clear = stats.clear_cells()
    n_clear = int(clear.sum())
    cells = int((stats.count > 0).sum())
    if n_clear >= MIN_CLEAR_CELLS:
        n = stats.count[clear].sum()
        mu = stats.total[clear].sum() / n
        var = max(stats.total_sq[clear].sum() / n - mu * mu, 0.0)
        sigma = var**0.5
        method = "statistical: mu + k*sigma over the scene's clear-sky cells"
    else:
        mu, sigma = spec.clear_mu, spec.clear_sigma
        method = "statistical: mu + k*sigma from the model's training statistics (too few clear-sky cells)"
    value = float(
        np.clip(mu + k * sigma, CLAMP_LOW * spec.default_threshold, CLAMP_HIGH * spec.default_threshold)
    )
    return ThresholdResult(value, method, float(mu), float(sigma), float(k), n_clear, cells)


def _fixed(stats: ScoreStats, spec: ModelSpec, cfg: ThresholdConfig) -> ThresholdResult:
    return ThresholdResult(float(spec.default_threshold), "fixed: the model's default threshold",
                           cells=int((stats.count > 0).sum()))  # fmt: skip


ThresholdRule = Callable[[ScoreStats, ModelSpec, ThresholdConfig], ThresholdResult]

THRESHOLD_RULES: dict[str, ThresholdRule] = {
    "statistical": _statistical,
    "fixed": _fixed,
}


def growing_radius(spec: ModelSpec, cfg: ThresholdConfig) -> int:
    """The edge-growing radius a run uses: the model's, or 0 when it calibrated none or
    ``cfg.grow`` is off (the one place that decides whether edges grow)."""
    if not cfg.grow or spec.grow_radius <= 0 or spec.grow_ratio >= 1.0:
        return 0
    return int(spec.grow_radius)


def with_growing(result: ThresholdResult, spec: ModelSpec, cfg: ThresholdConfig) -> ThresholdResult:
    """``result`` with the model's edge growing (lower threshold ``grow_ratio * value``)."""
    radius = growing_radius(spec, cfg)
    if radius == 0:
        return result
    return replace(result, grow_low=float(spec.grow_ratio * result.value), grow_radius=radius)


def fit_threshold(stats: ScoreStats, spec: ModelSpec, cfg: ThresholdConfig) -> ThresholdResult:
    """Decide the scene's threshold; ``cfg.value`` (``--threshold``) wins.

    Edge growing (see the module docstring) applies to a user threshold too.
    """
    if cfg.value is not None:
        user = ThresholdResult(float(cfg.value), "user: --threshold", cells=int((stats.count > 0).sum()))
        return with_growing(user, spec, cfg)
    try:
        rule = THRESHOLD_RULES[cfg.method]
    except KeyError:
        from .errors import ConfigError

        raise ConfigError(
            f"threshold method {cfg.method!r} is unknown; use one of: {', '.join(THRESHOLD_RULES)}"
        ) from None
    return with_growing(rule(stats, spec, cfg), spec, cfg)


#: mask codes, written down once
CLEAR, CLOUD, NODATA = 0, 1, 255
#: cloud shadow (:mod:`geocloud.shadow`): set on clear pixels by the engine's shadow stage.
SHADOW = 2
#: the mask's classes by code, as the mask COG's colour table and tags name them.
MASK_CLASSES = {CLEAR: "clear", CLOUD: "cloud", SHADOW: "cloud shadow", NODATA: "nodata"}


def classify(score: np.ndarray, threshold: float, low: float | None = None, radius: int = 0) -> np.ndarray:
    """uint8 mask of a score array: 1 where score >= threshold, 0 below, 255 where NaN.

    With ``low`` and ``radius`` > 0, pixels with ``score >= low`` within ``radius`` pixels
    (a square window) of a pixel at or above ``threshold`` are cloud too.  Pass the score
    grown by ``radius`` on every side (within the scene) and crop the result: the mask of
    the inner part is then the same as the whole scene's.
    """
    core = score >= threshold
    if low is not None and radius > 0 and low < threshold:
        near = maximum_filter(core.view(np.uint8), size=2 * radius + 1, mode="constant", cval=0)
        core |= (near > 0) & (score >= low)
    mask = np.where(core, np.uint8(CLOUD), np.uint8(CLEAR)).astype(np.uint8)
    mask[~np.isfinite(score)] = NODATA
    return mask


def classify_result(score: np.ndarray, threshold: ThresholdResult) -> np.ndarray:
    """:func:`classify` with a fitted :class:`ThresholdResult` (edge growing included)."""
    return classify(score, threshold.value, threshold.grow_low, threshold.grow_radius)
