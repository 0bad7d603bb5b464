"""Training the WDCD CAM detector on block labels (``geocloud train cam``).

Recipe (see docs/cam.md):

1. Real chips (``catalog.csv`` in ``data_dir``): a seeded chip-level split
   (:func:`geocloud.training.data.split_chips`).  From the training chips, blocks are cut
   and labelled with :class:`~geocloud.training.data.BlockRule`; clear blocks become
   backgrounds, cloudy blocks are kept as real cloudy examples.  Chips with unreliable
   labels contribute only blocks that :func:`~geocloud.training.data.looks_clear` accepts,
   as clear backgrounds.  Or, for a user's own archive, a ``tags.csv`` of block tags
   (:func:`load_tagged_archive`).
2. A :class:`~geocloud.training.synth.BlockGenerator` composites procedural cloud layers
   over the backgrounds (y = r_c + (1 - alpha) x) and mixes in the real cloudy blocks,
   with flips, rotations and gain jitter.  Pixel masks never enter the loss: only the
   block label (cross-entropy).
3. After training: the fixed score normalisation (z_lo, z_hi) and clear-sky mu/sigma come
   from the dense CAM of the training clear blocks; k of mu + k sigma is calibrated on the
   training chips' pixels (a single scalar); validation chips are only measured.

Library code: no click, no printing; progress goes through ``progress(step, total)`` and
``logging``.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..evaluate import confusion, metrics
from ..models.cam import LPP_MODES, CamConfig, CamModel, CamNet, CamSidecar, save_weights
from ..threshold import classify
from .data import (
    BLOCK_CLEAR,
    BLOCK_CLOUDY,
    CLOUD,
    NODATA,
    THIN,
    BlockRule,
    Blocks,
    Chip,
    chip_list_hash,
    extract_blocks,
    load_catalog,
    read_chip,
    split_chips,
    unlabelled_clear_blocks,
)
from .synth import BlockGenerator, GeneratorConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CamTrainConfig:
    """Every training default, in one place (the CLI options map onto these)."""

    seed: int = 0
    epochs: int = 20
    steps_per_epoch: int = 250
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    threads: int = 1
    #: share of the labelled chips held out (stratified) and measured after training; 0:
    #: train on every chip (the shipped weights; their validation is the k-fold
    #: cross-validation of benchmarks/eval_cam.py, which holds whole chips out instead).
    val_fraction: float = 0.0
    #: training block side and the stride blocks are cut at (docs/cam.md: with the 2 px
    #: stem, 64 px blocks; with a 4 px stem, 128 px blocks did better than 64).
    block: int = 64
    stride: int = 32
    channels: tuple[int, int, int] = (32, 64, 64)
    #: side of the average-pooling stem (the CAM's cells are ``stem`` px before LPP): 2 px
    #: cells find small cumulus and edges (CV OA 0.872 against 0.859 with 4 px, docs/cam.md).
    stem: int = 2
    #: the brightness-free spectral shape as 5 more input channels (models.cam.spectral_shape).
    spectral_features: bool = True
    #: stage 2, self-training: hidden channels of the full-resolution refinement head
    #: (models.cam.RefineHead; 0: none), its steps and learning rate, and the CAM scores
    #: that make a real cloudy block's pixel a pseudo-label: cloud at or above
    #: ``pseudo_cloud`` (and min(blue, green, red) >= ``pseudo_min_vis``), clear at or below
    #: ``pseudo_clear``, unused between.
    head_hidden: int = 0
    head_spectral: bool = False
    head_steps: int = 1500
    head_batch_size: int = 32
    head_lr: float = 3e-3
    pseudo_cloud: float = 0.6
    pseudo_clear: float = 0.15
    pseudo_min_vis: float = 0.1
    lpp_mode: str = "dilate_last"
    #: weight of the MIL consistency loss on the max cell of the CAM (block labels only).
    max_weight: float = 1.0
    #: hidden units of the full-resolution pixel branch (0: pure CAM), and its MIL loss weight.
    pixel_hidden: int = 0
    pixel_weight: float = 1.0
    #: candidate (lo, hi) ramps of the per-pixel brightness gate, chosen on training chips.
    gate_candidates: tuple[tuple[float, float], ...] = ((0.03, 0.1), (0.05, 0.15), (0.08, 0.2), (0.1, 0.25))
    #: candidate (ratio, radius px) edge-growing rules (hysteresis, geocloud.threshold), chosen
    #: with the gate and threshold on training chips; (1.0, 0) grows nothing.  Only "none"
    #: by default: growing calibrated on the training chips flooded bright clear land of
    #: held-out chips (docs/cam.md, cross-validation).
    grow_candidates: tuple[tuple[float, int], ...] = ((1.0, 0),)
    #: constrain the gate/threshold choice with small synthetic GF-1 scenes (see synthetic_checks).
    synthetic_check: bool = True
    #: score normalisation: z_lo = this quantile of clear-block z, z_hi = that of cloudy pixels.
    z_lo_quantile: float = 0.01
    z_hi_quantile: float = 0.9
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    device: str = "cpu"


# --------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    backgrounds: Blocks
    cloudy: Blocks
    train_chips: list[Chip]
    val_chips: list[Chip]
    description: dict[str, Any]


def gather_catalog_blocks(data_dir: Path, cfg: CamTrainConfig, exclude: Collection[str] = ()) -> TrainingData:
    """Backgrounds and real cloudy blocks from the training chips of a shared-data folder.

    ``exclude``: chip keys (``set/id``) left out entirely (a cross-validation fold's
    held-out chips).
    """
    chips = [c for c in load_catalog(data_dir, four_band_only=True) if c.key not in set(exclude)]
    split = split_chips(chips, val_fraction=cfg.val_fraction, seed=cfg.seed)
    rule = BlockRule(size=cfg.block, stride=cfg.stride)
    clear_parts, cloudy_parts = [], []
    for chip in split.train:
        refl, label = read_chip(chip)
        b = extract_blocks(refl, label, quality=chip.label_quality, rule=rule, source=chip.key)
        clear_parts.append(b.select(b.y == BLOCK_CLEAR))
        cloudy_parts.append(b.select(b.y == BLOCK_CLOUDY))
    n_unl = 0
    for chip in split.unlabelled:
        refl, _ = read_chip(chip)
        b = unlabelled_clear_blocks(refl, rule=rule, source=chip.key)
        n_unl += len(b)
        clear_parts.append(b)
    backgrounds = Blocks.concat(clear_parts, cfg.block)
    cloudy = Blocks.concat(cloudy_parts, cfg.block)
    desc = {
        "source": str(data_dir),
        "kind": "catalog",
        "block_rule": dataclasses.asdict(rule),
        "split": split.describe(),
        "excluded": sorted(exclude),
        "training_list_hash": chip_list_hash(list(split.train) + list(split.unlabelled)),
        "n_clear_background_blocks": len(backgrounds),
        "n_clear_from_unlabelled_imagery": n_unl,
        "n_real_cloudy_blocks": len(cloudy),
    }
    return TrainingData(backgrounds, cloudy, list(split.train), list(split.val), desc)


def _read_reflectance(path: Path, scale: float | None) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        if src.count < 4:
            raise InputError(
                f"scene {str(path)!r} has {src.count} bands; block-tag training needs 4 bands "
                "blue,green,red,nir (in that order, or named in the band descriptions)"
            )
        desc = tuple((d or "").lower() for d in src.descriptions)
        if {"blue", "green", "red", "nir"} <= set(desc):
            idx = [desc.index(b) + 1 for b in ("blue", "green", "red", "nir")]
        else:
            idx = [1, 2, 3, 4]
        data = src.read(idx)
        tag_scale = src.scales[idx[0] - 1]
        nod = src.nodata
    if np.issubdtype(data.dtype, np.integer):
        s = scale if scale is not None else (tag_scale if tag_scale not in (None, 1.0) else None)
        if s is None:
            raise InputError(
                f"scene {str(path)!r} is {data.dtype} with no reflectance scale; add a 'scale' column "
                "to tags.csv (e.g. 0.0001 for Sentinel-2 L2A) or store reflectance as float32"
            )
        invalid = (data == (nod if nod is not None else 0)).all(axis=0)
        refl = data.astype(np.float32) * np.float32(s)
        refl[:, invalid] = 0.0
        return refl
    refl = data.astype(np.float32)
    if scale is not None:
        refl *= np.float32(scale)
    return np.nan_to_num(refl, nan=0.0, posinf=0.0, neginf=0.0)


def load_tagged_archive(data_dir: Path, cfg: CamTrainConfig) -> TrainingData:
    """A user's own archive: ``data_dir/tags.csv`` with ``scene,row,col,size,label[,scale]``.

    ``scene`` is a path relative to ``data_dir``; ``row,col`` the block's top-left pixel;
    ``size`` its side; ``label`` ``cloudy``/``clear`` (or 1/0).  Blocks are resampled to the
    training block size when ``size`` differs (area average).  Clear blocks become
    backgrounds for synthetic clouds; cloudy blocks are real cloudy examples.
    """
    path = data_dir / "tags.csv"
    cache: dict[str, np.ndarray] = {}
    clear: list[np.ndarray] = []
    cloudy: list[np.ndarray] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"scene", "row", "col", "size", "label"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(
                f"{path} lacks columns {', '.join(sorted(missing))}; "
                "expected scene,row,col,size,label[,scale] (see docs/cam.md)"
            )
        for i, row in enumerate(reader, start=2):
            lab = row["label"].strip().lower()
            if lab in ("cloudy", "cloud", "1"):
                y = BLOCK_CLOUDY
            elif lab in ("clear", "0"):
                y = BLOCK_CLEAR
            else:
                raise InputError(f"{path} line {i}: label {row['label']!r} must be cloudy or clear (or 1/0)")
            scene = row["scene"]
            if scene not in cache:
                sc = row.get("scale") or ""
                cache[scene] = _read_reflectance(data_dir / scene, float(sc) if sc.strip() else None)
            img = cache[scene]
            r, c, s = int(row["row"]), int(row["col"]), int(row["size"])
            blk = img[:, r : r + s, c : c + s]
            if blk.shape[1:] != (s, s):
                raise InputError(
                    f"{path} line {i}: block {r},{c} of size {s} leaves scene {scene!r} "
                    f"({img.shape[1]}x{img.shape[2]}); fix row/col/size"
                )
            if s != cfg.block:
                t = torch.from_numpy(np.ascontiguousarray(blk))[None]
                blk = F.interpolate(t, size=(cfg.block, cfg.block), mode="area")[0].numpy()
            (cloudy if y == BLOCK_CLOUDY else clear).append(blk.astype(np.float32))
    if not clear:
        raise InputError(f"{path} has no clear blocks; at least one is needed as a background")

    def _blocks(xs: list[np.ndarray], y: int) -> Blocks:
        if not xs:
            return Blocks.empty(cfg.block)
        n = len(xs)
        return Blocks(np.stack(xs), np.full(n, y, np.int64), np.zeros(n, np.float32), ["tags"] * n)

    import hashlib

    desc = {
        "source": str(data_dir),
        "kind": "block_tags",
        "training_list_hash": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
        "n_clear_background_blocks": len(clear),
        "n_real_cloudy_blocks": len(cloudy),
    }
    return TrainingData(_blocks(clear, BLOCK_CLEAR), _blocks(cloudy, BLOCK_CLOUDY), [], [], desc)


def gather(data_dir: str | Path, cfg: CamTrainConfig, exclude: Collection[str] = ()) -> TrainingData:
    data_dir = Path(data_dir)
    if (data_dir / "catalog.csv").is_file():
        return gather_catalog_blocks(data_dir, cfg, exclude)
    if (data_dir / "tags.csv").is_file():
        return load_tagged_archive(data_dir, cfg)
    raise InputError(
        f"{str(data_dir)!r} holds neither catalog.csv (labelled chips) nor tags.csv (block tags); "
        "pass --data with one of them (see docs/cam.md for the tags.csv format)"
    )


# --------------------------------------------------------------------------- training


def band_statistics(blocks: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean/std of clear backgrounds (rounded, stored in the sidecar)."""
    v = blocks.transpose(1, 0, 2, 3).reshape(4, -1)
    mean = tuple(round(float(m), 3) for m in v.mean(1))
    std = tuple(round(max(float(s), 0.02), 3) for s in v.std(1))
    return mean, std


def train_net(
    gen: BlockGenerator,
    cfg: CamTrainConfig,
    net_config: CamConfig,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[CamNet, list[float]]:
    """Train a :class:`CamNet` on generator blocks; returns the net and per-epoch mean losses."""
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    net = CamNet(net_config).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1), pct_start=0.15)
    losses: list[float] = []
    step = 0
    for epoch in range(cfg.epochs):
        net.train()
        acc = 0.0
        for _ in range(cfg.steps_per_epoch):
            x, y = gen.sample(cfg.batch_size)
            xt = torch.from_numpy(x).to(device)
            yt = torch.from_numpy(y).to(device)
            logits, cells = net.logits_and_cells(xt)
            loss = F.cross_entropy(logits, yt)
            if cfg.max_weight > 0:
                # MIL consistency: a clear block has no cloudy cell, a cloudy block at least one
                top = cells.flatten(1).amax(dim=1)
                loss = loss + cfg.max_weight * F.binary_cross_entropy_with_logits(top, yt.float())
            if net_config.pixel_hidden and cfg.pixel_weight > 0:
                # top-k MIL on the pixel logits: the block rule says "cloudy" iff >= 5 % of
                # the pixels are cloud, so the mean of the top 5 % logits is the block's logit
                u = net.pixel_logits(xt, cells).flatten(1)
                k = max(1, int(round(net_config.topk_fraction * u.shape[1])))
                topk = u.topk(k, dim=1).values.mean(dim=1)
                loss = loss + cfg.pixel_weight * F.binary_cross_entropy_with_logits(topk, yt.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            acc += float(loss.detach())
            step += 1
            if progress is not None:
                progress(step, total)
        losses.append(acc / max(cfg.steps_per_epoch, 1))
        log.info("epoch %d/%d loss %.4f", epoch + 1, cfg.epochs, losses[-1])
    return net.eval(), losses


# --------------------------------------------------------------------------- calibration / validation


def _dense_z(model: CamModel, x: np.ndarray) -> np.ndarray:
    """The full-resolution logit u (before normalisation) of blocks (N, 4, S, S)."""
    with torch.no_grad():
        out = []
        for i in range(0, len(x), 64):
            t = torch.from_numpy(np.ascontiguousarray(x[i : i + 64]))
            out.append(model.dense.logits(t)[:, 0].numpy())
    return np.concatenate(out)


def cloud_truth(label: np.ndarray) -> np.ndarray:
    """uint8 truth: 1 cloud (thick or thin), 0 not cloud (clear, shadow), 255 ignored."""
    t = np.where((label == CLOUD) | (label == THIN), 1, 0).astype(np.uint8)
    t[label == NODATA] = 255
    return t


def chip_scores(model: Any, chips: list[Chip]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Score map (H, W) and truth (H, W) of each chip for any :class:`CloudModel`."""
    out = {}
    for chip in chips:
        refl, label = read_chip(chip)
        valid = (refl != 0).any(axis=0)
        pred = model.predict(refl[None], valid[None])
        out[chip.key] = (pred.maps["score"][0, 0], cloud_truth(label))
    return out


def cloud_at(score: np.ndarray, threshold: float, grow: tuple[float, int] = (1.0, 0)) -> np.ndarray:
    """uint8 0/1 cloud prediction of a score map at ``threshold`` with edge growing
    ``grow`` = (ratio, radius), the rule of :func:`geocloud.threshold.classify`."""
    ratio, radius = grow
    return (classify(score, threshold, ratio * threshold, int(radius)) == 1).astype(np.uint8)


def pooled_metrics(
    scored: dict[str, tuple[np.ndarray, np.ndarray]],
    chips: list[Chip],
    threshold: float,
    grow: tuple[float, int] = (1.0, 0),
) -> dict[str, Any]:
    """Per-chip, per-sensor, per-surface and pooled metrics at a fixed threshold (and edge growing)."""
    counts = {
        chip.key: confusion(cloud_at(scored[chip.key][0], threshold, grow), scored[chip.key][1])
        for chip in chips
    }
    return {
        "threshold": threshold,
        "grow": {"ratio": grow[0], "radius": grow[1]},
        **grouped_metrics(counts, chips),
    }


def grouped_metrics(counts: dict[str, dict[str, int]], chips: list[Chip]) -> dict[str, Any]:
    """``groups`` (pooled, pooled_good, per sensor, label quality and L8 surface) and
    ``chips`` metrics from each chip's confusion counts (``counts[chip.key]``)."""
    per_chip: dict[str, Any] = {}
    groups: dict[str, dict[str, int]] = {}

    def add(group: str, c: dict[str, int]) -> None:
        g = groups.setdefault(group, {"tp": 0, "fp": 0, "fn": 0, "tn": 0})
        for k in g:
            g[k] += c[k]

    for chip in chips:
        c = counts[chip.key]
        per_chip[chip.key] = {**metrics(c), "quality": chip.label_quality}
        add("pooled", c)
        add(f"sensor:{chip.sensor}", c)
        add(f"quality:{chip.label_quality}", c)
        if chip.set == "l8_biome":
            add(f"surface:{chip.surface}", c)
        if chip.label_quality == "good":
            add("pooled_good", c)
    return {"groups": {k: metrics(v) for k, v in sorted(groups.items())}, "chips": per_chip}


def synthetic_checks(cfg: CamTrainConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Small GF-1 WFV-like scenes from :mod:`geocloud.synthetic` with known opacity.

    Returns ``(x, valid, clear, thick)`` per scene: reflectance, valid mask, pixels with
    alpha < 0.02 and alpha > 0.9.  Used as a constraint in :func:`calibrate`: with small
    clouds (64 px) and haze, the CAM's context spills onto clear land, and the gate and
    threshold must keep >= 90 % of clear land clear and >= 90 % of opaque cloud cloudy.
    """
    import tempfile

    import rasterio

    from .. import synthetic

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (cfg.seed + 101, cfg.seed + 102, cfg.seed + 103):
            path = synthetic.make_scene(
                Path(tmp) / f"check_{seed}.tif", 256, 256, seed=seed, cloud_cover=0.35, dtype="float32",
                write_truth=True, compress=None, blocksize=256, cloud_scale=64, land_scale=64,
            )  # fmt: skip
            with rasterio.open(path) as src:
                x = src.read().astype(np.float32)
                nod = src.nodata
            with rasterio.open(synthetic.truth_path(path)) as src:
                alpha = src.read(1)
            valid = np.isfinite(alpha) & np.isfinite(x).all(axis=0)
            if nod is not None:
                valid &= ~(x == nod).all(axis=0)
            x = np.where(valid[None], x, 0.0).astype(np.float32)
            out.append((x, valid, valid & (alpha < 0.02), valid & (alpha > 0.9)))
    return out


def score_scale(model: CamModel, data: TrainingData, cfg: CamTrainConfig) -> tuple[float, float]:
    """Fix the CAM's score scale (z_lo, z_hi) on ``model`` and return it (deterministic).

    ``z_lo``: the ``z_lo_quantile`` of z over the clear training blocks (outer ring left
    out); ``z_hi``: the ``z_hi_quantile`` over composited thick-cloud pixels (alpha >= 0.5).
    """
    bg = data.backgrounds.x
    z_clear = _dense_z(model, bg)
    c = cfg.block // 8  # ignore the outer ring (zero padding) of each block
    zc = z_clear[:, c:-c, c:-c].ravel()
    rng = np.random.default_rng(cfg.seed + 7)
    # cloudy pixels: composited thick clouds over the backgrounds, where alpha >= 0.5
    from .synth import cloud_layer

    zs = []
    for i in rng.choice(len(bg), size=min(200, len(bg)), replace=False):
        a, rc = cloud_layer(rng, cfg.block, "thick")
        y = rc + (1 - a[None]) * bg[i]
        z = _dense_z(model, y[None].astype(np.float32))[0]
        zs.append(z[(a >= 0.5)])
    zcl = np.concatenate(zs) if zs else np.array([1.0])
    z_lo = float(np.quantile(zc, cfg.z_lo_quantile))
    z_hi = float(np.quantile(zcl, cfg.z_hi_quantile))
    if z_hi <= z_lo + 1e-3:
        z_hi = z_lo + 1.0
    model.z_lo, model.z_hi = z_lo, z_hi
    model.sidecar.z_lo, model.sidecar.z_hi = z_lo, z_hi
    return z_lo, z_hi


def head_targets(
    x: torch.Tensor, alpha: torch.Tensor, cam: torch.Tensor, cfg: CamTrainConfig, alpha_min: float
) -> torch.Tensor:
    """Pixel targets of the refinement head, without pixel labels: float (B, H, W), NaN = unused.

    * clear blocks (alpha 0 everywhere, from their block label): 0;
    * composited blocks: 1 where the known opacity >= ``alpha_min`` (the generator's
      cloudy rule), 0 where it is < alpha_min / 3, unused in between;
    * real cloudy blocks (alpha NaN): the CAM's own pseudo-labels (self-training):
      1 where its score >= ``pseudo_cloud`` and the pixel is bright in every visible band
      (>= ``pseudo_min_vis``), 0 where its score <= ``pseudo_clear`` or a visible band is
      darker than half of that, unused elsewhere.
    """
    nan = torch.tensor(float("nan"))
    t = torch.where(alpha >= alpha_min, 1.0, torch.where(alpha < alpha_min / 3, 0.0, nan))
    real = torch.isnan(alpha)
    vis = x[:, :3].amin(dim=1)
    pseudo = torch.where(
        (cam >= cfg.pseudo_cloud) & (vis >= cfg.pseudo_min_vis),
        1.0,
        torch.where((cam <= cfg.pseudo_clear) | (vis < cfg.pseudo_min_vis / 2), 0.0, nan),
    )
    return torch.where(real, pseudo, t)


def train_head(
    net: CamNet,
    gen: BlockGenerator,
    cfg: CamTrainConfig,
    z_scale: tuple[float, float],
    lpp_mode: str,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Stage 2 (self-training): train ``net.head`` with the CAM fixed; returns per-500-step losses.

    Each step draws generator blocks with their opacity, runs the dense CAM (``lpp_mode``,
    scale ``z_scale``) for the score the head sees, makes :func:`head_targets` and
    minimises the binary cross-entropy over the used pixels, clear and cloud pixels
    weighted equally.
    """
    from ..models.cam import DenseCam

    if net.head is None:
        raise InputError("train_head needs a CamNet built with head_hidden > 0")
    torch.manual_seed(cfg.seed + 1)
    dense = DenseCam(net, lpp_mode).eval()
    z_lo, z_hi = z_scale
    opt = torch.optim.AdamW(net.head.parameters(), lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.head_lr, total_steps=max(cfg.head_steps, 1), pct_start=0.1)
    net.head.train()
    losses, acc = [], 0.0
    for step in range(cfg.head_steps):
        xa, _, aa = gen.sample_alpha(cfg.head_batch_size)
        x, alpha = torch.from_numpy(xa), torch.from_numpy(aa)
        with torch.no_grad():
            z = ((dense(x) - z_lo) / (z_hi - z_lo)).clamp(0.0, 1.0)
            cam = F.interpolate(z, scale_factor=dense.stride, mode="bilinear", align_corners=False)
            target = head_targets(x, alpha, cam[:, 0], cfg, gen.config.alpha_min)
        u = net.head_logits(x, cam)[:, 0]
        used = ~torch.isnan(target)
        tv = target[used]
        pos = float(tv.sum())
        w = torch.where(tv > 0.5, 0.5 / max(pos, 1.0), 0.5 / max(float(tv.numel()) - pos, 1.0))
        loss = (F.binary_cross_entropy_with_logits(u[used], tv, reduction="none") * w).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc += float(loss.detach())
        if (step + 1) % 500 == 0 or step + 1 == cfg.head_steps:
            losses.append(acc / (500 if (step + 1) % 500 == 0 else (step + 1) % 500))
            log.info("head step %d/%d loss %.4f", step + 1, cfg.head_steps, losses[-1])
            acc = 0.0
        if progress is not None:
            progress(step + 1, cfg.head_steps)
    net.head.eval()
    return losses


def calibrate(
    model: CamModel,
    data: TrainingData,
    cfg: CamTrainConfig,
) -> dict[str, Any]:
    """Fix z_lo/z_hi, the brightness gate, clear mu/sigma and k; updates ``model`` in place."""
    bg = data.backgrounds.x
    c = cfg.block // 8  # ignore the outer ring (zero padding) of each block
    z_lo, z_hi = score_scale(model, data, cfg)

    # brightness gate and threshold: maximise pooled OA + F1 on the real *training* chips'
    # pixels (a handful of scalars; pixel labels never enter the loss, validation chips
    # are never used)
    gates: list[dict[str, Any]] = [{}] + [
        {"method": "vis_min_ramp", "lo": lo, "hi": hi} for lo, hi in cfg.gate_candidates
    ]
    refine: dict[str, Any] = gates[1] if len(gates) > 1 else {}
    threshold = 0.5
    grow: tuple[float, int] = (1.0, 0)
    note: dict[str, Any] = {}
    train_good = [ch for ch in data.train_chips if ch.label_quality == "good"]
    checks = synthetic_checks(cfg) if cfg.synthetic_check else []
    if train_good:
        best = -1.0
        for constrained in (True, False):
            for gate in gates:
                model.refine = dict(gate)
                scored = chip_scores(model, train_good)
                syn = [(model.predict(x[None], v[None]).maps["score"][0, 0], c, k) for x, v, c, k in checks]
                for t, g in itertools.product(np.arange(0.1, 0.91, 0.025), cfg.grow_candidates):
                    if constrained and not all(
                        (pred := cloud_at(sc, float(t), g))[c].mean() <= 0.1 and pred[k].mean() >= 0.9
                        for sc, c, k in syn
                    ):
                        continue
                    tot = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
                    for score, truth in scored.values():
                        cc = confusion(cloud_at(score, float(t), g), truth)
                        for key in tot:
                            tot[key] += cc[key]
                    m = metrics(tot)
                    val = m["oa"] + m["f1"]
                    if val > best + 1e-9:
                        best, refine, threshold, grow = val, dict(gate), float(t), g
                        note = {"train_oa_plus_f1": round(val, 4), "synthetic_constraint_met": constrained}
            if best >= 0:
                break
    elif checks:
        # no pixel-labelled chips (a tags.csv archive): take the gate and threshold that do
        # best on the synthetic scenes (mean of clear-kept and opaque-found fractions)
        best = -1.0
        for gate in gates:
            model.refine = dict(gate)
            syn = [(model.predict(x[None], v[None]).maps["score"][0, 0], c, k) for x, v, c, k in checks]
            for t in np.arange(0.1, 0.91, 0.025):
                val = float(np.mean([((sc[c] < t).mean() + (sc[k] >= t).mean()) / 2 for sc, c, k in syn]))
                if val > best + 1e-9:
                    best, refine, threshold = val, dict(gate), float(t)
                    note = {"synthetic_score": round(val, 4), "no_pixel_labels": True}
    model.refine = dict(refine)
    model.sidecar.refine = dict(refine)
    # clear-sky statistics of the final score over the clear training blocks
    with torch.no_grad():
        sc = np.concatenate(
            [
                model.score_tensor(torch.from_numpy(np.ascontiguousarray(bg[i : i + 64])))[:, 0].numpy()
                for i in range(0, len(bg), 64)
            ]
        )
    s_clear = sc[:, c:-c, c:-c].ravel()
    mu, sigma = float(s_clear.mean()), float(max(s_clear.std(), 1e-3))
    k = (threshold - mu) / sigma
    return {
        "z_lo": z_lo,
        "z_hi": z_hi,
        "clear_mu": mu,
        "clear_sigma": sigma,
        "threshold_k": round(k, 4),
        "refine": refine,
        "grow": grow,
        "calibration": note,
    }


def calibrate_and_validate(
    net: CamNet, data: TrainingData, cfg: CamTrainConfig, baseline: Any | None = None
) -> CamSidecar:
    """Calibrate a trained net (normalisation, mu, sigma, k) and measure it on the validation chips.

    Also measures every LPP variant at its own calibration (``validation["variants"]``).
    """
    net_config = net.config
    variants: dict[str, Any] = {}
    chosen: CamSidecar | None = None
    for mode in [cfg.lpp_mode] + [m for m in LPP_MODES if m != cfg.lpp_mode]:
        sidecar = CamSidecar(config=net_config, lpp_mode=mode)
        model = CamModel(net, sidecar)
        cal = calibrate(model, data, cfg)
        sidecar.spec = {
            "name": "cam",
            "bands": ["blue", "green", "red", "nir"],
            "halo": model.spec.halo,
            "fill_nodata": model.spec.fill_nodata,
            "block_multiple": model.spec.block_multiple,
            "block_size": 512,
            "clear_mu": cal["clear_mu"],
            "clear_sigma": cal["clear_sigma"],
            "threshold_k": cal["threshold_k"],
            "default_threshold": min(0.95, cal["clear_mu"] + cal["threshold_k"] * cal["clear_sigma"]),
            "grow_ratio": float(cal["grow"][0]),
            "grow_radius": int(cal["grow"][1]),
        }
        sidecar.refine = dict(cal["refine"])
        sidecar.spec["calibration"] = cal["calibration"]
        model = CamModel(net, sidecar)
        if not data.val_chips:
            chosen = sidecar
            break
        thr = sidecar.spec["default_threshold"]
        grow = cal["grow"]
        scored = chip_scores(model, data.val_chips)
        res = pooled_metrics(scored, data.val_chips, thr, grow)
        best = max(
            (pooled_metrics(scored, data.val_chips, float(t), grow)["groups"]["pooled"]["oa"], float(t))
            for t in np.arange(0.1, 0.91, 0.05)
        )
        variants[mode] = {
            "threshold": thr,
            "pooled": res["groups"]["pooled"],
            "best_val_threshold": {"threshold": round(best[1], 2), "oa": best[0]},
            "halo": model.spec.halo,
            "block_multiple": model.spec.block_multiple,
        }
        if chosen is None:
            chosen = sidecar
            chosen.validation = {
                "cam": res,
                "note": (
                    "held-out chips, fixed threshold clear_mu + k*clear_sigma from the sidecar "
                    "(the engine's per-scene statistics may differ); pixels compared at full resolution"
                ),
            }
    if chosen is None:  # pragma: no cover - the loop runs at least once
        raise RuntimeError("no LPP variant was calibrated")
    if variants:
        chosen.validation["variants"] = variants
    if baseline is not None and data.val_chips:
        bscored = chip_scores(baseline, data.val_chips)
        chosen.validation["baseline"] = pooled_metrics(
            bscored, data.val_chips, float(baseline.spec.default_threshold)
        )
        chosen.validation["baseline_name"] = baseline.spec.name
    return chosen


def run_training(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: CamTrainConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    baseline: Any | None = None,
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """Train, calibrate, validate and write ``out_dir/cam.safetensors`` + ``cam.json``.

    ``baseline``: an optional other CloudModel (e.g. the spectral one) measured on the same
    validation chips at its own default threshold.  ``exclude``: chip keys never used
    (cross-validation).  Returns the sidecar dict.
    """
    cfg = cfg or CamTrainConfig()
    torch.set_num_threads(max(1, cfg.threads))
    t0 = time.perf_counter()
    data = gather(data_dir, cfg, exclude)
    if len(data.backgrounds) == 0:
        raise InputError(f"no clear background blocks found in {str(data_dir)!r}; add clear blocks")
    mean, std = band_statistics(data.backgrounds.x)
    net_config = CamConfig(
        channels=cfg.channels,
        stem=cfg.stem,
        train_block=cfg.block,
        band_mean=mean,
        band_std=std,
        pixel_hidden=cfg.pixel_hidden,
        spectral_features=cfg.spectral_features,
        head_hidden=cfg.head_hidden,
        head_spectral=cfg.head_spectral,
    )
    rng = np.random.default_rng(cfg.seed)
    gen = BlockGenerator(data.backgrounds.x, data.cloudy.x if len(data.cloudy) else None, rng, cfg.generator)
    t1 = time.perf_counter()
    net, losses = train_net(gen, cfg, net_config, progress)
    head_losses: list[float] = []
    if cfg.head_hidden:
        scale = score_scale(CamModel(net, CamSidecar(config=net_config, lpp_mode=cfg.lpp_mode)), data, cfg)
        head_losses = train_head(net, gen, cfg, scale, cfg.lpp_mode, progress)
    t2 = time.perf_counter()

    sidecar = calibrate_and_validate(net, data, cfg, baseline)
    t3 = time.perf_counter()
    sidecar.training = {
        **data.description,
        "config": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(cfg).items()
            if k != "generator"
        },
        "generator": dataclasses.asdict(cfg.generator),
        "losses": [round(v, 5) for v in losses],
        "head_losses": [round(v, 5) for v in head_losses],
        "seconds": {
            "data": round(t1 - t0, 1),
            "train": round(t2 - t1, 1),
            "calibrate_validate": round(t3 - t2, 1),
        },
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    out = Path(out_dir)
    save_weights(net, sidecar, out / "cam.safetensors")
    return sidecar.to_json()


def recalibrate(
    data_dir: str | Path,
    weights: str | Path,
    out_dir: str | Path,
    cfg: CamTrainConfig | None = None,
    baseline: Any | None = None,
) -> dict[str, Any]:
    """Calibrate and validate already trained CAM weights again, without training.

    The last stage of :func:`run_training` on the net of ``weights``: for a change of the
    calibration (e.g. new ``grow_candidates``) the result equals a full retraining's when
    the weights are the ones that training reproduces.  Writes ``out_dir/cam.safetensors``
    (the same weights) and a new ``cam.json``; the training record is kept.
    """
    from ..models.cam import load_weights

    cfg = cfg or CamTrainConfig()
    torch.set_num_threads(max(1, cfg.threads))
    net, old = load_weights(weights)
    data = gather(data_dir, cfg)
    t0 = time.perf_counter()
    sidecar = calibrate_and_validate(net, data, cfg, baseline)
    sidecar.training = dict(old.training)
    sidecar.training["seconds"] = {**old.training.get("seconds", {}),
                                   "calibrate_validate": round(time.perf_counter() - t0, 1)}  # fmt: skip
    sidecar.training["recalibrated"] = True
    save_weights(net, sidecar, Path(out_dir) / "cam.safetensors")
    return sidecar.to_json()


__all__ = [
    "CamTrainConfig",
    "TrainingData",
    "calibrate",
    "calibrate_and_validate",
    "chip_scores",
    "cloud_truth",
    "gather",
    "grouped_metrics",
    "load_tagged_archive",
    "head_targets",
    "pooled_metrics",
    "recalibrate",
    "score_scale",
    "train_head",
    "run_training",
    "train_net",
]
