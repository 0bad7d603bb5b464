"""Cloud polygons: time and peak memory of the ``vector`` product on a synthetic mask.

    python benchmarks/bench_vector.py                        # 4000 x 4000 cloud field
    python benchmarks/bench_vector.py --kind speckle --size 3000   # the worst case
    python benchmarks/bench_vector.py --json

What it does:

1. writes (once, cached in ``--cache-dir``) a SIZE x SIZE uint8 mask in the project's
   convention (0 clear, 1 cloud, 255 nodata on a 3-pixel collar), UTM 50N, 16 m pixels:
   * ``field``: smoothed noise, thresholded: clouds of tens to thousands of pixels, with
     holes, like a real scene's mask (about 2 000 polygons at 4000²);
   * ``speckle``: each pixel a cloud with probability 0.3, no smoothing: clouds of 1 to
     ~10 pixels, as many polygons as 13 % of its pixels; far more polygons than a real
     scene gives, to show the cost per polygon;
2. runs, in this process, :func:`geocloud.vectorize.cloud_polygons`, then
   :func:`~geocloud.vectorize.write_geojson`, then :func:`~geocloud.vectorize.write_gpkg`
   (what ``--products vector`` does), and reports the seconds of each, the polygon count
   and the peak RSS after each stage (``getrusage``, so it only grows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_mask(path: Path, size: int, kind: str, seed: int = 0) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    if kind == "speckle":
        m = (rng.random((size, size)) < 0.3).astype(np.uint8)
    else:
        field = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma=12)
        m = (field > np.quantile(field, 0.7)).astype(np.uint8)
    m[:, -3:] = 255
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32650", transform=from_origin(400_000, 4_500_000, 16, 16),
                       tiled=True, compress="deflate") as ds:  # fmt: skip
        ds.write(m, 1)
    os.replace(tmp, path)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--kind", choices=("field", "speckle"), default="field")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "geocloud-bench")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from geocloud.vectorize import cloud_polygons, write_geojson, write_gpkg

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    mask = args.cache_dir / f"vector_{args.kind}_{args.size}_mask.tif"
    if not mask.exists():
        make_mask(mask, args.size, args.kind)
    result: dict[str, Any] = {"mask": str(mask), "size": args.size, "kind": args.kind,
                                 "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        polys = cloud_polygons(mask)
        t1 = time.perf_counter()
        result.update(polygons=len(polys), polygons_s=round(t1 - t0, 2), polygons_peak_mb=round(peak_mb()))
        write_geojson(polys, Path(out) / "clouds.geojson")
        t2 = time.perf_counter()
        result.update(geojson_s=round(t2 - t1, 2), geojson_peak_mb=round(peak_mb()),
                      geojson_bytes=(Path(out) / "clouds.geojson").stat().st_size)  # fmt: skip
        write_gpkg(polys, Path(out) / "clouds.gpkg")
        t3 = time.perf_counter()
        result.update(gpkg_s=round(t3 - t2, 2), gpkg_peak_mb=round(peak_mb()), total_s=round(t3 - t0, 2))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.kind} mask {args.size}² ({result['machine']}): {result['polygons']} polygons")
    for stage in ("polygons", "geojson", "gpkg"):
        print(f"  {stage:<9} {result[f'{stage}_s']:>7} s   peak RSS {result[f'{stage}_peak_mb']} MB")
    print(f"  total     {result['total_s']:>7} s   GeoJSON {result['geojson_bytes'] / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
