"""Regenerate the committed sample scene: ``python sample_scenes/make_sample.py``.

Writes ``gf1_wfv_sample.tif`` (1024 x 1024 x 4 uint16 GF-1 WFV1-like DN, UTM 50N, 16 m,
nodata collar, DEFLATE) and ``gf1_wfv_sample_alpha_truth.tif`` (float32 cloud opacity)
next to this script.  The scene is synthetic: see README.md here and geocloud/synthetic.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geocloud.synthetic import make_scene, truth_path

HERE = Path(__file__).resolve().parent

#: The parameters of the committed sample; changing them changes the file.
SAMPLE = {
    "width": 1024,
    "height": 1024,
    "seed": 42,
    "cloud_cover": 0.3,
    "thin_cover": 0.15,
    "cloud_scale": 512,
    "land_scale": 512,
    "sun_elevation": 62.5,
    "acquisition_time": "2020-05-23T03:12:40Z",
    "compress": "DEFLATE",
    "compress_level": 9,
    "blocksize": 256,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o", "--out", type=Path, default=HERE / "gf1_wfv_sample.tif", help="output scene path"
    )
    args = parser.parse_args()
    path = make_scene(args.out, **SAMPLE)
    for p in (path, truth_path(path)):
        print(f"{p} ({p.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
