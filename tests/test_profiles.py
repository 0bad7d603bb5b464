"""The GTiff/COG creation profiles, and the public names that replaced private imports."""

from __future__ import annotations

import numpy as np

from geocloud import profiles


def test_output_cog_options() -> None:
    opts = profiles.output_cog("ZSTD", 512, "uint8")
    assert opts["COMPRESS"] == "ZSTD" and opts["LEVEL"] == 1 and opts["PREDICTOR"] == "YES"
    assert "PREDICTOR" not in profiles.output_cog("ZSTD", 512, "float32")
    assert "LEVEL" not in profiles.output_cog("DEFLATE", 256, "uint8")
    assert profiles.output_cog("NONE", 256, "uint8").keys() == {
        "COMPRESS", "BLOCKSIZE", "BIGTIFF", "OVERVIEWS", "NUM_THREADS"
    }  # fmt: skip


def test_gtiff_profiles() -> None:
    assert profiles.work_tiff(64)["blockysize"] == 64 and profiles.work_tiff(64)["compress"] == "NONE"
    assert profiles.ortho_tiff()["compress"] == "ZSTD"
    assert profiles.ortho_cog("NEAREST")["OVERVIEW_RESAMPLING"] == "NEAREST"
    syn = profiles.synthetic_tiff("float32", 256, "DEFLATE", 6)
    assert syn["predictor"] == 3 and syn["zlevel"] == 6
    assert "compress" not in profiles.synthetic_tiff("uint16", 256, None, None)


def test_is_archive(tmp_path) -> None:
    from geocloud.vendor import is_archive

    (tmp_path / "a.tar.gz").write_bytes(b"")
    (tmp_path / "b.tif").write_bytes(b"")
    assert is_archive(tmp_path / "a.tar.gz") and not is_archive(tmp_path / "b.tif")
    assert not is_archive(tmp_path / "missing.tar")


def test_mask_polygons() -> None:
    from geocloud.vectorize import mask_polygons

    m = np.zeros((6, 6), bool)
    m[1:3, 1:4] = True
    polys = mask_polygons(m, 10)
    assert len(polys) == 1 and polys[0].area == 6 and polys[0].bounds == (1, 11, 4, 13)
    assert len(mask_polygons(np.zeros((3, 3), bool), 0)) == 0
