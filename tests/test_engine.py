"""The whole-scene engine: identity round trip, seams, nodata, thresholds, tags."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from scipy import ndimage

from geocloud.config import InferenceConfig, OutputConfig, ProcessConfig, ThresholdConfig, TilingConfig
from geocloud.models.base import CloudModel, ModelSpec, Prediction
from geocloud.pipeline import process_scene
from geocloud.products import PRODUCTS, RasterLayout, RasterProduct
from geocloud.scene import open_scene


def write_scene(
    path, data, *, nodata=0, crs="EPSG:32650", transform=None, descriptions=("blue", "green", "red", "nir")
):
    count, h, w = data.shape
    profile = dict(
        driver="GTiff",
        width=w,
        height=h,
        count=count,
        dtype=data.dtype,
        nodata=nodata,
        tiled=True,
        blockxsize=128,
        blockysize=128,
    )
    if crs:
        profile.update(crs=CRS.from_string(crs), transform=transform or from_origin(500000, 4000000, 16, 16))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions[:count], 1):
            ds.set_band_description(i, d)
    return path


def coord_scene(h, w, seed=0):
    """uint16 DN whose values encode their own position, plus a little noise (all < 4096)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:h, 0:w]
    base = (rows * 7 + cols * 3) % 2000 + 100
    data = np.stack([base + 100 * b + rng.integers(0, 50, (h, w)) for b in range(4)]).astype(np.uint16)
    return data


class IdentityModel(CloudModel):
    """Returns its input bands (and a dummy score): the mosaic must give them back exactly."""

    def __init__(self, halo=0, multiple=1):
        self.spec = ModelSpec(
            name="identity",
            halo=halo,
            block_multiple=multiple,
            outputs={"score": 1, "bands": 4},
            default_threshold=0.5,
        )

    def predict(self, x, valid):
        return Prediction({"score": np.zeros_like(x[:, :1]), "bands": x.copy()})


class BoxModel(CloudModel):
    """A local model with context: 9x9 mean of the normalised blue band (zero padded) -> score."""

    def __init__(self):
        self.spec = ModelSpec(
            name="box", halo=4, outputs={"score": 1}, default_threshold=0.5, clear_mu=0.1, clear_sigma=0.1
        )

    def predict(self, x, valid):
        s = np.stack([ndimage.uniform_filter(b[0] / 2500.0, size=9, mode="constant") for b in x])
        return Prediction({"score": np.clip(s, 0, 1)[:, None].astype(np.float32)})


class PoolModel(CloudModel):
    """Works at 1/4 resolution (4x4 mean, nearest upsampling): needs block origins aligned to 4."""

    def __init__(self):
        self.spec = ModelSpec(
            name="pool", halo=0, block_multiple=4, outputs={"score": 1}, default_threshold=0.5
        )

    def predict(self, x, valid):
        b, c, h, w = x.shape
        low = x[:, 0].reshape(b, h // 4, 4, w // 4, 4).mean(axis=(2, 4)) / 2500.0
        return Prediction(
            {"score": np.clip(np.repeat(np.repeat(low, 4, 1), 4, 2), 0, 1)[:, None].astype(np.float32)}
        )


@pytest.fixture
def bands_product(monkeypatch):
    """Register a product that writes the identity model's 'bands' map."""
    prod = RasterProduct(
        "bands",
        "_bands.tif",
        "test: the model's input bands",
        ("bands",),
        lambda info, outs: RasterLayout(4, "float32", float("nan")),
        from_map="bands",
    )
    monkeypatch.setitem(PRODUCTS, "bands", prod)
    return prod


def run(scene, out, model, block, products=("mask", "score", "stats"), swath=8192, **cfg):
    # the test scenes encode their pixel coordinates, far outside any reflectance range (and
    # have no cloud shadows to find: the shadow stage has its own tests, tests/test_shadow.py)
    config = ProcessConfig(
        shadow=cfg.pop("shadow", False),
        tiling=TilingConfig(block_size=block, feather=cfg.pop("feather", 16), swath_width=swath),
        output=OutputConfig(products=products, overwrite=True),
        range_check=cfg.pop("range_check", False),
        **cfg,
    )
    return process_scene(scene, out, config, model=model, scale=cfg.pop("scale", 1.0))


@pytest.mark.parametrize(
    ("block", "swath"), [(32, 8192), (48, 8192), (100, 8192), (512, 8192), (32, 64), (48, 70)]
)
def test_identity_model_reproduces_input_exactly(tmp_path, bands_product, block, swath):
    data = coord_scene(150, 133)
    data[:, :5, :] = 0  # a nodata collar
    scene = write_scene(tmp_path / "s.tif", data)
    r = run(scene, tmp_path / "o", IdentityModel(halo=3), block, products=("bands", "stats"), swath=swath)
    assert (r.stats.swaths > 1) == (swath < 100)
    with rasterio.open(tmp_path / "o" / "s_bands.tif") as ds, rasterio.open(scene) as src:
        out = ds.read()
        assert ds.crs == src.crs and ds.transform == src.transform
    valid = (data != 0).all(axis=0)
    np.testing.assert_array_equal(out[:, valid], data[:, valid].astype(np.float32))
    assert np.isnan(out[:, ~valid]).all()


@pytest.mark.parametrize("model_cls", [BoxModel, PoolModel])
def test_no_seams_result_independent_of_block_size(tmp_path, model_cls):
    data = coord_scene(301, 257, seed=3)
    scene = write_scene(tmp_path / "s.tif", data, nodata=None)
    results = {}
    for block, swath in ((40, 8192), (64, 8192), (100, 8192), (1024, 8192), (40, 64), (64, 100)):
        out = tmp_path / f"o{block}-{swath}"
        r = run(scene, out, model_cls(), block, swath=swath)
        with rasterio.open(out / "s_score.tif") as ds:
            results[(block, swath)] = (ds.read(1), r.stats.threshold.value)
    ref, t_ref = results[(1024, 8192)]
    for block, (score, t) in results.items():
        np.testing.assert_allclose(score, ref, atol=2e-6, err_msg=f"block {block} differs")
        assert t == pytest.approx(t_ref, abs=1e-5)


def test_feather_zero_is_also_seamless(tmp_path):
    data = coord_scene(200, 180)
    scene = write_scene(tmp_path / "s.tif", data, nodata=None)
    a = run(scene, tmp_path / "a", BoxModel(), 48, feather=0)
    b = run(scene, tmp_path / "b", BoxModel(), 512)
    with rasterio.open(a.outputs["score"][0]) as da, rasterio.open(b.outputs["score"][0]) as db:
        np.testing.assert_allclose(da.read(), db.read(), atol=2e-6)


def test_nodata_propagates_to_mask_and_score(tmp_path):
    data = coord_scene(120, 90)
    data[:, 40:60, 10:30] = 0
    scene = write_scene(tmp_path / "s.tif", data)
    r = run(scene, tmp_path / "o", BoxModel(), 64)
    with rasterio.open(r.outputs["mask"][0]) as m, rasterio.open(r.outputs["score"][0]) as s:
        mask, score = m.read(1), s.read(1)
        assert m.nodata == 255 and np.isnan(s.nodata)
    assert (mask[40:60, 10:30] == 255).all() and np.isnan(score[40:60, 10:30]).all()
    assert set(np.unique(mask[data[0] > 0])) <= {0, 1}
    assert np.isfinite(score[data[0] > 0]).all()
    assert r.stats.pixels.nodata == 400
    assert r.stats.pixels.valid == 120 * 90 - 400


def test_threshold_override_and_recording(tmp_path):
    data = coord_scene(100, 100)
    scene = write_scene(tmp_path / "s.tif", data, nodata=None)
    r = run(scene, tmp_path / "o", BoxModel(), 64, threshold=ThresholdConfig(value=0.42))
    assert r.stats.threshold.value == pytest.approx(0.42)
    assert r.stats.threshold.method.startswith("user")
    with rasterio.open(r.outputs["mask"][0]) as m, rasterio.open(r.outputs["score"][0]) as s:
        assert m.tags()["GEOCLOUD_THRESHOLD"] == "0.42"
        assert m.tags()["GEOCLOUD_MODEL"] == "box"
        assert "GEOCLOUD_VERSION" in s.tags() and "GEOCLOUD_SENSOR" in s.tags()
        np.testing.assert_array_equal(m.read(1), (s.read(1) >= 0.42).astype(np.uint8))
    saved = json.loads((tmp_path / "o" / "s_stats.json").read_text())
    assert saved["threshold"]["value"] == pytest.approx(0.42)
    assert saved["cloud_fraction"] == pytest.approx(saved["pixels"]["cloud"] / saved["pixels"]["valid"])


def test_statistical_threshold_uses_clear_cells(tmp_path):
    """mu + k*sigma over clear-sky cells of the mosaicked score."""
    from geocloud.threshold import ScoreStats, fit_threshold

    spec = ModelSpec(name="t", default_threshold=0.5, threshold_k=3.0, clear_mu=0.9, clear_sigma=0.9)
    rng = np.random.default_rng(0)
    score = rng.normal(0.2, 0.02, (1024, 1024)).astype(np.float32)
    score[:256, :256] = 0.95  # 16 cloudy cells are excluded from the clear-sky statistics
    stats = ScoreStats(1024, 1024, cloudy_above=0.5)
    stats.update(0, score[:300])
    stats.update(300, score[300:])
    t = fit_threshold(stats, spec, ThresholdConfig())
    assert t.clear_cells == 240 and t.cells == 256
    assert t.mu == pytest.approx(0.2, abs=1e-3) and t.sigma == pytest.approx(0.02, abs=1e-3)
    assert t.value == pytest.approx(0.26, abs=2e-3)
    # an overcast scene falls back to the model's training statistics (then clamps)
    over = ScoreStats(512, 512, cloudy_above=0.5)  # 64 cells, none clear
    over.update(0, np.full((512, 512), 0.9, np.float32))
    t2 = fit_threshold(over, spec, ThresholdConfig())
    assert t2.clear_cells == 0 and "training" in t2.method and t2.value == pytest.approx(0.75)


def test_statistical_threshold_works_on_a_256_px_chip():
    """A chip of 256 px has enough cells for the scene's own clear-sky statistics."""
    from geocloud.threshold import ScoreStats, fit_threshold

    spec = ModelSpec(name="t", default_threshold=0.5, threshold_k=3.0, clear_mu=0.05, clear_sigma=0.05)
    score = np.random.default_rng(1).normal(0.3, 0.02, (256, 256)).astype(np.float32)  # bright clear land
    score[:64, :128] = 0.9  # a cloud: 2 of the 16 cells
    stats = ScoreStats(256, 256, cloudy_above=0.5)
    stats.update(0, score)
    t = fit_threshold(stats, spec, ThresholdConfig())
    assert t.cells == 16 and t.clear_cells == 14 and "clear-sky cells" in t.method
    assert t.value == pytest.approx(0.36, abs=5e-3)  # the chip's own mu + 3 sigma, not the training's 0.2


def test_outputs_are_cogs_with_overviews(tmp_path):
    data = coord_scene(1100, 1050)
    scene = write_scene(tmp_path / "s.tif", data, nodata=None)
    r = run(scene, tmp_path / "o", BoxModel(), 512)
    r2 = run(scene, tmp_path / "o2", BoxModel(), 512, swath=600)
    assert r2.stats.swaths == 2
    for name in ("mask", "score"):
        with rasterio.open(r.outputs[name][0]) as ds, rasterio.open(r2.outputs[name][0]) as ds2:
            assert ds.profile["tiled"] and ds.profile["compress"].lower() == "zstd"
            assert ds.overviews(1) == [2, 4], f"{name} overviews"
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            # the streamed pyramid does not depend on the swaths either
            for level in (0, 1, 2):
                shape = (ds.height // 2**level, ds.width // 2**level)
                a = ds.read(1, out_shape=shape)
                b = ds2.read(1, out_shape=shape)
                np.testing.assert_allclose(a, b, atol=2e-6, err_msg=f"{name} level {level}")
    leftovers = [p.name for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_striped_inputs_are_read_in_wide_swaths_with_the_same_outputs(tmp_path):
    """A compressed striped input (strips hold whole rows) is read in one first-pass swath
    up to TilingConfig.striped_swath_width, wider ones in equal swaths within it; the second
    pass keeps its own bands.  Outputs, overviews included, do not change."""
    from rasterio.shutil import copy as rio_copy

    data = coord_scene(600, 1100, seed=5)
    tiled = write_scene(tmp_path / "t.tif", data, nodata=None)
    striped = tmp_path / "s.tif"
    rio_copy(tiled, striped, driver="GTiff", TILED="NO", COMPRESS="DEFLATE")
    assert open_scene(striped).striped and not open_scene(tiled).striped

    def go(scene, name, striped_swath):
        config = ProcessConfig(
            tiling=TilingConfig(block_size=160, swath_width=300, striped_swath_width=striped_swath),
            output=OutputConfig(products=("mask", "score", "stats")),
            range_check=False,  # coordinate-encoding pixels
        )
        r = process_scene(scene, tmp_path / name, config, model=BoxModel(), scale=1.0)
        with rasterio.open(r.outputs["score"][0]) as ds, rasterio.open(r.outputs["mask"][0]) as dm:
            levels = [(ds.read(1, out_shape=(600 // 2**k, 1100 // 2**k)), dm.read(1, out_shape=(600 // 2**k, 1100 // 2**k)))
                      for k in range(3)]  # fmt: skip
        return r.stats.swaths, levels

    ref_swaths, ref = go(tiled, "tiled", 12288)
    assert ref_swaths > 2  # tiled: swath_width
    for name, limit, swaths in (("off", 0, ref_swaths), ("one", 12288, 1), ("two", 700, 2)):
        n, levels = go(striped, name, limit)
        assert n == swaths, name
        for (a, b), (ra, rb) in zip(levels, ref, strict=True):
            np.testing.assert_array_equal(a, ra)
            np.testing.assert_array_equal(b, rb)


def test_inference_defaults_resolve_per_device(monkeypatch):
    import os

    from geocloud.config import InferenceConfig
    from geocloud.errors import ConfigError

    cfg = InferenceConfig()
    assert cfg.resolved_batch_size("cpu") == InferenceConfig.CPU_BATCH == 1
    assert cfg.resolved_batch_size("cuda:0") == InferenceConfig.CUDA_BATCH
    assert InferenceConfig(batch_size=3).resolved_batch_size("cpu") == 3
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cfg.resolved_threads() == 14
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert cfg.resolved_threads() == 1
    assert InferenceConfig(threads=5).resolved_threads() == 5
    with pytest.raises(ConfigError, match="--threads"):
        InferenceConfig(threads=0).validate()


def test_cpu_threads_are_set_for_the_run_and_restored():
    import torch

    from geocloud.inference import cpu_threads

    before = torch.get_num_threads()
    with cpu_threads("cpu", 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads("cuda", 1):  # not touched for a GPU run
        assert torch.get_num_threads() == before


def test_weighted_region_skips_the_halo_ring_of_inner_blocks():
    from geocloud.inference import weighted_region
    from geocloud.tiling import make_tiling

    t = make_tiling(2000, 2000, block_size=656, halo=64, feather=16, multiple=8)
    blocks = list(t)
    first, inner = blocks[0], blocks[len(t.cols.origins) + 1]
    assert weighted_region([inner]) == (64, 592, 64, 592)
    assert weighted_region([first]) == (0, 592, 0, 592)  # scene edge: no halo ring to skip
    assert weighted_region([first, inner]) == (0, 592, 0, 592)  # a batch shares one region
    for b in (first, inner):
        r0, r1, c0, c1 = weighted_region([b])
        w = b.weights()
        assert w[r0:r1, c0:c1].sum() == w.sum()  # nothing with weight is left out


def test_block_reads_count_out_of_range_reflectance_on_valid_pixels_only(tmp_path):
    """The wrong-scaling check samples the block: out-of-range share of valid pixels, nodata left out."""
    from geocloud.inference import _Batch, _read_into
    from geocloud.scene import SceneReader, open_scene
    from geocloud.sensors import Radiometry
    from geocloud.tiling import make_tiling

    data = np.full((4, 128, 128), 0.2, np.float32)
    data[:, :, :32] = 3.0  # a quarter of the columns far too bright
    data[:, 64:, :] = np.nan  # the lower half is nodata (its bright pixels must not count)
    scene = write_scene(tmp_path / "s.tif", data, nodata=float("nan"))
    info = open_scene(scene)
    rad = Radiometry("generic", (1, 2, 3, 4), (1.0,) * 4, (0.0,) * 4, "test")
    block = next(iter(make_tiling(128, 128, block_size=128, halo=0, feather=0, multiple=8)))
    batch = _Batch([block], 4)
    with SceneReader(info, rad.indexes) as reader:
        bad, checked = _read_into(reader, rad, batch, 0, -0.05, 1.6, False)
    assert checked > 0 and bad / checked == pytest.approx(0.25)
    assert checked <= 4 * 64 * 128  # valid pixel-bands only
    assert not batch.valid[0, 64:].any() and (batch.x[0][:, 64:] == 0).all()  # nodata zeroed


class _JitteryBoxModel(BoxModel):
    """BoxModel whose calls take a random time, so model threads finish out of order."""

    def __init__(self, seed=0):
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def predict(self, x, valid):
        import time

        time.sleep(float(self.rng.uniform(0, 0.01)))
        return super().predict(x, valid)


@pytest.mark.parametrize("predictors", [2, 4])
def test_model_threads_finishing_out_of_order_give_the_same_result(tmp_path, predictors):
    """With several model threads, blocks still reach the mosaic in order: every product
    equals the one-thread run's, and each block comes out once, in the tiling's order."""
    from geocloud.inference import predict_blocks
    from geocloud.scene import SceneReader, open_scene
    from geocloud.sensors import Radiometry
    from geocloud.tiling import make_tiling

    scene = write_scene(tmp_path / "s.tif", coord_scene(260, 300))
    one = run(scene, tmp_path / "one", _JitteryBoxModel(), 64, inference=InferenceConfig(predictors=1))
    many = run(
        scene, tmp_path / "many", _JitteryBoxModel(1), 64, inference=InferenceConfig(predictors=predictors)
    )
    assert many.stats.inference.predictors == predictors
    for name in ("s_mask.tif", "s_score.tif"):
        with rasterio.open(tmp_path / "one" / name) as a, rasterio.open(tmp_path / "many" / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    assert one.stats.cloud_fraction == many.stats.cloud_fraction

    tiling = make_tiling(260, 300, block_size=64, halo=4, feather=0)
    rad = Radiometry("generic", (1, 2, 3, 4), (1.0,) * 4, (0.0,) * 4, "test")
    with SceneReader(open_scene(scene), rad.indexes) as reader:
        got = [r.block.window for r in predict_blocks(reader, rad, iter(tiling), _JitteryBoxModel(2),
                                                      batch_size=2, predictors=predictors)]  # fmt: skip
    assert got == [b.window for b in tiling]


class _BadShapeModel(CloudModel):
    """Returns maps one row short: the mosaic (on its own thread) must fail loudly."""

    def __init__(self):
        self.spec = ModelSpec(name="badshape", outputs={"score": 1}, default_threshold=0.5)

    def predict(self, x, valid):
        return Prediction({"score": np.zeros_like(x[:, :1, :-1])})


def test_errors_on_worker_threads_surface_and_leave_no_outputs(tmp_path, monkeypatch):
    """An error in the mosaic thread (pass 1) or a second-pass worker propagates to the
    caller, and the output folder is left as it was (no partial or hidden files)."""
    import geocloud.passes as passes

    scene = write_scene(tmp_path / "s.tif", coord_scene(260, 300))
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        run(scene, out, _BadShapeModel(), 128)
    assert not out.exists()  # as it was: the run made the folder and removed it

    def boom(maps, threshold, around=None):
        raise RuntimeError("second pass failed")

    monkeypatch.setattr(passes, "mask_rule", boom)
    with pytest.raises(RuntimeError, match="second pass failed"):
        run(scene, out, BoxModel(), 128)
    assert not out.exists()  # as it was: the run made the folder and removed it


@pytest.mark.parametrize("failing", ["score", "mask"])
def test_cog_assembly_errors_surface_and_leave_no_outputs(tmp_path, monkeypatch, failing):
    """The score COG is assembled on a background thread during the second pass, the mask's
    after it: a failure in either reaches the caller, other outputs are removed, and a
    previous run's outputs are left untouched."""
    from geocloud.cog import RasterSink
    from geocloud.errors import OutputError

    scene = write_scene(tmp_path / "s.tif", coord_scene(260, 300))
    out = tmp_path / "out"
    run(scene, out, BoxModel(), 128)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    finalize = RasterSink.finalize

    def flaky(self, tags, dest=None, **kw):
        if tags["GEOCLOUD_PRODUCT"] == failing:
            raise OutputError(f"writing {self.final.name} failed (disk full)")
        return finalize(self, tags, dest, **kw)

    monkeypatch.setattr(RasterSink, "finalize", flaky)
    with pytest.raises(OutputError, match=f"s_{failing}.tif"):
        run(scene, out, BoxModel(), 128)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_atomic_output_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    from geocloud.errors import OutputError
    from geocloud.outputs import atomic_output

    final = tmp_path / "table.gpkg"
    with atomic_output(final, keep_suffix=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".gpkg") and tmp.name.startswith(".")
        tmp.write_text("done")
    assert final.read_text() == "done" and [p.name for p in tmp_path.iterdir()] == ["table.gpkg"]

    other = tmp_path / "page.html"
    with pytest.raises(OutputError, match="cannot write .*page.html"), atomic_output(other) as tmp:
        tmp.write_text("half")
        raise OSError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["table.gpkg"]
