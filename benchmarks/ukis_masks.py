"""Cloud masks of the open peer ukis-csmask on the labelled 4-band chips, for eval_cam.py --cv.

Runs in the benchmark's own environment, never geocloud's (ukis-csmask is not a
dependency of geocloud)::

    python3 -m venv /tmp/ukis && /tmp/ukis/bin/pip install "ukis-csmask[cpu]" rasterio
    /tmp/ukis/bin/python benchmarks/ukis_masks.py --data ../shared/data --out runs/ukis

Writes ``OUT/<set>/<id>.tif`` (uint8: 0 not cloud, 1 cloud, 255 nodata) for every chip of
``catalog.csv`` with blue, green, red and nir bands.  Product level: ``l2a`` for the
Sentinel-2 L2A chips (surface reflectance), ``l1c`` (top of atmosphere) for the others.
Reflectance is read as ``eval_cam.py`` and geocloud's training read it: integer chips
times the catalog's scale (stored 0 in every band = nodata), float chips as they are.
"""

from __future__ import annotations

import argparse
import csv
import sys
import warnings
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import rasterio
    from ukis_csmask.mask import CSmask

    warnings.filterwarnings("ignore")
    with (args.data / "catalog.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    n = 0
    for row in rows:
        bands = [b.strip() for b in row["bands"].split(",")]
        if not {"blue", "green", "red", "nir"} <= set(bands):
            continue
        with rasterio.open(args.data / row["scene"]) as src:
            raw = src.read()
        order = [bands.index(b) for b in ("blue", "green", "red", "nir")]
        data = raw[order]
        if np.issubdtype(data.dtype, np.integer):
            nodata = (data == 0).all(axis=0)
            refl = data.astype(np.float32) * np.float32(float(row["scale"] or 1.0))
        else:
            refl = data.astype(np.float32)
            nodata = ~np.isfinite(refl).all(axis=0)
            refl = np.nan_to_num(refl, nan=0.0)
        level = "l2a" if row["sensor"].endswith("l2a") else "l1c"
        cs = CSmask(np.ascontiguousarray(np.moveaxis(refl, 0, -1)), ["blue", "green", "red", "nir"],
                    product_level=level, intra_op_num_threads=1, inter_op_num_threads=1)  # fmt: skip
        mask = (cs.csm[..., 0] == 1).astype(np.uint8)
        mask[nodata] = 255
        out = args.out / row["set"] / f"{row['id']}.tif"
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(out, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0], count=1,
                           dtype="uint8", nodata=255) as dst:  # fmt: skip
            dst.write(mask, 1)
        n += 1
    print(f"{n} ukis-csmask masks in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
