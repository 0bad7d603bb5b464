"""Sun angles from the metadata files that travel with Landsat and Sentinel-2 scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geocloud.sun import find_sun_metadata, read_landsat_mtl, read_s2_tile_metadata

MTL = """GROUP = LANDSAT_METADATA_FILE
  GROUP = IMAGE_ATTRIBUTES
    SPACECRAFT_ID = "LANDSAT_8"
    SUN_AZIMUTH = 150.00000000
    SUN_ELEVATION = 55.00000000
    EARTH_SUN_DISTANCE = 0.9833
  END_GROUP = IMAGE_ATTRIBUTES
END_GROUP = LANDSAT_METADATA_FILE
END
"""

MTD_TL = """<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-1C_Tile_Metadata.xsd">
  <n1:Geometric_Info>
    <Tile_Angles>
      <Sun_Angles_Grid><Zenith><COL_STEP unit="m">5000</COL_STEP></Zenith></Sun_Angles_Grid>
      <Mean_Sun_Angle>
        <ZENITH_ANGLE unit="deg">35.25</ZENITH_ANGLE>
        <AZIMUTH_ANGLE unit="deg">160.5</AZIMUTH_ANGLE>
      </Mean_Sun_Angle>
    </Tile_Angles>
  </n1:Geometric_Info>
</n1:Level-1C_Tile_ID>
"""


def test_landsat_mtl_and_s2_tile_metadata_are_read(tmp_path: Path) -> None:
    mtl = tmp_path / "LC08_L1TP_123032_20200101_20200113_02_T1_MTL.txt"
    mtl.write_text(MTL)
    sun = read_landsat_mtl(mtl)
    assert sun is not None and (sun.azimuth, sun.elevation) == (150.0, 55.0) and sun.source == mtl
    xml = tmp_path / "MTD_TL.xml"
    xml.write_text(MTD_TL)
    sun = read_s2_tile_metadata(xml)
    assert sun is not None and sun.azimuth == 160.5 and sun.elevation == pytest.approx(54.75)
    # no angles, out-of-range angles, or not a metadata file at all: nothing
    bad = tmp_path / "bad_MTL.txt"
    bad.write_text("SUN_AZIMUTH = abc\nSUN_ELEVATION = 123.0\n")
    assert read_landsat_mtl(bad) is None
    broken = tmp_path / "broken.xml"
    broken.write_text("<not closed")
    assert read_s2_tile_metadata(broken) is None


def test_which_metadata_file_belongs_to_a_scene(tmp_path: Path) -> None:
    pid = "LC08_L1TP_123032_20200101_20200113_02_T1"
    stack = tmp_path / f"{pid}_stack.tif"
    assert find_sun_metadata(stack) is None  # nothing beside it
    (tmp_path / f"{pid}_MTL.txt").write_text(MTL)
    other = MTL.replace("150.0", "99.0")
    (tmp_path / "LC09_L1TP_001002_20220101_20220102_02_T1_MTL.txt").write_text(other)
    found = find_sun_metadata(stack)  # the MTL whose product id starts the scene's name
    assert found is not None and found.azimuth == 150.0
    # two MTL files and neither names the scene: ambiguous, so none
    assert find_sun_metadata(tmp_path / "my_stack.tif") is None
    (tmp_path / "LC09_L1TP_001002_20220101_20220102_02_T1_MTL.txt").unlink()
    alone = find_sun_metadata(tmp_path / "my_stack.tif")  # the only MTL in the folder
    assert alone is not None and alone.azimuth == 150.0
    # a Sentinel-2 band in a SAFE granule: GRANULE/<tile>/IMG_DATA/R10m/<band>.jp2
    tile = tmp_path / "S2.SAFE" / "GRANULE" / "L2A_T33UUP"
    (tile / "IMG_DATA" / "R10m").mkdir(parents=True)
    (tile / "MTD_TL.xml").write_text(MTD_TL)
    s2 = find_sun_metadata(tile / "IMG_DATA" / "R10m" / "T33UUP_B02_10m.tif")
    assert s2 is not None and s2.azimuth == 160.5


def test_an_mtl_beside_the_scene_gives_the_shadow_direction(tmp_path: Path) -> None:
    """A synthetic scene whose clouds cast shadows with the sun at azimuth 150 and 55
    degrees up: an MTL beside it saying so makes the shadow stage search only the
    distance, and finds the true displacement; `geocloud info` shows where it came from."""
    import warnings

    from click.testing import CliRunner
    from geocloud.cli.main import cli

    from geocloud import OutputConfig, ProcessConfig, process_scene
    from geocloud.synthetic import SceneSpec, SyntheticScene, make_scene

    syn = dict(seed=3, cloud_cover=0.1, shadows=True, thin_cover=0.0, cloud_scale=256)
    scene = tmp_path / "LC08_L1TP_123032_20200101_20200113_02_T1_GF1_WFV1_stack.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_scene(scene, 600, 500, write_truth=False, **syn)
    gy, gx = SyntheticScene(SceneSpec(width=600, height=500, **syn)).shadow_offset()
    cfg = ProcessConfig(model="spectral", output=OutputConfig(products=("mask", "stats"), overwrite=True))
    before = process_scene(scene, tmp_path / "a", cfg).stats.shadow
    assert not before.from_sun  # searched in every direction
    (tmp_path / "LC08_L1TP_123032_20200101_20200113_02_T1_MTL.txt").write_text(MTL)
    s = process_scene(scene, tmp_path / "b", cfg).stats.shadow
    assert s.from_sun and s.shadow_azimuth == pytest.approx(330.0, abs=0.5)
    assert s.distance_px == pytest.approx(float(np.hypot(gy, gx)), abs=3)
    res = CliRunner().invoke(cli, ["info", str(scene)])
    assert res.exit_code == 0, res.output
    assert "along the sun azimuth 150.00 degrees" in res.output
    assert "_MTL.txt" in res.output
    # --sun-azimuth comes first
    res = CliRunner().invoke(cli, ["info", str(scene), "--sun-azimuth", "200"])
    assert "along the sun azimuth 200.00 degrees" in res.output
    res = CliRunner().invoke(cli, ["info", str(scene), "--no-shadow"])
    assert "off (--no-shadow)" in res.output
