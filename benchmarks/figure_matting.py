"""Figure for docs/matting.md: a held-out composite and a real cloudy chip, as one PNG.

    python benchmarks/figure_matting.py --data ../shared/data --out docs/img/matting_example.png

Row 1 (synthetic cloud over held-out chip ``jaag``): composite y, true alpha, predicted
alpha, recovered x_hat (nodata black), true background x.
Row 2 (real held-out chip ``Shrubland_00_0614``): the image, predicted alpha, the clear
product, the label (white cloud, grey thin).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from geocloud.compositing import compose, invert
from geocloud.models.matting import load
from geocloud.preview import write_png
from geocloud.training.data import load_catalog, read_chip
from geocloud.training.synth import cloud_layer


def _rgb(x: np.ndarray, hi: float = 0.35) -> np.ndarray:
    rgb = np.nan_to_num(x[[2, 1, 0]], nan=0.0).transpose(1, 2, 0)
    return (np.clip(rgb / hi, 0, 1) ** 0.8 * 255).astype(np.uint8)


def _grey(a: np.ndarray) -> np.ndarray:
    g = (np.clip(np.nan_to_num(a), 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def _fit(img: np.ndarray, size: int = 192) -> np.ndarray:
    """Nearest resampling of a square panel to size x size."""
    idx = (np.arange(size) * img.shape[0] / size).astype(int)
    return img[idx][:, idx]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("docs/img/matting_example.png"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load("cpu")
    chips = {c.id: c for c in load_catalog(args.data, four_band_only=True)}
    x, _ = read_chip(chips["jaag"])
    a, r = cloud_layer(np.random.default_rng(3), x.shape[-1], "thin")
    y = compose(x, a[None], r)
    p = model.predict(y[None], np.ones((1, *a.shape), bool)).maps
    ah, rh = p["alpha"][0, 0], p["reflectance"][0]
    xh = invert(y, ah[None], rh)
    row1 = [_rgb(y), _grey(a), _grey(ah), _rgb(xh), _rgb(x)]
    z, lab = read_chip(chips["Shrubland_00_0614"])
    q = model.predict(z[None], np.ones((1, *lab.shape), bool)).maps
    zh = invert(z, q["alpha"][0], q["reflectance"][0])
    labimg = np.where(lab == 1, 1.0, np.where(lab == 2, 0.5, 0.0))
    row2 = [
        _rgb(z, 0.6),
        _grey(q["alpha"][0, 0]),
        _rgb(zh, 0.6),
        _grey(labimg),
        np.zeros((256, 256, 3), np.uint8),
    ]
    gap = np.full((192, 4, 3), 255, np.uint8)

    def row(imgs: list[np.ndarray]) -> np.ndarray:
        parts = []
        for im in imgs:
            parts += [_fit(im), gap]
        return np.concatenate(parts[:-1], axis=1)

    img = np.concatenate([row(row1), np.full((4, row(row1).shape[1], 3), 255, np.uint8), row(row2)], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_png(np.ascontiguousarray(img), args.out)
    print(f"wrote {args.out} {img.shape}")


if __name__ == "__main__":
    main()
