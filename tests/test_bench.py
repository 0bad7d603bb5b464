"""Smoke test of benchmarks/bench_scene.py on a tiny scene (the real run is documented in docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_scene", REPO / "benchmarks" / "bench_scene.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_bench_scene_runs_end_to_end(tmp_path: Path, capsys) -> None:
    bench = load_bench()
    rc = bench.main(["--size", "300", "--cache-dir", str(tmp_path), "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    res = json.loads(out)
    assert res["scene"]["size"] == 300
    assert res["engine"]["mpx_s"] > 0 and res["engine"]["peak_rss_mb"] > 0
    assert res["io_floor"]["wall_s"] > 0 and res["engine_over_floor"] > 0
    assert set(res["targets"]) == {"mpx_s>=15", "rss<=1024MB", "within_2x_floor"}
    # the scene is cached, the outputs are cleaned up
    assert list(tmp_path.glob("GF1_WFV1_bench_300_*.tif")) and not list(tmp_path.glob("out-*"))


def test_bench_scene_striped_layout(tmp_path: Path) -> None:
    import numpy as np
    import rasterio

    bench = load_bench()
    striped, _ = bench.build_scene(96, tmp_path, compress="DEFLATE", layout="striped")
    tiled, _ = bench.build_scene(96, tmp_path, compress="DEFLATE")
    with rasterio.open(striped) as s, rasterio.open(tiled) as t:
        assert s.block_shapes[0][1] == 96 and not s.profile.get("tiled")
        assert s.compression.value == "DEFLATE"
        np.testing.assert_array_equal(s.read(), t.read())
    assert bench.build_scene(96, tmp_path, compress="DEFLATE", layout="striped") == (striped, 0.0)  # cached


def test_bench_targets_follow_the_pipeline() -> None:
    bench = load_bench()
    assert bench.targets_for("spectral", "mask,score,stats") == (15.0, 1024.0)
    assert bench.targets_for("cam", "mask,score,stats") == (1.2, 1536.0)
    assert bench.targets_for("cam", "mask,score,alpha,reflectance,clear,stats") == (1.2, 1536.0)


def test_compare_trees_alternates_runs_and_reports_each_tree(tmp_path: Path, capsys, make_raster) -> None:
    spec = importlib.util.spec_from_file_location("compare_trees", REPO / "benchmarks" / "compare_trees.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    scene = make_raster("s.tif", width=96, height=96)
    rc = mod.main(["--scene", str(scene), "--pairs", "2", "--products", "mask,stats", str(REPO), str(REPO),
                   "--", "--model", "spectral"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    rounds = [line for line in out.splitlines() if line.startswith("round")]
    assert [r.split()[1] for r in rounds] == ["1", "1", "2", "2"]  # tree A, tree B, A, B
    assert all(float(r.split("wall")[1].split()[0]) > 0 for r in rounds)
    assert out.count("fastest in") == 2


def test_bench_vector_counts_every_cloud(tmp_path: Path, capsys) -> None:
    """Each 4-connected cloud of the benchmark's mask is one polygon."""
    import rasterio
    from scipy.ndimage import label

    spec = importlib.util.spec_from_file_location("bench_vector", REPO / "benchmarks" / "bench_vector.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    for kind in ("field", "speckle"):
        mod.main(["--size", "300", "--kind", kind, "--cache-dir", str(tmp_path), "--json"])
        res = json.loads(capsys.readouterr().out)
        with rasterio.open(res["mask"]) as ds:
            clouds = label(ds.read(1) == 1)[1]
        assert res["polygons"] == clouds > (1000 if kind == "speckle" else 5)
        assert res["total_s"] > 0 and res["geojson_bytes"] > 100 * clouds
