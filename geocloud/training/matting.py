"""Training the cloud-matting networks (G, D, F of :mod:`geocloud.models.matting`).

Recipe (weak supervision, after Zou et al. ICCV 2019):

1. **Data.** Real chips are split with :func:`geocloud.training.data.split_chips` (the
   same seeded split as the CAM model, so validation chips are never trained on).  From
   the training chips: *clear backgrounds* (blocks labelled clear, plus unlabelled
   imagery that :func:`~geocloud.training.data.looks_clear` accepts) and *real cloudy
   blocks* (blocks labelled cloudy; from ``good`` chips with their pixel labels).
2. **GAN.** G paints a cloud layer (alpha, colour) conditioned on a real cloudy block
   plus noise; the layer is composited over a random clear background; D (LSGAN) tells
   composites from real cloudy blocks.  G's loss adds a spectral-flatness prior on the
   cloud colour (the bands of ``r_c / alpha`` should be nearly equal: white-grey) and a
   weak coverage prior (mean alpha follows the real block's labelled cloud fraction).
3. **Matting net F**, trained on triplets (x, alpha, r_c) where the layer comes from G
   or from the procedural generator (:func:`geocloud.training.synth.cloud_layer`), or is
   empty (clear blocks): L1 on alpha, on r_c and on the recomposed y.  A small hinge term
   on real ``good``-labelled cloudy blocks keeps alpha high on labelled cloud and low on
   labelled clear pixels.

Everything is seeded: same data, seed and step counts give the same weights (on the
same torch build and thread count).  Library code: no printing, progress through a
callback and ``logging``.
"""

from __future__ import annotations

import hashlib
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
from ..models.matting import (
    FINE,
    POOL,
    SIDECAR_FILE,
    WEIGHTS_FILE,
    CloudDiscriminator,
    CloudGenerator,
    MattingNet,
    MattingUNet,
    matte,
    pooled_features,
    save_weights,
    upsample,
)
from .data import (
    CLEAR,
    CLOUD,
    NODATA,
    THIN,
    BlockRule,
    Blocks,
    chip_list_hash,
    extract_blocks,
    load_catalog,
    read_chip,
    split_chips,
    unlabelled_clear_blocks,
)
from .synth import CloudStyle, cloud_layer

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class MattingTrainConfig:
    """Every default of ``geocloud train matting``."""

    seed: int = 0
    #: the chip split (shared with the CAM trainer: same function, same defaults).
    val_fraction: float = 0.5
    split_seed: int = 0
    #: training block side (pixels; a multiple of the model's pooling factor).
    block: int = 128
    block_stride: int = 32
    batch: int = 32
    #: GAN phase.
    gan_steps: int = 1000
    gan_lr: float = 2e-4
    flat_weight: float = 10.0
    coverage_weight: float = 1.0
    #: matting-net phase.
    f_steps: int = 7000
    f_lr: float = 2e-3
    width: int = 32
    #: F also takes each cell's darkest and brightest visible value (the dark channel).
    #: (Third session, with w_background 1: alpha MAE 0.106 -> 0.099, PSNR a<=0.5 18.8 ->
    #: 20.5 dB, AUC 0.855 -> 0.879; the loss alone: 0.115, 19.5 dB, 0.856.)
    extremes: bool = True
    #: mix of the layers F is trained on: share from G, share procedural; the rest is clear.
    p_gan_layer: float = 0.35
    p_procedural: float = 0.5
    #: bright clear backgrounds (mean visible reflectance > 0.3: snow, sand, turbid water)
    #: are drawn this many times more often for F, to teach "bright is not always cloud".
    #: (1.0: uniform.  A run with 6.0 and 25 % clear blocks was worse on every validation
    #: figure: alpha MAE 0.125 vs 0.107, AUC 0.852 vs 0.874.)
    bright_boost: float = 1.0
    #: weights of the F losses.
    w_alpha: float = 1.0
    w_rc: float = 1.0
    w_recompose: float = 1.0
    w_real: float = 0.2
    #: L1 on the recovered background x_hat = (y - r_c_hat) / (1 - alpha_hat) against the true
    #: x, where the true alpha <= alpha_max (alpha_hat clamped there too).  This is what the
    #: clear product is made of: where alpha is ambiguous (bright, flat ground), it teaches F
    #: a cloud colour that leaves the ground unchanged instead of inventing a dark one.
    #: (3.0 with the extremes: alpha MAE 0.105, PSNR 18.1 dB, AUC 0.870, worse than 1.0.)
    w_background: float = 1.0
    # The options below are off by default: the shipped weights are the 0.2 recipe.  With
    # them on (docs/matting.md, "Full-resolution head: measured, not shipped"), 5000 F steps,
    # the held-out figures were worse than the shipped weights' on every aggregate.
    #: L1 on x_hat where the true alpha <= 0.5 (added to the one above: thin cloud is where the
    #: clear product is meant to be used). Measured with 1.0.
    w_background_thin: float = 0.0
    #: the full-resolution per-pixel head: context channels brought to full resolution, and
    #: hidden channels of its per-pixel MLP (0: the local linear model alone). Measured: 8, 16.
    guide: int = 0
    hidden: int = 16
    #: hard negatives: of the clear blocks F sees (no cloud layer, target alpha = 0), this
    #: share is drawn from the bright backgrounds (snow, bright water, snow under forest).
    #: Measured: 0.5.
    p_bright_negative: float = 0.0
    #: share of the procedural layers given a spectrally non-flat colour (haze: the cloud
    #: colour times (wavelength / red)^-gamma, gamma 0.5..2, so blue > green > red > nir).
    #: Measured: 0.3.
    p_haze: float = 0.0
    #: F's pixel losses are taken on a random crop of this side in each step (the nets still
    #: see the whole block; 0: the whole block): the full-resolution head costs 4x per step on
    #: whole blocks. Measured: 64.
    crop: int = 0
    #: procedural layers are drawn over this many times the block's side (one chosen at random
    #: per layer) and cropped to the block: clouds and haze wider than a block, as in real
    #: scenes and in the evaluation's chip-wide layers.  (1,): the 0.2 recipe.  Measured with
    #: (1, 2, 4): +0.6 dB where 0.5 < alpha <= 0.8, -0.4 dB where alpha <= 0.5 (docs/matting.md).
    layer_scales: tuple[int, ...] = (1,)
    #: partial backgrounds: blocks of the labelled training chips whose labelled-clear pixels
    #: (8 px or more from any cloud) make up at least this share also serve as backgrounds for F,
    #: its losses taken on those pixels only (0: only wholly clear blocks, the 0.2 recipe).  The
    #: wholly clear labelled blocks come from 3 of the 18 labelled training chips (snow, water,
    #: shrubland); partly cloudy chips hold the rest of the ground.
    partial_clear: float = 0.0
    #: F's architecture: "cells" (:class:`~geocloud.models.matting.MattingNet`, alpha by a local
    #: linear model from 8x8 cells) or "unet" (:class:`~geocloud.models.matting.MattingUNet`,
    #: alpha at 1/2 resolution), with ``unet_widths`` channels at 1/2, 1/4 and 1/8.  Measured
    #: (9000 F steps, 55.6 min): worse on held-out chips, alpha MAE 0.104 against 0.093.
    arch: str = "cells"
    unet_widths: tuple[int, int, int] = (16, 32, 48)
    #: F's learning rate for the U-Net (``f_lr`` is the cells net's).
    unet_lr: float = 1e-3
    #: procedural layers are drawn once into a bank (then flipped/rotated/scaled).
    bank_size: int = 1200
    threads: int = 1
    alpha_max: float = ALPHA_MAX

    def validate(self) -> None:
        if self.block % (4 * POOL) != 0:
            raise InputError(f"block {self.block} must be a multiple of {4 * POOL}; pass e.g. --block 128")
        if self.partial_clear > 0 and self.p_bright_negative > 0:
            raise InputError("partial_clear and p_bright_negative cannot be combined; set one of them to 0")
        if self.arch not in ("cells", "unet"):
            raise InputError(f"matting architecture {self.arch!r} is unknown; use 'cells' or 'unet'")
        if self.p_gan_layer + self.p_procedural > 1.0:
            raise InputError("p_gan_layer + p_procedural must be at most 1")


# --------------------------------------------------------------------------- data
@dataclass
class MattingData:
    """Training material: clear backgrounds and real cloudy blocks (with pixel labels)."""

    backgrounds: np.ndarray  # (N, 4, s, s) reflectance
    cloudy: np.ndarray  # (M, 4, s, s)
    cloudy_label: np.ndarray  # (M, s, s) uint8: 0 clear 1 cloud 2 thin 255 unknown (coarse chips: all 255)
    cloudy_frac: np.ndarray  # (M,)
    train_keys: list[str] = field(default_factory=list)
    val_keys: list[str] = field(default_factory=list)
    train_hash: str = ""
    #: sampling probabilities of the backgrounds for F (see ``bright_boost``).
    bg_weights: np.ndarray | None = None
    #: which backgrounds are bright (mean visible reflectance > 0.3): the hard negatives.
    bright: np.ndarray | None = None
    #: with ``partial_clear``: the pixels of each background F is scored on (N, s, s) bool, and
    #: how many of the first backgrounds are wholly clear (the GAN composites only over those).
    bg_mask: np.ndarray | None = None
    n_whole: int = 0


def _labelled_blocks(refl: np.ndarray, label: np.ndarray, quality: str, rule: BlockRule, key: str) -> Blocks:
    # extract_blocks slices every leading channel alike, so the label rides along as a 5th.
    stacked = np.concatenate([refl, label[None].astype(np.float32)])
    return extract_blocks(stacked, label, quality=quality, rule=rule, source=key)


def load_matting_data(data_dir: str | Path, cfg: MattingTrainConfig) -> MattingData:
    """Cut the training chips of the shared split into backgrounds and real cloudy blocks."""
    chips = load_catalog(data_dir, four_band_only=True)
    if not chips:
        raise InputError(
            f"no 4-band chips in {data_dir}/catalog.csv; pass --data with the shared data folder"
        )
    split = split_chips(chips, val_fraction=cfg.val_fraction, seed=cfg.split_seed)
    rule = BlockRule(size=cfg.block, stride=cfg.block_stride)
    bgs: list[np.ndarray] = []
    cl: list[np.ndarray] = []
    cl_lab: list[np.ndarray] = []
    cl_frac: list[float] = []
    for chip in split.train:
        refl, label = read_chip(chip)
        b = _labelled_blocks(refl, label, chip.label_quality, rule, chip.key)
        for x, y, f in zip(b.x, b.y, b.cloud_frac, strict=True):
            if y == 0:
                bgs.append(x[:4])
            else:
                cl.append(x[:4])
                lab = x[4].astype(np.uint8)
                cl_lab.append(lab if chip.label_quality == "good" else np.full_like(lab, NODATA))
                cl_frac.append(float(f))
    for chip in split.unlabelled:
        refl, _ = read_chip(chip)
        b = unlabelled_clear_blocks(refl, rule=rule, source=chip.key)
        bgs.extend(list(b.x))
    n_whole = len(bgs)
    masks: list[np.ndarray] = []
    if cfg.partial_clear > 0:
        for chip in split.train:
            refl, label = read_chip(chip)
            x, m = partial_backgrounds(refl, label, cfg.block, cfg.block_stride, cfg.partial_clear)
            bgs.extend(list(x))
            masks.extend(list(m))
    if not bgs or not cl:
        raise InputError(
            f"the training chips of {data_dir} gave {len(bgs)} clear and {len(cl)} cloudy blocks of "
            f"{cfg.block}px; matting needs both (pass a --data folder with clear and cloudy labelled chips)"
        )
    bg = np.stack(bgs).astype(np.float32)
    bright = bg[:, :3].mean(axis=(1, 2, 3)) > 0.3
    w = np.where(bright, cfg.bright_boost, 1.0)
    bg_mask = None
    if cfg.partial_clear > 0:
        bg_mask = np.ones((len(bg), cfg.block, cfg.block), bool)
        if masks:
            bg_mask[n_whole:] = np.stack(masks)
    return MattingData(
        bg_weights=w / w.sum(),
        bright=bright,
        bg_mask=bg_mask,
        n_whole=n_whole,
        backgrounds=bg,
        cloudy=np.stack(cl).astype(np.float32),
        cloudy_label=np.stack(cl_lab),
        cloudy_frac=np.asarray(cl_frac, np.float32),
        train_keys=[c.key for c in split.train] + [c.key for c in split.unlabelled],
        val_keys=[c.key for c in split.val],
        train_hash=chip_list_hash(list(split.train) + list(split.unlabelled)),
    )


def partial_backgrounds(
    refl: np.ndarray, label: np.ndarray, size: int, stride: int, min_clear: float, margin: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of a labelled chip that are partly clear: (K, 4, s, s) reflectance and (K, s, s)
    masks of their usable pixels (labelled clear, ``margin`` px or more from cloud or thin cloud),
    for blocks where those are at least ``min_clear`` of the block but not all of it (the
    wholly clear blocks are backgrounds already)."""
    from scipy.ndimage import maximum_filter

    cloud = (label == CLOUD) | (label == THIN)
    usable = (label == CLEAR) & ~maximum_filter(cloud, size=2 * margin + 1)
    xs, ms = [], []
    h, w = label.shape
    for r in range(0, h - size + 1, stride):
        for c in range(0, w - size + 1, stride):
            m = usable[r : r + size, c : c + size]
            share = float(m.mean())
            if min_clear <= share < 1.0:
                xs.append(refl[:4, r : r + size, c : c + size])
                ms.append(m)
    if not xs:
        return np.zeros((0, 4, size, size), np.float32), np.zeros((0, size, size), bool)
    return np.stack(xs).astype(np.float32), np.stack(ms)


def _d4(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of the last two axes."""
    if k >= 4:
        x = x[..., ::-1]
    return np.rot90(x, k % 4, axes=(-2, -1))


class LayerBank:
    """Procedural cloud layers drawn once, then reused with flips, rotations and brightness changes."""

    def __init__(
        self,
        rng: np.random.Generator,
        n: int,
        size: int,
        style: CloudStyle | None = None,
        p_haze: float = 0.0,
        scales: tuple[int, ...] = (1,),
    ) -> None:
        self.rng = rng
        self.p_haze = p_haze
        self.alpha = np.empty((n, size, size), np.float32)
        self.colour = np.empty((n, 4), np.float32)
        for i in range(n):
            kind = "thin" if rng.random() < 0.45 else "thick"
            # a layer drawn over ``scale`` times the block, of which the block sees a crop:
            # clouds wider than the block (one scale, (1,), draws as before)
            scale = int(scales[rng.integers(len(scales))]) if len(scales) > 1 else scales[0]
            a, r_c = self._crop(rng, *cloud_layer(rng, size * scale, kind, style), size)
            if rng.random() < 0.25:  # a second layer, as synth.BlockGenerator does
                a2, r2 = self._crop(
                    rng, *cloud_layer(rng, size * scale, "thin" if kind == "thick" else "thick", style), size
                )
                # y = r2 + (1-a2)(r_c + (1-a)x): alpha_tot = 1-(1-a)(1-a2), r_tot = r2 + (1-a2) r_c
                r_tot = r2 + (1 - a2)[None] * r_c
                a = 1 - (1 - a) * (1 - a2)
                r_c = r_tot
            self.alpha[i] = a
            self.colour[i] = (r_c.reshape(4, -1).sum(1) / max(float(a.sum()), 1e-6)).astype(np.float32)
        self._rc_cache = None

    @staticmethod
    def _crop(
        rng: np.random.Generator, a: np.ndarray, r_c: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random ``size`` x ``size`` crop of a layer (the layer itself when it has that size)."""
        if a.shape[0] == size:
            return a, r_c
        i, j = (int(v) for v in rng.integers(0, a.shape[0] - size + 1, size=2))
        return a[i : i + size, j : j + size], r_c[:, i : i + size, j : j + size]

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(alpha (n,1,s,s), r_c (n,4,s,s)) with r_c = alpha * colour (colour jittered)."""
        idx = self.rng.integers(len(self.alpha), size=n)
        ks = self.rng.integers(8, size=n)
        a = np.stack([_d4(self.alpha[i], k) for i, k in zip(idx, ks, strict=True)])[:, None]
        gain = self.rng.uniform(0.8, 1.25, size=(n, 1)).astype(np.float32)
        colour = self.colour[idx] * gain
        if self.p_haze > 0:
            haze = self.rng.random(n) < self.p_haze
            colour = np.where(haze[:, None], colour * haze_tilt(self.rng.uniform(0.5, 2.0, n)), colour)
        colour = np.clip(colour, 0.05 if self.p_haze > 0 else 0.2, 1.5).astype(np.float32)
        return np.ascontiguousarray(a), (a * colour[:, :, None, None]).astype(np.float32)


#: band centres (micrometres) of blue, green, red and nir, for the haze colour.
WAVELENGTHS = np.array([0.48, 0.56, 0.655, 0.865], np.float32)


def haze_tilt(gamma: np.ndarray | float) -> np.ndarray:
    """Per-band factors (n, 4) of a spectrally non-flat haze, ``(wavelength / red) ** -gamma``
    (Angstrom-like: blue brightest, nir darkest; 1 at red)."""
    g = np.atleast_1d(np.asarray(gamma, np.float32))
    return ((WAVELENGTHS / WAVELENGTHS[2])[None, :] ** -g[:, None]).astype(np.float32)


def _augment_batch(x: np.ndarray, rng: np.random.Generator, gain: float = 0.15) -> np.ndarray:
    return _augment_masked(x, None, rng, gain)[0]


def _augment_masked(
    x: np.ndarray, masks: np.ndarray | None, rng: np.random.Generator, gain: float = 0.15
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random flips/rotations and gains of blocks (n, 4, s, s), and the same flips/rotations of
    their ``masks`` (n, s, s) when given (the random draws do not depend on the masks)."""
    ks = rng.integers(8, size=len(x))
    g = rng.uniform(1 - gain, 1 + gain, size=(len(x), 1)) * rng.uniform(0.96, 1.04, size=(len(x), 4))
    out = np.stack([_d4(b, k) for b, k in zip(x, ks, strict=True)])
    turned = None if masks is None else np.ascontiguousarray(np.stack([_d4(m, k) for m, k in zip(masks, ks, strict=True)]))
    return np.ascontiguousarray(out * g.astype(np.float32)[:, :, None, None], dtype=np.float32), turned


# --------------------------------------------------------------------------- losses
def spectral_flatness(colour: torch.Tensor) -> torch.Tensor:
    """Mean squared relative deviation of a cloud colour's bands from their mean (0 = grey)."""
    mean = colour.mean(dim=1, keepdim=True)
    return (((colour - mean) / mean.clamp_min(0.05)) ** 2).mean()


def _lsgan(pred: torch.Tensor, target: float) -> torch.Tensor:
    return ((pred - target) ** 2).mean()


def real_label_hinge(alpha: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Hinge on labelled pixels: cloud alpha >= 0.5, thin >= 0.15, clear <= 0.05."""
    lab = label[:, None]
    terms = [
        (nnf.relu(0.5 - alpha), lab == CLOUD),
        (nnf.relu(0.15 - alpha), lab == THIN),
        (nnf.relu(alpha - 0.05), lab == CLEAR),
    ]
    total = alpha.new_zeros(())
    count = alpha.new_zeros(())
    for value, mask in terms:
        m = mask.to(alpha.dtype)
        total = total + (value * m).sum()
        count = count + m.sum()
    return total / count.clamp_min(1.0)


def background_l1(
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: torch.Tensor,
    a_hat: torch.Tensor,
    r_hat: torch.Tensor,
    alpha_max: float = ALPHA_MAX,
    where: float | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean |x_hat - x| where the true alpha <= ``where`` (default alpha_max),
    x_hat = (y - r_hat) / (1 - a_hat).

    ``a_hat`` is clamped to ``alpha_max`` so the division amplifies by at most
    1 / (1 - alpha_max), as the clear product's inversion does.
    """
    x_hat = (y - r_hat) / (1.0 - a_hat.clamp(max=alpha_max))
    m = (alpha <= (alpha_max if where is None else where)).to(x.dtype)
    if valid is not None:  # only the pixels whose background is known (partial backgrounds)
        m = m * valid[:, None].to(x.dtype)
    return ((x_hat - x).abs() * m).sum() / (m.sum() * x.shape[1]).clamp_min(1.0)


# --------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    net: MattingNet | MattingUNet
    generator: CloudGenerator
    meta: dict[str, Any]


def _gan_phase(
    data: MattingData,
    cfg: MattingTrainConfig,
    rng: np.random.Generator,
    progress: Progress | None,
    total: int,
) -> tuple[CloudGenerator, dict[str, float]]:
    g = CloudGenerator(width=cfg.width)
    d = CloudDiscriminator(width=cfg.width)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    stats = {"d_loss": float("nan"), "g_adv": float("nan"), "g_flat": float("nan")}
    for step in range(cfg.gan_steps):
        ci = rng.integers(len(data.cloudy), size=cfg.batch)
        cond = torch.from_numpy(_augment_batch(data.cloudy[ci], rng))
        real = torch.from_numpy(
            _augment_batch(data.cloudy[rng.integers(len(data.cloudy), size=cfg.batch)], rng)
        )
        bg = torch.from_numpy(
            _augment_batch(data.backgrounds[rng.integers(data.n_whole or len(data.backgrounds), size=cfg.batch)], rng)
        )
        frac = torch.from_numpy(data.cloudy_frac[ci])
        z = torch.from_numpy(
            rng.standard_normal((cfg.batch, g.noise, cfg.block // POOL, cfg.block // POOL)).astype(np.float32)
        )
        a_lo, c_lo = g(pooled_features(cond), z)
        alpha = upsample(a_lo)
        r_c = upsample(a_lo * c_lo)
        fake = compose(bg, alpha, r_c)
        # D step
        opt_d.zero_grad()
        d_loss = 0.5 * (
            _lsgan(d(pooled_features(real)), 1.0) + _lsgan(d(pooled_features(fake.detach())), 0.0)
        )
        d_loss.backward()
        opt_d.step()
        # G step
        opt_g.zero_grad()
        adv = _lsgan(d(pooled_features(fake)), 1.0)
        flat = spectral_flatness(c_lo[:, :3])  # visible bands flat; nir free-ish
        flat_nir = spectral_flatness(c_lo)
        cover = ((a_lo.mean(dim=(1, 2, 3)) - 0.8 * frac) ** 2).mean()
        g_loss = adv + cfg.flat_weight * (flat + 0.25 * flat_nir) + cfg.coverage_weight * cover
        g_loss.backward()
        opt_g.step()
        stats = {
            "d_loss": float(d_loss.detach()),
            "g_adv": float(adv.detach()),
            "g_flat": float(flat.detach()),
        }
        if progress is not None:
            progress(step + 1, total)
        if step % 250 == 0:
            log.info("gan step %d: %s", step, stats)
    return g.eval(), stats


def _f_batch(
    data: MattingData, g: CloudGenerator, bank: LayerBank, cfg: MattingTrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    n = cfg.batch
    s = cfg.block
    if cfg.bright_boost != 1.0 and data.bg_weights is not None:
        idx = rng.choice(len(data.backgrounds), size=n, p=data.bg_weights)
    else:
        idx = rng.integers(len(data.backgrounds), size=n)
    bright = np.flatnonzero(data.bright) if data.bright is not None else np.zeros(0, int)
    if cfg.p_bright_negative > 0 and len(bright):
        u = rng.random(n)
        # hard negatives: some clear blocks (no layer) are bright ground, target alpha = 0
        neg = (u >= cfg.p_gan_layer + cfg.p_procedural) & (rng.random(n) < cfg.p_bright_negative)
        idx = np.where(neg, bright[rng.integers(len(bright), size=n)], idx)
        x = torch.from_numpy(_augment_batch(data.backgrounds[idx], rng))
        mask = None  # (partial backgrounds are not drawn with hard negatives: validate())
    else:  # the 0.2 recipe's order of draws
        xa, ma = _augment_masked(data.backgrounds[idx], None if data.bg_mask is None else data.bg_mask[idx], rng)
        x = torch.from_numpy(xa)
        mask = None if ma is None else torch.from_numpy(ma)
        u = rng.random(n)
    alpha = torch.zeros(n, 1, s, s)
    r_c = torch.zeros(n, 4, s, s)
    use_g = np.flatnonzero(u < cfg.p_gan_layer)
    use_p = np.flatnonzero((u >= cfg.p_gan_layer) & (u < cfg.p_gan_layer + cfg.p_procedural))
    if len(use_p):
        a, r = bank.sample(len(use_p))
        alpha[use_p] = torch.from_numpy(a)
        r_c[use_p] = torch.from_numpy(r)
    if len(use_g):
        cond = torch.from_numpy(
            _augment_batch(data.cloudy[rng.integers(len(data.cloudy), size=len(use_g))], rng)
        )
        z = torch.from_numpy(
            rng.standard_normal((len(use_g), g.noise, s // POOL, s // POOL)).astype(np.float32)
        )
        with torch.no_grad():
            a_lo, c_lo = g(pooled_features(cond), z)
        alpha[use_g] = upsample(a_lo)
        r_c[use_g] = upsample(a_lo * c_lo)
    y = compose(x, alpha, r_c)
    return x, y, alpha, r_c, mask


def _masked_l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean |a - b| over the pixels of ``mask`` (B, H, W) (all of them without one)."""
    if mask is None:
        return (a - b).abs().mean()
    m = mask[:, None].to(a.dtype)
    return ((a - b).abs() * m).sum() / (m.sum() * a.shape[1]).clamp_min(1.0)


def train_matting(
    data_dir: str | Path,
    cfg: MattingTrainConfig | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train G, D (GAN phase) then F; returns F, G and the sidecar metadata."""
    cfg = cfg or MattingTrainConfig()
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    data = load_matting_data(data_dir, cfg)
    log.info("matting data: %d backgrounds, %d cloudy blocks", len(data.backgrounds), len(data.cloudy))
    bank = LayerBank(
        np.random.default_rng([cfg.seed, 1]), cfg.bank_size, cfg.block, p_haze=cfg.p_haze, scales=cfg.layer_scales
    )
    total = cfg.gan_steps + cfg.f_steps
    g, gan_stats = _gan_phase(data, cfg, rng, progress, total)

    net: MattingNet | MattingUNet
    if cfg.arch == "unet":
        net = MattingUNet(widths=cfg.unet_widths)
    else:
        net = MattingNet(width=cfg.width, extremes=cfg.extremes, guide=cfg.guide, hidden=cfg.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.unet_lr if cfg.arch == "unet" else cfg.f_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, cfg.f_steps) / max(cfg.f_steps, 1)))
    )
    good = np.flatnonzero((data.cloudy_label != NODATA).any(axis=(1, 2)))
    f_stats: dict[str, float] = {}
    for step in range(cfg.f_steps):
        x, y, alpha, r_c, mask = _f_batch(data, g, bank, cfg, rng)
        crop = min(cfg.crop, cfg.block) if cfg.crop > 0 else cfg.block
        if crop < cfg.block:
            r0, c0 = (int(v) for v in rng.integers(0, cfg.block - crop + 1, size=2))
            a_hat, r_hat = matte(net, y, region=(r0, r0 + crop, c0, c0 + crop))
            sl = (Ellipsis, slice(r0, r0 + crop), slice(c0, c0 + crop))
            x, y, alpha, r_c = x[sl], y[sl], alpha[sl], r_c[sl]
            mask = None if mask is None else mask[sl]
        else:
            a_hat, r_hat = matte(net, y)
        l_alpha = _masked_l1(a_hat, alpha, mask)
        l_rc = _masked_l1(r_hat, r_c, mask)
        l_y = _masked_l1(compose(x, a_hat, r_hat), y, mask)
        loss = cfg.w_alpha * l_alpha + cfg.w_rc * l_rc + cfg.w_recompose * l_y
        l_x = background_l1(x, y, alpha, a_hat, r_hat, cfg.alpha_max, valid=mask)
        if cfg.w_background > 0:
            loss = loss + cfg.w_background * l_x
        l_xt = torch.zeros(())
        if cfg.w_background_thin > 0:
            l_xt = background_l1(x, y, alpha, a_hat, r_hat, cfg.alpha_max, 0.5, valid=mask)
            loss = loss + cfg.w_background_thin * l_xt
        l_real = torch.zeros(())
        if cfg.w_real > 0 and len(good):
            k = rng.choice(good, size=min(8, len(good)))
            ks = rng.integers(8, size=len(k))
            xr = torch.from_numpy(
                np.ascontiguousarray(np.stack([_d4(data.cloudy[i], j) for i, j in zip(k, ks, strict=True)]))
            )
            lr = torch.from_numpy(
                np.ascontiguousarray(
                    np.stack([_d4(data.cloudy_label[i], j) for i, j in zip(k, ks, strict=True)])
                )
            )
            ar, _ = matte(net, xr)
            l_real = real_label_hinge(ar, lr)
            loss = loss + cfg.w_real * l_real
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        f_stats = {
            "alpha_l1": float(l_alpha.detach()),
            "rc_l1": float(l_rc.detach()),
            "y_l1": float(l_y.detach()),
            "real_hinge": float(l_real.detach()),
            "background_l1": float(l_x.detach()),
            "background_thin_l1": float(l_xt.detach()),
        }
        if progress is not None:
            progress(cfg.gan_steps + step + 1, total)
        if step % 500 == 0:
            log.info("F step %d: %s", step, f_stats)
    minutes = (time.perf_counter() - t0) / 60
    meta: dict[str, Any] = {
        "model": (
            f"CloudMattingGAN-style matting net F (Zou et al. ICCV 2019), U-Net, alpha at 1/{FINE}, "
            f"colour per {POOL}x{POOL} cell"
            if cfg.arch == "unet"
            else f"CloudMattingGAN-style matting net F (Zou et al. ICCV 2019), context pooled x{POOL}"
        )
        + (f", full-resolution head ({cfg.guide} context channels, {cfg.hidden} hidden)" if cfg.guide else ""),
        "alpha_max": cfg.alpha_max,
        "training": {
            "config": asdict(cfg),
            "train_chips": data.train_keys,
            "val_chips": data.val_keys,
            "train_chip_hash": data.train_hash,
            "n_backgrounds": int(len(data.backgrounds)),
            "n_partial_backgrounds": int(len(data.backgrounds) - data.n_whole) if data.bg_mask is not None else 0,
            "n_bright_backgrounds": int((data.bg_weights > data.bg_weights.min()).sum())
            if data.bg_weights is not None
            else 0,
            "n_cloudy_blocks": int(len(data.cloudy)),
            "gan_final": gan_stats,
            "f_final": f_stats,
            "minutes": round(minutes, 1),
            "torch": torch.__version__,
        },
    }
    return TrainResult(net=net.eval(), generator=g, meta=meta)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def add_weights_hash(weights: Path, sidecar: Path) -> None:
    """Record the sha256 of ``weights`` in its JSON sidecar (``weights_sha256``)."""
    import json

    doc = json.loads(Path(sidecar).read_text())
    doc["weights_sha256"] = file_sha256(weights)
    Path(sidecar).write_text(json.dumps(doc, indent=2) + "\n")


def save_result(result: TrainResult, out_dir: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """Write ``matting.safetensors`` + ``matting.json`` (and G as ``matting_generator.safetensors``)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(result.meta)
    if metrics is not None:
        meta["validation"] = metrics
    weights = out / WEIGHTS_FILE.name
    save_weights(result.net, meta, weights, out / SIDECAR_FILE.name)
    add_weights_hash(weights, out / SIDECAR_FILE.name)
    save_file(
        {k: v.detach().contiguous() for k, v in result.generator.state_dict().items()},
        str(out / "matting_generator.safetensors"),
    )
    return weights
