"""geocloud.evaluate: a geocloud mask's class 2 is cloud shadow, a label's class 2 is thin cloud."""

from __future__ import annotations

import numpy as np
import pytest

from geocloud.evaluate import evaluate, evaluate_arrays


def test_shadow_in_a_geocloud_mask_is_not_cloud():
    truth = np.array([[0, 1, 2, 3]], np.uint8)  # label codes: clear, cloud, thin cloud, shadow
    pred = np.array([[2, 1, 1, 2]], np.uint8)  # geocloud codes: shadow, cloud, cloud, shadow
    assert evaluate_arrays(pred, truth) == {"tp": 2, "fp": 0, "fn": 0, "tn": 2}
    # the same numbers as label codes would count both 2s as (thin) cloud
    assert evaluate_arrays(pred, truth, pred_codes="label") == {"tp": 2, "fp": 2, "fn": 0, "tn": 0}


def test_files_are_read_with_the_codes_their_tags_say(tmp_path):
    import rasterio

    truth = np.array([[0, 1, 2, 3]], np.uint8)
    pred = np.array([[2, 1, 1, 2]], np.uint8)

    def write(path, a, tags=None):
        with rasterio.open(path, "w", driver="GTiff", width=4, height=1, count=1, dtype="uint8") as ds:
            ds.write(a[None])
            if tags:
                ds.update_tags(**tags)

    write(tmp_path / "t.tif", truth)
    write(tmp_path / "geocloud_mask.tif", pred, {"GEOCLOUD_PRODUCT": "mask"})
    write(tmp_path / "other_mask.tif", pred)
    ours = evaluate([(tmp_path / "geocloud_mask.tif", tmp_path / "t.tif")])
    theirs = evaluate([(tmp_path / "other_mask.tif", tmp_path / "t.tif")])
    assert ours.scenes["geocloud"]["oa"] == pytest.approx(1.0)
    assert theirs.scenes["other"]["oa"] == pytest.approx(0.5)
