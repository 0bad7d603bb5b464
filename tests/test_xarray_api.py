"""The lazy xarray/dask API gives the CLI's results (spectral model, and a model with a halo)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

import geocloud.xarray_api as gx
from geocloud.config import OutputConfig, ProcessConfig, TilingConfig
from geocloud.errors import ConfigError
from geocloud.models.base import CloudModel, ModelSpec, Prediction
from geocloud.pipeline import process_scene
from geocloud.synthetic import make_scene


class BoxModel(CloudModel):
    """A local model with context: score = mean blue reflectance over a (2h+1)^2 box."""

    def __init__(self, halo: int = 3):
        self.spec = ModelSpec(name="box", halo=halo, clear_mu=0.1, clear_sigma=0.05, threshold_k=2.0,
                              default_threshold=0.25)  # fmt: skip

    def predict(self, x: np.ndarray, valid: np.ndarray) -> Prediction:
        h = self.spec.halo
        blue = x[:, 0]
        p = np.pad(blue.astype(np.float64), ((0, 0), (h, h), (h, h)))  # float64: block-size independent sums
        c = p.cumsum(1).cumsum(2)
        c = np.pad(c, ((0, 0), (1, 0), (1, 0)))
        n = 2 * h + 1
        s = c[:, n:, n:] - c[:, :-n, n:] - c[:, n:, :-n] + c[:, :-n, :-n]
        score = np.clip(s / n**2, 0, 1).astype(np.float32)
        return Prediction({"score": score[:, None]})


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("xa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_scene(d / "s.tif", 600, 450, seed=11, cloud_cover=0.08, thin_cover=0.05, write_truth=False,
                          blocksize=128, cloud_scale=256)  # fmt: skip


@pytest.fixture(scope="module")
def clear_scene(tmp_path_factory):
    """Mostly clear, no collar: enough clear-sky cells for the scene-statistics threshold."""
    d = tmp_path_factory.mktemp("xa_clear")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_scene(d / "c.tif", 768, 600, seed=1, cloud_cover=0.03, thin_cover=0.0, write_truth=False,
                          blocksize=128, cloud_scale=256, collar=False)  # fmt: skip


def _cli(scene, outdir, cfg, model=None):
    cfg = ProcessConfig(model=cfg.model, tiling=cfg.tiling, shadow=cfg.shadow,
                        output=OutputConfig(products=("mask", "score", "stats"), overwrite=True))  # fmt: skip
    r = process_scene(scene, outdir, cfg, model=model)
    with rasterio.open(r.outputs["mask"][0]) as m, rasterio.open(r.outputs["score"][0]) as s:
        return m.read(1), s.read(1), r.stats.to_dict(), m.transform, m.crs


def test_spectral_equals_cli(scene, tmp_path):
    cfg = ProcessConfig(model="spectral", tiling=TilingConfig(block_size=256))
    mask, score, stats, transform, crs = _cli(scene, tmp_path, cfg)
    ds = gx.detect_clouds(scene, cfg, chunks=200)
    assert ds.score.chunks is not None and ds.mask.chunks is not None  # lazy
    c = ds.compute()
    assert float(c.threshold) == pytest.approx(stats["threshold"]["value"], abs=1e-9)
    assert np.array_equal(np.isnan(c.score.values), np.isnan(score))
    np.testing.assert_allclose(c.score.values, score, atol=1e-6, equal_nan=True)
    assert np.array_equal(c.mask.values, mask)
    assert ds.rio.crs == crs
    assert tuple(ds.rio.transform())[:6] == pytest.approx(tuple(transform)[:6])
    assert int((c.mask == 1).sum()) == stats["pixels"]["cloud"]


@pytest.mark.parametrize("which", ["scene", "clear_scene"])
def test_model_with_halo_equals_cli(which, request, tmp_path):
    scene = request.getfixturevalue(which)
    model = BoxModel(halo=3)
    cfg = ProcessConfig(tiling=TilingConfig(block_size=64))
    mask, score, stats, _, _ = _cli(scene, tmp_path, cfg, model=model)
    if which == "clear_scene":  # the lazy ScoreStats reduction is exercised, not the fallback
        assert "clear-sky cells" in stats["threshold"]["method"] and stats["threshold"]["clear_cells"] >= 4
    c = gx.detect_clouds(scene, cfg, chunks=90, model=model).compute()  # chunks unlike the CLI's blocks
    np.testing.assert_allclose(c.score.values, score, atol=1e-5, equal_nan=True)
    thr = float(c.threshold)
    assert thr == pytest.approx(stats["threshold"]["value"], abs=1e-6)
    near = np.abs(score - thr) < 1e-5
    assert np.array_equal(c.mask.values[~near], mask[~near])


def test_open_scene_is_lazy_with_crs(scene):
    da = gx.open_scene(scene, chunks=128)
    assert da.chunks is not None and da.shape == (4, 450, 600)
    assert da.rio.crs.to_epsg() == 32650


def test_foreign_dataarray_refused():
    arr = xr.DataArray(np.zeros((4, 8, 8), np.uint16), dims=("band", "y", "x"))
    with pytest.raises(ConfigError, match="open_scene"):
        gx.detect_clouds(arr)


def test_cam_equals_cli_edges_included(scene, tmp_path):
    """The default CAM model: equal to the CLI everywhere, scene edges included (chunks
    grow inside the scene only, like the engine's edge blocks)."""
    cfg = ProcessConfig(model="cam")
    _, score, _, _, _ = _cli(scene, tmp_path, cfg)
    c = gx.detect_clouds(scene, cfg, chunks=200).compute()
    np.testing.assert_allclose(c.score.values, score, atol=1e-5, equal_nan=True)


def test_grown_mask_equals_cli(scene, tmp_path):
    """Edge growing (hysteresis): the lazy mask reads the score around each chunk, as the
    engine's second pass reads around each window, so the masks agree."""
    import dataclasses

    model = BoxModel(halo=3)
    model.spec = dataclasses.replace(model.spec, grow_ratio=0.6, grow_radius=12)
    cfg = ProcessConfig(tiling=TilingConfig(block_size=64))
    mask, score, stats, _, _ = _cli(scene, tmp_path, cfg, model=model)
    thr = stats["threshold"]
    assert thr["grow_radius"] == 12 and thr["grow_low"] == pytest.approx(0.6 * thr["value"])
    c = gx.detect_clouds(scene, cfg, chunks=90, model=model).compute()
    assert float(c.threshold) == pytest.approx(thr["value"], abs=1e-6)
    near = (np.abs(score - thr["value"]) < 1e-5) | (np.abs(score - thr["grow_low"]) < 1e-5)
    assert np.array_equal(c.mask.values[~near], mask[~near])
    grown = (mask == 1) & (score < thr["value"])
    assert grown.sum() > 100  # the rule did grow edges here


@given(n=st.integers(1, 5000), size=st.integers(1, 2048), multiple=st.sampled_from([1, 4, 8, 16]),
       halo=st.integers(0, 128))  # fmt: skip
def test_aligned_chunks(n, size, multiple, halo):
    from geocloud.xarray_api import _aligned_chunks

    ch = _aligned_chunks(n, size, multiple, halo)
    assert sum(ch) == n and all(c > 0 for c in ch)
    assert all(b % multiple == 0 for b in np.cumsum(ch)[:-1])  # inner boundaries on the grid
    if len(ch) > 1:
        assert min(ch) >= halo


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory):
    """Clouds casting shadows (sun azimuth 150): 2600 x 1800 px, so the displacement is
    searched on a pooled view (factor 2), as the engine does."""
    d = tmp_path_factory.mktemp("xa_shadow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_scene(d / "GF1_WFV1_shadowed.tif", 2600, 1800, seed=3, cloud_cover=0.1, shadows=True,
                          thin_cover=0.0, cloud_scale=256, write_truth=False)  # fmt: skip


@pytest.mark.parametrize("model", ["spectral", "cam"])
def test_shadow_class_equals_cli(shadowed, tmp_path, model):
    """The lazy mask has the cloud-shadow class, pixel for pixel the engine's, with chunks
    shorter than the shadow halo; without shadow (``--no-shadow``) it has none."""
    cfg = ProcessConfig(model=model)
    mask, _, stats, _, _ = _cli(shadowed, tmp_path / "on", cfg)
    assert (mask == 2).sum() > 10000 and stats["shadow"]["detected"]
    c = gx.detect_clouds(shadowed, cfg, chunks=200).mask.values
    assert np.array_equal(c, mask)
    off = ProcessConfig(model=model, shadow=False)
    mask_off, _, _, _, _ = _cli(shadowed, tmp_path / "off", off)
    c_off = gx.detect_clouds(shadowed, off, chunks=1024)
    assert "2 cloud shadow" not in c_off.mask.attrs["flag_values"]
    assert np.array_equal(c_off.mask.values, mask_off) and not (mask_off == 2).any()
