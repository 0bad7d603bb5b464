"""The levers tried on the cloud-shadow method, each on the same labelled chips.

    python benchmarks/shadow_levers.py --data ../shared/data --cache runs/shadow_cache

``--cache`` is the folder of engine masks that ``benchmarks/eval_shadow.py --cache`` writes
(each chip through ``process_scene`` with the CAM weights of the cross-validation fold that
held it out); its cloud (``mask == 1``) is the "engine" cloud input, the label's cloud
(codes 1 and 2) the "label" one.  For each lever and each cloud input: shadow precision,
recall and F1 over the 9 chips whose label marks shadow (and without ``ukis_samples``), and
the clear-land false-positive rate on the *trusted* chips (shadow-labelled or cloud-free;
"good": those of them with good labels), with ``eval_shadow.py``'s counts and chip groups.

Levers:

``geometric``
    the shipped method (:mod:`geocloud.shadow` with the default :class:`ShadowConfig`);
``hysteresis``
    plus pixels with a weaker NIR drop (10 %) within 6 px of a shadow pixel, inside the
    projection dilated by 6 px more;
``per-object``
    each cloud object (8-connected) gets its own distance along the scene's direction, the
    one in 0.3-2.0 x the scene's displacement whose shifted footprint holds the largest
    share of potential-shadow pixels (when that share is at least 0.3), swept over +-15 %;
``learned head``
    a per-pixel MLP (32-16 hidden units) on the four bands, the NIR and visible darkness,
    log NIR/red, the projection (plain and dilated by 8 px), the geometric mask, the
    distance to cloud and whether a displacement was found; trained leave-one-chip-out on
    the other trusted chips (20 000 sampled pixels each, shadow against the rest), its
    threshold the best F1 on those training chips.  Labels set weights here: this is the
    "learned shadow head" the issue allows if it beats the geometric method in
    cross-validation.

Also prints, per shadow chip, the median reflectance of the labelled shadow pixels the
geometric method finds and misses next to the chip's clear pixels: where the missed ones
equal clear ground, no darkness rule can find them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
from eval_shadow import clear_rate, counts, label_groups, pooled, run_method  # (benchmarks/ is on sys.path)


def hysteresis(refl, cloud, valid, cfg, low=0.1, grow=6):  # type: ignore[no-untyped-def]
    from geocloud.shadow import _square, potential_shadow, projection

    core, shift = run_method(refl, cloud, valid, cfg)
    if shift is None or not core.any():
        return core
    pot = potential_shadow(refl, valid, cloud, dataclasses.replace(cfg, dark_drop=low))
    proj = projection(cloud, shift, dataclasses.replace(cfg, dilate=cfg.dilate + grow))
    return core | (pot & _square(core, grow, dilate=True) & proj)


def per_object(refl, cloud, valid, cfg, min_share=0.3):  # type: ignore[no-untyped-def]
    from scipy import ndimage

    from geocloud.shadow import _or_shifted, estimate_shift, potential_shadow, projection

    pot = potential_shadow(refl, valid, cloud, cfg)
    shift = estimate_shift(cloud, pot.astype(np.float32), valid, config=cfg)
    if shift is None:
        return np.zeros_like(cloud)
    lab, _ = ndimage.label(cloud, structure=np.ones((3, 3)))
    proj = np.zeros_like(cloud)
    for i, _sl in enumerate(ndimage.find_objects(lab), 1):
        obj = lab == i
        best, bt = -1.0, None
        for t in np.linspace(0.3, 2.0, 35):
            sh = np.zeros_like(cloud)
            _or_shifted(sh, obj, int(round(t * shift.dy)), int(round(t * shift.dx)))
            cand = sh & valid & ~cloud
            if cand.sum() >= 0.3 * obj.sum() and pot[cand].mean() > best:
                best, bt = float(pot[cand].mean()), t
        own = (
            dataclasses.replace(cfg, sweep=(bt * 0.85, bt * 1.15))
            if bt is not None and best >= min_share
            else cfg
        )
        proj |= projection(obj, shift, own)
    out = pot & proj
    out = ndimage.binary_opening(out, np.ones((3, 3))) & out
    return out & valid & ~cloud


def head_features(refl, cloud, valid, cfg, geo, shift):  # type: ignore[no-untyped-def]
    """Per-pixel inputs of the learned head, the geometric method's ``geo`` and ``shift`` among them."""
    from scipy import ndimage

    from geocloud.shadow import darkness, projection

    none = np.zeros_like(cloud)
    proj = projection(cloud, shift, cfg) if shift is not None else none
    wide = projection(cloud, shift, dataclasses.replace(cfg, dilate=8)) if shift is not None else none
    d = darkness(refl, valid, cloud, cfg)
    dv = [darkness(np.stack([refl[0], refl[1], refl[2], refl[b]]), valid, cloud, cfg) for b in (0, 1, 2)]
    dist = ndimage.distance_transform_edt(~cloud) if cloud.any() else np.full(cloud.shape, 999.0)
    ratio = np.log(np.clip(refl[3] / np.maximum(refl[2], 1e-3), 0.05, 20))
    return np.stack([*refl, d, *dv, ratio, proj, wide, geo, np.minimum(dist, 100) / 100.0,
                     np.full(d.shape, float(shift is not None))]).astype(np.float32)  # fmt: skip


def learned_head(items: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Leave-one-chip-out predictions of the MLP head (``items``: key -> (features, ok, label))."""
    import torch

    out = {}
    for held in items:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for k, (f, ok, label) in items.items():
            if k == held:
                continue
            idx = np.flatnonzero(ok.ravel())
            idx = rng.choice(idx, min(len(idx), 20000), replace=False)
            xs.append(f.reshape(f.shape[0], -1)[:, idx].T)
            ys.append((label.ravel()[idx] == 3).astype(np.float32))
        x, y = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
        mu, sd = x.mean(0), x.std(0) + 1e-6
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 32), torch.nn.ReLU(), torch.nn.Linear(32, 16),
                                  torch.nn.ReLU(), torch.nn.Linear(16, 1))  # fmt: skip
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        pos = float(y.mean())
        pw = torch.tensor(((1 - pos) / max(pos, 1e-6)) ** 0.5)
        for _ in range(300):
            b = torch.randperm(len(x))[:8192]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net((x[b] - mu) / sd).squeeze(1), y[b], pos_weight=pw
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            p = torch.sigmoid(net((x - mu) / sd).squeeze(1)).numpy()
        yb = y.numpy().astype(bool)
        t = max(
            (2 * (p >= t)[yb].sum() / ((p >= t).sum() + yb.sum()), t) for t in np.arange(0.2, 0.95, 0.05)
        )[1]
        f, ok, _ = items[held]
        with torch.no_grad():
            ph = torch.sigmoid(
                net((torch.from_numpy(f.reshape(f.shape[0], -1).T) - mu) / sd).squeeze(1)
            ).numpy()
        out[held] = (ph.reshape(ok.shape) >= t) & ok
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="engine masks of eval_shadow.py --cache")
    args = ap.parse_args(argv)
    if not (args.data / "catalog.csv").is_file():
        print(f"no catalog.csv in {args.data}; pass --data with the shared data folder", file=sys.stderr)
        return 2
    import logging

    from geocloud.shadow import ShadowConfig
    from geocloud.training.data import load_catalog, read_chip

    logging.getLogger("geocloud").setLevel(logging.ERROR)
    cfg = ShadowConfig()
    chips, data = [], {}
    for c in load_catalog(args.data, four_band_only=True):
        if not c.labels_usable:
            continue
        refl, label = read_chip(c)
        cached = args.cache / c.set / f"{c.id}.mask.npy"
        if not cached.is_file():
            print(
                f"{cached} missing: run benchmarks/eval_shadow.py --cache {args.cache} first", file=sys.stderr
            )
            return 2
        chips.append(c)
        data[c.key] = (refl, label, label != 255, np.load(cached) == 1)
    shadow = [k for k, (_, label, _, _) in data.items() if (label == 3).any()]
    free = [k for k, (_, label, _, _) in data.items() if not ((label == 1) | (label == 2)).any()]
    groups = label_groups(chips, shadow, free)
    trusted, good = groups["trusted chips"], groups["trusted chips, good labels"]
    no_ukis = groups["shadow chips without ukis_samples"]

    print("| lever | cloud | P | R | F1 | F1 without ukis_samples | clear FP % trusted | good |")
    print("|---|---|---|---|---|---|---|---|")
    found = {}  # the geometric method's shadow with the label's cloud, for the spectra below
    for which in ("label", "engine"):
        per: dict[str, dict[str, dict[str, int]]] = {
            n: {} for n in ("geometric", "hysteresis", "per-object", "learned head")
        }
        items = {}
        for k in (c.key for c in chips if c.key in trusted):  # catalogue order, as the head was trained
            refl, label, valid, eng = data[k]
            cloud = (((label == 1) | (label == 2)) if which == "label" else eng) & valid
            geo, shift = run_method(refl, cloud, valid, cfg)
            if which == "label":
                found[k] = geo
            per["geometric"][k] = counts(geo & valid, label)
            per["hysteresis"][k] = counts(hysteresis(refl, cloud, valid, cfg) & valid, label)
            per["per-object"][k] = counts(per_object(refl, cloud, valid, cfg) & valid, label)
            items[k] = (
                head_features(refl, cloud, valid, cfg, geo, shift),
                valid & ~cloud & (label != 255),
                label,
            )
        for k, pred in learned_head(items).items():
            per["learned head"][k] = counts(pred, items[k][2])
        for name, res in per.items():
            g = pooled(res, shadow)
            print(f"| {name} | {which} | {g['precision']:.3f} | {g['recall']:.3f} | {g['f1']:.3f} | "
                  f"{pooled(res, no_ukis)['f1']:.3f} | {100 * clear_rate(res, trusted):.2f} | "
                  f"{100 * clear_rate(res, good):.2f} |", flush=True)  # fmt: skip

    print("\nmedian reflectance (blue green red nir) of labelled shadow found / missed by the geometric method "
          "(label cloud), and of clear ground")  # fmt: skip
    for k in shadow:
        refl, label, _, _ = data[k]
        sh, geo = label == 3, found[k]

        def med(m: np.ndarray, refl: np.ndarray = refl) -> str:
            return " ".join(f"{np.median(refl[b][m]):.3f}" for b in range(4)) if m.any() else "-"

        print(f"  {k}: found [{med(sh & geo)}] missed [{med(sh & ~geo)}] clear [{med(label == 0)}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
