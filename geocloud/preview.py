"""Quicklook PNGs of a scene with its cloud mask overlaid.

``<stem>_preview.png`` is at most ``max_side`` (1024) pixels on its long side.  It is built
from decimated reads (``out_shape``), which GDAL serves from the overviews when the file
has them (geocloud's COG outputs do), never from a full-resolution read:

* true colour (red, green, blue), each band stretched between its 2nd and 98th
  percentile over valid pixels, with a mild gamma;
* clouds tinted, and the outline of every cloud drawn in a solid colour;
* nodata transparent (RGBA PNG).

PNGs are written by a small dependency-free encoder (zlib), so no imaging library is needed.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, InputError
from .outputs import atomic_output


@dataclass(frozen=True)
class PreviewConfig:
    """How quicklooks look."""

    max_side: int = 1024
    #: stretch percentiles over valid pixels.
    percentiles: tuple[float, float] = (2.0, 98.0)
    gamma: float = 1.0 / 1.4
    #: RGB of the cloud tint and of the outline.
    tint: tuple[int, int, int] = (255, 64, 200)
    tint_opacity: float = 0.25
    outline: tuple[int, int, int] = (255, 235, 0)
    #: mask values drawn as cloud.
    classes: tuple[int, ...] = (1,)
    #: mask values drawn as cloud shadow, and their tint (dark blue).
    shadow_classes: tuple[int, ...] = (2,)
    shadow_tint: tuple[int, int, int] = (0, 40, 255)
    shadow_opacity: float = 0.45

    def validate(self) -> None:
        if self.max_side < 8:
            raise ConfigError(f"preview size {self.max_side} is too small; pass 8 or more pixels")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ConfigError(f"stretch percentiles {self.percentiles} must satisfy 0 <= low < high <= 100")


# ------------------------------------------------------------------------------ PNG


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png(image: np.ndarray) -> bytes:
    """Encode a uint8 (H, W), (H, W, 3) or (H, W, 4) array as PNG bytes."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"PNG encoder needs uint8, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    h, w, c = img.shape
    color_type = {1: 0, 3: 2, 4: 6}.get(c)
    if color_type is None:
        raise ValueError(f"PNG encoder needs 1, 3 or 4 channels, got {c}")
    rows = img.reshape(h, w * c)
    up = rows.copy()
    up[1:] -= rows[:-1]  # PNG filter 2 ("Up"), modulo 256: smooth images compress better
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def write_png(image: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a PNG atomically (temporary name, then rename)."""
    path = Path(path)
    data = encode_png(image)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_png_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of a PNG, from its header."""
    head = Path(path).read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise InputError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


# -------------------------------------------------------------------------- drawing


def preview_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The (h, w) of a quicklook: the scene shrunk so its long side is at most ``max_side``."""
    f = min(1.0, max_side / max(height, width))
    return max(1, int(math.floor(height * f + 0.5))), max(1, int(math.floor(width * f + 0.5)))


def _rgb_indexes(descriptions: Sequence[str | None], count: int) -> tuple[int, int, int]:
    names = [(d or "").strip().lower() for d in descriptions]
    if all(n in names for n in ("red", "green", "blue")):
        return names.index("red") + 1, names.index("green") + 1, names.index("blue") + 1
    if count >= 3:
        return (3, 2, 1)  # geocloud's canonical order: blue, green, red, nir
    return (1, 1, 1)


def stretch(
    bands: np.ndarray, valid: np.ndarray, cfg: PreviewConfig, basis: np.ndarray | None = None
) -> np.ndarray:
    """(3, h, w) values -> (h, w, 3) uint8, one monotonic curve per band.

    The ``basis`` pixels (the clear ground; default all valid) between their low and high
    percentiles fill 0..85 % of the range; brighter pixels (clouds) up to the 99.5th
    percentile of all valid pixels fill the rest, so the land keeps its contrast, clouds
    keep their texture, and a brighter pixel is never drawn darker.
    """
    basis = valid if basis is None else basis
    knee = 0.85
    out = np.zeros((bands.shape[1], bands.shape[2], 3), np.uint8)
    for i in range(3):
        b = bands[i].astype(np.float32)
        ok = valid & np.isfinite(b)
        okb = basis & ok
        if not ok.any():
            continue
        lo, hi = np.percentile(b[okb] if okb.any() else b[ok], cfg.percentiles)
        top = float(np.percentile(b[ok], 99.5))
        hi = max(float(hi), float(lo) + 1e-6)
        top = max(top, hi + 1e-6)
        x = np.where(
            b <= hi,
            knee * np.clip((b - lo) / (hi - lo), 0, 1) ** cfg.gamma,
            knee + (1 - knee) * np.clip((b - hi) / (top - hi), 0, 1),
        )
        out[:, :, i] = np.where(ok, np.round(np.nan_to_num(x) * 255), 0).astype(np.uint8)
    return out


def outline(cloud: np.ndarray) -> np.ndarray:
    """Cloud pixels with a non-cloud 4-neighbour (the one-pixel outline)."""
    c = cloud
    p = np.pad(c, 1, mode="edge")
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return c & ~inner


def overlay(rgb: np.ndarray, valid: np.ndarray, cloud: np.ndarray | None, cfg: PreviewConfig,
            shadow: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """RGBA quicklook: tint and outline the clouds, tint their shadows; nodata transparent."""
    img = rgb.astype(np.float32)
    if shadow is not None and shadow.any():
        a = cfg.shadow_opacity
        img[shadow] = (1 - a) * img[shadow] + a * np.array(cfg.shadow_tint, np.float32)
    if cloud is not None:
        a = cfg.tint_opacity
        tint = np.array(cfg.tint, np.float32)
        img[cloud] = (1 - a) * img[cloud] + a * tint
        img[outline(cloud)] = np.array(cfg.outline, np.float32)
    rgba = np.zeros((*rgb.shape[:2], 4), np.uint8)
    rgba[:, :, :3] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    rgba[:, :, 3] = np.where(valid, 255, 0)
    return rgba


def downsample_rgba(img: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink an RGBA quicklook so its long side is at most ``max_side`` (area average,
    weighted by alpha so transparent nodata does not darken the edges)."""
    h, w = img.shape[:2]
    th, tw = preview_shape(h, w, max_side)
    if (th, tw) == (h, w):
        return img
    ry = np.linspace(0, h, th + 1).astype(int)[:-1]
    rx = np.linspace(0, w, tw + 1).astype(int)[:-1]
    a = img[:, :, 3:4].astype(np.float64) / 255.0
    rgb = img[:, :, :3].astype(np.float64) * a

    def area(x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(x, ry, axis=0), rx, axis=1)

    cnt = area(np.ones((h, w, 1)))
    asum = area(a)
    out = np.zeros((th, tw, 4), np.uint8)
    out[:, :, :3] = np.round(np.divide(area(rgb), asum, out=np.zeros((th, tw, 3)), where=asum > 0)).clip(
        0, 255
    )
    out[:, :, 3] = np.round(255 * asum[:, :, 0] / cnt[:, :, 0]).clip(0, 255)
    return out


def render_preview(
    scene_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str] | None = None,
    config: PreviewConfig | None = None,
    *,
    rgb: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """The RGBA quicklook array (see the module docstring); pixels are read decimated."""
    import rasterio
    from rasterio.enums import Resampling

    cfg = config or PreviewConfig()
    cfg.validate()
    try:
        ds = rasterio.open(scene_path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"scene {scene_path} cannot be opened for a preview ({exc})") from exc
    with ds:
        h, w = preview_shape(ds.height, ds.width, cfg.max_side)
        idx = rgb or _rgb_indexes(ds.descriptions, ds.count)
        # Decimated reads: GDAL picks the closest overview level when there is one.
        bands = ds.read(list(idx), out_shape=(3, h, w), resampling=Resampling.nearest, masked=False)
        valid = ds.read_masks(1, out_shape=(h, w), resampling=Resampling.nearest) > 0
        if ds.nodata is not None and np.isnan(ds.nodata):
            valid &= np.isfinite(bands).all(axis=0)
        shape_full = (ds.height, ds.width)
    cloud = shadow = None
    if mask_path is not None:
        with rasterio.open(mask_path) as ms:
            if (ms.height, ms.width) != shape_full:
                raise InputError(
                    f"mask {mask_path} is {ms.width}x{ms.height} but the scene is "
                    f"{shape_full[1]}x{shape_full[0]}; pass the mask made from this scene"
                )
            m = ms.read(1, out_shape=(h, w), resampling=Resampling.nearest)
        cloud = np.isin(m, cfg.classes)
        shadow = np.isin(m, cfg.shadow_classes)
        valid &= m != 255
    # Stretch on the clear ground when there is enough of it (see :func:`stretch`).
    basis = valid & ~cloud if cloud is not None and (valid & ~cloud).sum() > 0.02 * valid.sum() else valid
    return overlay(stretch(bands, valid, cfg, basis), valid, cloud, cfg, shadow)


def write_preview(
    scene_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str] | None = None,
    config: PreviewConfig | None = None,
) -> Path:
    """Write ``out_path`` (PNG): the scene's quicklook with the mask overlaid."""
    return write_png(render_preview(scene_path, mask_path, config), out_path)


def write_preview_product(ctx: Any, paths: list[Path]) -> None:
    """The ``preview`` product of :mod:`geocloud.products`: ``<stem>_preview.png``.

    ``ctx`` is a :class:`geocloud.products.FileContext`; ``ctx.options["preview"]`` may hold
    a :class:`PreviewConfig`.
    """
    cfg = ctx.options.get("preview") or PreviewConfig()
    write_png(render_preview(ctx.scene.path, ctx.rasters.get("mask"), cfg), paths[0])
