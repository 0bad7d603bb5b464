"""Cloud masks of the open peer ukis-csmask on the labelled 4-band chips, for eval_cam.py --cv.

Runs in the benchmark's own environment, never geocloud's (ukis-csmask is not a
dependency of geocloud)::

    python3 -m venv /tmp/ukis && /tmp/ukis/bin/pip install "ukis-csmask[cpu]" rasterio
    /tmp/ukis/bin/python benchmarks/ukis_masks.py --data ../shared/data --out runs/ukis \
        [--classes runs/ukis_shadow]

Writes ``OUT/<set>/<id>.tif`` (uint8: 0 not cloud, 1 cloud, 255 nodata) for every chip of
``catalog.csv`` with blue, green, red and nir bands.  With ``--classes DIR`` it also writes
``DIR/<set>/<id>.tif`` with the peer's classes (uint8: 0 clear, 1 cloud, 2 cloud shadow,
255 nodata), for ``eval_shadow.py --ukis DIR``.  Product level: ``l2a`` for the
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


def _write(path: Path, mask: np.ndarray) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0], count=1,
                       dtype="uint8", nodata=255) as dst:  # fmt: skip
        dst.write(mask, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--classes", type=Path, default=None,
                    help="also write the 0 clear / 1 cloud / 2 shadow / 255 nodata masks here")  # fmt: skip
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
        csm = cs.csm[..., 0]
        mask = (csm == 1).astype(np.uint8)
        mask[nodata] = 255
        _write(args.out / row["set"] / f"{row['id']}.tif", mask)
        if args.classes is not None:
            classes = np.where(csm == 1, 1, np.where(csm == 2, 2, 0)).astype(np.uint8)
            classes[nodata] = 255
            _write(args.classes / row["set"] / f"{row['id']}.tif", classes)
        n += 1
    print(
        f"{n} ukis-csmask masks in {args.out}" + (f" and {args.classes}" if args.classes else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
