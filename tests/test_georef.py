"""Georeferencing, nodata and dtypes through the whole engine (issue 2 items 2 and 8).

Scenes come from the ``make_raster`` fixture (geocloud.synthetic), whose known cloud
opacity also checks that each dtype's scaling reaches the model correctly.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from geocloud.cli.main import cli
from rasterio.enums import MaskFlags

from geocloud import synthetic as syn
from geocloud.config import ProcessConfig
from geocloud.models import DEFAULT_MODEL
from geocloud.pipeline import process_scene

W, H = 200, 160


def runner() -> CliRunner:
    """A CliRunner with stderr kept apart (the default from click 8.2; ``mix_stderr=False`` before)."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def outputs(outdir: Path, stem: str) -> tuple[Path, Path, Path]:
    return outdir / f"{stem}_mask.tif", outdir / f"{stem}_score.tif", outdir / f"{stem}_stats.json"


def input_valid(path: Path) -> np.ndarray:
    """Valid pixels of an input scene: GDAL's mask, and finite values for floats."""
    with rasterio.open(path) as ds:
        ok = ds.dataset_mask() > 0
        if ds.dtypes[0].startswith("float"):
            ok &= np.isfinite(ds.read()).all(axis=0)
    return ok


def process(path: Path, outdir: Path) -> dict:
    res = runner().invoke(cli, ["process", str(path), "-o", str(outdir), "--quiet"])
    assert res.exit_code == 0, res.output + (res.stderr or "")
    return json.loads(outputs(outdir, path.stem)[2].read_text())


def test_crs_and_transform_are_preserved(make_raster, tmp_path: Path) -> None:
    scene = make_raster(
        "utm.tif", width=W, height=H, georef="crs", crs="EPSG:32650", origin=(500_000.0, 4_400_000.0)
    )
    process(scene, tmp_path / "out")
    with rasterio.open(scene) as src:
        crs, transform = src.crs, src.transform
    assert crs.to_epsg() == 32650
    for out in outputs(tmp_path / "out", "utm")[:2]:
        with rasterio.open(out) as ds:
            assert ds.crs == crs
            assert ds.transform.almost_equals(transform, precision=1e-9)
            assert (ds.width, ds.height) == (W, H)
            assert ds.rpcs is None


def test_other_crs_is_preserved(make_raster, tmp_path: Path) -> None:
    scene = make_raster(
        "laea.tif", width=W, height=H, crs="EPSG:3035", origin=(4_321_000.0, 3_210_000.0), pixel_size=10.0
    )
    process(scene, tmp_path / "out")
    with rasterio.open(outputs(tmp_path / "out", "laea")[0]) as ds:
        assert ds.crs.to_epsg() == 3035
        assert ds.transform.a == pytest.approx(10.0) and ds.transform.c == pytest.approx(4_321_000.0)


def test_rpcs_are_preserved(make_raster, tmp_path: Path) -> None:
    scene = make_raster("l1a.tif", width=W, height=H, georef="rpc")
    stats = process(scene, tmp_path / "out")
    with rasterio.open(scene) as src:
        want = src.rpcs.to_dict()
        assert src.crs is None
    assert "rpc" in str(stats.get("georeferencing", "")).lower()
    for out in outputs(tmp_path / "out", "l1a")[:2]:
        with rasterio.open(out) as ds:
            assert ds.rpcs is not None, f"{out.name} lost its RPCs"
            got = ds.rpcs.to_dict()
            assert ds.crs is None
            assert (ds.width, ds.height) == (W, H)
        for key, value in want.items():
            if isinstance(value, list):
                np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
            else:
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_gcps_are_preserved_and_polygons_made_in_their_crs(make_raster, tmp_path: Path) -> None:
    """A scene georeferenced by ground control points only: every raster output keeps the
    GCPs and their CRS, the polygons are in that CRS, and info/stats say "gcps"."""
    import pyogrio
    import shapely
    from rasterio.transform import GCPTransformer

    scene = make_raster("gcp.tif", width=W, height=H, georef="gcps", cloud_cover=0.4)
    with rasterio.open(scene) as src:
        want, want_crs = src.gcps
        assert src.crs is None and len(want) == 16
    out = tmp_path / "out"
    res = runner().invoke(cli, ["process", str(scene), "-o", str(out), "--quiet",
                                "--products", "mask,score,alpha,clear,vector,stats"])  # fmt: skip
    assert res.exit_code == 0, res.output + (res.stderr or "")
    tifs = sorted(out.glob("gcp_*.tif"))
    assert {p.name for p in tifs} >= {"gcp_mask.tif", "gcp_score.tif", "gcp_alpha.tif", "gcp_clear.tif"}
    for tif in tifs:
        with rasterio.open(tif) as ds:
            got, got_crs = ds.gcps
            assert got_crs == want_crs, f"{tif.name} lost the GCP CRS"
            assert len(got) == len(want), f"{tif.name} lost its GCPs"
            for a, b in zip(got, want, strict=True):
                assert (a.row, a.col, a.x, a.y) == pytest.approx((b.row, b.col, b.x, b.y), abs=1e-6)
            assert ds.crs is None and ds.rpcs is None and (ds.width, ds.height) == (W, H)
    stats = json.loads((out / "gcp_stats.json").read_text())
    assert stats["georeferencing"] == "gcps" and stats["crs"] == "EPSG:32650"
    assert stats["pixels"]["cloud"] > 0
    # polygons: in the GCP CRS, where GDAL's GCP transformer puts the pixel corners
    gpkg = out / "gcp_clouds.gpkg"
    assert pyogrio.read_info(gpkg)["crs"] == "EPSG:32650"
    _, _, wkb, fields = pyogrio.raw.read(gpkg)
    assert len(wkb) > 0
    tr = GCPTransformer(want)
    corners = np.array([tr.xy(r, c, offset="ul") for r, c in ((0, 0), (0, W), (H, 0), (H, W))])
    footprint = shapely.Polygon(corners[[0, 1, 3, 2]]).buffer(1.0)
    geoms = shapely.from_wkb(wkb)
    assert all(footprint.contains(g) for g in geoms)
    # areas in square metres: a rotation of the 16 m grid, so whole pixels of 256 m2
    areas = fields[2]
    assert np.allclose(areas / 256.0, np.round(areas / 256.0), atol=1e-3)
    gj = json.loads((out / "gcp_clouds.geojson").read_text())
    assert len(gj["features"]) == len(wkb) and "note" not in gj["geocloud"]
    lon, lat = np.array(gj["features"][0]["geometry"]["coordinates"][0][0])
    assert 100 < lon < 130 and 30 < lat < 50
    info = runner().invoke(cli, ["info", str(scene), "--json"])
    assert info.exit_code == 0, info.output
    d = json.loads(info.stdout)
    assert d["georeferencing"] == "gcps" and d["crs"] == "EPSG:32650"


def test_no_georef_warns_and_keeps_the_pixel_grid(make_raster, tmp_path: Path) -> None:
    scene = make_raster("bare.tif", width=W, height=H, georef="none")
    res = runner().invoke(cli, ["process", str(scene), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    warn = [line for line in res.stderr.splitlines() if "warning" in line.lower()]
    assert warn and any(re.search(r"crs|georef|transform", line, re.I) for line in warn), res.stderr
    stats = json.loads(outputs(tmp_path / "out", "bare")[2].read_text())
    assert stats["warnings"]
    for out in outputs(tmp_path / "out", "bare")[:2]:
        with rasterio.open(out) as ds:
            assert ds.crs is None and ds.rpcs is None
            assert ds.transform == rasterio.Affine.identity()
            assert (ds.width, ds.height) == (W, H)


def test_no_georef_warning_in_the_library_result(make_raster, tmp_path: Path) -> None:
    scene = make_raster("bare.tif", width=W, height=H, georef="none")
    result = process_scene(scene, tmp_path / "out", ProcessConfig())
    assert any("CRS" in w or "georef" in w.lower() for w in result.warnings)


NODATA_CASES = [
    ("uint16", "value"),
    ("uint16", "mask"),
    ("uint8", "value"),
    ("int16", "value"),
    ("int16", "mask"),
    ("float32", "nan"),
    ("float32", "value"),
    ("float32", "mask"),
]


@pytest.mark.parametrize(("dtype", "nodata_kind"), NODATA_CASES)
def test_nodata_propagates(make_raster, tmp_path: Path, dtype: str, nodata_kind: str) -> None:
    scene = make_raster(
        f"nd_{dtype}_{nodata_kind}.tif", width=W, height=H, dtype=dtype, nodata_kind=nodata_kind
    )
    with rasterio.open(scene) as src:
        if nodata_kind == "mask":
            assert MaskFlags.per_dataset in src.mask_flag_enums[0]
        elif nodata_kind == "nan":
            assert math.isnan(src.nodata)
        else:
            assert src.nodata == syn.NODATA_VALUE[dtype]
    valid = input_valid(scene)
    assert 0.5 < valid.mean() < 0.95  # a collar of nodata around the footprint
    stats = process(scene, tmp_path / "out")
    mask_path, score_path, _ = outputs(tmp_path / "out", scene.stem)
    with rasterio.open(mask_path) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        mask = ds.read(1)
    with rasterio.open(score_path) as ds:
        assert ds.dtypes[0] == "float32" and math.isnan(ds.nodata)
        score = ds.read(1)
    np.testing.assert_array_equal(mask == 255, ~valid)
    np.testing.assert_array_equal(np.isnan(score), ~valid)
    assert set(np.unique(mask[valid])) <= {0, 1, 2}
    assert (score[valid] >= 0).all() and (score[valid] <= 1).all()
    px = stats["pixels"]
    assert px["nodata"] == int((~valid).sum()) and px["valid"] == int(valid.sum())
    assert px["cloud"] == int((mask == 1).sum())
    assert stats["cloud_fraction"] == pytest.approx(px["cloud"] / px["valid"])


def test_scene_without_nodata_is_all_valid(make_raster, tmp_path: Path) -> None:
    scene = make_raster("full.tif", width=W, height=H, nodata_kind="none")
    process(scene, tmp_path / "out")
    with rasterio.open(outputs(tmp_path / "out", "full")[0]) as ds:
        assert (ds.read(1) != 255).all()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_dtypes_are_accepted_and_scaled(make_raster, tmp_path: Path, dtype: str) -> None:
    """Each dtype runs, and its scaling is right: the mask agrees with the known opacity."""
    scene = make_raster(
        f"dt_{dtype}.tif", width=W, height=H, dtype=dtype, seed=3, cloud_cover=0.35, write_truth=True
    )
    stats = process(scene, tmp_path / "out")
    assert stats["size"]["dtype"] == dtype
    with rasterio.open(outputs(tmp_path / "out", scene.stem)[0]) as ds:
        mask = ds.read(1)
    with rasterio.open(syn.truth_path(scene)) as ds:
        alpha = ds.read(1)
    valid = np.isfinite(alpha)
    thick, clear = valid & (alpha > 0.9), valid & (alpha < 0.02)
    assert thick.sum() > 100 and clear.sum() > 100  # the scene holds both
    # the shipped CAM finds 99.7 % of this small scene's opaque cloud and leaves 89.6 % of
    # its clear land clear (the misses: cloud borders, half of them along the collar) with
    # any dtype; a wrong scaling drops the first towards 0 (too dark) or the second (too bright)
    assert (mask[thick] == 1).mean() > 0.95, "opaque cloud not detected: is the DN scaling right?"
    assert (mask[clear] != 1).mean() > 0.85, "clear land called cloud: is the DN scaling right?"


def test_outputs_are_tagged_cogs(make_raster, tmp_path: Path) -> None:
    scene = make_raster("big.tif", width=1100, height=700)
    stats = process(scene, tmp_path / "out")
    for out in outputs(tmp_path / "out", "big")[:2]:
        with rasterio.open(out) as ds:
            assert ds.profile.get("tiled") and ds.compression is not None
            assert ds.overviews(1), f"{out.name} has no overviews"
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            tags = ds.tags()
            # the default model, maybe "+" helpers for other products (e.g. matting for alpha, clear)
            assert tags.get("GEOCLOUD_MODEL", "").split("+")[0] == DEFAULT_MODEL
            assert tags.get("GEOCLOUD_SENSOR") == "gf1_wfv"
            assert float(tags["GEOCLOUD_THRESHOLD"]) == pytest.approx(stats["threshold"]["value"], rel=1e-5)
            assert "GEOCLOUD_VERSION" in tags
