"""Edge growing (hysteresis) of the cloud mask: the rule, its locality and the engine's use of it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from test_engine import BoxModel, coord_scene, run, write_scene

from geocloud import passes
from geocloud.config import ThresholdConfig
from geocloud.models.base import ModelSpec
from geocloud.threshold import CLEAR, CLOUD, NODATA, ScoreStats, classify, fit_threshold
from geocloud.tiling import grow_window


def test_classify_grows_only_near_cores_and_only_above_the_low_threshold():
    s = np.zeros((40, 40), np.float32)
    s[20, 20] = 0.9  # a core
    s[20, 23] = 0.5  # a low pixel 3 px away: grown
    s[20, 30] = 0.5  # a low pixel 10 px away: not grown
    s[25, 20] = 0.2  # close but below the low threshold
    s[0, 0] = np.nan
    m = classify(s, 0.8, 0.4, 4)
    assert m[20, 20] == CLOUD and m[20, 23] == CLOUD
    assert m[20, 30] == CLEAR and m[25, 20] == CLEAR
    assert m[0, 0] == NODATA
    assert (m == CLOUD).sum() == 2
    # square window: Chebyshev distance 4 is in, 5 is out
    s2 = np.zeros((20, 20), np.float32)
    s2[10, 10] = 0.9
    s2[14, 14] = s2[15, 10] = 0.5
    m2 = classify(s2, 0.8, 0.4, 4)
    assert m2[14, 14] == CLOUD and m2[15, 10] == CLEAR
    # without growing it is the plain threshold
    np.testing.assert_array_equal(
        classify(s, 0.8), np.where(np.isnan(s), NODATA, (s >= 0.8).astype(np.uint8))
    )
    np.testing.assert_array_equal(classify(s, 0.8, 0.4, 0), classify(s, 0.8))


def test_growing_is_local_so_windows_grown_by_the_radius_match_the_whole():
    rng = np.random.default_rng(1)
    s = rng.random((97, 131)).astype(np.float32)
    whole = classify(s, 0.99, 0.5, 6)
    tiled = np.full_like(whole, 99)
    for r0 in range(0, 97, 17):
        for c0 in range(0, 131, 23):
            win = Window(c0, r0, min(23, 131 - c0), min(17, 97 - r0))
            ext, (ys, xs) = grow_window(win, 6, 97, 131)
            part = s[ext.row_off : ext.row_off + ext.height, ext.col_off : ext.col_off + ext.width]
            tiled[r0 : r0 + win.height, c0 : c0 + win.width] = classify(part, 0.99, 0.5, 6)[ys, xs]
    np.testing.assert_array_equal(tiled, whole)
    # without the margin the windows' edges would lose grown pixels: the margin is what matters
    bare = np.concatenate([classify(s[:, c0 : c0 + 23], 0.99, 0.5, 6) for c0 in range(0, 131, 23)], axis=1)
    assert (bare != whole).any()


def test_grow_window_clips_to_the_scene():
    ext, (ys, xs) = grow_window(Window(0, 10, 5, 5), 8, 20, 30)
    assert (ext.col_off, ext.row_off, ext.width, ext.height) == (0, 2, 13, 20 - 2)
    assert (ys, xs) == (slice(8, 13), slice(0, 5))


def test_fit_threshold_applies_the_models_growing_unless_switched_off():
    spec = ModelSpec(name="g", default_threshold=0.4, clear_mu=0.0, clear_sigma=0.1, threshold_k=4.0,
                     grow_ratio=0.5, grow_radius=12)  # fmt: skip
    stats = ScoreStats(64, 64, cloudy_above=0.4)
    stats.update(0, np.zeros((64, 64), np.float32))
    t = fit_threshold(stats, spec, ThresholdConfig())
    assert t.grow_radius == 12 and t.grow_low == pytest.approx(0.5 * t.value)
    off = fit_threshold(stats, spec, ThresholdConfig(grow=False))
    assert off.grow_radius == 0 and off.grow_low is None and off.value == t.value
    user = fit_threshold(stats, spec, ThresholdConfig(value=0.6))
    assert user.value == 0.6 and user.grow_low == pytest.approx(0.3)
    plain = fit_threshold(stats, dataclasses.replace(spec, grow_radius=0), ThresholdConfig())
    assert plain.grow_low is None


class GrowBoxModel(BoxModel):
    def __init__(self):
        super().__init__()
        self.spec = dataclasses.replace(self.spec, grow_ratio=0.8, grow_radius=10)


def test_engine_mask_grows_edges_independent_of_pass2_windows(tmp_path, monkeypatch):
    data = coord_scene(230, 210, seed=5)
    scene = write_scene(tmp_path / "s.tif", data, nodata=None)
    thr = ThresholdConfig(value=0.6)
    ref = run(scene, tmp_path / "ref", GrowBoxModel(), 512, threshold=thr)
    with rasterio.open(ref.outputs["score"][0]) as s, rasterio.open(ref.outputs["mask"][0]) as m:
        score, mask = s.read(1), m.read(1)
    expected = classify(score, 0.6, 0.48, 10)
    np.testing.assert_array_equal(mask, expected)
    assert (mask == CLOUD).sum() > (score >= 0.6).sum()  # it did grow something
    assert ref.stats.threshold.grow_radius == 10
    monkeypatch.setattr(passes, "PASS2_ROWS", 7)
    cut = run(scene, tmp_path / "cut", GrowBoxModel(), 64, threshold=thr, swath=64)
    assert cut.stats.swaths > 1
    with rasterio.open(cut.outputs["mask"][0]) as m:
        np.testing.assert_array_equal(m.read(1), expected)
    off = run(scene, tmp_path / "off", GrowBoxModel(), 512, threshold=ThresholdConfig(value=0.6, grow=False))
    with rasterio.open(off.outputs["mask"][0]) as m:
        np.testing.assert_array_equal(m.read(1), (score >= 0.6).astype(np.uint8))
