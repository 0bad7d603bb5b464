"""The cloud imaging model, written once: y = r_c + (1 - alpha) * x.

* ``y``: observed TOA reflectance, (C, H, W) or (B, C, H, W)
* ``x``: the background (what the ground would look like without the cloud)
* ``alpha``: cloud opacity / attenuation in [0, 1], (H, W) or (B, 1, H, W): broadcast over bands
* ``r_c``: the cloud's own reflectance contribution, same shape as ``y``

Zou et al., "Generative Adversarial Training for Weakly Supervised Cloud Matting", ICCV 2019.
Works on numpy arrays and torch tensors alike (only arithmetic is used).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

T = TypeVar("T")

#: Default largest opacity at which the background is still recovered by inversion.
#: Above it (1 - alpha) < 0.2 amplifies noise more than 5x, so the pixel becomes nodata.
ALPHA_MAX = 0.8


def compose(x: T, alpha: T, r_c: T) -> T:
    """Composite a cloud layer over a background: ``y = r_c + (1 - alpha) * x``."""
    return r_c + (1 - alpha) * x  # type: ignore[operator,return-value]


def invert(y: np.ndarray, alpha: np.ndarray, r_c: np.ndarray, alpha_max: float = ALPHA_MAX) -> np.ndarray:
    """Recover the background ``x = (y - r_c) / (1 - alpha)`` where ``alpha <= alpha_max``.

    Pixels with ``alpha > alpha_max`` (or non-finite inputs) are NaN.  ``alpha = 0`` and
    ``r_c = 0`` return ``y`` exactly.
    """
    if not 0.0 <= alpha_max < 1.0:
        raise ValueError(f"alpha_max {alpha_max} must be in [0, 1)")
    alpha = np.asarray(alpha, dtype=np.float32)
    ok = alpha <= alpha_max
    denom = np.where(ok, 1.0 - alpha, 1.0).astype(np.float32)
    x = (np.asarray(y, dtype=np.float32) - r_c) / denom
    return np.where(np.broadcast_to(ok, x.shape), x, np.float32(np.nan)).astype(np.float32)
