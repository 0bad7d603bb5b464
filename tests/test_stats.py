"""geocloud.stats: the typed result behind the stats JSON, and its one definition of thin cloud."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from geocloud.declouding import DecloudConfig, MattingStats
from geocloud.stats import SceneStats


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from geocloud.synthetic import make_scene

    path = tmp_path_factory.mktemp("stats") / "GF1_WFV1_stats.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_scene(path, 160, 120, seed=2, cloud_cover=0.4, write_truth=False, blocksize=64)
    return path


def test_the_json_is_scene_stats_and_reads_back(scene, tmp_path):
    from geocloud import ProcessConfig, process_scene
    from geocloud.config import OutputConfig

    cfg = ProcessConfig(model="spectral", output=OutputConfig(products=("mask", "stats")))
    r = process_scene(scene, tmp_path / "o", cfg)
    on_disk = json.loads(r.outputs["stats"][0].read_text())
    assert on_disk == json.loads(json.dumps(r.stats.to_dict()))
    assert SceneStats.from_dict(on_disk) == r.stats
    # no matte ran: no matting part, no thin-cloud figure
    assert r.stats.thin_cloud_fraction is None and "matting" not in on_disk
    # the shadow stage ran: its part and the fractions are there, and they add up
    assert "shadow" in on_disk and on_disk["shadow_fraction"] is not None
    s = r.stats
    assert s.cloud_fraction + s.shadow_fraction + s.usable_fraction == pytest.approx(1.0)


def test_from_dict_ignores_keys_it_does_not_know(scene, tmp_path):
    from geocloud import ProcessConfig, process_scene
    from geocloud.config import OutputConfig

    cfg = ProcessConfig(model="spectral", output=OutputConfig(products=("mask", "stats")))
    d = process_scene(scene, tmp_path / "o", cfg).stats.to_dict()
    d["a_future_key"] = 1
    d["pixels"]["a_future_count"] = 2
    assert SceneStats.from_dict(d).pixels.valid == d["pixels"]["valid"]


def test_thin_cloud_is_cloud_below_thin_tau_over_valid_pixels():
    """One definition: a cloud pixel (mask 1) with alpha < thin_tau; fractions of the valid
    pixels (clear and shadow count as valid, cloud-free)."""
    mask = np.array([[1, 1, 1, 0], [0, 2, 255, 1]], np.uint8)
    alpha = np.array([[0.2, 0.6, 0.4, 0.1], [0.0, 0.05, np.nan, 0.9]], np.float32)
    st = MattingStats(DecloudConfig(thin_tau=0.5))
    st.add(mask, alpha)
    s = st.summary()
    assert (s.thin_cloud_pixels, s.thick_cloud_pixels) == (2, 2)
    assert s.thin_cloud_fraction == pytest.approx(2 / 7) and s.thick_cloud_fraction == pytest.approx(2 / 7)
    assert s.mean_alpha == pytest.approx(np.mean([0.2, 0.6, 0.4, 0.1, 0.0, 0.05, 0.9]), rel=1e-6)
    assert s.mean_alpha_cloud == pytest.approx(np.mean([0.2, 0.6, 0.4, 0.9]), rel=1e-6)
