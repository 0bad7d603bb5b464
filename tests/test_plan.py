"""geocloud.plan: every check before a pixel is read, and the frozen plan of a run."""

from __future__ import annotations

import os
import warnings

import pytest

from geocloud.config import OutputConfig, ProcessConfig
from geocloud.errors import ConfigError, OutputError, SceneNotFoundError
from geocloud.plan import OUTPUT_FORMAT, gdal_cache, plan_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from geocloud.synthetic import make_scene

    path = tmp_path_factory.mktemp("plan") / "GF1_WFV1_plan.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_scene(path, 700, 300, seed=1, write_truth=False, blocksize=64)
    return path


def _cfg(**out) -> ProcessConfig:
    return ProcessConfig(model="spectral", output=OutputConfig(**{"products": ("mask", "stats"), **out}))


def test_an_unknown_product_is_refused_before_the_scene_is_opened(tmp_path):
    with pytest.raises(ConfigError, match="'nope' is unknown"):
        plan_scene(tmp_path / "missing.tif", tmp_path, _cfg(products=("nope",)))
    with pytest.raises(SceneNotFoundError):
        plan_scene(tmp_path / "missing.tif", tmp_path, _cfg())


def test_existing_outputs_are_refused_without_overwrite(scene, tmp_path):
    (tmp_path / "GF1_WFV1_plan_mask.tif").write_bytes(b"an earlier run's")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        plan_scene(scene, tmp_path, _cfg())
    plan, _ = plan_scene(scene, tmp_path, _cfg(overwrite=True))
    assert (tmp_path / "GF1_WFV1_plan_mask.tif").read_bytes() == b"an earlier run's"  # planning writes nothing
    # describing a scene never refuses existing outputs
    plan_scene(scene, tmp_path, _cfg(), describe=True)


def test_the_plan_holds_the_run(scene, tmp_path):
    from geocloud.threshold import ThresholdResult

    plan, model = plan_scene(scene, tmp_path, _cfg())
    assert model is not None and plan.spec == model.spec
    assert plan.n_blocks == len(plan.tiling)
    assert plan.swaths[0].x0 == 0 and plan.swaths[-1].x1 == plan.info.width
    assert set(plan.wanted) == {"mask", "stats"}
    assert plan.wanted["mask"] == [tmp_path / "GF1_WFV1_plan_mask.tif"]
    assert plan.pixel_size_m == pytest.approx(16.0)  # the synthetic GF-1 WFV grid, UTM metres
    tags = plan.tags(ThresholdResult(0.3, "fixed"))
    assert tags["GEOCLOUD_OUTPUT_FORMAT"] == str(OUTPUT_FORMAT) and tags["GEOCLOUD_SHADOW"] == "on"
    with pytest.raises(AttributeError):
        plan.outdir = tmp_path  # frozen


def test_gdal_cache_is_restored_after_a_run(scene, monkeypatch):
    from rasterio.env import get_gdal_config, set_gdal_config

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    set_gdal_config("GDAL_CACHEMAX", 123 * 2**20)
    plan, _ = plan_scene(scene, os.devnull + "-dir", _cfg(), describe=True)
    with gdal_cache(plan):
        assert int(get_gdal_config("GDAL_CACHEMAX")) != 123 * 2**20
    assert int(get_gdal_config("GDAL_CACHEMAX")) == 123 * 2**20
