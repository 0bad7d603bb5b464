"""Held-out figures of the restoration generator against two baselines.

Thick clouds (:class:`geocloud.training.restore.ThickComposites`, a seed of their own) are
composited over clear blocks of the **validation chips** of the shared split (never
trained on), so the background is known.  The matting model gives alpha and r_c, as in
the engine.  Each method returns a full block: the clear product (the matte inversion
where alpha_hat <= alpha_max), its holes (alpha_hat > alpha_max) filled by

* ``restore``: the generator;
* ``clamp``: the matte inversion with alpha clamped to 0.97;
* ``fillnodata``: :func:`rasterio.fill.fillnodata` (GDAL's inverse-distance fill) of the
  clear product, band by band.

Figures are measured where alpha is in (alpha_max, 0.97) and >= 0.97, alpha being the
matte's (the pixels the product fills) or the true one (every pixel of the band):
PSNR (peak 1.0 reflectance, every band; outputs clipped to [0, 1.6]) pooled over the
chips, and the mean SSIM (Gaussian window sigma 1.5, per band, data range 1) over the
region.  Per chip too, so the worst chips can be named.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..compositing import ALPHA_MAX, invert
from ..models.restore import CLAMP_ALPHA, X_CLIP, RestoreGenerator
from .data import BlockRule, load_catalog, split_chips
from .restore import ThickComposites, clear_backgrounds, matte_maps

METHODS = ("restore", "clamp", "fillnodata")
#: the alpha bands the figures are reported in: (name, low exclusive, high exclusive).
BANDS = (("0.8<a<0.97", ALPHA_MAX, CLAMP_ALPHA), ("a>=0.97", CLAMP_ALPHA, None))
EVAL_SEED = 20_180_618


def ssim_map_np(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM (C, H, W) of two (C, H, W) images, Gaussian window, data range 1."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = 0.01**2, 0.03**2

    def g(t: np.ndarray) -> np.ndarray:
        return np.stack([gaussian_filter(c, sigma, mode="reflect") for c in t])

    ma, mb = g(a), g(b)
    va, vb, cov = g(a * a) - ma**2, g(b * b) - mb**2, g(a * b) - ma * mb
    return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))


def fill_baseline(x_clear: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """rasterio.fill.fillnodata of each band of ``x_clear`` over ``holes``."""
    from rasterio.fill import fillnodata

    out = np.empty_like(x_clear)
    dist = float(max(x_clear.shape[1:]) * 2)
    for k in range(x_clear.shape[0]):
        band = np.where(holes, 0.0, x_clear[k]).astype(np.float32)
        out[k] = fillnodata(band, mask=(~holes).astype(np.uint8), max_search_distance=dist, smoothing_iterations=0)
    return out


def restore_methods(
    net: RestoreGenerator, y: np.ndarray, a_hat: np.ndarray, r_hat: np.ndarray, alpha_max: float = ALPHA_MAX
) -> dict[str, np.ndarray]:
    """Every method's full block (4, H, W) for one composite ``y`` with its matte."""
    x_clear = invert(y, a_hat[None], r_hat, alpha_max)
    holes = a_hat > alpha_max
    with torch.inference_mode():
        xg, _ = net(torch.from_numpy(y)[None], torch.from_numpy(a_hat)[None, None], torch.from_numpy(r_hat)[None])
    xg = xg[0].numpy()
    clamp = (y - r_hat) / (1.0 - np.minimum(a_hat, CLAMP_ALPHA))[None]
    out = {
        "restore": np.where(holes[None], xg, x_clear),
        "clamp": np.where(holes[None], clamp, x_clear),
        "fillnodata": fill_baseline(x_clear, holes) if holes.any() else x_clear,
    }
    return {k: np.clip(np.nan_to_num(v, nan=0.0), 0.0, X_CLIP).astype(np.float32) for k, v in out.items()}


#: the regions are the alpha bands of the true alpha (every pixel of the band: the clear
#: product's own pixels included, where all methods are the same) and of the matte's alpha
#: (the pixels the product fills, where the methods differ).
REGIONS = ("matte_alpha", "true_alpha")


def _figures(acc: dict[str, Any]) -> dict[str, Any]:
    return {
        kind: {
            b: {m: {"psnr_db": _psnr(v[0], v[1]), "ssim": v[2] / (v[1] / 4) if v[1] else None,
                    "pixels": int(v[1] // 4)} for m, v in d.items()}
            for b, d in bands.items()
        }
        for kind, bands in acc.items()
    }  # fmt: skip


def _psnr(se: float, n: int) -> float | None:
    if n == 0:
        return None
    mse = se / n
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def evaluate_restore(
    net: RestoreGenerator,
    data_dir: str | Path,
    *,
    split_seed: int = 0,
    val_fraction: float = 0.5,
    block: int = 256,
    per_block: int = 8,
    matting: Any = None,
    seed: int = EVAL_SEED,
    keep: Callable[[str, dict[str, np.ndarray]], None] | None = None,
) -> dict[str, Any]:
    """Figures on composites over the held-out chips (see the module docs).

    Returns ``{"summary": {region: {band: {method: {psnr_db, ssim, pixels}}}, "setup": ...},
    "chips": [{"chip", "blocks", region: ...}]}`` with the regions of :data:`REGIONS` and the
    methods of :data:`METHODS` plus ``oracle`` (the holes filled with the truth: the ceiling
    the clear product's own pixels leave); ``keep(chip_key, arrays)`` sees each composite.
    """
    if matting is None:
        from ..models import load_model

        matting = load_model("matting")
    chips = load_catalog(data_dir, four_band_only=True)
    split = split_chips(chips, val_fraction=val_fraction, seed=split_seed)
    rng = np.random.default_rng(seed)

    def blank() -> dict[str, dict[str, dict[str, list[float]]]]:
        return {r: {b: {m: [0.0, 0, 0.0] for m in (*METHODS, "oracle")} for b, *_ in BANDS} for r in REGIONS}

    acc = blank()  # region kind -> band -> method -> [squared error, values, SSIM sum over pixels]
    per_chip: list[dict[str, Any]] = []
    for chip in split.val:
        bgs, _ = clear_backgrounds([chip], BlockRule(size=block, stride=block))
        if not len(bgs):
            continue
        comp = ThickComposites(bgs, rng, p_thin_over=0.3, bank_size=0)
        c_acc = blank()
        for bg in bgs:
            for _ in range(per_block):
                x, y, a_true = comp.one(bg)
                a_hat, r_hat = matte_maps(matting, y[None])
                outs = restore_methods(net, y, a_hat[0, 0], r_hat[0], net.alpha_max)
                holes = a_hat[0, 0] > net.alpha_max
                # the ceiling: the holes filled with the true background, the clear product elsewhere
                outs["oracle"] = np.where(holes[None], x, outs["restore"])
                if keep is not None:
                    keep(chip.key, {"x": x, "y": y, "alpha": a_true, "alpha_hat": a_hat[0, 0], **outs})
                ssim = {m: ssim_map_np(v, x) for m, v in outs.items()}
                for kind in REGIONS:
                    a_ref = a_true if kind == "true_alpha" else a_hat[0, 0]
                    for name, lo, hi in BANDS:
                        region = (a_ref > lo) & (a_ref < hi) if hi is not None else a_ref >= lo
                        n = int(region.sum())
                        if n == 0:
                            continue
                        for m, v in outs.items():
                            se = float(((v - x)[:, region] ** 2).sum())
                            ss = float(ssim[m][:, region].mean())
                            for a in (acc, c_acc):
                                a[kind][name][m][0] += se
                                a[kind][name][m][1] += n * 4
                                a[kind][name][m][2] += ss * n
        per_chip.append({"chip": chip.key, "blocks": int(len(bgs)), **_figures(c_acc)})
    summary: dict[str, Any] = _figures(acc)
    summary["setup"] = {  # type: ignore[assignment]
        "chips": [c["chip"] for c in per_chip],
        "block": block,
        "composites_per_block": per_block,
        "seed": seed,
        "psnr_peak": 1.0,
        "clip": [0.0, X_CLIP],
    }
    return {"summary": summary, "chips": per_chip}


__all__ = ["BANDS", "METHODS", "evaluate_restore", "fill_baseline", "restore_methods", "ssim_map_np"]
