"""Evaluate the matting model on held-out chips (see geocloud.training.matting_eval).

    python benchmarks/eval_matting.py --data ../shared/data [--weights W.safetensors] [--refine] [--json out.json]

Prints, for the validation chips of the shared split (seed 0, half of each stratum):

* synthetic composites over the chips' clear pixels: alpha MAE; PSNR (peak 1.0
  reflectance) and SSIM of the recovered background where alpha <= 0.5, where
  0 < alpha <= 0.5 and overall (alpha_hat <= alpha_max); all chips, and without the
  snow/ice chips;
* real labelled chips: mean alpha for clear, thin and thick cloud, ROC-AUC of alpha
  (cloud + thin vs clear), for ``good`` and ``coarse`` labels and both together.

``--refine`` adds the same synthetic figures with the local-smoothness refinement.
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
from geocloud.training.matting_eval import evaluate_real, evaluate_synthetic

GOALS = {"alpha_mae": 0.05, "psnr_le05": 35.0, "auc": 0.95}


def _syn_row(name: str, r: dict) -> str:
    return (
        f"| {name} | {r['n_composites']} | {r['alpha_mae']:.4f} | {r['psnr_le05']:.2f} | {r['ssim_le05']:.3f} | "
        f"{r['psnr_cloud_le05']:.2f} | {r['psnr_overall']:.2f} | {r['ssim_overall']:.3f} | "
        f"{r['recovered_fraction']:.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--weights", type=Path, default=WEIGHTS_FILE)
    ap.add_argument("--refine", action="store_true", help="also evaluate with --refine")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--gate",
        default=None,
        help="also evaluate the pipeline's clear product: alpha gated by this detector's mask (e.g. cam)",
    )
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = ap.parse_args(argv)
    if not (args.data / "catalog.csv").exists():
        print(f"no catalog.csv in {args.data}; pass --data with the shared data folder", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    model = load("cpu", weights=args.weights)
    t0 = time.perf_counter()
    out: dict = {"weights": str(args.weights)}
    out["synthetic"] = evaluate_synthetic(model, args.data)
    out["synthetic_no_snow"] = evaluate_synthetic(model, args.data, exclude=("SnowIce",))
    if args.refine:
        cfg = DecloudConfig(refine=True)

        def refine(y, a, r):  # type: ignore[no-untyped-def]
            return refine_matte(y, a, r, None, cfg)

        t1 = time.perf_counter()
        out["synthetic_refined"] = evaluate_synthetic(model, args.data, refine=refine)
        out["refine_seconds"] = round(time.perf_counter() - t1, 1)
        out["synthetic_no_snow_refined"] = evaluate_synthetic(
            model, args.data, refine=refine, exclude=("SnowIce",)
        )
    if args.gate:
        from geocloud.models import load_model

        detector = load_model(args.gate, "cpu")
        out["synthetic_gated"] = evaluate_synthetic(model, args.data, gate=detector)
        out["synthetic_no_snow_gated"] = evaluate_synthetic(
            model, args.data, gate=detector, exclude=("SnowIce",)
        )
    out["real"] = evaluate_real(model, args.data)
    if args.gate:
        out["real_gated"] = evaluate_real(model, args.data, gate=detector)
    out["seconds"] = round(time.perf_counter() - t0, 1)

    print("Synthetic composites over held-out clear pixels (PSNR peak 1.0 reflectance):\n")
    print(
        "| run | composites | alpha MAE | PSNR a<=0.5 | SSIM a<=0.5 | PSNR 0<a<=0.5 | PSNR overall | SSIM overall | recovered |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for key, name in (
        ("synthetic", "all chips"),
        ("synthetic_refined", "all chips, --refine"),
        ("synthetic_no_snow", "without snow/ice"),
        ("synthetic_no_snow_refined", "without snow/ice, --refine"),
        ("synthetic_gated", f"all chips, gated by the {args.gate} mask"),
        ("synthetic_no_snow_gated", f"without snow/ice, gated by the {args.gate} mask"),
    ):
        if key in out:
            print(_syn_row(name, out[key]))
    print("\nReal labelled held-out chips (alpha of the model; gated: 0 where the mask says clear,")
    print("the opacity the clear product inverts):\n")
    print("| labels | mean alpha clear | thin | thick | ROC-AUC cloud vs clear | pixels clear/thin/thick |")
    print("|---|---|---|---|---|---|")
    rows = [(q, out["real"][q]) for q in ("good", "coarse", "all")]
    if "real_gated" in out:
        rows += [
            (f"{q}, gated by the {args.gate} mask", out["real_gated"][q]) for q in ("good", "coarse", "all")
        ]
    for q, r in rows:

        def f(v):  # type: ignore[no-untyped-def]
            return "-" if v is None else f"{v:.3f}"

        px = r["pixels"]
        print(
            f"| {q} | {f(r['mean_alpha_clear'])} | {f(r['mean_alpha_thin'])} | {f(r['mean_alpha_thick'])} | "
            f"{r['auc_cloud_vs_clear']:.4f} | {px['clear']}/{px['thin']}/{px['thick']} |"
        )
    print("\nper held-out chip: alpha MAE / PSNR a<=0.5 (dB)")
    for k, v in out["synthetic"]["alpha_mae_by_chip"].items():
        ref = out.get("synthetic_refined", {}).get("psnr_le05_by_chip", {}).get(k)
        extra = f" / refined {ref:.2f}" if ref is not None else ""
        print(f"  {k}: {v:.4f} / {out['synthetic']['psnr_le05_by_chip'][k]:.2f}{extra}")
    print(f"\n(evaluated in {out['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
