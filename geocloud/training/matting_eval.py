"""Validation of the matting model on held-out chips (never trained on).

Two kinds of figures, both on the validation chips of
:func:`geocloud.training.data.split_chips` (same seeded split as training):

* **Synthetic composites.** Procedural cloud layers
  (:func:`geocloud.training.synth.cloud_layer`, a fixed evaluation seed distinct from
  training) composited over whole validation chips; alpha and r_c are known everywhere
  and the background x where the chip is labelled clear, so only those pixels are scored.
  Reported: alpha MAE; PSNR and SSIM of the recovered background x_hat against x, where
  the true alpha <= 0.5 (clear pixels included), where 0 < alpha <= 0.5 (cloud-covered
  only), and overall (every pixel the inversion recovers, alpha_hat <= alpha_max).  PSNR
  uses a peak of 1.0 reflectance.
* **Real labelled chips.** Mean alpha by label class (clear, thin, cloud) and the ROC-AUC
  of alpha separating cloud (thick + thin) from clear pixels; ``good`` and ``coarse``
  chips are reported apart and together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.stats import rankdata

from ..compositing import ALPHA_MAX, compose, invert
from ..config import ThresholdConfig
from ..models.base import CloudModel
from ..threshold import CLEAR as CLEAR_CODE
from ..threshold import ThresholdResult, classify_result, with_growing
from .data import CLEAR, CLOUD, THIN, load_catalog, read_chip, split_chips
from .synth import cloud_layer

#: the evaluation composites' seed (training uses other streams).
EVAL_SEED = 20191027


@dataclass(frozen=True)
class EvalConfig:
    val_fraction: float = 0.5
    split_seed: int = 0
    layers_per_block: int = 4
    p_thin: float = 0.5
    alpha_max: float = ALPHA_MAX
    seed: int = EVAL_SEED
    #: spectrally non-flat haze: each layer's colour times (wavelength / red)^-gamma, gamma
    #: drawn in this range from a stream of its own (the flat composites stay the same).
    haze: bool = False
    haze_gamma: tuple[float, float] = (0.5, 2.0)
    #: bright ground: known-clear pixels whose background has a mean visible reflectance
    #: above this (snow, bright water, snow under forest; the trainer's bright backgrounds).
    bright: float = 0.3


#: the alpha bands PSNR and SSIM of x_hat are reported for (true alpha).
REGIONS = ("le05", "cloud_le05", "05_08", "overall")


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2)) if a.size else float("nan")
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def ssim_map(x: np.ndarray, y: np.ndarray, peak: float = 1.0, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004, Gaussian window) averaged over bands: (H, W)."""
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    out = np.zeros(x.shape[1:], np.float64)
    for xb, yb in zip(x.astype(np.float64), y.astype(np.float64), strict=True):
        mx, my = gaussian_filter(xb, sigma), gaussian_filter(yb, sigma)
        vx = gaussian_filter(xb * xb, sigma) - mx * mx
        vy = gaussian_filter(yb * yb, sigma) - my * my
        cxy = gaussian_filter(xb * yb, sigma) - mx * my
        out += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return out / x.shape[0]


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC-AUC via the Mann-Whitney U statistic (ties count half)."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


Refiner = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def synthetic_cases(
    data_dir: str | Path, cfg: EvalConfig
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(chip key, x (4,H,W), known (H,W), alpha (H,W), r_c (4,H,W)) over the validation chips.

    Each held-out chip gets ``layers_per_block`` procedural layers over its whole extent;
    the background is known (``known``) where the chip is labelled clear, and only those
    pixels are scored.
    """
    chips = load_catalog(data_dir, four_band_only=True)
    split = split_chips(chips, val_fraction=cfg.val_fraction, seed=cfg.split_seed)
    rng = np.random.default_rng(cfg.seed)
    haze_rng = np.random.default_rng([cfg.seed, 2])
    cases = []
    for chip in split.val:
        refl, label = read_chip(chip)
        known = label == CLEAR
        if known.mean() < 0.05:
            continue
        h, w = label.shape
        for _ in range(cfg.layers_per_block):
            kind = "thin" if rng.random() < cfg.p_thin else "thick"
            alpha, r_c = cloud_layer(rng, max(h, w), kind)
            if cfg.haze:
                from .matting import haze_tilt

                r_c = r_c * haze_tilt(haze_rng.uniform(*cfg.haze_gamma))[0][:, None, None]
            cases.append((chip.key, refl, known, alpha[:h, :w], r_c[:, :h, :w]))
    return cases


#: a detector for the gate, or one per chip key (e.g. the cross-validation fold's that held
#: the chip out, so the gate never saw the chip it gates).
Gate = CloudModel | Callable[[str], CloudModel]


def _gate_for(gate: Gate, key: str) -> CloudModel:
    return gate if isinstance(gate, CloudModel) else gate(key)


def gate_clear(gate: CloudModel, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Where ``gate``'s mask says clear for reflectance ``y`` (C, H, W): the engine's mask
    rule at the model's default threshold, edges grown (as ``geocloud process`` gates the
    clear product)."""
    score = gate.predict(y[None], valid).maps["score"][0, 0]
    fixed = ThresholdResult(float(gate.spec.default_threshold), "fixed: the model's default threshold")
    return classify_result(score, with_growing(fixed, gate.spec, ThresholdConfig())) == CLEAR_CODE


def evaluate_synthetic(
    model: CloudModel,
    data_dir: str | Path,
    cfg: EvalConfig | None = None,
    refine: Refiner | None = None,
    exclude: tuple[str, ...] = (),
    gate: Gate | None = None,
) -> dict[str, Any]:
    """Alpha MAE and background PSNR/SSIM of composites over held-out chips' clear pixels.

    Chips whose key contains any string of ``exclude`` are skipped (e.g. ``("SnowIce",)``).
    ``gate``: a detector whose mask (its ``spec.default_threshold`` and edge growing, the
    rule of :func:`geocloud.threshold.classify`) sets alpha and r_c to 0 where clear, as
    ``geocloud process`` does with its mask (the pipeline's clear product).
    """
    cfg = cfg or EvalConfig()
    cases = [c for c in synthetic_cases(data_dir, cfg) if not any(e in c[0] for e in exclude)]
    err_a: list[np.ndarray] = []
    err_bright: list[np.ndarray] = []
    sq: dict[str, list[float]] = {k: [] for k in REGIONS}
    n: dict[str, int] = {k: 0 for k in sq}
    ss: dict[str, list[np.ndarray]] = {k: [] for k in sq}
    recovered = 0
    total = 0
    per_chip: dict[str, list[float]] = {}
    chip_sq: dict[str, dict[str, list[float]]] = {}
    chip_bright: dict[str, list[np.ndarray]] = {}
    for key, x, known, alpha, r_c in cases:
        y = compose(x, alpha[None], r_c).astype(np.float32)
        valid = np.ones((1, *alpha.shape), bool)
        pred = model.predict(y[None], valid)
        a_hat = pred.maps["alpha"][0, 0]
        r_hat = pred.maps["reflectance"][0]
        if refine is not None:
            a_hat, r_hat = refine(y, a_hat, r_hat)
            a_hat = a_hat.reshape(alpha.shape)
        if gate is not None:
            clear = gate_clear(_gate_for(gate, key), y, valid)
            a_hat = np.where(clear, 0.0, a_hat).astype(np.float32)
            r_hat = np.where(clear[None], 0.0, r_hat).astype(np.float32)
        e = np.abs(a_hat - alpha)[known]
        err_a.append(e)
        per_chip.setdefault(key, []).append(float(e.mean()))
        bright = known & (x[:3].mean(axis=0) > cfg.bright)
        if bright.any():
            eb = np.abs(a_hat - alpha)[bright]
            err_bright.append(eb)
            chip_bright.setdefault(key, []).append(eb)
        x_hat = invert(y, a_hat[None], r_hat, cfg.alpha_max)
        ok = np.isfinite(x_hat).all(axis=0) & known
        recovered += int(ok.sum())
        total += int(known.sum())
        filled = np.where(np.isfinite(x_hat), x_hat, x)
        smap = ssim_map(filled, x)
        regions = {
            "le05": ok & (alpha <= 0.5),
            "cloud_le05": ok & (alpha > 0.0) & (alpha <= 0.5),
            "05_08": ok & (alpha > 0.5) & (alpha <= 0.8),
            "overall": ok,
        }
        cs = chip_sq.setdefault(key, {k: [0.0, 0] for k in regions})
        for k, m in regions.items():
            d = (x_hat[:, m] - x[:, m]).astype(np.float64)
            sq[k].append(float((d * d).sum()))
            n[k] += int(d.size)
            ss[k].append(smap[m])
            cs[k][0] += float((d * d).sum())
            cs[k][1] += int(d.size)
    out: dict[str, Any] = {
        "n_composites": len(cases),
        "n_chips": len(per_chip),
        "haze": cfg.haze,
        "alpha_mae": float(np.concatenate(err_a).mean()),
        "alpha_mae_bright": float(np.concatenate(err_bright).mean()) if err_bright else None,
        "bright_pixels": int(sum(e.size for e in err_bright)),
        "recovered_fraction": recovered / max(total, 1),
        "psnr_peak": 1.0,
    }
    for k in sq:
        mse = sum(sq[k]) / max(n[k], 1)
        out[f"psnr_{k}"] = float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")
        vals = np.concatenate(ss[k]) if ss[k] else np.zeros(0)
        out[f"ssim_{k}"] = float(vals.mean()) if vals.size else float("nan")

    def db(v: list[float]) -> float | None:
        return round(float(10 * np.log10(v[1] / v[0])), 2) if v[0] > 0 else (None if v[1] == 0 else float("inf"))

    out["alpha_mae_by_chip"] = {k: round(float(np.mean(v)), 4) for k, v in per_chip.items()}
    out["psnr_le05_by_chip"] = {k: db(v["le05"]) for k, v in chip_sq.items()}
    out["psnr_05_08_by_chip"] = {k: db(v["05_08"]) for k, v in chip_sq.items()}
    out["alpha_mae_bright_by_chip"] = {
        k: round(float(np.concatenate(v).mean()), 4) for k, v in chip_bright.items()
    }
    ranked = sorted(chip_sq, key=lambda k: (out["psnr_le05_by_chip"][k] or 0.0))
    out["worst_chips"] = [
        {
            "chip": k,
            "psnr_le05": out["psnr_le05_by_chip"][k],
            "psnr_05_08": out["psnr_05_08_by_chip"][k],
            "alpha_mae": out["alpha_mae_by_chip"][k],
        }
        for k in ranked[:5]
    ]
    return out


def evaluate_real(
    model: CloudModel,
    data_dir: str | Path,
    cfg: EvalConfig | None = None,
    gate: Gate | None = None,
    exclude: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Mean alpha by class and ROC-AUC of alpha (cloud+thin vs clear) on held-out labelled chips.

    ``gate``: alpha is set to 0 where the detector's mask says clear (:func:`gate_clear`), the
    opacity the pipeline's clear product inverts.
    """
    cfg = cfg or EvalConfig()
    chips = load_catalog(data_dir, four_band_only=True)
    split = split_chips(chips, val_fraction=cfg.val_fraction, seed=cfg.split_seed)
    per: dict[str, dict[int, list[np.ndarray]]] = {"good": {}, "coarse": {}}
    per_chip = []
    bright_clear: list[np.ndarray] = []
    for chip in split.val:
        if any(e in chip.key for e in exclude):
            continue
        refl, label = read_chip(chip)
        valid = label != 255
        pred = model.predict(refl[None], valid[None])
        a = pred.maps["alpha"][0, 0]
        if gate is not None:
            a = np.where(gate_clear(_gate_for(gate, chip.key), refl, valid[None]), np.float32(0.0), a)
        for cls in (CLEAR, CLOUD, THIN):
            per[chip.label_quality].setdefault(cls, []).append(a[label == cls])
        cm = (label == CLOUD) | (label == THIN)
        bright = (label == CLEAR) & (refl[:3].mean(axis=0) > cfg.bright)
        if bright.any():
            bright_clear.append(a[bright])
        per_chip.append(
            {
                "chip": chip.key,
                "quality": chip.label_quality,
                "cloud_frac": round(float(cm[valid].mean()), 3) if valid.any() else None,
                "mean_alpha": round(float(a[valid].mean()), 3) if valid.any() else None,
                "bright_clear_pixels": int(bright.sum()),
                "mean_alpha_bright_clear": round(float(a[bright].mean()), 3) if bright.any() else None,
            }
        )

    def summary(groups: dict[int, list[np.ndarray]]) -> dict[str, Any]:
        cat = {c: np.concatenate(v) if v else np.zeros(0) for c, v in groups.items()}
        clear = cat.get(CLEAR, np.zeros(0))
        thick = cat.get(CLOUD, np.zeros(0))
        thin = cat.get(THIN, np.zeros(0))
        cloud = np.concatenate([thick, thin])
        return {
            "mean_alpha_clear": float(clear.mean()) if clear.size else None,
            "mean_alpha_thin": float(thin.mean()) if thin.size else None,
            "mean_alpha_thick": float(thick.mean()) if thick.size else None,
            "auc_cloud_vs_clear": roc_auc(cloud, clear),
            "pixels": {"clear": int(clear.size), "thin": int(thin.size), "thick": int(thick.size)},
        }

    both: dict[int, list[np.ndarray]] = {}
    for q in per.values():
        for c, v in q.items():
            both.setdefault(c, []).extend(v)
    bc = np.concatenate(bright_clear) if bright_clear else np.zeros(0)
    return {
        # real bright ground labelled clear (snow, bright water): alpha should be 0
        "bright_clear": {"pixels": int(bc.size), "alpha_mae": float(bc.mean()) if bc.size else None},
        "good": summary(per["good"]),
        "coarse": summary(per["coarse"]),
        "all": summary(both),
        "chips": per_chip,
    }
