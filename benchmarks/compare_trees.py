"""Compare ``geocloud process`` speed between source trees in alternating runs.

On a VM whose speed drifts by more than the change being measured, best-of-N runs of
one tree and then the other mislead; alternating runs (A, B, A, B ...) see the same
drift.  Each tree is a checkout (e.g. ``git worktree add /tmp/base HEAD~1``) put first on
``PYTHONPATH``, so the installed environment's dependencies are shared.

    python benchmarks/compare_trees.py --scene SCENE.tif --pairs 5 /tmp/base .
    python benchmarks/compare_trees.py --scene S.tif --products mask,score,stats /tmp/a /tmp/b -- --model spectral

Prints each run (wall s, CPU s, peak RSS MB) and, per tree, the median wall and CPU time
and how many pairs it won.  The scene can come from ``bench_scene.py`` (its cache folder).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scene import run_child  # noqa: E402 - the benchmarks' one way to time a child process


def run_once(tree: Path, scene: Path, products: str, extra: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one ``geocloud process`` run with ``tree`` first on the path.

    It runs in a scratch folder (the working directory would come before ``PYTHONPATH``)
    as ``python -m cli.main`` (the installed entry point would take ``cli`` from the
    editable install).
    """
    out = Path(tempfile.mkdtemp(prefix="geocloud-cmp-"))
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    cmd = [sys.executable, "-m", "cli.main", "process", str(scene.resolve()), "-o", str(out), "--products", products,
           "--overwrite", "--quiet", *extra]  # fmt: skip
    try:
        r = run_child(cmd, cwd=out, env=env)
        if r["returncode"] != 0:
            raise SystemExit(f"geocloud process failed with tree {tree}:\n{r['stderr_tail']}")
        return r["wall_s"], r["cpu_s"], r["peak_rss_mb"]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", type=Path, help="source trees (each holds geocloud/ and cli/)")
    ap.add_argument("--scene", type=Path, required=True, help="input scene")
    ap.add_argument("--pairs", type=int, default=3, help="rounds: one run of every tree per round")
    ap.add_argument("--products", default="mask,score,alpha,reflectance,clear,stats")
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # geocloud process arguments
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    for t in args.trees:
        if not (t / "geocloud" / "__init__.py").is_file() or not (t / "cli" / "main.py").is_file():
            ap.error(f"{t} is not a geocloud source tree (no geocloud/__init__.py or cli/main.py)")
    if not args.scene.is_file():
        ap.error(f"scene {args.scene} does not exist")
    results: dict[Path, list[tuple[float, float, float]]] = {t: [] for t in args.trees}
    for i in range(args.pairs):
        for t in args.trees:
            r = run_once(t, args.scene, args.products, args.extra)
            results[t].append(r)
            print(
                f"round {i + 1}  {str(t):30s} wall {r[0]:6.2f} s  cpu {r[1]:6.2f} s  rss {r[2]:6.0f} MB",
                flush=True,
            )
    fastest = [min(args.trees, key=lambda t: results[t][i][0]) for i in range(args.pairs)]
    for t in args.trees:
        walls, cpus = [r[0] for r in results[t]], [r[1] for r in results[t]]
        print(f"{str(t):30s} median wall {statistics.median(walls):6.2f} s  median cpu {statistics.median(cpus):6.2f} s"
              f"  fastest in {fastest.count(t)} of {args.pairs} rounds")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
