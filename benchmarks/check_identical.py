"""Proof of no change: the products of fixed runs, hashed, before and after a refactor.

    python benchmarks/check_identical.py record runs/identical/before.json
    ... change the code ...
    python benchmarks/check_identical.py record runs/identical/after.json
    python benchmarks/check_identical.py compare runs/identical/before.json runs/identical/after.json

The runs (each through the ``geocloud`` command line, in a fresh folder):

* the 4000 x 4000 synthetic bench scene of ``benchmarks/bench_scene.py`` (cached in
  ``--cache-dir``) with ``--products all``: every raster byte for byte (a COG holds all its
  overview levels, so equal files mean equal levels), the polygons, the preview;
* the bundled sample scene ``sample_scenes/gf1_wfv_sample.tif`` with ``--products all``;
* ``geocloud catalog`` over the sample scene and two small synthetic scenes, serial.

Files are compared by SHA-256, except those that record when or how fast a run went: the
stats JSON is compared after dropping ``created``, ``timings_s`` and ``throughput_mpx_s``
(and, with ``--ignore-key-order``, key order), the catalogue after dropping its volatile
columns (:data:`geocloud.catalog.VOLATILE_COLUMNS`, and the inputs' mtime), GeoPackages by their
features and CRS (the file records when it was written), and the HTML report not at all (it
embeds the run's time).  Exit status 0 when everything matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

#: stats JSON keys that differ from run to run by nature.
VOLATILE_STATS = ("created", "timings_s", "throughput_mpx_s")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stats_digest(path: Path) -> Any:
    data = json.loads(path.read_text())
    for k in VOLATILE_STATS:
        data.pop(k, None)
    return data


def _catalog_digest(path: Path) -> Any:
    from geocloud.catalog import VOLATILE_COLUMNS, read_catalog

    df = read_catalog(path)
    # (mtime: the synthetic inputs are written anew by each run)
    df = df.drop(columns=[c for c in (*VOLATILE_COLUMNS, "mtime") if c in df.columns])
    return json.loads(df.to_json(orient="records", default_handler=str))


def _vector_digest(path: Path) -> str:
    """SHA-256 of the features (geometry WKB and attributes) and the CRS: a GeoPackage also
    records when it was written."""
    import pyogrio

    meta, _, geoms, fields = pyogrio.raw.read(path)
    h = hashlib.sha256(str(meta.get("crs")).encode())
    for g in geoms:
        h.update(bytes(g) if g is not None else b"-")
    for col in fields:
        h.update(repr(list(col)).encode())
    return h.hexdigest()


def digest_folder(folder: Path) -> dict[str, Any]:
    """{relative path: sha256, or the JSON-comparable content of a volatile file}."""
    out: dict[str, Any] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(folder))
        if p.suffix == ".html" or p.name.endswith(".journal.jsonl"):
            out[rel] = "present"
        elif p.name.endswith("_stats.json"):
            out[rel] = _stats_digest(p)
        elif p.suffix == ".gpkg" and "catalog" not in p.name:
            out[rel] = _vector_digest(p)
        elif p.suffix in (".csv", ".parquet") and "catalog" in p.name:
            out[rel] = _catalog_digest(p)
        else:
            out[rel] = _sha(p)
    return out


def _geocloud(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "geocloud", *args], check=True, cwd=REPO)


def record(dest: Path, cache_dir: Path, size: int) -> dict[str, Any]:
    from bench_scene import build_scene

    from geocloud.synthetic import make_scene

    scene, _ = build_scene(size, cache_dir)
    result: dict[str, Any] = {}
    # one fixed folder, so the paths the catalogue and the stats record are the same
    t = Path(tempfile.gettempdir()) / "geocloud-identical"
    shutil.rmtree(t, ignore_errors=True)
    t.mkdir()
    try:
        _geocloud("process", str(scene), "-o", str(t / "bench"), "--products", "all", "--quiet")
        result["bench"] = digest_folder(t / "bench")
        sample = REPO / "sample_scenes" / "gf1_wfv_sample.tif"
        _geocloud("process", str(sample), "-o", str(t / "sample"), "--products", "all", "--quiet")
        result["sample"] = digest_folder(t / "sample")
        inputs = t / "catalog_in"
        inputs.mkdir()
        (inputs / sample.name).symlink_to(sample)
        for i in range(2):
            make_scene(inputs / f"synthetic_{i}.tif", 600, 500, seed=7 + i, cloud_cover=0.2 + 0.4 * i,
                       write_truth=False)
        _geocloud("catalog", str(inputs), "-o", str(t / "cat" / "catalog.csv"), "--workers", "0", "--quiet")
        result["catalog"] = digest_folder(t / "cat")
    finally:
        shutil.rmtree(t, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=1, sort_keys=True))
    return result


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """One line per difference (a file missing on either side, or different content)."""
    diffs = []
    for run in sorted(set(a) | set(b)):
        fa, fb = a.get(run, {}), b.get(run, {})
        for name in sorted(set(fa) | set(fb)):
            if name not in fa or name not in fb:
                diffs.append(f"{run}/{name}: only in {'after' if name not in fa else 'before'}")
            elif fa[name] != fb[name]:
                if isinstance(fa[name], dict) and isinstance(fb[name], dict):
                    keys = sorted(k for k in set(fa[name]) | set(fb[name]) if fa[name].get(k) != fb[name].get(k))
                    diffs.append(f"{run}/{name}: differs in {keys}")
                else:
                    diffs.append(f"{run}/{name}: differs")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="run and write the digests")
    rec.add_argument("dest", type=Path)
    rec.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "geocloud-bench")
    rec.add_argument("--size", type=int, default=4000)
    cmp_ = sub.add_parser("compare", help="compare two digest files")
    cmp_.add_argument("before", type=Path)
    cmp_.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "record":
        res = record(args.dest, args.cache_dir, args.size)
        print(f"{sum(len(v) for v in res.values())} files digested into {args.dest}")
        return 0
    diffs = compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()))
    for d in diffs:
        print(d)
    n = sum(len(v) for v in json.loads(args.before.read_text()).values())
    print(f"{n} files compared: {'identical' if not diffs else f'{len(diffs)} difference(s)'}")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
