"""The spectral baseline: a per-pixel fuzzy cloud score from 4-band TOA reflectance.

Clouds are bright in every visible band, spectrally flat ("white"), brighter in blue
than haze-free land (the haze-optimised transform) and not vegetated.  Each test is a
smooth ramp in [0, 1] and the score is their product:

* brightness: ``min(blue, green, red)`` ramps from 0.10 to 0.30 (Fmask's "bright" test
  uses the visible mean > 0.2 with SWIR; without SWIR the minimum is stricter);
* whiteness: ``sum(|b - mean|) / mean`` over the visible bands ramps *down* from 0.15 to
  0.70 (Zhu & Woodcock 2012, Fmask: whiteness < 0.7);
* haze-optimised transform: ``HOT = blue - 0.5 * red - 0.08`` (Zhang et al. 2002) ramps from
  -0.08 to 0.04 (Fmask: HOT > 0);
* vegetation: NDVI ramps *down* from 0.35 to 0.70.

It needs no context (halo 0) and no weights.  It cannot tell snow or ice from cloud
(there is no SWIR band) and flags bright white roofs: those are its known false positives.
Its accuracy on the shared chips is in the README.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import CloudModel, ModelSpec, Prediction

if TYPE_CHECKING:  # torch is imported only by the networks that use the torch form
    import torch


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, linear between (float32)."""
    out = x - np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    return out


def spectral_score(x: np.ndarray) -> np.ndarray:
    """Cloud score in [0, 1] of reflectance ``x`` (..., 4, H, W) -> (..., H, W) float32."""
    blue, green, red, nir = (x[..., i, :, :] for i in range(4))
    vis_min = np.minimum(np.minimum(blue, green), red)
    score = _ramp(vis_min, 0.10, 0.30)
    mean = (blue + green + red) / np.float32(3.0)
    dev = np.abs(blue - mean) + np.abs(green - mean) + np.abs(red - mean)
    whiteness = dev / np.maximum(mean, np.float32(1e-3))
    score *= 1.0 - _ramp(whiteness, 0.15, 0.70)
    score *= _ramp(blue - 0.5 * red - np.float32(0.08), -0.08, 0.04)
    ndvi = (nir - red) / np.maximum(nir + red, np.float32(1e-3))
    score *= 1.0 - _ramp(ndvi, 0.35, 0.70)
    return score.astype(np.float32, copy=False)


def spectral_score_torch(x: torch.Tensor) -> torch.Tensor:
    """:func:`spectral_score` in torch, for networks that take it as an input feature:
    reflectance (B, 4, H, W) -> (B, 1, H, W), the same ramps and thresholds."""

    def ramp(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return ((v - lo) / (hi - lo)).clamp(0.0, 1.0)

    blue, green, red, nir = x[:, 0:1], x[:, 1:2], x[:, 2:3], x[:, 3:4]
    score = ramp(blue.minimum(green).minimum(red), 0.10, 0.30)
    mean = (blue + green + red) / 3.0
    dev = (blue - mean).abs() + (green - mean).abs() + (red - mean).abs()
    score = score * (1.0 - ramp(dev / mean.clamp(min=1e-3), 0.15, 0.70))
    score = score * ramp(blue - 0.5 * red - 0.08, -0.08, 0.04)
    ndvi = (nir - red) / (nir + red).clamp(min=1e-3)
    return score * (1.0 - ramp(ndvi, 0.35, 0.70))


class SpectralModel(CloudModel):
    """Per-pixel spectral score; see the module docstring."""

    def __init__(self) -> None:
        self.spec = ModelSpec(
            name="spectral",
            halo=0,
            feather=0,  # per pixel: every block gives the same value, blending is wasted work
            block_multiple=1,
            block_size=1024,
            outputs={"score": 1},
            clear_mu=0.02,
            clear_sigma=0.04,
            threshold_k=4.0,
            default_threshold=0.2,
            extra={"reference": "brightness, whiteness (Fmask), HOT (Zhang 2002), NDVI fuzzy product"},
        )

    def predict(self, x: np.ndarray, valid: np.ndarray) -> Prediction:
        # block by block: the temporaries stay small enough for the CPU caches
        score = np.empty((x.shape[0], 1) + x.shape[2:], dtype=np.float32)
        for i in range(x.shape[0]):
            score[i, 0] = spectral_score(x[i])
            score[i, 0][~valid[i]] = 0.0
        return Prediction(maps={"score": score})


def load(device: str = "cpu") -> SpectralModel:
    return SpectralModel()
