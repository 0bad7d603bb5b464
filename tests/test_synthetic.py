"""The synthetic scene generator: seamless, deterministic, calibrated, georeferenced."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio

from geocloud import synthetic as syn
from geocloud.compositing import compose


def test_noise_is_seamless_across_windows() -> None:
    n = syn.FractalNoise(seed=3, salt=5, max_scale=256, min_scale=2)
    whole = n.window(37, 101, 300, 260)
    rows = np.concatenate([n.window(37, 101, 123, 260), n.window(160, 101, 177, 260)], axis=0)
    cols = np.concatenate([n.window(37, 101, 300, 77), n.window(37, 178, 300, 183)], axis=1)
    np.testing.assert_array_equal(whole, rows)
    np.testing.assert_array_equal(whole, cols)
    assert 0.2 < whole.std() < 2.0


def test_layers_do_not_depend_on_the_window() -> None:
    scene = syn.SyntheticScene(syn.SceneSpec(200, 180, seed=7))
    whole = scene.layers(0, 0, 180, 200)
    part = scene.layers(50, 60, 40, 70)
    for key in ("reflectance", "alpha", "valid"):
        np.testing.assert_array_equal(whole[key][..., 50:90, 60:130], part[key])


def test_layers_follow_the_imaging_model() -> None:
    scene = syn.SyntheticScene(syn.SceneSpec(256, 256, seed=2, cloud_cover=0.4))
    lay = scene.layers(0, 0, 256, 256)
    a = lay["alpha"]
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_allclose(
        lay["reflectance"], compose(lay["background"], a[None], lay["r_c"][None]), rtol=1e-6, atol=1e-7
    )
    # clear pixels look like land, opaque ones are bright and flat
    refl = lay["reflectance"]
    if (a > 0.95).any():
        thick = refl[:, a > 0.95]
        assert thick.min() > 0.6
        assert np.ptp(thick, axis=0).max() < 0.05


def test_reflectance_round_trips_through_dn() -> None:
    rho = np.random.default_rng(0).uniform(0.01, 0.9, size=(4, 50, 50)).astype(np.float32)
    dn = syn.reflectance_to_dn(rho, 48.0, "2021-07-01T03:00:00Z")
    assert dn.dtype == np.uint16 and dn.min() > 0 and dn.max() < syn.GF1_WFV_CALIBRATION["dn_max"]
    back = syn.dn_to_reflectance(dn, 48.0, "2021-07-01T03:00:00Z")
    step = syn.dn_to_reflectance(np.ones((4, 1, 1)), 48.0, "2021-07-01T03:00:00Z")
    assert (np.abs(back - rho) <= 0.51 * step + 1e-6).all()


def test_calibration_is_the_gf1_wfv_sensor_profile() -> None:
    from geocloud.sensors import get_sensor

    prof = get_sensor("gf1_wfv")
    cal = syn.GF1_WFV_CALIBRATION
    assert tuple(cal["gain"]) == tuple(prof.gains)
    assert tuple(cal["esun"]) == tuple(prof.esun)
    assert tuple(cal["offset"]) == tuple(prof.biases)


def test_written_scene_decodes_with_the_engine_radiometry(tmp_path) -> None:
    from geocloud.sensors import resolve_radiometry

    path = syn.make_scene(tmp_path / "GF1_WFV1_test.tif", 160, 140, seed=4, sun_elevation=40.0)
    with rasterio.open(path) as ds:
        dn = ds.read()
        tags = ds.tags()
        rad = resolve_radiometry(
            count=ds.count,
            dtype=ds.dtypes[0],
            tags=tags,
            descriptions=ds.descriptions,
            band_scales=ds.scales,
            band_offsets=ds.offsets,
            filename=path.name,
            acquired=syn.parse_time(tags["ACQUISITION_TIME"]),
        )
    assert rad.sensor == "gf1_wfv"
    assert rad.indexes == (1, 2, 3, 4)
    lay = syn.SyntheticScene(syn.SceneSpec(160, 140, seed=4, sun_elevation=40.0)).layers(0, 0, 140, 160)
    ok = lay["valid"] & (dn < syn.GF1_WFV_CALIBRATION["dn_max"]).all(axis=0)
    rho = rad.to_reflectance(dn.astype(np.float32))
    err = np.abs(rho[:, ok] - lay["reflectance"][:, ok])
    assert err.max() <= 0.51 * max(rad.a) + 1e-5


def test_make_scene_writes_a_gf1_like_scene_and_its_truth(tmp_path) -> None:
    path = syn.make_scene(tmp_path / "s.tif", 700, 600, seed=1, cloud_cover=0.3, blocksize=256)
    with rasterio.open(path) as ds:
        assert ds.count == 4 and ds.dtypes == ("uint16",) * 4
        assert ds.crs.to_epsg() == 32650
        assert ds.transform.a == 16.0 and ds.transform.e == -16.0
        assert ds.nodata == 0
        assert ds.block_shapes[0] == (256, 256)
        assert ds.descriptions == ("blue", "green", "red", "nir")
        tags = ds.tags()
        assert tags["SATELLITE"] == "GF1" and tags["SENSOR"] == "WFV1"
        assert float(tags["SUN_ELEVATION"]) == pytest.approx(55.0)
        syn.parse_time(tags["ACQUISITION_TIME"])
        dn = ds.read()
        mask = ds.dataset_mask() > 0
    # a collar of nodata around a valid quadrilateral; corners are nodata, centre valid
    assert not mask[0, 0] and not mask[-1, -1] and mask[300, 350]
    assert 0.6 < mask.mean() < 0.95
    assert (dn[:, ~mask] == 0).all() and (dn[:, mask] > 0).all()
    # land DN a few hundred, clouds brighter
    assert 100 < np.median(dn[2][mask]) < 1500
    with rasterio.open(syn.truth_path(path)) as ts:
        alpha = ts.read(1)
        assert ts.dtypes[0] == "float32" and ts.crs == rasterio.crs.CRS.from_epsg(32650)
    assert np.isnan(alpha[~mask]).all() and np.isfinite(alpha[mask]).all()
    cover = (alpha[mask] > 0.5).mean()
    assert 0.1 < cover < 0.55  # target 0.3; a small scene sees few cloud systems
    assert (dn[:, mask][:, alpha[mask] > 0.9].mean(axis=0) > np.median(dn[:, mask], axis=1).max()).all()


def test_make_scene_is_deterministic(tmp_path) -> None:
    a = syn.make_scene(tmp_path / "a.tif", 200, 150, seed=9, blocksize=64)
    b = syn.make_scene(tmp_path / "b.tif", 200, 150, seed=9, blocksize=128)
    c = syn.make_scene(tmp_path / "c.tif", 200, 150, seed=10, blocksize=128)
    with rasterio.open(a) as da, rasterio.open(b) as db, rasterio.open(c) as dc:
        np.testing.assert_array_equal(da.read(), db.read())
        assert not np.array_equal(da.read(), dc.read())


@pytest.mark.parametrize("dtype", syn.DTYPES)
@pytest.mark.parametrize("nodata", syn.NODATA_KINDS)
def test_dtype_and_nodata_variants(tmp_path, dtype: str, nodata: str) -> None:
    if nodata == "nan" and dtype != "float32":
        with pytest.raises(ValueError):
            syn.make_scene(tmp_path / "x.tif", 64, 64, dtype=dtype, nodata=nodata)
        return
    path = syn.make_scene(tmp_path / "x.tif", 96, 80, seed=2, dtype=dtype, nodata=nodata, write_truth=False)
    assert not syn.truth_path(path).exists()
    with rasterio.open(path) as ds:
        assert ds.dtypes[0] == dtype
        x = ds.read()
        mask = ds.dataset_mask() > 0
        if nodata == "none":
            assert mask.all() and ds.nodata is None
        else:
            assert 0.5 < mask.mean() < 0.95
        if nodata == "mask":
            assert rasterio.enums.MaskFlags.per_dataset in ds.mask_flag_enums[0]
        if nodata == "nan":
            assert math.isnan(ds.nodata) and np.isnan(x[:, ~mask]).all()
        if dtype in ("uint8", "int16"):
            scale = syn.REFLECTANCE_SCALE[dtype]
            assert ds.scales == (scale,) * 4
            refl = x[:, mask] * scale
            assert refl.min() > 0.0 and np.median(refl) < 0.5
        if dtype == "float32":
            assert np.nanmin(x[:, mask]) > 0.0 and np.nanmax(x[:, mask]) < 1.2


@pytest.mark.parametrize("georef", syn.GEOREF_KINDS)
def test_georef_variants(tmp_path, georef: str) -> None:
    path = syn.make_scene(tmp_path / "g.tif", 64, 48, georef=georef)
    with rasterio.open(path) as ds:
        if georef == "crs":
            assert ds.crs is not None and ds.rpcs is None
        elif georef == "rpc":
            assert ds.crs is None and ds.rpcs is not None
            assert ds.rpcs.line_off == pytest.approx(24) and ds.rpcs.samp_off == pytest.approx(32)
        elif georef == "gcps":
            gcps, crs = ds.gcps
            assert ds.crs is None and ds.rpcs is None and crs.to_epsg() == 32650 and len(gcps) == 16
        else:
            assert ds.crs is None and ds.rpcs is None and ds.transform == rasterio.Affine.identity()


def test_band_count_and_tags_options(tmp_path) -> None:
    path = syn.make_scene(tmp_path / "b.tif", 40, 30, bands=3, sensor_tags=False, collar=False)
    with rasterio.open(path) as ds:
        assert ds.count == 3
        assert ds.descriptions == ("blue", "green", "red")
        assert "SATELLITE" not in ds.tags()
        assert ds.dataset_mask().all()


def test_vendor_xml_matches_the_vendor_reader(tmp_path) -> None:
    from geocloud import vendor

    path = syn.make_scene(
        tmp_path / "GF1_WFV1_E117.0_N40.0_20200523_L2A0000000001.tif", 64, 64, vendor_xml=True
    )
    meta = vendor.parse_metadata_xml(path.with_suffix(".xml"))
    assert meta.satellite == "GF1" and meta.sensor == "WFV1"
    assert meta.sun_elevation == pytest.approx(55.0)
    scene = syn.SyntheticScene(syn.SceneSpec(64, 64, vendor_xml=True))
    assert tuple(scene.calibration["gain"]) == tuple(meta.gains)


def test_one_pixel_and_tiny_scenes(tmp_path) -> None:
    path = syn.make_scene(tmp_path / "one.tif", 1, 1, collar=False)
    with rasterio.open(path) as ds:
        assert ds.shape == (1, 1) and ds.read().min() > 0


def test_bad_options_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError):
        syn.make_scene(tmp_path / "x.tif", 0, 10)
    with pytest.raises(ValueError):
        syn.make_scene(tmp_path / "x.tif", 10, 10, dtype="complex64")
    with pytest.raises(ValueError):
        syn.make_scene(tmp_path / "x.tif", 10, 10, georef="tps")


def test_engine_uses_the_acquisition_time_tag(tmp_path) -> None:
    from geocloud.pipeline import describe_scene

    path = syn.make_scene(tmp_path / "GF1_WFV1_t.tif", 64, 64, sun_elevation=50.0)
    d = describe_scene(path)
    want = syn.dn_to_reflectance(np.ones((4, 1, 1)), 50.0, syn.SceneSpec(1, 1).acquisition_time).ravel()
    np.testing.assert_allclose(d["reflectance_gain"], want, rtol=1e-4)


def test_committed_sample_matches_its_generator(tmp_path) -> None:
    """sample_scenes/gf1_wfv_sample.tif is what make_sample.py makes with today's code and
    calibration (if this fails, rerun ``python sample_scenes/make_sample.py`` and commit)."""
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_sample", repo / "sample_scenes" / "make_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fresh = syn.make_scene(tmp_path / "gf1_wfv_sample.tif", **mod.SAMPLE)
    for committed, new in (
        (repo / "sample_scenes" / "gf1_wfv_sample.tif", fresh),
        (repo / "sample_scenes" / "gf1_wfv_sample_alpha_truth.tif", syn.truth_path(fresh)),
    ):
        assert committed.stat().st_size < 5_000_000
        with rasterio.open(committed) as a, rasterio.open(new) as b:
            pa, pb = dict(a.profile), dict(b.profile)
            na, nb = pa.pop("nodata"), pb.pop("nodata")
            assert pa == pb
            assert na == nb or (math.isnan(na) and math.isnan(nb))
            assert a.tags() == b.tags()
            np.testing.assert_array_equal(a.read(), b.read())


def test_cloud_shadows_are_optional_seamless_and_dark() -> None:
    plain = syn.SyntheticScene(syn.SceneSpec(300, 300, seed=5, cloud_scale=128, land_scale=128))
    shady = syn.SyntheticScene(syn.SceneSpec(300, 300, seed=5, cloud_scale=128, land_scale=128, shadows=True))
    a, b = plain.layers(0, 0, 300, 300), shady.layers(0, 0, 300, 300)
    assert not a["shadow"].any()
    np.testing.assert_array_equal(a["alpha"], b["alpha"])  # the truth is the cloud, not its shadow
    s = b["shadow"]
    assert s.max() > 0.3 and s.min() == 0.0
    np.testing.assert_allclose(b["background"], a["background"] * (1 - s)[None], rtol=1e-5, atol=1e-6)
    # the shadow is the thick cloud moved away from the sun
    dr, dc = shady.shadow_offset()
    assert dr > 0 and dc > 0  # sun in the south-east (azimuth 150): clouds shade ground to their north-west
    part = shady.layers(40, 70, 50, 60)
    np.testing.assert_array_equal(part["shadow"], s[40:90, 70:130])


def test_vendor_xml_time_round_trips_through_the_vendor_reader(tmp_path) -> None:
    """GF XML times are Beijing time; the reader converts them back to the scene's UTC time."""
    from geocloud.vendor import find_vendor_metadata

    path = syn.make_scene(tmp_path / "GF1_WFV1_t.tif", 64, 64, vendor_xml=True)
    meta = find_vendor_metadata(path)
    assert meta is not None
    assert meta.acquired == syn.parse_time(syn.SceneSpec(1, 1).acquisition_time)
