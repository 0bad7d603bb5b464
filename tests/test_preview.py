"""Quicklook PNGs: size bound, decimated reads only, mask outline, valid PNG bytes."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geocloud.errors import ConfigError, InputError
from geocloud.preview import (
    PreviewConfig,
    encode_png,
    outline,
    preview_shape,
    read_png_size,
    render_preview,
    write_preview,
)


def _decode_png(data: bytes) -> np.ndarray:
    """Minimal decoder for the encoder's output (8-bit, filter 0)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            c = {0: 1, 2: 3, 6: 4}[ctype]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * c)
    assert (raw[:, 0] == 2).all()  # "Up" filter
    rows = raw[:, 1:].copy()
    for r in range(1, h):
        rows[r] += rows[r - 1]
    return rows.reshape(h, w, c)


def test_png_roundtrip():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (5, 7, 3), (3, 2, 4)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        back = _decode_png(encode_png(img))
        assert np.array_equal(back.reshape(img.shape), img)


def test_preview_shape():
    assert preview_shape(4000, 4000, 1024) == (1024, 1024)
    assert preview_shape(13719, 12000, 1024) == (1024, 896)
    assert preview_shape(100, 50, 1024) == (100, 50)  # never upsampled


def test_outline_is_the_border():
    c = np.zeros((7, 7), bool)
    c[1:6, 1:6] = True
    o = outline(c)
    assert o.sum() == 16 and not o[3, 3]


def _scene(tmp_path, h=300, w=500):
    yy, xx = np.mgrid[0:h, 0:w]
    data = np.stack([(xx + yy) % 1000 + 100, (xx * 2) % 1000 + 100, (yy * 3) % 1000 + 100, xx % 500 + 50])
    data = data.astype(np.uint16)
    data[:, :, :20] = 0  # nodata collar
    p = tmp_path / "s.tif"
    with rasterio.open(p, "w", driver="GTiff", width=w, height=h, count=4, dtype="uint16", nodata=0,
                       crs="EPSG:32650", transform=from_origin(0, 0, 16, 16), tiled=True,
                       blockxsize=64, blockysize=64) as ds:  # fmt: skip
        ds.write(data)
        for i, n in enumerate(("blue", "green", "red", "nir"), 1):
            ds.set_band_description(i, n)
        ds.build_overviews([2, 4])
    m = np.zeros((h, w), np.uint8)
    m[50:150, 100:300] = 1
    m[:, :20] = 255
    mp = tmp_path / "s_mask.tif"
    with rasterio.open(mp, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32650", transform=from_origin(0, 0, 16, 16)) as ds:  # fmt: skip
        ds.write(m[None])
    return p, mp


def test_preview_written_bounded_and_overlaid(tmp_path):
    p, mp = _scene(tmp_path)
    out = write_preview(p, tmp_path / "s_preview.png", mp, PreviewConfig(max_side=200))
    assert read_png_size(out) == (200, 120)
    img = _decode_png(out.read_bytes())
    assert img.shape == (120, 200, 4)
    assert (img[:, :6, 3] == 0).all() and (img[:, 10:, 3] == 255).all()  # nodata transparent
    # the cloud box (rows 20..60, cols 40..120 at 0.4 scale) has the yellow outline
    assert tuple(img[20, 60, :3]) == (255, 235, 0)
    assert tuple(img[40, 80, :3]) != (255, 235, 0)  # inside: tinted, not outlined
    assert img[40, 80, 0] > img[40, 80, 1]  # magenta tint
    # default long side 1024, but never larger than the scene
    assert read_png_size(write_preview(p, tmp_path / "b.png")) == (500, 300)


def test_preview_reads_are_decimated(tmp_path, monkeypatch):
    p, mp = _scene(tmp_path)
    calls = []
    orig = rasterio.io.DatasetReader.read

    def spy(self, *a, **kw):
        calls.append(kw.get("out_shape"))
        return orig(self, *a, **kw)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    render_preview(p, mp, PreviewConfig(max_side=100))
    assert calls and all(s is not None and max(s[-2:]) <= 100 for s in calls)


def test_preview_errors(tmp_path):
    p, _ = _scene(tmp_path)
    with pytest.raises(ConfigError):
        render_preview(p, config=PreviewConfig(max_side=2))
    small = tmp_path / "small_mask.tif"
    with rasterio.open(small, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 10, 10), np.uint8))
    with pytest.raises(InputError, match="pass the mask made from this scene"):
        render_preview(p, small)


def test_downsample_rgba():
    from geocloud.preview import downsample_rgba

    img = np.zeros((100, 60, 4), np.uint8)
    img[:, 30:] = (200, 100, 50, 255)  # right half opaque, left half transparent nodata
    small = downsample_rgba(img, 20)
    assert small.shape == (20, 12, 4)
    assert (small[:, :5, 3] == 0).all() and (small[:, 7:, 3] == 255).all()
    assert tuple(small[10, 11, :3]) == (200, 100, 50)
    assert tuple(small[10, 6, :3]) == (200, 100, 50)  # a mixed column keeps the colour (alpha-weighted)
    assert downsample_rgba(img, 200) is img
