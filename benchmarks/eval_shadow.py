"""Cloud-shadow accuracy of :mod:`geocloud.shadow` on the labelled chips of ../shared/data.

    python benchmarks/eval_shadow.py --data ../shared/data --cv runs/cv_stem2 \\
        [--ukis runs/ukis_shadow] [--cache runs/shadow_cache] [--json runs/shadow.json] [--png DIR]

Every 4-band chip with usable labels (``good`` or ``coarse``) is read as the engine reads
it (:func:`geocloud.training.data.read_chip`: integer chips times the catalog's scale,
float chips as they are).  The shadow method runs on each chip at full resolution with no
sun angles (the chips carry no metadata, so the azimuth is searched too), from two cloud
inputs:

``label cloud``
    the label's cloud (codes 1 thick and 2 thin): isolates the shadow method;
``geocloud cloud``
    the engine end to end: :func:`geocloud.process_scene` with the cross-validation fold
    weights ``CV/fold*/cam.safetensors`` of the fold that held the chip out (each fold's
    ``heldout.json``), as ``benchmarks/eval_cam.py`` runs them; its mask's cloud
    (``mask == 1``) and its own shadow class (``mask == 2``, the shadow stage of
    :mod:`geocloud.passes`).

Side by side, with ``--ukis DIR``: ukis-csmask's shadow class (class 2 of
``benchmarks/ukis_masks.py --classes DIR``), pooled without the ``ukis_samples`` chips
(that peer's own test chips).

Shadow precision, recall and F1 are over the chips whose label has shadow (code 3),
pooled and per chip; a shadow call on any labelled non-shadow pixel (clear or cloud) is a
false positive, label 255 is ignored.  The clear-land false-positive rate is the shadow
called on label-clear pixels (code 0) over the clear pixels of the *trusted* chips: those
whose label marks shadow, and those without cloud (nothing can cast a shadow there).  The
other cloudy chips' labels leave real shadow clear (s2_oncloudn has no shadow code; several
L8 Biome chips, e.g. Shrubland_02_1021, show shadows their label does not mark), so the
rate over all chips, also given, counts found shadow as false.  Worst chips are listed.  ``--png DIR`` writes, per shadow chip, false-colour imagery | label | each method
(white cloud, red shadow; green true positive, red false positive, blue missed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

GOALS = {"clear_fp": 0.02}
#: the groups of :func:`label_groups` shadow precision, recall and F1 are pooled over.
SHADOW_GROUPS = ("shadow chips", "shadow chips without ukis_samples")


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def counts(pred: np.ndarray, label: np.ndarray) -> dict[str, int]:
    lab = label != 255
    truth = label == 3
    clear = label == 0
    return {
        "tp": int((pred & truth).sum()),
        "fp": int((pred & lab & ~truth).sum()),
        "fn": int((~pred & truth).sum()),
        "clear_fp": int((pred & clear).sum()),
        "clear": int(clear.sum()),
    }


def fold_weights(cv: Path) -> dict[str, Path]:
    """chip key -> the weights of the fold that held it out."""
    out = {}
    for d in sorted(cv.glob("fold*")):
        for key in json.loads((d / "heldout.json").read_text())["chips"]:
            out[key] = d / "cam.safetensors"
    return out


def geocloud_mask(chip: Any, weights: Path, cache: Path | None) -> np.ndarray:
    """geocloud's mask (uint8: 0 clear, 1 cloud, 2 shadow, 255 nodata) of ``chip`` with
    ``weights``, through process_scene (cached)."""
    path = None if cache is None else cache / chip.set / f"{chip.id}.mask.npy"
    if path is not None and path.is_file():
        return np.load(path)
    import rasterio

    from geocloud import OutputConfig, ProcessConfig, process_scene
    from geocloud.models.cam import load as load_cam
    from geocloud.scene import without_georef_warning

    cfg = ProcessConfig(model="cam", output=OutputConfig(products=("mask",), overwrite=True))
    with tempfile.TemporaryDirectory() as tmp:
        res = process_scene(chip.scene, Path(tmp), cfg, model=load_cam("cpu", weights))
        with without_georef_warning(), rasterio.open(res.outputs["mask"][0]) as m:
            mask = m.read(1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, mask)
    return mask


def run_method(refl: np.ndarray, cloud: np.ndarray, valid: np.ndarray, cfg: Any) -> tuple[np.ndarray, Any]:
    """The shadow method on a whole chip: (shadow mask, displacement or None)."""
    from geocloud.shadow import estimate_shift, potential_shadow, shadow_mask

    ev = potential_shadow(refl, valid, cloud, cfg).astype(np.float32)
    shift = estimate_shift(cloud, ev, valid, config=cfg)
    return shadow_mask(refl, cloud, valid, shift, cfg), shift


def picture(
    path: Path, refl: np.ndarray, label: np.ndarray, panels: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    from PIL import Image

    fc = np.stack([refl[3], refl[2], refl[1]], -1)
    fc = np.clip(fc / max(float(np.percentile(fc, 98)), 1e-3) * 255, 0, 255).astype(np.uint8)
    lab = np.full(label.shape + (3,), 60, np.uint8)
    lab[label == 1] = lab[label == 2] = 255
    lab[label == 3] = (220, 0, 0)
    tiles = [fc, lab]
    truth = label == 3
    for cloud, pred in panels:
        im = np.full(label.shape + (3,), 60, np.uint8)
        im[cloud] = 200
        im[pred & truth] = (0, 200, 0)
        im[pred & ~truth & (label != 255)] = (230, 0, 0)
        im[~pred & truth] = (40, 80, 255)
        tiles.append(im)
    img = np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1)
    if img.shape[0] < 400:
        img = np.kron(img, np.ones((2, 2, 1), np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument(
        "--cv", type=Path, default=None, help="cross-validation folds (fold*/cam.safetensors, heldout.json)"
    )
    ap.add_argument("--ukis", type=Path, default=None, help="masks of benchmarks/ukis_masks.py --classes")
    ap.add_argument("--cache", type=Path, default=None, help="keep geocloud's cloud masks here")
    ap.add_argument(
        "--set", action="append", default=[], metavar="FIELD=JSON", help="override a ShadowConfig field"
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None, help="write a picture per shadow chip here")
    args = ap.parse_args(argv)
    if not (args.data / "catalog.csv").exists():
        print(f"no catalog.csv in {args.data}; pass --data with the shared data folder", file=sys.stderr)
        return 2
    import dataclasses

    from geocloud.shadow import ShadowConfig
    from geocloud.training.data import load_catalog, read_chip

    logging.getLogger("geocloud").setLevel(logging.ERROR)
    overrides = {}
    for item in args.set:
        k, _, v = item.partition("=")
        val = json.loads(v)
        overrides[k] = tuple(val) if isinstance(val, list) else val
    cfg = dataclasses.replace(ShadowConfig(), **overrides)
    chips = [c for c in load_catalog(args.data, four_band_only=True) if c.labels_usable]
    weights = fold_weights(args.cv) if args.cv is not None else {}
    methods = ["label cloud", "geocloud cloud"] if weights else ["label cloud"]
    if args.ukis is not None:
        methods.append("ukis-csmask")
    res: dict[str, dict[str, dict[str, int]]] = {m: {} for m in methods}
    shifts: dict[str, dict[str, Any]] = {m: {} for m in methods if m != "ukis-csmask"}
    has_shadow: list[str] = []
    cloud_free: list[str] = []
    seconds = {"estimate_shift": 0.0, "shadow_mask": 0.0, "mpx": 0.0}
    for chip in chips:
        refl, label = read_chip(chip)
        valid = label != 255  # usable chips: 255 is nodata only
        if (label == 3).any():
            has_shadow.append(chip.key)
        if not ((label == 1) | (label == 2)).any():
            cloud_free.append(chip.key)
        clouds = {"label cloud": (label == 1) | (label == 2)}
        panels = []
        if "geocloud cloud" in methods:
            mask = geocloud_mask(chip, weights[chip.key], args.cache)
            res["geocloud cloud"][chip.key] = counts((mask == 2) & valid, label)
            panels.append(((mask == 1) & valid, (mask == 2) & valid))
        for name, cloud in clouds.items():
            from geocloud.shadow import estimate_shift, potential_shadow, shadow_mask

            t0 = time.perf_counter()
            ev = potential_shadow(refl, valid, cloud, cfg).astype(np.float32)
            shift = estimate_shift(cloud, ev, valid, config=cfg)
            t1 = time.perf_counter()
            pred = shadow_mask(refl, cloud, valid, shift, cfg)
            t2 = time.perf_counter()
            seconds["estimate_shift"] += t1 - t0
            seconds["shadow_mask"] += t2 - t1
            seconds["mpx"] += label.size / 1e6
            res[name][chip.key] = counts(pred, label)
            shifts[name][chip.key] = None if shift is None else {
                "dy": round(shift.dy, 1), "dx": round(shift.dx, 1), "score": round(shift.score, 4)}  # fmt: skip
            panels.append((cloud, pred))
        if args.ukis is not None:
            import rasterio

            from geocloud.scene import without_georef_warning

            with without_georef_warning(), rasterio.open(args.ukis / chip.set / f"{chip.id}.tif") as m:
                u = m.read(1)
            res["ukis-csmask"][chip.key] = counts(u == 2, label)
            panels.append((u == 1, u == 2))
        worst = max(
            r[chip.key]["clear_fp"] / max(r[chip.key]["clear"], 1)
            for m, r in res.items()
            if m != "ukis-csmask"
        )
        if args.png is not None and (chip.key in has_shadow or worst > GOALS["clear_fp"]):
            picture(args.png / f"{chip.set}_{chip.id}.png", refl, label, panels)

    out = summarise(res, chips, has_shadow, cloud_free)
    out.update(
        {
            "config": dataclasses.asdict(cfg),
            "shifts": shifts,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
    )
    report(out, methods)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return 0


def label_groups(chips: list[Any], has_shadow: list[str], cloud_free: list[str]) -> dict[str, list[str]]:
    """The chip keys each figure pools over.  A label's clear is truly shadow-free only where
    the labeller marked shadow (chips with shadow) or where no cloud can cast one (cloud-free
    chips): the other cloudy chips' labels (all of s2_oncloudn, several L8 Biome scenes)
    leave their shadows clear, so the *trusted* chips are those two kinds."""
    good = {c.key for c in chips if c.label_quality == "good"}
    trusted = list(has_shadow) + [k for k in cloud_free if k not in has_shadow]
    return {
        "shadow chips": list(has_shadow),
        "shadow chips without ukis_samples": [k for k in has_shadow if not k.startswith("ukis_samples/")],
        "trusted chips": trusted,
        "trusted chips, good labels": [k for k in trusted if k in good],
        "all chips": [c.key for c in chips],
        "all chips without ukis_samples": [c.key for c in chips if c.set != "ukis_samples"],
    }


def pooled(per: dict[str, dict[str, int]], keys: list[str]) -> dict[str, float]:
    """Shadow tp, fp, fn, precision, recall and F1 summed over the chips ``keys``."""
    tp, fp, fn = (sum(per[k][x] for k in keys) for x in ("tp", "fp", "fn"))
    return {"tp": tp, "fp": fp, "fn": fn, **prf(tp, fp, fn)}


def clear_rate(per: dict[str, dict[str, int]], keys: list[str]) -> float:
    """Clear pixels called shadow, as a share of the clear pixels of the chips ``keys``."""
    return sum(per[k]["clear_fp"] for k in keys) / max(sum(per[k]["clear"] for k in keys), 1)


def summarise(
    res: dict[str, dict[str, dict[str, int]]], chips: list[Any], has_shadow: list[str], cloud_free: list[str]
) -> dict[str, Any]:
    groups = label_groups(chips, has_shadow, cloud_free)
    out: dict[str, Any] = {"shadow_chips": has_shadow, "cloud_free_chips": cloud_free, "methods": {}}
    for name, per in res.items():
        chip_rows = {}
        for c in chips:
            m = per[c.key]
            chip_rows[c.key] = {
                **m,
                **prf(m["tp"], m["fp"], m["fn"]),
                "clear_fp_rate": m["clear_fp"] / max(m["clear"], 1),
            }
        out["methods"][name] = {
            "groups": {g: pooled(per, groups[g]) for g in SHADOW_GROUPS},
            "clear_fp": {g: clear_rate(per, keys) for g, keys in groups.items()},
            "chips": chip_rows,
        }
    return out


def report(out: dict[str, Any], methods: list[str]) -> None:
    res = out["methods"]
    n = len(out["shadow_chips"])
    print(
        f"cloud shadow on {n} chips with labelled shadow; clear-land false positives on the chips whose labels "
        f"mark shadow or that have no cloud ({len(out['cloud_free_chips'])}), and on all usable 4-band chips "
        "(whose clear includes unlabelled shadow)\n"
    )
    print("| method | shadow P | R | F1 | F1 without ukis_samples | clear FP %: trusted chips | trusted, good labels "
          "| all chips | without ukis_samples | shadow chips | shadow chips without ukis_samples |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in methods:
        g = res[m]["groups"]["shadow chips"]
        g2 = res[m]["groups"]["shadow chips without ukis_samples"]
        c = res[m]["clear_fp"]
        print(f"| {m} | {g['precision']:.3f} | {g['recall']:.3f} | {g['f1']:.3f} | {g2['f1']:.3f} | "
              f"{100 * c['trusted chips']:.2f} | {100 * c['trusted chips, good labels']:.2f} | "
              f"{100 * c['all chips']:.2f} | {100 * c['all chips without ukis_samples']:.2f} | "
              f"{100 * c['shadow chips']:.2f} | {100 * c['shadow chips without ukis_samples']:.2f} |")  # fmt: skip
    print("\nper shadow chip: P / R / F1 (shift dy, dx px)")
    print("| chip | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for k in out["shadow_chips"]:
        cells = []
        for m in methods:
            r = res[m]["chips"][k]
            s = out["shifts"].get(m, {}).get(k)
            sh = (
                ""
                if m not in out["shifts"]
                else (" (none)" if s is None else f" ({s['dy']:+.0f}, {s['dx']:+.0f})")
            )
            cells.append(f"{r['precision']:.2f} / {r['recall']:.2f} / {r['f1']:.2f}{sh}")
        print(f"| {k} | " + " | ".join(cells) + " |")
    print("\nworst chips for clear-land false positives (% of the chip's clear pixels)")
    for m in methods:
        rows = sorted(res[m]["chips"].items(), key=lambda kv: kv[1]["clear_fp_rate"], reverse=True)[:6]
        print(f"  {m}: " + ", ".join(f"{k.split('/')[-1]} {100 * r['clear_fp_rate']:.1f}" for k, r in rows))
    s = out["seconds"]
    if s["mpx"]:
        print(f"\ntime per Mpx (this machine, one thread): estimate_shift {s['estimate_shift'] / s['mpx']:.3f} s "
              f"(with darkness), shadow_mask {s['shadow_mask'] / s['mpx']:.3f} s")  # fmt: skip
    print(
        f"\ngoal: clear-land FP <= {100 * GOALS['clear_fp']:.0f} %; shadow F1 >= ukis-csmask's without ukis_samples"
    )


if __name__ == "__main__":
    raise SystemExit(main())
