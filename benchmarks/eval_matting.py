"""Evaluate the matting model on held-out chips (see geocloud.training.matting_eval).

    python benchmarks/eval_matting.py --data ../shared/data [--weights W.safetensors]
        [--baseline OLD.safetensors] [--refine] [--gate cam | --gate-cv runs/cv_stem2] [--json out.json]

Prints, for the validation chips of the shared split (seed 0, half of each stratum):

* composites over the chips' clear pixels, with the generator's procedural layers (grey-white,
  as in training) and with spectrally non-flat haze (the same layers, colour times
  (wavelength / red)^-gamma): alpha MAE; alpha MAE on bright ground (snow, bright water);
  PSNR (peak 1.0 reflectance) and SSIM of the recovered background where alpha <= 0.5,
  where 0 < alpha <= 0.5, where 0.5 < alpha <= 0.8 and overall (alpha_hat <= alpha_max);
  per chip, with the 5 worst;
* real labelled chips: mean alpha for clear, thin and thick cloud, ROC-AUC of alpha
  (cloud + thin vs clear), for ``good`` and ``coarse`` labels and both together, and the
  mean alpha on real bright ground labelled clear (target 0).

``--baseline`` evaluates other weights the same way and prints them side by side;
``--refine`` adds the figures with the local-smoothness refinement; ``--gate cam`` those of
the clear product as ``geocloud process`` writes it (alpha 0 where the CAM mask says clear);
``--gate-cv CV`` the same with each chip gated by the CAM of the cross-validation fold that
held it out (the shipped CAM was trained on every labelled chip, so ``--gate cam`` gates the
held-out chips with a detector that saw them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from geocloud.declouding import DecloudConfig, refine_matte
from geocloud.models.matting import WEIGHTS_FILE, load
from geocloud.training.matting_eval import EvalConfig, evaluate_real, evaluate_synthetic

GOALS = {"alpha_mae": 0.04, "psnr_le05": 32.0, "psnr_05_08": 26.0, "auc_good": 0.95}


def _f(v, fmt: str = ".2f") -> str:  # type: ignore[no-untyped-def]
    return "-" if v is None else format(v, fmt)


def _syn_row(name: str, r: dict) -> str:
    return (
        f"| {name} | {r['n_composites']} | {r['alpha_mae']:.4f} | {_f(r['alpha_mae_bright'], '.4f')} | "
        f"{r['psnr_le05']:.2f} | {r['ssim_le05']:.3f} | {r['psnr_cloud_le05']:.2f} | "
        f"{r['psnr_05_08']:.2f} | {r['ssim_05_08']:.3f} | {r['psnr_overall']:.2f} | {r['recovered_fraction']:.3f} |"
    )


def trained_on(weights: Path) -> tuple[str, ...]:
    """The chips the weights were trained on, from their sidecar."""
    meta = json.loads(weights.with_suffix(".json").read_text())
    return tuple(meta.get("training", {}).get("train_chips", []))


def evaluate_all(weights: Path, args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> dict:
    model = load("cpu", weights=weights)
    t0 = time.perf_counter()
    out: dict = {"weights": str(weights), "excluded": list(exclude)}
    haze = EvalConfig(haze=True)
    out["synthetic"] = evaluate_synthetic(model, args.data, exclude=exclude)
    out["synthetic_haze"] = evaluate_synthetic(model, args.data, haze, exclude=exclude)
    if exclude:  # the short run: held out for both weights
        out["real"] = evaluate_real(model, args.data, exclude=exclude)
        out["seconds"] = round(time.perf_counter() - t0, 1)
        return out
    if args.refine:
        cfg = DecloudConfig(refine=True)

        def refine(y, a, r):  # type: ignore[no-untyped-def]
            return refine_matte(y, a, r, None, cfg)

        t1 = time.perf_counter()
        out["synthetic_refined"] = evaluate_synthetic(model, args.data, refine=refine)
        out["refine_seconds"] = round(time.perf_counter() - t1, 1)
        out["synthetic_haze_refined"] = evaluate_synthetic(model, args.data, haze, refine=refine)
    detector = None
    if args.gate_cv is not None:
        detector = cv_gate(args.gate_cv)
    elif args.gate:
        from geocloud.models import load_model

        detector = load_model(args.gate, "cpu")
    if detector is not None:
        out["synthetic_gated"] = evaluate_synthetic(model, args.data, gate=detector)
        out["synthetic_haze_gated"] = evaluate_synthetic(model, args.data, haze, gate=detector)
    out["real"] = evaluate_real(model, args.data)
    if detector is not None:
        out["real_gated"] = evaluate_real(model, args.data, gate=detector)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def report(runs: list[tuple[str, dict]], gate: str | None) -> None:
    print("Composites over held-out clear pixels (PSNR peak 1.0 reflectance; a = true alpha):\n")
    print(
        "| weights, run | composites | alpha MAE | alpha MAE bright ground | PSNR a<=0.5 | SSIM a<=0.5 | "
        "PSNR 0<a<=0.5 | PSNR 0.5<a<=0.8 | SSIM 0.5<a<=0.8 | PSNR overall | recovered |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, out in runs:
        for key, name in (
            ("synthetic", "grey-white layers"),
            ("synthetic_haze", "non-flat haze"),
            ("synthetic_refined", "grey-white, --refine"),
            ("synthetic_haze_refined", "non-flat haze, --refine"),
            ("synthetic_gated", f"grey-white, gated by the {gate} mask"),
            ("synthetic_haze_gated", f"non-flat haze, gated by the {gate} mask"),
        ):
            if key in out:
                print(_syn_row(f"{label}, {name}", out[key]))
    print("\nReal labelled held-out chips (gated: alpha 0 where the mask says clear):\n")
    print("| weights, labels | mean alpha clear | thin | thick | ROC-AUC cloud vs clear | pixels clear/thin/thick |")
    print("|---|---|---|---|---|---|")
    for label, out in runs:
        rows = [(q, out["real"][q]) for q in ("good", "coarse", "all")]
        if "real_gated" in out:
            rows += [(f"{q}, gated", out["real_gated"][q]) for q in ("good", "coarse", "all")]
        for q, r in rows:
            px = r["pixels"]
            print(
                f"| {label}, {q} | {_f(r['mean_alpha_clear'], '.3f')} | {_f(r['mean_alpha_thin'], '.3f')} | "
                f"{_f(r['mean_alpha_thick'], '.3f')} | {r['auc_cloud_vs_clear']:.4f} | "
                f"{px['clear']}/{px['thin']}/{px['thick']} |"
            )
    print("\nReal bright ground labelled clear (mean visible reflectance > 0.3), mean alpha (target 0):")
    for label, out in runs:
        b = out["real"]["bright_clear"]
        print(f"  {label}: {_f(b['alpha_mae'], '.4f')} over {b['pixels']} px")
    for label, out in runs:
        syn = out["synthetic"]
        print(f"\n{label}: per held-out chip (grey-white layers): alpha MAE / PSNR a<=0.5 / PSNR 0.5<a<=0.8 (dB)")
        for k, v in syn["alpha_mae_by_chip"].items():
            ref = out.get("synthetic_refined", {}).get("psnr_le05_by_chip", {}).get(k)
            extra = f" / refined {_f(ref)}" if ref is not None else ""
            print(f"  {k}: {v:.4f} / {_f(syn['psnr_le05_by_chip'][k])} / {_f(syn['psnr_05_08_by_chip'][k])}{extra}")
        print("  5 worst (PSNR a<=0.5): " + ", ".join(f"{w['chip']} {_f(w['psnr_le05'])} dB" for w in syn["worst_chips"]))
        print(f"  (evaluated in {out['seconds']} s)")
    print(f"\ngoals: {GOALS}")


def cv_gate(cv: Path):  # type: ignore[no-untyped-def]
    """chip key -> the CAM of the cross-validation fold that held the chip out (loaded once
    per fold).  A chip in no fold (labels not usable, so never scored by the CV) is gated by
    fold 0's CAM."""
    from eval_shadow import fold_weights  # (benchmarks/ is on sys.path)

    from geocloud.models.cam import load as load_cam

    weights_of = fold_weights(cv)
    if not weights_of:
        raise SystemExit(f"no fold*/ in {cv}: run benchmarks/eval_cam.py --out {cv} first")
    first = min(weights_of.values())
    models: dict[Path, object] = {}

    def gate(key: str):  # type: ignore[no-untyped-def]
        w = weights_of.get(key, first)
        if w not in models:
            models[w] = load_cam("cpu", w)
        return models[w]

    return gate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--weights", type=Path, default=WEIGHTS_FILE)
    ap.add_argument("--baseline", type=Path, default=None, help="other weights, evaluated the same way")
    ap.add_argument("--refine", action="store_true", help="also evaluate with --refine")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--gate",
        default=None,
        help="also evaluate the pipeline's clear product: alpha gated by this detector's mask (e.g. cam)",
    )
    ap.add_argument(
        "--gate-cv",
        type=Path,
        default=None,
        metavar="CV",
        help="as --gate cam, each chip gated by the CAM of the cross-validation fold that held it out "
        "(CV/fold*/cam.safetensors and heldout.json of benchmarks/eval_cam.py): a gate that never saw the chip",
    )
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = ap.parse_args(argv)
    if not (args.data / "catalog.csv").exists():
        print(f"no catalog.csv in {args.data}; pass --data with the shared data folder", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    runs = []
    if args.baseline is not None:
        runs.append(("baseline", evaluate_all(args.baseline, args)))
    runs.append(("weights", evaluate_all(args.weights, args)))
    if args.baseline is not None:
        # the split follows the data folder: chips the baseline was trained on may be held out
        # now; score both weights again on the chips neither was trained on
        seen = tuple(sorted(set(trained_on(args.baseline)) | set(trained_on(args.weights))))
        if seen:
            print(f"(also scored without the chips either weights were trained on: {len(seen)} excluded)")
            runs.append(("baseline, held out for both", evaluate_all(args.baseline, args, seen)))
            runs.append(("weights, held out for both", evaluate_all(args.weights, args, seen)))
    report(runs, "cross-validation fold's cam" if args.gate_cv is not None else args.gate)
    if args.json:
        args.json.write_text(json.dumps(dict(runs), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
