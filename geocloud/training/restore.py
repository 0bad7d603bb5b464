"""Training the attentive restoration generator (:mod:`geocloud.models.restore`).

No pixel labels are needed: the truth is made.

1. **Backgrounds.** Real chips are split with :func:`geocloud.training.data.split_chips`
   (the same seeded split as the CAM and matting models; the validation chips are never
   trained on).  From the training chips: blocks labelled clear, plus unlabelled imagery
   that :func:`~geocloud.training.data.looks_clear` accepts.
2. **Thick clouds** from the existing procedural generator
   (:meth:`geocloud.training.synth.BlockGenerator.layer`, opaque cores with soft edges,
   sometimes under a thin layer) are composited over an augmented background with the
   compositing model (:func:`geocloud.compositing.compose`), so the true background x is
   known.
3. **The matte** of the composite is what the engine gives: the matting model's maps
   ``alpha`` and ``reflectance`` (r_c), so the generator learns to work with the matte's
   errors, not with the true layer.
4. **Losses** (Qian et al. 2018): L1 and (1 - SSIM) against the true background, weighted
   to the attended region (where the clear product is nodata or the true alpha exceeds
   alpha_max; a small weight elsewhere), the attention loss (MSE of A against the
   true-alpha > alpha_max mask), and an LSGAN adversarial loss from the attentive
   discriminator, which sees the generated pixels pasted into the true surroundings.

Seeded: same data, seed, steps and thread count give the same weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from ..compositing import ALPHA_MAX, compose
from ..errors import InputError
from ..models.restore import (
    HALO,
    RECEPTIVE_RADIUS,
    SIDECAR_FILE,
    WEIGHTS_FILE,
    AttentiveDiscriminator,
    RestoreGenerator,
    save_weights,
)
from .data import (
    BlockRule,
    chip_list_hash,
    extract_blocks,
    load_catalog,
    read_chip,
    split_chips,
    unlabelled_clear_blocks,
)
from .synth import BlockGenerator, CloudStyle, GeneratorConfig, augment

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: the thick-cloud style of the composites: cores from 0.85 to fully opaque, a fraction
#: of the block covered (so the generator sees the cloud's measured surroundings).
THICK_STYLE = CloudStyle(thick_coverage=(0.1, 0.6), thick_alpha_max=(0.85, 1.0), p_overcast=0.0,
                         thin_alpha_max=(0.1, 0.4))  # fmt: skip


@dataclass(frozen=True)
class RestoreTrainConfig:
    """Every default of ``geocloud train restore``."""

    seed: int = 0
    #: the chip split (shared with the CAM and matting trainers).
    val_fraction: float = 0.5
    split_seed: int = 0
    block: int = 128
    block_stride: int = 64
    batch: int = 8
    steps: int = 900
    lr: float = 1e-3
    d_lr: float = 2e-4
    width: int = 16
    #: loss weights.
    w_l1: float = 1.0
    w_ssim: float = 0.5
    w_att: float = 0.2
    w_adv: float = 0.01
    #: weight of the pixels outside the attended region in L1 / SSIM.
    w_outside: float = 0.05
    #: probability of a thin layer over the thick one.
    p_thin_over: float = 0.3
    #: layers drawn once into a bank and reused with flips and rotations.
    bank_size: int = 300
    threads: int = 1
    alpha_max: float = ALPHA_MAX

    def validate(self) -> None:
        if self.block % 8:
            raise InputError(f"block {self.block} must be a multiple of 8; pass e.g. --block 128")


@dataclass
class RestoreData:
    backgrounds: np.ndarray  # (N, 4, s, s) reflectance
    train_keys: list[str] = field(default_factory=list)
    val_keys: list[str] = field(default_factory=list)
    train_hash: str = ""


def clear_backgrounds(chips: Any, rule: BlockRule, unlabelled: Any = ()) -> tuple[np.ndarray, list[str]]:
    """Clear blocks of ``chips`` (labelled clear) and of ``unlabelled`` (passing the clear check),
    with the chip key of each."""
    xs: list[np.ndarray] = []
    src: list[str] = []
    for chip in chips:
        refl, label = read_chip(chip)
        b = extract_blocks(refl, label, quality=chip.label_quality, rule=rule, source=chip.key)
        for x, y in zip(b.x, b.y, strict=True):
            if y == 0:
                xs.append(x)
                src.append(chip.key)
    for chip in unlabelled:
        refl, _ = read_chip(chip)
        b = unlabelled_clear_blocks(refl, rule=rule, source=chip.key)
        xs.extend(list(b.x))
        src.extend([chip.key] * len(b))
    s = rule.size
    return (np.stack(xs).astype(np.float32) if xs else np.zeros((0, 4, s, s), np.float32)), src


def load_restore_data(data_dir: str | Path, cfg: RestoreTrainConfig) -> RestoreData:
    chips = load_catalog(data_dir, four_band_only=True)
    if not chips:
        raise InputError(f"no 4-band chips in {data_dir}/catalog.csv; pass --data with the shared data folder")
    split = split_chips(chips, val_fraction=cfg.val_fraction, seed=cfg.split_seed)
    bg, _ = clear_backgrounds(split.train, BlockRule(size=cfg.block, stride=cfg.block_stride), split.unlabelled)
    if not len(bg):
        raise InputError(f"the training chips of {data_dir} gave no clear {cfg.block}px blocks to composite over")
    return RestoreData(
        backgrounds=bg,
        train_keys=[c.key for c in split.train] + [c.key for c in split.unlabelled],
        val_keys=[c.key for c in split.val],
        train_hash=chip_list_hash(list(split.train) + list(split.unlabelled)),
    )


# --------------------------------------------------------------------------- composites
class ThickComposites:
    """Thick clouds over clear backgrounds: ``(x, y, alpha)`` with the true background ``x``.

    The layers come from :class:`~geocloud.training.synth.BlockGenerator` (its bank of
    procedural layers) with :data:`THICK_STYLE`; a thin layer is laid over with
    probability ``p_thin_over``; the two are composited with :func:`compose`.
    """

    def __init__(self, backgrounds: np.ndarray, rng: np.random.Generator, p_thin_over: float = 0.3,
                 bank_size: int = 300) -> None:  # fmt: skip
        self.gen = BlockGenerator(backgrounds, None, rng, GeneratorConfig(bank_size=bank_size, p_brighten=0.0),
                                  THICK_STYLE)  # fmt: skip
        self.rng, self.p_thin_over = rng, p_thin_over

    def one(self, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = augment(bg, self.rng)
        assert isinstance(x, np.ndarray)
        for _ in range(8):
            a, r_c = self.gen.layer("thick")
            if (a > ALPHA_MAX).mean() >= 0.03:
                break
        y = compose(x, a[None], r_c)
        total = a
        if self.rng.random() < self.p_thin_over:
            a2, r2 = self.gen.layer("thin")
            y = compose(y, a2[None], r2)
            total = 1.0 - (1.0 - a) * (1.0 - a2)
        return x, y.astype(np.float32), total.astype(np.float32)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = self.rng.integers(len(self.gen.backgrounds), size=n)
        out = [self.one(self.gen.backgrounds[i]) for i in idx]
        return tuple(np.stack(v) for v in zip(*out, strict=True))  # type: ignore[return-value]


def matte_maps(matting: Any, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The engine's maps ``alpha`` (B,1,H,W) and ``reflectance`` (B,4,H,W) for blocks ``y``,
    from a matting :class:`~geocloud.models.base.CloudModel`."""
    valid = np.ones((y.shape[0], y.shape[2], y.shape[3]), bool)
    pred = matting.predict(y, valid)
    return pred.maps["alpha"].astype(np.float32), pred.maps["reflectance"].astype(np.float32)


# --------------------------------------------------------------------------- losses
def ssim_map(a: torch.Tensor, b: torch.Tensor, win: int = 7) -> torch.Tensor:
    """Per-pixel SSIM (B,C,H,W) with a uniform ``win`` x ``win`` window, data range 1."""
    c1, c2 = 0.01**2, 0.03**2
    pad = win // 2

    def mean(t: torch.Tensor) -> torch.Tensor:
        return nnf.avg_pool2d(nnf.pad(t, (pad,) * 4, mode="replicate"), win, 1)

    ma, mb = mean(a), mean(b)
    va = mean(a * a) - ma * ma
    vb = mean(b * b) - mb * mb
    cov = mean(a * b) - ma * mb
    return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))


def _weighted(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (v * w).sum() / (w.sum() * v.shape[1]).clamp_min(1e-6)


@dataclass
class RestoreTrainResult:
    net: RestoreGenerator
    meta: dict[str, Any]


def train_restore(
    data_dir: str | Path | None,
    cfg: RestoreTrainConfig | None = None,
    progress: Progress | None = None,
    *,
    data: RestoreData | None = None,
    matting: Any = None,
) -> RestoreTrainResult:
    """Train the generator and its attentive discriminator; ``data`` and ``matting`` may be
    given (tests); otherwise they are read from ``data_dir`` and the shipped matting model."""
    cfg = cfg or RestoreTrainConfig()
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    if data is None:
        if data_dir is None:
            raise InputError("train_restore needs data_dir or data")
        data = load_restore_data(data_dir, cfg)
    if matting is None:
        from ..models import load_model

        matting = load_model("matting")
    log.info("restore data: %d clear backgrounds", len(data.backgrounds))
    comp = ThickComposites(data.backgrounds, np.random.default_rng([cfg.seed, 1]), cfg.p_thin_over, cfg.bank_size)
    g = RestoreGenerator(width=cfg.width, alpha_max=cfg.alpha_max)
    d = AttentiveDiscriminator()
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.d_lr, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt_g, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, cfg.steps) / max(cfg.steps, 1)))
    )
    stats: dict[str, float] = {}
    for step in range(cfg.steps):
        x_np, y_np, a_np = comp.batch(cfg.batch)
        a_hat_np, r_hat_np = matte_maps(matting, y_np)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        a_true = torch.from_numpy(a_np)[:, None]
        a_hat, r_hat = torch.from_numpy(a_hat_np), torch.from_numpy(r_hat_np)
        x_hat, att = g(y, a_hat, r_hat)
        thick = (a_true > cfg.alpha_max).float()
        region = torch.maximum(thick, (a_hat > cfg.alpha_max).float())
        w = cfg.w_outside + region
        l1 = _weighted((x_hat - x).abs(), w)
        l_ssim = 1.0 - _weighted(ssim_map(x_hat, x), w)
        l_att = ((att - thick) ** 2).mean()
        # the attentive discriminator: generated pixels pasted into the true surroundings
        fake = att * x_hat + (1 - att) * x
        if cfg.w_adv > 0:
            opt_d.zero_grad()
            s_real, p_real = d(x, att.detach())
            s_fake, p_fake = d(fake.detach(), att.detach())
            d_loss = 0.5 * (_weighted((s_real - 1) ** 2, p_real) + _weighted(s_fake**2, p_fake))
            d_loss.backward()
            opt_d.step()
            s_gen, p_gen = d(fake, att)
            adv = _weighted((s_gen - 1) ** 2, p_gen.detach())
        else:
            d_loss = adv = torch.zeros(())
        loss = cfg.w_l1 * l1 + cfg.w_ssim * l_ssim + cfg.w_att * l_att + cfg.w_adv * adv
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        sched.step()
        stats = {"l1": float(l1.detach()), "ssim_loss": float(l_ssim.detach()), "att": float(l_att.detach()),
                 "adv": float(adv.detach()), "d": float(d_loss.detach())}  # fmt: skip
        if progress is not None:
            progress(step + 1, cfg.steps)
        if step % 100 == 0:
            log.info("restore step %d: %s", step, {k: round(v, 4) for k, v in stats.items()})
    minutes = (time.perf_counter() - t0) / 60
    meta: dict[str, Any] = {
        "model": "attentive restoration generator (after Qian et al. CVPR 2018): alpha-initialised attention, "
        "encoder / dilated context / decoder, attentive patch discriminator",
        "block_size": cfg.block,
        "halo": HALO,
        "receptive_radius": RECEPTIVE_RADIUS,
        "training": {
            "config": asdict(cfg),
            "train_chips": data.train_keys,
            "val_chips": data.val_keys,
            "train_chip_hash": data.train_hash,
            "n_backgrounds": int(len(data.backgrounds)),
            "matting_weights_sha256": _matting_sha(),
            "final": stats,
            "minutes": round(minutes, 1),
            "torch": torch.__version__,
            "threads": cfg.threads,
        },
    }
    return RestoreTrainResult(net=g.eval(), meta=meta)


def _matting_sha() -> str | None:
    try:
        from ..models.weights import WeightsMeta

        return WeightsMeta.read("matting").sha256
    except Exception:  # noqa: BLE001 - informative only
        return None


def save_result(result: RestoreTrainResult, out_dir: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """Write ``restore.safetensors`` + ``restore.json`` (with ``weights_sha256``) to ``out_dir``."""
    import hashlib
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(result.meta)
    if metrics is not None:
        meta["validation"] = metrics
    weights = out / WEIGHTS_FILE.name
    side = out / SIDECAR_FILE.name
    save_weights(result.net, meta, weights, side)
    doc = json.loads(side.read_text())
    doc["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    side.write_text(json.dumps(doc, indent=2) + "\n")
    return weights


__all__ = ["RestoreTrainConfig", "ThickComposites", "load_restore_data", "save_result", "ssim_map", "train_restore"]
