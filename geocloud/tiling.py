"""Cutting a scene into overlapping blocks; the slice arithmetic lives here, once.

Along each axis a scene of ``n`` pixels is first extended to ``n'`` = ``n`` rounded up to
the model's ``multiple`` (the extra pixels are read as nodata), so that every block origin
is a multiple of ``multiple`` and every block sees the scene edge at the same place,
whatever the block size.  Then blocks of ``size`` pixels (``min(size, n')`` for scenes
smaller than a block) are laid out:

* origins ``0, S, 2S, ...`` with step ``S = floor((size - 2*halo - feather) / multiple) * multiple``;
  the last block is moved inward to end exactly at ``n'`` (so edge blocks are full size);
* a block's outer ring of ``halo`` pixels has zero weight in the mosaic (the model lacks
  context there), except on sides that touch the scene edge;
* neighbouring blocks' weighted spans overlap by at least ``feather`` pixels, where the
  mosaic blends them linearly.

Every pixel gets positive weight from at least one block and no block appears twice
(tests/test_tiling.py checks both with hypothesis).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from .errors import ConfigError


@dataclass(frozen=True)
class Axis:
    """Block layout along one axis."""

    length: int  # scene pixels
    padded: int  # scene pixels rounded up to the multiple
    size: int  # block length
    origins: tuple[int, ...]


def layout_axis(length: int, size: int, halo: int, feather: int, multiple: int = 1) -> Axis:
    """Block origins along one axis; see the module docstring."""
    if length < 1:
        raise ConfigError(f"cannot tile an axis of {length} pixels")
    multiple = max(1, multiple)
    padded = math.ceil(length / multiple) * multiple
    asked = size
    size = math.ceil(size / multiple) * multiple
    size = min(size, padded)
    if size >= padded:
        return Axis(length, padded, padded, (0,))
    step = ((size - 2 * halo - feather) // multiple) * multiple
    if step < multiple:
        raise ConfigError(
            f"block size {asked}"
            + (f" (rounded up to {size}, a multiple of the model's stride {multiple})" if size != asked else "")
            + f" leaves no room for a halo of {halo} and a feather of {feather} px; "
            f"pass --block-size of at least {2 * halo + feather + multiple}"
        )
    n = max(1, math.ceil((padded - size) / step) + 1)
    origins = [i * step for i in range(n - 1)] + [padded - size]
    return Axis(length, padded, size, tuple(origins))


def axis_weights(origin: int, size: int, padded: int, halo: int, feather: int) -> np.ndarray:
    """Feather weights (float32, in multiples of 1/feather) along one axis of one block."""
    i = np.arange(size, dtype=np.float64)
    w = np.ones(size, dtype=np.float64)
    f = max(feather, 1)
    if origin > 0:
        w = np.minimum(w, np.clip((i - halo + 1) / f, 0.0, 1.0))
    if origin + size < padded:
        w = np.minimum(w, np.clip((size - halo - i) / f, 0.0, 1.0))
    return w.astype(np.float32)


@dataclass(frozen=True)
class Block:
    """One block: the window it reads (may extend past the scene edge into padding) and its
    feathering weights' separable factors."""

    index: int
    row: int  # grid position
    col: int
    window: Window
    weight_rows: np.ndarray
    weight_cols: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.window.height), int(self.window.width)

    def weights(self) -> np.ndarray:
        """(h, w) float32 blend weights."""
        return np.outer(self.weight_rows, self.weight_cols)

    def __hash__(self) -> int:
        return hash((self.index, self.window.row_off, self.window.col_off))


@dataclass(frozen=True)
class Tiling:
    """The blocks of one scene."""

    height: int
    width: int
    rows: Axis
    cols: Axis
    halo: int
    feather: int

    @property
    def block_shape(self) -> tuple[int, int]:
        return self.rows.size, self.cols.size

    def __len__(self) -> int:
        return len(self.rows.origins) * len(self.cols.origins)

    def __iter__(self) -> Iterator[Block]:
        """Blocks in row-major order (the mosaic relies on it)."""
        k = 0
        for r, r0 in enumerate(self.rows.origins):
            wr = axis_weights(r0, self.rows.size, self.rows.padded, self.halo, self.feather)
            for c, c0 in enumerate(self.cols.origins):
                wc = axis_weights(c0, self.cols.size, self.cols.padded, self.halo, self.feather)
                yield Block(k, r, c, Window(c0, r0, self.cols.size, self.rows.size), wr, wc)
                k += 1


def make_tiling(height: int, width: int, *, block_size: int, halo: int, feather: int,
                multiple: int = 1) -> Tiling:  # fmt: skip
    """Lay out the blocks of a ``height`` x ``width`` scene."""
    if halo < 0 or feather < 0:
        raise ConfigError(f"halo ({halo}) and feather ({feather}) must not be negative")
    rows = layout_axis(height, block_size, halo, feather, multiple)
    cols = layout_axis(width, block_size, halo, feather, multiple)
    return Tiling(height, width, rows, cols, halo, feather)


@dataclass(frozen=True)
class Swath:
    """A band of columns processed on its own, so memory does not grow with scene width.

    It owns output columns ``[x0, x1)``; every block that gives those columns weight is
    among ``block_cols`` (so blocks next to a swath edge are computed by both swaths), and
    its accumulator spans columns ``[c0, c1)``.
    """

    x0: int
    x1: int
    c0: int
    c1: int
    block_cols: tuple[int, ...]


def _positive_span(origin: int, axis: Axis, halo: int) -> tuple[int, int]:
    lo = origin if origin == 0 else origin + halo
    hi = origin + axis.size if origin + axis.size == axis.padded else origin + axis.size - halo
    return lo, hi


def weight_sums(axis: Axis, halo: int, feather: int) -> np.ndarray:
    """Sum over all blocks of the feather weights along one axis (float32, exact)."""
    total = np.zeros(axis.padded, dtype=np.float32)
    for o in axis.origins:
        total[o : o + axis.size] += axis_weights(o, axis.size, axis.padded, halo, feather)
    return total[: axis.length]


def make_swaths(tiling: Tiling, max_width: int, align: int = 1) -> list[Swath]:
    """Split the block columns into swaths of about ``max_width`` output columns, with
    edges on block origins that are multiples of ``align``."""
    cols = tiling.cols
    candidates = [o for o in cols.origins[1:] if o % align == 0 and o < tiling.width]
    bounds = [0]
    while True:
        ahead = [o for o in candidates if o > bounds[-1]]
        if not ahead:
            break
        fitting = [o for o in ahead if o - bounds[-1] <= max_width]
        nxt = fitting[-1] if fitting else ahead[0]
        if tiling.width - bounds[-1] <= max_width:
            break
        bounds.append(nxt)
    bounds.append(tiling.width)
    swaths = []
    for x0, x1 in zip(bounds[:-1], bounds[1:], strict=True):
        js = []
        for j, o in enumerate(cols.origins):
            lo, hi = _positive_span(o, cols, tiling.halo)
            if lo < x1 and hi > x0:
                js.append(j)
        c0 = cols.origins[js[0]]
        c1 = min(max(cols.origins[j] + cols.size for j in js), tiling.width)
        swaths.append(Swath(x0, x1, c0, c1, tuple(js)))
    return swaths


def swath_blocks(tiling: Tiling, swath: Swath) -> Iterator[Block]:
    """The blocks of one swath, in row-major order."""
    ncols = len(tiling.cols.origins)
    for r, r0 in enumerate(tiling.rows.origins):
        wr = axis_weights(r0, tiling.rows.size, tiling.rows.padded, tiling.halo, tiling.feather)
        for c in swath.block_cols:
            c0 = tiling.cols.origins[c]
            wc = axis_weights(c0, tiling.cols.size, tiling.cols.padded, tiling.halo, tiling.feather)
            yield Block(r * ncols + c, r, c, Window(c0, r0, tiling.cols.size, tiling.rows.size), wr, wc)


def grow_window(window: Window, margin: int, height: int, width: int) -> tuple[Window, tuple[slice, slice]]:
    """``window`` grown by ``margin`` px on every side within a ``height`` x ``width`` scene,
    and the (rows, cols) slices of the original window inside the grown one.

    Second-pass products that need context beyond their window (edge growing of the
    mask, ``--refine``) compute on the grown window and keep the inner part.
    """
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    er0, ec0 = max(0, r0 - margin), max(0, c0 - margin)
    er1, ec1 = min(height, r0 + h + margin), min(width, c0 + w + margin)
    inner = (slice(r0 - er0, r0 - er0 + h), slice(c0 - ec0, c0 - ec0 + w))
    return Window(ec0, er0, ec1 - ec0, er1 - er0), inner
