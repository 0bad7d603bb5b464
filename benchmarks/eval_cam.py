"""Cross-validated cloud-mask accuracy on the labelled chips of ../shared/data, through the engine.

    python benchmarks/eval_cam.py --data ../shared/data --out runs/cv [--folds 5] [--workers 2]
        [--ukis runs/ukis] [--no-grow] [--reuse] [--json runs/cv/cv.json] [--epochs N]

k-fold by chip (:func:`geocloud.training.data.kfold_chips`: every 4-band chip with usable
labels, stratified by surface type and sensor).  For each fold, the shipped recipe
(:func:`geocloud.training.cam.run_training` with the default :class:`CamTrainConfig`,
its calibration included) trains on the block labels of the other folds' chips and the
unlabelled imagery, never seeing the fold's chips; then :func:`geocloud.process_scene`
(the path ``geocloud process`` takes: blocks, mosaic, the scene's threshold) predicts each
held-out chip with that fold's weights, and :func:`geocloud.evaluate.evaluate_arrays`
(behind ``geocloud evaluate``) scores the mask: thin and thick cloud are cloud, shadow is
not, 255 is ignored.

The CAM is also run with the model's fixed threshold (``cam fixed t``, the ``fixed``
threshold rule) beside the engine's default scene-adaptive one.  Side by side on the
same chips: ``--model spectral`` through the same engine, the
brightness rule mean(blue, green, red) > 0.3, and, with ``--ukis DIR``, the masks that
``benchmarks/ukis_masks.py`` wrote with the open peer ukis-csmask in its own environment
(biased on the ``ukis_samples`` chips, its own test chips: reported with and without).

Prints pooled figures, per surface type (barren, snow/ice, water, urban, vegetation, thin
cloud = chips with >= 10 % thin cloud, and the non-L8 sets), per sensor, per chip, the 10
worst chips with their false-positive and false-negative pixels, the false-positive rate
on the bright barren and snow chips, and the issue's goals.  ``--reuse`` keeps fold
weights already in ``--out`` (same folds: the fold's chip list is checked).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

GOALS = {"oa": 0.97, "f1": 0.92, "good_chip_oa": 0.85, "bright_fp": 0.03}
BRIGHT_SURFACES = ("barren", "snowice")
VEGETATION = ("forest", "grasscrops", "shrubland", "wetlands")


def surface_groups(chip: Any) -> list[str]:
    """The report groups a chip belongs to (besides pooled)."""
    out = [f"sensor:{chip.sensor}", f"quality:{chip.label_quality}"]
    if chip.set == "l8_biome":
        s = chip.surface
        out.append("surface:vegetation" if s in VEGETATION else f"surface:{s}")
    else:
        out.append(f"set:{chip.set}")
    if chip.thin_frac >= 0.1:
        out.append("surface:thin cloud")
    if chip.label_quality == "good":
        out.append("pooled_good")
    if chip.set != "ukis_samples":
        out.append("pooled_without_ukis_samples")
    return out


def train_fold(data: str, out: str, exclude: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    """Train the shipped recipe without the ``exclude`` chips (runs in a worker process)."""
    import torch

    from geocloud.training.cam import CamTrainConfig, run_training

    torch.set_num_threads(1)
    logging.getLogger("geocloud").setLevel(logging.ERROR)
    base = CamTrainConfig()
    top = {k: v for k, v in overrides.items() if "." not in k}
    gen = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("generator.")}
    cfg = dataclasses.replace(base, generator=dataclasses.replace(base.generator, **gen), **top)
    t0 = time.perf_counter()
    side = run_training(data, out, cfg, exclude=exclude)
    return {"seconds": round(time.perf_counter() - t0, 1), "threshold": side["spec"]["default_threshold"]}


def _counts(mask: np.ndarray, label_path: Path, key: str) -> dict[str, int]:
    import rasterio

    from geocloud.evaluate import evaluate_arrays
    from geocloud.scene import without_georef_warning

    with without_georef_warning(), rasterio.open(label_path) as t:
        return evaluate_arrays(mask, t.read(1), name=key)


def engine_mask(chip: Any, model: Any, cfg: Any, tmp: Path) -> tuple[np.ndarray, float]:
    """The mask ``geocloud process`` writes for ``chip``, and the threshold it used."""
    import rasterio

    from geocloud import process_scene
    from geocloud.scene import without_georef_warning

    res = process_scene(chip.scene, tmp / chip.set, cfg, model=model)
    with without_georef_warning(), rasterio.open(res.outputs["mask"][0]) as m:
        return m.read(1), float(res.stats.threshold.value)


def brightness_mask(chip: Any) -> np.ndarray:
    from geocloud.training.data import read_chip

    refl, label = read_chip(chip)
    mask = (refl[:3].mean(axis=0) > 0.3).astype(np.uint8)
    mask[label == 255] = 255
    return mask


def summarise(counts: dict[str, dict[str, int]], chips: list[Any]) -> dict[str, Any]:
    from geocloud.evaluate import metrics

    groups: dict[str, dict[str, int]] = {}
    per_chip = {}
    for chip in chips:
        c = counts[chip.key]
        per_chip[chip.key] = metrics(c)
        for g in ["pooled", *surface_groups(chip)]:
            acc = groups.setdefault(g, {"tp": 0, "fp": 0, "fn": 0, "tn": 0})
            for k in acc:
                acc[k] += c[k]
    out = {"groups": {k: metrics(v) for k, v in groups.items()}, "chips": per_chip}
    for g in list(out["groups"].values()) + list(out["chips"].values()):
        g["fp_of_clear"] = g["fp"] / max(g["fp"] + g["tn"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("runs/cv"), help="fold weights go here")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    ap.add_argument("--workers", type=int, default=2, help="folds trained at once (1 torch thread each)")
    ap.add_argument("--ukis", type=Path, default=None, help="masks of benchmarks/ukis_masks.py")
    ap.add_argument("--no-grow", action="store_true", help="edge growing off for the CAM (--no-grow)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="a fixed CAM threshold for every fold (--threshold; a sensitivity check, not validation)")  # fmt: skip
    ap.add_argument("--reuse", action="store_true", help="keep fold weights already in --out")
    ap.add_argument("--epochs", type=int, default=None, help="override CamTrainConfig.epochs")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="override another CamTrainConfig field, e.g. --set channels=[16,32,32] "
                         "or --set generator.p_brighten=0")  # fmt: skip
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--sidecar", type=Path, default=None,
                    help="write the cross-validated figures into this CAM sidecar's validation (cam.json)")  # fmt: skip
    args = ap.parse_args(argv)
    if not (args.data / "catalog.csv").exists():
        print(f"no catalog.csv in {args.data}; pass --data with the shared data folder", file=sys.stderr)
        return 2
    from geocloud import OutputConfig, ProcessConfig
    from geocloud.config import ThresholdConfig
    from geocloud.models import load_model
    from geocloud.models.cam import load as load_cam
    from geocloud.training.data import chip_list_hash, kfold_chips, load_catalog

    logging.getLogger("geocloud").setLevel(logging.ERROR)  # the chips' 'no CRS' warnings
    chips_all = load_catalog(args.data)
    folds = kfold_chips(chips_all, args.folds, seed=args.seed)
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    for item in args.set:
        k, _, v = item.partition("=")
        val = json.loads(v)
        overrides[k] = tuple(tuple(x) if isinstance(x, list) else x for x in val) if isinstance(val, list) else val
        if "." in k and not k.startswith("generator."):
            ap.error(f"--set {item}: only generator.FIELD may be dotted")

    # 1. train the folds (in parallel worker processes)
    t0 = time.perf_counter()
    jobs = {}
    train_info: dict[int, Any] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=get_context("spawn")) as pool:
        for i, fold in enumerate(folds):
            out = args.out / f"fold{i}"
            keys = [c.key for c in fold]
            tag = out / "heldout.json"
            if (args.reuse and (out / "cam.safetensors").is_file() and tag.is_file()
                    and json.loads(tag.read_text())["hash"] == chip_list_hash(fold)):  # fmt: skip
                train_info[i] = {"reused": True}
                continue
            out.mkdir(parents=True, exist_ok=True)
            tag.write_text(json.dumps({"hash": chip_list_hash(fold), "chips": keys}, indent=1))
            jobs[i] = pool.submit(train_fold, str(args.data), str(out), keys, overrides)
        for i, job in jobs.items():
            train_info[i] = job.result()
            print(f"fold {i}: trained in {train_info[i]['seconds']} s", file=sys.stderr)
    t_train = time.perf_counter() - t0

    # 2. predict every held-out chip through the engine
    grow = not args.no_grow
    cfg = ProcessConfig(threshold=ThresholdConfig(grow=grow, value=args.threshold), output=OutputConfig(products=("mask", "stats"), overwrite=True))
    methods: dict[str, dict[str, dict[str, int]]] = {"cam": {}, "cam fixed t": {}, "spectral": {}, "brightness>0.3": {}}
    if args.ukis is not None:
        methods["ukis-csmask"] = {}
    thresholds: dict[str, float] = {}
    fold_of: dict[str, int] = {}
    spectral = load_model("spectral")
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, fold in enumerate(folds):
            cam = load_cam("cpu", args.out / f"fold{i}" / "cam.safetensors")
            for chip in fold:
                fold_of[chip.key] = i
                mask, thresholds[chip.key] = engine_mask(chip, cam, dataclasses.replace(cfg, model="cam"), Path(tmp))
                methods["cam"][chip.key] = _counts(mask, chip.label, chip.key)
                fixed = dataclasses.replace(cfg, model="cam", threshold=dataclasses.replace(cfg.threshold, method="fixed"))
                mask, _ = engine_mask(chip, cam, fixed, Path(tmp))
                methods["cam fixed t"][chip.key] = _counts(mask, chip.label, chip.key)
                mask, _ = engine_mask(chip, spectral, dataclasses.replace(cfg, model="spectral"), Path(tmp))
                methods["spectral"][chip.key] = _counts(mask, chip.label, chip.key)
                methods["brightness>0.3"][chip.key] = _counts(brightness_mask(chip), chip.label, chip.key)
                if args.ukis is not None:
                    import rasterio

                    with rasterio.open(args.ukis / chip.set / f"{chip.id}.tif") as m:
                        methods["ukis-csmask"][chip.key] = _counts(m.read(1), chip.label, chip.key)
    t_eval = time.perf_counter() - t1
    chips = [c for fold in folds for c in fold]
    res = {name: summarise(counts, chips) for name, counts in methods.items()}
    out = {
        "folds": [[c.key for c in f] for f in folds],
        "fold_seed": args.seed,
        "grow": grow,
        "overrides": {k: v for k, v in overrides.items()},
        "training": {str(k): v for k, v in train_info.items()},
        "seconds": {"train": round(t_train, 1), "evaluate": round(t_eval, 1)},
        "methods": res,
        "thresholds": thresholds,
    }
    report(out, chips)
    if args.sidecar is not None:
        write_sidecar(args.sidecar, out, argv if argv is not None else sys.argv[1:])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return 0


def write_sidecar(path: Path, out: dict[str, Any], argv: list[str]) -> None:
    """Put the cross-validation's figures into a CAM sidecar's ``validation`` (atomically)."""
    from geocloud.outputs import atomic_write_text

    side = json.loads(path.read_text())
    res = out["methods"]

    def rounded(d: dict[str, Any]) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}

    side["validation"] = {
        "kind": f"{len(out['folds'])}-fold cross-validation by chip through process_scene",
        "command": "python benchmarks/eval_cam.py " + " ".join(argv),
        "folds": out["folds"],
        "grow": out["grow"],
        "cam": {
            "groups": {k: rounded(v) for k, v in sorted(res["cam"]["groups"].items())},
            "chips": {k: rounded(v) for k, v in res["cam"]["chips"].items()},
        },
        "baselines": {
            name: {g: rounded(res[name]["groups"][g]) for g in ("pooled", "pooled_good", "pooled_without_ukis_samples")}
            for name in res
            if name != "cam"
        },
    }
    atomic_write_text(path, json.dumps(side, indent=2, default=float) + "\n")


def report(out: dict[str, Any], chips: list[Any]) -> None:
    res = out["methods"]
    names = list(res)
    print(f"{len(out['folds'])}-fold cross-validation by chip, {len(chips)} chips; CAM edge growing "
          f"{'on' if out['grow'] else 'off'}; train {out['seconds']['train']} s, evaluate {out['seconds']['evaluate']} s\n")  # fmt: skip
    print("| group | chips | " + " | ".join(f"{n} OA | F1 | FP %" for n in names) + " |")
    print("|---|---|" + "---|---|---|" * len(names))
    groups = sorted(res["cam"]["groups"], key=lambda k: (not k.startswith("pooled"), k))
    for g in groups:
        n = sum(1 for c in chips if g == "pooled" or g in surface_groups(c))
        cells = []
        for name in names:
            m = res[name]["groups"][g]
            cells.append(f"{m['oa']:.3f} | {m['f1']:.3f} | {100 * m['fp_of_clear']:.1f}")
        print(f"| {g} | {n} | " + " | ".join(cells) + " |")
    print("\nper chip (fold): " + ", ".join(f"{n} OA / F1" for n in names) + "; CAM threshold")
    fold_of = {k: i for i, f in enumerate(out["folds"]) for k in f}
    for c in chips:
        cells = [f"{res[n]['chips'][c.key]['oa']:.3f} / {res[n]['chips'][c.key]['f1']:.3f}" for n in names]
        print(f"  {c.key:44s} {c.label_quality:6s} ({fold_of[c.key]}) " + "  ".join(cells)
              + f"  t={out['thresholds'][c.key]:.3f}")  # fmt: skip
    cam = res["cam"]["chips"]
    worst = sorted(chips, key=lambda c: cam[c.key]["fp"] + cam[c.key]["fn"], reverse=True)[:10]
    print("\n10 worst chips for the CAM (most wrong pixels): OA, F1, false positives, false negatives")
    for c in worst:
        m = cam[c.key]
        print(f"  {c.key:44s} OA {m['oa']:.3f} F1 {m['f1']:.3f} FP {m['fp']:6d} FN {m['fn']:6d}")
    print("\nfalse positives on bright surfaces (% of clear pixels): " + ", ".join(names))
    for c in chips:
        if c.set == "l8_biome" and (c.surface in BRIGHT_SURFACES or c.key.endswith("Forest_05_0415")):
            print(f"  {c.key:44s} " + "  ".join(f"{100 * res[n]['chips'][c.key]['fp_of_clear']:5.1f}" for n in names)
                  + ("  (snow under forest)" if "Forest_05" in c.key else ""))  # fmt: skip
    p = res["cam"]["groups"]
    bad_good = [c.key for c in chips if c.label_quality == "good" and cam[c.key]["oa"] < GOALS["good_chip_oa"]]
    bright = [c for c in chips if c.set == "l8_biome" and c.surface in BRIGHT_SURFACES]
    n_clear = {c.key: cam[c.key]["fp"] + cam[c.key]["tn"] for c in bright}
    # chips with at least 5000 clear pixels (Barren_05 and SnowIce_11 are almost all cloud)
    bright_fp = max((cam[c.key]["fp_of_clear"] for c in bright if n_clear[c.key] >= 5000), default=0.0)
    pooled_fp = sum(cam[c.key]["fp"] for c in bright) / max(sum(n_clear.values()), 1)
    print("\ngoals:")
    print(f"  pooled F1 >= {GOALS['f1']}: {p['pooled']['f1']:.3f}; pooled OA >= {GOALS['oa']}: {p['pooled']['oa']:.3f}")
    if "ukis-csmask" in res:
        u = res["ukis-csmask"]["groups"]["pooled_without_ukis_samples"]["f1"]
        print(f"  F1 without ukis_samples >= ukis-csmask's {u:.3f}: {p['pooled_without_ukis_samples']['f1']:.3f}")
    print(f"  good chips below OA {GOALS['good_chip_oa']}: {bad_good or 'none'}")
    print(f"  FP on bright barren/snow chips <= {100 * GOALS['bright_fp']:.0f} % of their clear pixels: "
          f"largest {100 * bright_fp:.1f} % (chips with >= 5000 clear pixels), pooled {100 * pooled_fp:.1f} %")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
