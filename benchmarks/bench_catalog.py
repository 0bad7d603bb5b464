"""Catalogue throughput: scenes per minute with 1 and 2 dask worker processes.

    python benchmarks/bench_catalog.py                          # 20 scenes of 4000 x 4000, workers 1 and 2
    python benchmarks/bench_catalog.py --scenes 6 --size 2000   # a quick run
    python benchmarks/bench_catalog.py --json

What it does:

1. builds (once, cached in ``--cache-dir``) N synthetic GF-1 WFV-like scenes of SIZE x SIZE
   x 4 uint16 (ZSTD, 512 tiles) with :func:`geocloud.synthetic.make_scene`, different
   seeds and cloud covers;
2. for each worker count, runs :func:`geocloud.catalog.build_catalog` from scratch
   (``resume=False``) on a ``LocalCluster`` of that many single-threaded worker processes,
   with the default products (mask, stats, preview) plus the thumbnails and the HTML page,
   and times it from the call to the written catalogue, cluster start-up included;
3. reports wall seconds, scenes per minute, the scaling from 1 to W workers, the CPU
   seconds the worker processes used (``getrusage`` of the reaped cluster processes) and
   so the number of cores they actually got, the cluster start-up time (timed separately)
   and the peak RSS.  On a shared machine ``cores_used`` tells whether a lack of scaling
   comes from the code or from the CPU share the workers were given.

It also checks that every run produced the same catalogue (timings aside).
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


def build_scenes(n: int, size: int, cache_dir: Path) -> tuple[list[Path], float]:
    from geocloud.synthetic import make_scene

    folder = cache_dir / f"catalog_{n}x{size}"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = []
    for i in range(n):
        p = folder / f"GF1_WFV{1 + i % 4}_bench_{size}_{20200101 + i}_s{i}.tif"
        if not p.exists():
            tmp = p.with_name(f".{p.name}.{os.getpid()}.partial.tif")
            make_scene(tmp, size, size, seed=100 + i, cloud_cover=(0.05 + 0.9 * i / max(1, n - 1)),
                       write_truth=False, compress="ZSTD", blocksize=512)  # fmt: skip
            os.replace(tmp, p)
        paths.append(p)
    return paths, time.perf_counter() - t0


def cluster_startup(workers: int) -> float:
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0) as cluster, Client(cluster) as client:  # fmt: skip
        client.run(lambda: __import__("geocloud.catalog"))
        return time.perf_counter() - t0


def run(folder: Path, workers: int, out: Path) -> dict[str, Any]:
    from geocloud.catalog import CatalogConfig, build_catalog

    cfg = CatalogConfig(workers=workers, resume=False)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = build_catalog([folder], out / f"catalog_w{workers}.parquet", cfg)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the cluster's processes have exited and been reaped
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    n = len(res.rows)
    return {
        "worker_cpu_s": round(cpu, 1),
        "worker_cpu_s_per_scene": round(cpu / max(1, n), 2),
        "cores_used": round(cpu / wall, 2),
        "workers": workers,
        "scenes": n,
        "failed": res.failed,
        "wall_s": round(wall, 2),
        "scenes_per_min": round(60 * n / wall, 2),
        "mean_scene_s": round(sum(r["processing_s"] for r in res.rows) / max(1, n), 2),
        "catalog": str(res.path),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "geocloud-bench")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import warnings

    warnings.simplefilter("ignore")
    scenes, build_s = build_scenes(args.scenes, args.size, args.cache_dir)
    out = args.out or Path(tempfile.mkdtemp(prefix="geocloud-bench-catalog-"))
    results = []
    for w in (int(v) for v in args.workers.split(",")):
        startup = cluster_startup(w)
        r = run(scenes[0].parent, w, out)
        r["cluster_startup_s"] = round(startup, 2)
        results.append(r)
        if not args.json:
            print(f"workers={w}: {r['scenes']} scenes in {r['wall_s']} s = {r['scenes_per_min']} scenes/min "
                  f"(cluster start {r['cluster_startup_s']} s, mean {r['mean_scene_s']} s/scene in a worker, "
                  f"{r['worker_cpu_s_per_scene']} CPU s/scene, {r['cores_used']} cores used)")  # fmt: skip
    from geocloud.catalog import OWN_OUTPUT_COLUMNS, VOLATILE_COLUMNS, read_catalog

    frames = [
        read_catalog(r["catalog"]).drop(columns=[*VOLATILE_COLUMNS, *OWN_OUTPUT_COLUMNS]) for r in results
    ]
    identical = all(f.equals(frames[0]) for f in frames[1:])
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(
        resource.RUSAGE_CHILDREN).ru_maxrss) / 1024  # fmt: skip
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "scene": f"{args.size} x {args.size} x 4 uint16, ZSTD, 512 tiles",
        "scenes": args.scenes,
        "build_s": round(build_s, 1),
        "runs": results,
        "scaling": round(results[-1]["scenes_per_min"] / results[0]["scenes_per_min"], 2)
        if len(results) > 1
        else None,
        "identical_catalogues": identical,
        "peak_rss_mb_self_plus_largest_child": round(peak_mb, 1),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"scaling {results[0]['workers']} -> {results[-1]['workers']} workers: x{summary['scaling']}; "
              f"catalogues identical: {identical}")  # fmt: skip


if __name__ == "__main__":
    main()
