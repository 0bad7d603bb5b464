"""Cloud-mask accuracy through the engine on the held-out chips of ../shared/data.

    python benchmarks/eval_cam.py --data ../shared/data [--model cam|spectral] [--no-grow] [--json out.json]

Runs :func:`geocloud.process_scene` (the path ``geocloud process`` takes: blocks, mosaic,
the scene's statistical threshold, edge growing) on every held-out 4-band chip of the
shared split (``split_chips``, seed 0: never trained on), writes ``mask`` and ``stats``
to a temporary folder and scores the masks against the chips' label rasters with
:func:`geocloud.evaluate.evaluate` (thin + thick = cloud, shadow = not cloud, 255
ignored), the function behind ``geocloud evaluate``.

Prints pooled figures (the groups of :func:`geocloud.training.cam.grouped_metrics`, as in
the CAM sidecar's validation) for all chips, for ``good`` and ``coarse`` labels (the data's
README: coarse labels are blobby, for block labels rather than pixel truth), per sensor
and per L8 surface, and a row per chip.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from geocloud import OutputConfig, ProcessConfig, process_scene
from geocloud.config import ThresholdConfig
from geocloud.evaluate import evaluate_arrays
from geocloud.io import without_georef_warning
from geocloud.training.cam import grouped_metrics
from geocloud.training.data import load_catalog, split_chips

GOALS = {"oa": 0.96, "f1": 0.92}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", default="cam")
    ap.add_argument("--no-grow", action="store_true", help="turn edge growing off (--no-grow)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.data / "catalog.csv").exists():
        print(f"no catalog.csv in {args.data}; pass --data with the shared data folder", file=sys.stderr)
        return 2
    import rasterio

    logging.getLogger("geocloud").setLevel(logging.ERROR)  # the chips' 'no CRS' warnings
    chips = split_chips(load_catalog(args.data, four_band_only=True), val_fraction=0.5, seed=0).val
    cfg = ProcessConfig(
        model=args.model,
        threshold=ThresholdConfig(grow=not args.no_grow),
        output=OutputConfig(products=("mask", "stats"), overwrite=True),
    )
    counts: dict[str, dict[str, int]] = {}
    thresholds: dict[str, float] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for chip in chips:
            res = process_scene(chip.scene, Path(tmp) / chip.set, cfg)
            # the L8 Biome patches carry no georeferencing
            with (
                without_georef_warning(),
                rasterio.open(res.outputs["mask"][0]) as m,
                rasterio.open(chip.label) as t,
            ):
                counts[chip.key] = evaluate_arrays(m.read(1), t.read(1), name=chip.key)
            thresholds[chip.key] = res.stats["threshold"]["value"]
    out = {"model": args.model, "grow": not args.no_grow, **grouped_metrics(counts, chips),
           "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    for g in list(out["groups"].values()) + list(out["chips"].values()):
        g["fp_of_clear"] = g["fp"] / max(g["fp"] + g["tn"], 1)
    for k, thr in thresholds.items():
        out["chips"][k]["threshold"] = thr
    print(f"model {args.model}, edge growing {'off' if args.no_grow else 'on'}, {len(chips)} held-out chips")
    print("| group | OA | precision | recall | F1 | IoU | FP % of clear | pixels |")
    print("|---|---|---|---|---|---|---|---|")
    for k in sorted(
        out["groups"], key=lambda k: (not k.startswith("pooled"), not k.startswith("quality"), k)
    ):
        g = out["groups"][k]
        print(f"| {k} | {g['oa']:.3f} | {g['precision']:.3f} | {g['recall']:.3f} | {g['f1']:.3f} | "
              f"{g['iou']:.3f} | {100 * g['fp_of_clear']:.1f} | {int(g['pixels'])} |")  # fmt: skip
    print("\nper chip: OA / F1 / FP % of clear (threshold)")
    for key, r in out["chips"].items():
        print(
            f"  {key:32s} {r['quality']:6s} {r['oa']:.3f} / {r['f1']:.3f} / {100 * r['fp_of_clear']:.1f} ({r['threshold']:.3f})"
        )
    a = out["groups"]["pooled"]
    print(f"\ngoal (issue 4): pooled OA >= {GOALS['oa']}, F1 >= {GOALS['f1']}: "
          f"{'met' if a['oa'] >= GOALS['oa'] and a['f1'] >= GOALS['f1'] else 'NOT met'} "
          f"(OA {a['oa']:.3f}, F1 {a['f1']:.3f}); evaluated in {out['seconds']} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
