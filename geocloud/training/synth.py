"""Procedural cloud layers, compositing over real clear backgrounds, and augmentations.

A cloud layer is ``(alpha, r_c)``: opacity (s, s) in [0, 1] and the cloud's own reflectance
(4, s, s) in blue, green, red, nir.  Clouds are spectrally flat white-grey, so
``r_c = alpha * brightness`` with a brightness per band that varies by a few percent
(blue slightly brighter, as scattering makes it).  A layer is composited over a
background with :func:`geocloud.compositing.compose`: ``y = r_c + (1 - alpha) * x``.

Shapes come from multi-octave value noise (fractal, 1/f-like): ``thick`` layers are
opaque cores with soft edges, ``thin`` layers are low-opacity, broad and smooth.

Everything takes a ``numpy.random.Generator``: same seed, same blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import zoom

from ..compositing import compose
from .data import BLOCK_CLEAR, BLOCK_CLOUDY

KINDS = ("thick", "thin")


def fractal_noise(
    rng: np.random.Generator, size: int, *, base: int = 4, octaves: int = 5, persistence: float = 0.55
) -> np.ndarray:
    """Multi-octave value noise in [0, 1], float32 (size, size).

    Octave o is a random grid of ``base * 2**o`` cells upsampled (cubic) to ``size``,
    weighted ``persistence**o``.
    """
    out = np.zeros((size, size), np.float32)
    total = 0.0
    for o in range(octaves):
        cells = min(size, base * 2**o)
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        up = zoom(grid, (size + 1) / (cells + 1), order=3, mode="reflect", grid_mode=False)[:size, :size]
        w = persistence**o
        out += w * up
        total += w
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return ((out - lo) / max(hi - lo, 1e-6)).astype(np.float32)


@dataclass(frozen=True)
class CloudStyle:
    """Ranges the random cloud layers are drawn from."""

    thick_coverage: tuple[float, float] = (0.08, 1.0)
    thick_alpha_max: tuple[float, float] = (0.75, 1.0)
    thick_edge: tuple[float, float] = (0.03, 0.2)
    #: share of thick layers that cover the whole block (overcast: bright, flat, snow-like).
    p_overcast: float = 0.15
    thin_alpha_max: tuple[float, float] = (0.2, 0.6)
    thin_coverage: tuple[float, float] = (0.2, 1.0)
    brightness: tuple[float, float] = (0.3, 1.1)
    #: per-band relative variation of the cloud brightness (blue, green, red, nir).
    band_jitter: float = 0.04
    blue_boost: float = 0.03


def cloud_layer(
    rng: np.random.Generator, size: int, kind: str = "thick", style: CloudStyle | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A random cloud layer: ``alpha`` float32 (size, size), ``r_c`` float32 (4, size, size)."""
    style = style or CloudStyle()
    if kind not in KINDS:
        raise ValueError(f"cloud kind {kind!r} is unknown; use one of {KINDS}")
    n = fractal_noise(
        rng, size, base=int(rng.integers(2, 6)), octaves=5, persistence=float(rng.uniform(0.45, 0.65))
    )
    if kind == "thick":
        cov = 1.0 if rng.random() < style.p_overcast else rng.uniform(*style.thick_coverage)
        t = float(np.quantile(n, 1.0 - cov))
        edge = rng.uniform(*style.thick_edge)
        if cov > 0.95:  # overcast: the whole block under the layer
            t -= edge
        a = np.clip((n - t) / edge, 0.0, 1.0) ** rng.uniform(0.6, 1.5)
        a *= rng.uniform(*style.thick_alpha_max)
    else:
        cov = rng.uniform(*style.thin_coverage)
        t = float(np.quantile(n, 1.0 - cov)) if cov < 1.0 else float(n.min()) - 0.05
        a = np.clip((n - t) / max(1.0 - t, 1e-3), 0.0, 1.0) ** rng.uniform(0.5, 1.2)
        a *= rng.uniform(*style.thin_alpha_max)
    alpha = a.astype(np.float32)
    bright = rng.uniform(*style.brightness)
    bands = bright * (1.0 + rng.uniform(-style.band_jitter, style.band_jitter, 4))
    bands[0] *= 1.0 + style.blue_boost
    r_c = alpha[None] * bands.astype(np.float32)[:, None, None]
    return alpha, r_c.astype(np.float32)


def augment(
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    gain: float = 0.15,
    band_gain: float = 0.04,
    alpha: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Random flip, 90-degree rotation, brightness gain and per-band gain of one block (4, s, s).

    With ``alpha`` (s, s), the same flip and rotation are applied to it and ``(x, alpha)``
    is returned (the gains change reflectance only).
    """
    flip = rng.random() < 0.5
    k = int(rng.integers(4))
    if flip:
        x = x[:, :, ::-1]
    x = np.rot90(x, k, axes=(1, 2))
    g = rng.uniform(1.0 - gain, 1.0 + gain) * rng.uniform(1.0 - band_gain, 1.0 + band_gain, 4)
    out = np.ascontiguousarray(x * g.astype(np.float32)[:, None, None], dtype=np.float32)
    if alpha is None:
        return out
    a = np.rot90(alpha[:, ::-1] if flip else alpha, k)
    return out, np.ascontiguousarray(a, dtype=np.float32)


@dataclass(frozen=True)
class GeneratorConfig:
    """Mix of the block generator."""

    #: probability that a block is cloudy.
    p_cloudy: float = 0.5
    #: of the cloudy blocks, the share taken from real cloudy blocks (the rest composited).
    p_real_cloudy: float = 0.3
    #: of the composited clouds, the share that is thin.
    p_thin: float = 0.4
    #: a composited block is "cloudy" when this fraction of pixels has alpha >= ``alpha_min``.
    min_cloud: float = 0.05
    alpha_min: float = 0.1
    #: probability of adding a second layer (thin over thick etc.).
    p_second_layer: float = 0.3
    #: hard negatives: probability that a background (clear, or under a composited cloud)
    #: is brightened by a gain from ``bright_gain``.  The gain multiplies every band alike,
    #: so bright land stays spectrally what it is (sloped, not white-flat like cloud).
    p_brighten: float = 0.3
    bright_gain: tuple[float, float] = (1.2, 2.5)
    #: the gain is capped so that the block's 99th percentile stays at or below this
    #: reflectance: nothing is clipped (clipped bands would turn white-flat, like cloud).
    bright_max: float = 0.7
    #: of the clear samples, the share drawn from the brightest quarter of the backgrounds
    #: (bare soil, sand, snow, bright roofs: the surfaces most often taken for cloud).
    p_bright_background: float = 0.3
    #: procedural cloud layers are drawn once into a bank of this many per kind and reused
    #: with random flips, rotations, opacities and brightness (the noise is the slow part).
    bank_size: int = 1500


class BlockGenerator:
    """Endless labelled blocks: real clear backgrounds with composited cloud layers, plus real cloudy blocks.

    ``backgrounds`` are clear blocks (N, 4, s, s); ``cloudy`` are real cloudy blocks
    (M, 4, s, s), possibly empty.  :meth:`sample` returns ``(x float32 (n, 4, s, s), y int64 (n,))``.
    Block labels follow the same rule as real blocks: cloudy when at least ``min_cloud``
    of the pixels are covered with ``alpha >= alpha_min``; clear blocks get no cloud at all.
    """

    def __init__(
        self,
        backgrounds: np.ndarray,
        cloudy: np.ndarray | None,
        rng: np.random.Generator,
        config: GeneratorConfig | None = None,
        style: CloudStyle | None = None,
    ) -> None:
        if backgrounds.ndim != 4 or backgrounds.shape[0] == 0:
            raise ValueError("BlockGenerator needs at least one clear background block (N, 4, s, s)")
        self.backgrounds = backgrounds
        self.cloudy = cloudy if cloudy is not None and len(cloudy) else None
        self.rng = rng
        self.config = config or GeneratorConfig()
        self.style = style or CloudStyle()
        self.size = int(backgrounds.shape[-1])
        vis = backgrounds[:, :3].mean(axis=(1, 2, 3))
        #: each background's 99th percentile over its bands (caps its brightening gain).
        self.p99 = np.quantile(backgrounds.reshape(len(backgrounds), -1), 0.99, axis=1)
        #: indices of the brightest quarter of the backgrounds (hard negatives).
        self.bright_idx = np.argsort(vis)[-max(1, len(vis) // 4) :]
        self._bank: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def layer(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """A cloud layer ``(alpha, r_c)`` from the bank (drawn on first use), randomly
        flipped and rotated; r_c is rescaled to a new brightness of the style's range."""
        cfg, rng, s = self.config, self.rng, self.size
        if cfg.bank_size <= 0:
            return cloud_layer(rng, s, kind, self.style)
        bank = self._bank.get(kind)
        if bank is None:
            bank = self._bank[kind] = [cloud_layer(rng, s, kind, self.style) for _ in range(cfg.bank_size)]
        alpha, r_c = bank[int(rng.integers(len(bank)))]
        k = int(rng.integers(4))
        flip = rng.random() < 0.5
        a = np.rot90(alpha[:, ::-1] if flip else alpha, k)
        bands = (r_c.reshape(4, -1).max(axis=1) / max(float(alpha.max()), 1e-6)).astype(np.float32)
        bright = rng.uniform(*self.style.brightness)
        bands = bands / max(float(bands.mean()), 1e-6) * np.float32(bright)
        return np.ascontiguousarray(a, np.float32), (a[None] * bands[:, None, None]).astype(np.float32)

    def background(self, bright: bool = False) -> np.ndarray:
        """A clear background block; ``bright`` draws from the brightest quarter.  With
        probability ``p_brighten`` it is brightened (every band by the same gain)."""
        cfg, rng = self.config, self.rng
        idx = self.bright_idx if bright else None
        i = int(idx[rng.integers(len(idx))]) if idx is not None else int(rng.integers(len(self.backgrounds)))
        x = self.backgrounds[i]
        if rng.random() < cfg.p_brighten:
            cap = cfg.bright_max / max(float(self.p99[i]), 1e-3)
            lo, hi = cfg.bright_gain[0], min(cfg.bright_gain[1], cap)
            if hi >= lo:
                x = x * np.float32(rng.uniform(lo, hi))
        return x

    def composite(self, bg: np.ndarray) -> np.ndarray:
        """Composite one or two random cloud layers over ``bg`` until it is clearly cloudy."""
        return self.composite_alpha(bg)[0]

    def composite_alpha(self, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`composite`, and the total opacity ``1 - (1 - a1)(1 - a2)`` of its layers."""
        cfg, rng = self.config, self.rng
        for _ in range(8):
            kind = "thin" if rng.random() < cfg.p_thin else "thick"
            alpha, r_c = self.layer(kind)
            y = compose(bg, alpha[None], r_c)
            total = alpha
            if rng.random() < cfg.p_second_layer:
                a2, r2 = self.layer("thin" if kind == "thick" else "thick")
                y = compose(y, a2[None], r2)
                total = 1.0 - (1.0 - alpha) * (1.0 - a2)
            if (total >= cfg.alpha_min).mean() >= cfg.min_cloud:
                break
        return y.astype(np.float32), total.astype(np.float32)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``: blocks (n, 4, s, s) and their block labels (n,)."""
        x, y, _ = self.sample_alpha(n, with_alpha=False)
        return x, y

    def sample_alpha(self, n: int, with_alpha: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, alpha)``: blocks, block labels, and the cloud opacity (n, s, s) where it is
        known: 0 on clear blocks, the composited layers' on synthetic ones, NaN on real
        cloudy blocks (their pixels are unlabelled)."""
        cfg, rng = self.config, self.rng
        xs = np.empty((n, 4, self.size, self.size), np.float32)
        ys = np.empty(n, np.int64)
        al = np.zeros((n, self.size, self.size), np.float32) if with_alpha else np.zeros((n, 0, 0), np.float32)
        for i in range(n):
            a: np.ndarray | None = None
            if rng.random() < cfg.p_cloudy:
                ys[i] = BLOCK_CLOUDY
                if self.cloudy is not None and rng.random() < cfg.p_real_cloudy:
                    x = self.cloudy[rng.integers(len(self.cloudy))]
                    a = np.full((self.size, self.size), np.nan, np.float32)
                else:
                    x, a = self.composite_alpha(self.background())
            else:
                ys[i] = BLOCK_CLEAR
                x = self.background(bright=rng.random() < cfg.p_bright_background)
            if with_alpha:
                a = a if a is not None else np.zeros((self.size, self.size), np.float32)
                xs[i], al[i] = augment(x, rng, alpha=a)
            else:
                xs[i] = augment(x, rng)
        return xs, ys, al


__all__ = [
    "KINDS",
    "BlockGenerator",
    "CloudStyle",
    "GeneratorConfig",
    "augment",
    "cloud_layer",
    "fractal_noise",
]
