"""geocloud.shadow on tiny synthetic rasters: a square cloud, its shadow on vegetation, dark water."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from geocloud.shadow import (
    ShadowConfig,
    ShadowShift,
    estimate_shift,
    potential_shadow,
    shadow_mask,
    shift_from_sun,
)

SUN_AZIMUTH = 150.0  # sun in the south-south-east: shadows fall north-north-west
DISTANCE = 30.0  # px from cloud to shadow
#: the reference window (41 px) must be wider than the shadow (24 px), see ShadowConfig.reference_radius
CFG = ShadowConfig(reference_radius=20, max_shift=60.0)
CLOUD = (slice(90, 114), slice(80, 104))
WATER = (slice(38, 56), slice(50, 90))  # inside the swept projection, beyond the shadow


def scene(with_cloud: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(refl (4, H, W), cloud, valid, true shadow) of a 160 x 160 vegetation scene."""
    rng = np.random.default_rng(0)
    h = w = 160
    veg = np.array([0.05, 0.08, 0.05, 0.35], np.float32)[:, None, None]
    refl = veg * (1.0 + 0.05 * rng.standard_normal((1, h, w)).astype(np.float32))
    refl = np.repeat(refl, 1, axis=0).astype(np.float32)
    refl[:, WATER[0], WATER[1]] = np.array([0.06, 0.05, 0.03, 0.015], np.float32)[:, None, None]
    cloud = np.zeros((h, w), bool)
    shadow = np.zeros((h, w), bool)
    if with_cloud:
        cloud[CLOUD] = True
        dy, dx = (int(round(v)) for v in shift_from_sun(SUN_AZIMUTH, DISTANCE))
        shadow[CLOUD[0].start + dy : CLOUD[0].stop + dy, CLOUD[1].start + dx : CLOUD[1].stop + dx] = True
        shadow &= ~cloud
        refl[:, shadow] *= np.array([0.8, 0.75, 0.7, 0.45], np.float32)[:, None]
        refl[:, cloud] = 0.5
    return refl, cloud, np.ones((h, w), bool), shadow


def test_sun_convention() -> None:
    # sun in the south (180): the shadow falls north, rows decreasing
    dy, dx = shift_from_sun(180.0, 10.0)
    assert dy == pytest.approx(-10.0) and dx == pytest.approx(0.0, abs=1e-9)
    # sun in the east (90): the shadow falls west, columns decreasing
    dy, dx = shift_from_sun(90.0, 10.0)
    assert dy == pytest.approx(0.0, abs=1e-9) and dx == pytest.approx(-10.0)
    s = ShadowShift(*shift_from_sun(SUN_AZIMUTH, 20.0), score=1.0)
    assert s.sun_azimuth == pytest.approx(SUN_AZIMUTH)
    assert s.shadow_azimuth == pytest.approx(SUN_AZIMUTH - 180.0 + 360.0)


@pytest.mark.parametrize("sun", [False, True])
def test_shift_recovered(sun: bool) -> None:
    refl, cloud, valid, _ = scene()
    ev = potential_shadow(refl, valid, cloud, CFG).astype(np.float32)
    kw = {"sun_azimuth": SUN_AZIMUTH} if sun else {}
    s = estimate_shift(cloud, ev, valid, config=CFG, **kw)
    assert s is not None and s.from_sun == sun
    ty, tx = shift_from_sun(SUN_AZIMUTH, DISTANCE)
    assert math.hypot(s.dy - ty, s.dx - tx) <= 1.5, (s, ty, tx)
    if not sun:
        assert abs((s.sun_azimuth - SUN_AZIMUTH + 180) % 360 - 180) < 4


def test_shift_with_elevation_and_pixel_size() -> None:
    refl, cloud, valid, _ = scene()
    ev = potential_shadow(refl, valid, cloud, CFG).astype(np.float32)
    # 30 px at 30 m under a 45 degree sun: a cloud 900 m high
    s = estimate_shift(
        cloud, ev, valid, sun_azimuth=SUN_AZIMUTH, sun_elevation=45.0, pixel_size=30.0, config=CFG
    )
    assert s is not None and s.distance == pytest.approx(DISTANCE, abs=1.5)
    # heights searched from 1200 m up: the true one is out of range, so not that one
    far = dataclasses.replace(CFG, min_height_m=1200.0)
    s2 = estimate_shift(
        cloud, ev, valid, sun_azimuth=SUN_AZIMUTH, sun_elevation=45.0, pixel_size=30.0, config=far
    )
    assert s2 is None or s2.distance >= 39.0


def test_mask_finds_shadow_not_water_not_cloud() -> None:
    refl, cloud, valid, truth = scene()
    ev = potential_shadow(refl, valid, cloud, CFG).astype(np.float32)
    s = estimate_shift(cloud, ev, valid, config=CFG)
    m = shadow_mask(refl, cloud, valid, s, CFG)
    tp = (m & truth).sum()
    assert tp / truth.sum() > 0.9
    assert tp / max(m.sum(), 1) > 0.9
    assert not (m & cloud).any()
    assert not m[WATER].any()
    # the water is dark and inside the projection: only the land test keeps it out
    from geocloud.shadow import darkness, projection

    assert (darkness(refl, valid, cloud, CFG)[WATER] > CFG.dark_drop).mean() > 0.5
    assert projection(cloud, s, CFG)[WATER].any()


def test_cloud_is_never_shadow() -> None:
    refl, cloud, valid, truth = scene()
    s = ShadowShift(*shift_from_sun(SUN_AZIMUTH, DISTANCE), score=1.0)
    # a second cloud on top of half the shadow, and darkened itself
    cloud2 = cloud.copy()
    cloud2[60:75, 60:110] = True
    refl[:, 60:75, 60:110] *= 0.3
    m = shadow_mask(refl, cloud2, valid, s, CFG)
    assert not (m & cloud2).any()
    assert (m & truth).any()


def test_no_cloud_no_shadow() -> None:
    refl, cloud, valid, _ = scene(with_cloud=False)
    ev = potential_shadow(refl, valid, cloud, CFG).astype(np.float32)
    assert estimate_shift(cloud, ev, valid, config=CFG) is None
    assert not shadow_mask(refl, cloud, valid, None, CFG).any()
    # a cloud without any shadow: no displacement explains enough dark pixels
    refl2, cloud2, valid2, _ = scene(with_cloud=False)
    cloud2[CLOUD] = True
    refl2[:, cloud2] = 0.5
    ev2 = potential_shadow(refl2, valid2, cloud2, CFG).astype(np.float32)
    assert estimate_shift(cloud2, ev2, valid2, config=CFG) is None


def test_block_size_independence() -> None:
    refl, cloud, valid, _ = scene()
    valid[:, :5] = False  # some nodata too
    s = ShadowShift(*shift_from_sun(SUN_AZIMUTH, DISTANCE), score=1.0)
    whole = shadow_mask(refl, cloud, valid, s, CFG)
    assert whole.any()
    halo = CFG.halo(s)
    h, w = cloud.shape
    for core in (32, 50):
        tiled = np.zeros_like(whole)
        for r0 in range(0, h, core):
            for c0 in range(0, w, core):
                a0, a1 = max(0, r0 - halo), min(h, r0 + core + halo)
                b0, b1 = max(0, c0 - halo), min(w, c0 + core + halo)
                m = shadow_mask(refl[:, a0:a1, b0:b1], cloud[a0:a1, b0:b1], valid[a0:a1, b0:b1], s, CFG)
                r1, c1 = min(h, r0 + core), min(w, c0 + core)
                tiled[r0:r1, c0:c1] = m[r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]
        np.testing.assert_array_equal(tiled, whole)


def test_scaled_config_and_shift() -> None:
    cfg = ShadowConfig().scaled(0.25)
    assert cfg.max_shift == pytest.approx(ShadowConfig().max_shift / 4)
    assert cfg.reference_radius == 10
    s = ShadowShift(dy=-3.0, dx=2.0, score=0.1).scaled(4.0)
    assert (s.dy, s.dx) == (-12.0, 8.0)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_square_morphology_matches_scipy(r: int) -> None:
    from scipy.ndimage import maximum_filter, minimum_filter

    from geocloud.shadow import _square

    m = np.random.default_rng(r).random((37, 23)) > 0.6
    size = 2 * r + 1
    np.testing.assert_array_equal(_square(m, r, dilate=True), maximum_filter(m, size=size, mode="nearest"))
    np.testing.assert_array_equal(_square(m, r, dilate=False), minimum_filter(m, size=size, mode="nearest"))


def test_shift_from_decimated_view() -> None:
    refl, cloud, valid, _ = scene()
    f = 2
    h, w = cloud.shape
    rd = refl.reshape(4, h // f, f, w // f, f).mean(axis=(2, 4))
    cd = cloud.reshape(h // f, f, w // f, f).mean(axis=(1, 3)) >= 0.5
    vd = valid.reshape(h // f, f, w // f, f).all(axis=(1, 3))
    cfg = CFG.scaled(1 / f)
    s = estimate_shift(cd, potential_shadow(rd, vd, cd, cfg).astype(np.float32), vd, config=cfg)
    assert s is not None
    s = s.scaled(f)
    ty, tx = shift_from_sun(SUN_AZIMUTH, DISTANCE)
    assert math.hypot(s.dy - ty, s.dx - tx) <= 2.5, (s, ty, tx)


# --------------------------------------------------------------------------- through the engine

SYN = dict(seed=3, cloud_cover=0.1, shadows=True, thin_cover=0.0, cloud_scale=256)


@pytest.fixture(scope="module")
def shadowed_scene(tmp_path_factory):
    """A 600 x 500 synthetic GF-1 scene whose thick clouds cast shadows (sun azimuth 150,
    elevation 55, clouds 1500 m up: the shadow lies (-57, -33) px from its cloud), and the
    true shadow strength (the fraction of its light the ground lost)."""
    import warnings

    from geocloud.synthetic import SceneSpec, SyntheticScene, make_scene

    path = tmp_path_factory.mktemp("shadow") / "GF1_WFV1_shadowed.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_scene(path, 600, 500, write_truth=False, **SYN)
    sc = SyntheticScene(SceneSpec(width=600, height=500, **SYN))
    return path, sc.layers(0, 0, 500, 600)["shadow"], sc.shadow_offset()


def _run(scene, out, products=("mask", "stats"), **kw):
    from geocloud import ProcessConfig, process_scene
    from geocloud.config import OutputConfig, TilingConfig

    tiling = kw.pop("tiling", TilingConfig())
    shadow = kw.pop("shadow", True)
    cfg = ProcessConfig(model="spectral", tiling=tiling, shadow=shadow,
                        output=OutputConfig(products=products, overwrite=True))  # fmt: skip
    return process_scene(scene, out, cfg, **kw)


def _mask(result):
    import rasterio

    with rasterio.open(result.outputs["mask"][0]) as ds:
        return ds.read(1), ds.tags(), ds.colormap(1)


def test_engine_marks_shadow_class_2(shadowed_scene, tmp_path):
    scene, strength, (gy, gx) = shadowed_scene
    r = _run(scene, tmp_path / "o")
    mask, tags, cmap = _mask(r)
    s = r.stats
    # the scene's displacement, searched in every direction: the true one (cloud -> shadow)
    assert s.shadow.detected and not s.shadow.from_sun
    assert s.shadow.dy == pytest.approx(-gy, abs=3) and s.shadow.dx == pytest.approx(-gx, abs=3)
    shadow = mask == 2
    assert (shadow & (strength > 0.15)).sum() / shadow.sum() > 0.8  # precise
    strong = (strength >= 0.4) & (mask != 1)
    assert (shadow & strong).sum() / strong.sum() > 0.5  # finds most strong shadow outside cloud
    # the counts and fractions: shadow is neither cloud nor clear, usable = clear
    px = s.pixels
    assert px.shadow == int(shadow.sum()) and px.clear == int((mask == 0).sum())
    assert px.valid == px.clear + px.cloud + px.shadow
    assert s.shadow_fraction == pytest.approx(px.shadow / px.valid)
    assert s.usable_fraction == pytest.approx(px.clear / px.valid)
    # GIS viewers show the classes by name and colour
    assert tags["GEOCLOUD_MASK_CLASSES"] == "0=clear,1=cloud,2=cloud shadow,255=nodata"
    assert tags["GEOCLOUD_OUTPUT_FORMAT"] == "2"
    assert cmap[2][3] == 255 and cmap[1] == (255, 255, 255, 255)


def test_sun_azimuth_restricts_the_search(shadowed_scene, tmp_path):
    scene, _, (gy, gx) = shadowed_scene
    s = _run(scene, tmp_path / "o", sun_azimuth=150.0).stats.shadow
    assert s.from_sun and s.shadow_azimuth == pytest.approx(330.0, abs=0.5)
    assert s.distance_px == pytest.approx(float(np.hypot(gy, gx)), abs=3)


def test_no_shadow_keeps_the_old_mask(shadowed_scene, tmp_path):
    scene, _, _ = shadowed_scene
    on = _run(scene, tmp_path / "on")
    off = _run(scene, tmp_path / "off", shadow=False)
    m_on, _, _ = _mask(on)
    m_off, tags, _ = _mask(off)
    assert set(np.unique(m_off)) <= {0, 1, 255} and tags["GEOCLOUD_SHADOW"].startswith("off")
    assert off.stats.shadow is None and off.stats.shadow_fraction is None
    # the shadow class only ever replaces clear: cloud and nodata are the same
    np.testing.assert_array_equal(m_on == 1, m_off == 1)
    np.testing.assert_array_equal(m_on == 255, m_off == 255)
    np.testing.assert_array_equal(m_on == 2, (m_off == 0) & (m_on != 0))


def test_shadow_class_does_not_depend_on_blocks_or_windows(shadowed_scene, tmp_path, monkeypatch):
    import geocloud.passes as passes
    from geocloud.config import TilingConfig

    scene, _, _ = shadowed_scene
    ref, _, _ = _mask(_run(scene, tmp_path / "ref"))
    monkeypatch.setattr(passes, "PASS2_ROWS", 48)
    cut, _, _ = _mask(_run(scene, tmp_path / "cut", tiling=TilingConfig(block_size=96, swath_width=128)))
    assert (ref == 2).sum() > 500
    np.testing.assert_array_equal(ref, cut)


def test_a_decimated_view_finds_the_same_displacement(shadowed_scene, tmp_path, monkeypatch):
    """Large scenes estimate the displacement on a decimated view (bounded memory)."""
    import geocloud.passes as passes

    scene, strength, (gy, gx) = shadowed_scene
    monkeypatch.setattr(passes, "SHADOW_VIEW_PX", 300)
    r = _run(scene, tmp_path / "o")
    s = r.stats.shadow
    assert s.view_factor == 2
    assert s.dy == pytest.approx(-gy, abs=4) and s.dx == pytest.approx(-gx, abs=4)
    mask, _, _ = _mask(r)
    assert ((mask == 2) & (strength > 0.15)).sum() / (mask == 2).sum() > 0.8


def test_products_treat_shadow_as_cloud_free_ground(shadowed_scene, tmp_path):
    """The clear product passes shadowed ground through (it is not cloud), its quality band
    flags it (200), the polygons carry a class, and the preview tints it."""
    import json

    import rasterio

    from geocloud.declouding import QUALITY_SHADOW

    scene, _, _ = shadowed_scene
    r = _run(scene, tmp_path / "o", products=("mask", "quality", "vector", "stats"))
    mask, _, _ = _mask(r)
    with rasterio.open(r.outputs["quality"][0]) as q:
        qual = q.read(1)
    assert (qual[mask == 2] == QUALITY_SHADOW).all() and (qual[mask == 0] != QUALITY_SHADOW).all()
    gj = json.loads(r.outputs["vector"][0].read_text())
    classes = {f["properties"]["class"] for f in gj["features"]}
    assert classes == {"cloud", "cloud shadow"}
