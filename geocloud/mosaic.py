"""Seamless mosaicking of overlapping block outputs in bounded memory.

The scene is processed in swaths of columns (:func:`geocloud.tiling.make_swaths`, at most
``TilingConfig.swath_width``, 4096 px by default).  Within a swath each block's maps are
added into strip accumulators as ``sum(w * v)`` with the block's feather weights
(:mod:`geocloud.tiling`); the total weight is separable and computed once.  Blocks arrive in row-major order, so once a block row
starts at row ``r`` every row above ``r`` is final: it is normalised and handed out, and
the strip slides down.  Memory is about ``channels * swath_width * block_height * 4``
bytes, independent of the scene's size.  Low-resolution cell maps (the matte's cloud
colour) are blended for the whole scene at their own resolution by :class:`CellMosaic`.

The blend weights are multiples of ``1/feather``; with the default feather of 16 px a
model that returns the same value from every block (the contract of
:mod:`geocloud.models.base`) gets that value back exactly for values with up to 16
significant bits (all sensor DN), and within float32 rounding otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .tiling import Block


@dataclass
class Strip:
    """Finished rows ``[row0, row1)`` of the scene, every map normalised; NaN where no weight."""

    row0: int
    row1: int
    maps: dict[str, np.ndarray]  # name -> (k, rows, width) float32
    valid: np.ndarray  # (rows, width) bool


class StripAccumulator:
    """Streaming weighted-average accumulator over strips of rows of one swath.

    It covers scene columns ``[col0, col0 + width)``.  The total blend weight at a pixel
    is separable, ``row_weights[r] * col_weights[c]`` (the tiling is a grid and each
    block's weights are an outer product), so only the weighted sums are accumulated.
    """

    def __init__(self, width: int, height: int, block_height: int, channels: dict[str, int], *,
                 row_weights: np.ndarray, col_weights: np.ndarray, col0: int = 0):  # fmt: skip
        self.width = width
        self.height = height
        self.col0 = col0
        self.rows = block_height
        self.channels = dict(channels)
        self.row_weights = row_weights
        self.col_weights = col_weights[col0 : col0 + width]
        self.top = 0  # scene row of accumulator row 0
        self.sums = {k: np.zeros((n, self.rows, width), dtype=np.float32) for k, n in channels.items()}
        # validity comes from the input, the same in every block: assigned, not blended
        self.valid = np.zeros((self.rows, width), dtype=bool)

    def _flush(self, upto: int) -> Strip | None:
        upto = min(upto, self.height)
        n = upto - self.top
        if n <= 0:
            return None
        # exact products of multiples of 1/16; division (not multiplication by 1/w) keeps
        # exact values exact
        w = np.outer(self.row_weights[self.top : upto], self.col_weights)
        valid = self.valid[:n].copy()
        out: dict[str, np.ndarray] = {}
        invalid = None if valid.all() else ~valid
        for k, s in self.sums.items():
            v = np.divide(s[:, :n], w)
            if invalid is not None:
                np.copyto(v, np.float32(np.nan), where=invalid)
            out[k] = v
        strip = Strip(self.top, upto, out, valid)
        # slide the strip down
        keep = self.rows - n
        if keep > 0:
            self.valid[:keep] = self.valid[n:]
            for s in self.sums.values():
                s[:, :keep] = s[:, n:]
        self.valid[keep:] = False
        for s in self.sums.values():
            s[:, keep:] = 0
        self.top = upto
        return strip

    def add(self, block: Block, maps: dict[str, np.ndarray], valid: np.ndarray,
            region: tuple[int, int, int, int] | None = None) -> Iterator[Strip]:  # fmt: skip
        """Add one block's maps and validity (h, w); yield the strips this makes final.

        The maps ((k, r1 - r0, c1 - c0) each) cover the block pixels ``region`` =
        (r0, r1, c0, c1) (default: the whole block); the block's weight must be zero
        outside it.
        """
        r0, c0 = int(block.window.row_off), int(block.window.col_off) - self.col0
        h, w = block.shape
        if r0 > self.top:
            strip = self._flush(r0)
            if strip is not None:
                yield strip
        # clip the block to the accumulator (it may extend into the padding or past the swath)
        rr1 = min(r0 + h, self.height)
        cc1 = min(c0 + w, self.width)
        bh, bw = rr1 - r0, cc1 - c0
        if bh <= 0 or bw <= 0:
            return
        a0 = r0 - self.top
        self.valid[a0 : a0 + bh, c0:cc1] = valid[:bh, :bw]
        g0, g1, k0, k1 = region if region is not None else (0, h, 0, w)
        g1, k1 = min(g1, bh), min(k1, bw)
        if g1 <= g0 or k1 <= k0:
            return
        # from here on, rows and columns are relative to the region
        wr, wc = block.weight_rows[g0:g1], block.weight_cols[k0:k1]
        rh, rw = g1 - g0, k1 - k0
        a0, c0 = a0 + g0, c0 + k0
        # the inner rectangle where the weight is exactly 1 is added without multiplying
        ones_r, ones_c = np.flatnonzero(wr == 1), np.flatnonzero(wc == 1)
        if len(ones_r) and len(ones_c):
            i0, i1, j0, j1 = ones_r[0], ones_r[-1] + 1, ones_c[0], ones_c[-1] + 1
        else:
            i0 = i1 = j0 = j1 = 0
        frame = [(0, i0, 0, rw), (i1, rh, 0, rw), (i0, i1, 0, j0), (i0, i1, j1, rw)]
        for k, s in self.sums.items():
            m = maps[k]
            if i1 > i0 and j1 > j0:
                s[:, a0 + i0 : a0 + i1, c0 + j0 : c0 + j1] += m[:, i0:i1, j0:j1]
            for y0, y1, x0, x1 in frame:
                if y1 > y0 and x1 > x0:
                    s[:, a0 + y0 : a0 + y1, c0 + x0 : c0 + x1] += m[:, y0:y1, x0:x1] * np.outer(
                        wr[y0:y1], wc[x0:x1]
                    )

    def finish(self) -> Iterator[Strip]:
        """Flush what is left once every block has been added."""
        while self.top < self.height:
            strip = self._flush(min(self.top + self.rows, self.height))
            if strip is None:
                break
            yield strip


class CellMosaic:
    """Whole-scene weighted mean of low-resolution maps (one value per ``cell`` x ``cell``
    pixels, e.g. the matte's cloud colour), kept in memory: about ``4 * (channels + 1)``
    bytes per cell, 1/64 of the scene's pixels for 8 px cells (31 MB for 5 channels of a
    100 Mpx scene).

    Blocks start on multiples of ``cell`` (the engine aligns them to the block multiple),
    so their cells fall on the scene's cell grid.  A block's weight at a cell is its blend
    weight at the cell's centre pixel; each swath adds only the cells whose centres are in
    its own columns, so blocks computed by two swaths count once.
    """

    def __init__(self, height: int, width: int, cell: int, channels: dict[str, int]):
        self.cell = cell
        self.width = width
        self.rows, self.cols = -(-height // cell), -(-width // cell)
        self.sums = {k: np.zeros((n, self.rows, self.cols), np.float32) for k, n in channels.items()}
        self.weight = np.zeros((self.rows, self.cols), np.float32)

    def add(self, block: Block, cells: dict[str, np.ndarray], x0: int, x1: int) -> None:
        """Add one block's cell maps ((k, h / cell, w / cell) each) for scene columns [x0, x1)."""
        c = self.cell
        r0, c0 = int(block.window.row_off), int(block.window.col_off)
        if r0 % c or c0 % c:
            raise ValueError(f"block at ({r0}, {c0}) is not on the {c} px cell grid")
        wr = block.weight_rows[c // 2 :: c]
        wc = block.weight_cols[c // 2 :: c]
        i0, j0 = r0 // c, c0 // c
        # own cells: centre column j*c + c//2 in [x0, x1) (the last swath also takes the
        # scene's last, partial cell, whose centre may lie past the edge); rows in the scene
        jlo = max(j0, -(-(x0 - c // 2) // c))
        jend = self.cols if x1 >= self.width else -(-(x1 - c // 2) // c)
        jhi = min(j0 + len(wc), jend, self.cols)
        ihi = min(i0 + len(wr), self.rows)
        if jhi <= jlo or ihi <= i0:
            return
        w = np.outer(wr[: ihi - i0], wc[jlo - j0 : jhi - j0])
        self.weight[i0:ihi, jlo:jhi] += w
        for k, s in self.sums.items():
            s[:, i0:ihi, jlo:jhi] += cells[k][:, : ihi - i0, jlo - j0 : jhi - j0] * w

    def finish(self) -> dict[str, np.ndarray]:
        """The blended maps (k, rows, cols), normalised in place (the mosaic is spent); 0
        where no block gave weight (outside the data)."""
        ok = self.weight > 0
        inv = np.divide(np.float32(1.0), self.weight, out=np.zeros_like(self.weight), where=ok)
        for s in self.sums.values():
            s *= inv
        return self.sums


def upsample_cells(grid: np.ndarray, cell: int, region: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels ``region`` = (r0, r1, c0, c1) of the scene of a (k, rows, cols) cell map,
    bilinear between cell centres (as ``F.interpolate(scale_factor=cell, align_corners=False)``
    of the whole map, computed on the cells around the region only)."""
    import torch

    from .models.upsample import upsample_region

    r0, r1, c0, c1 = region
    i0, i1 = max(r0 // cell - 1, 0), min(-(-r1 // cell) + 1, grid.shape[1])
    j0, j1 = max(c0 // cell - 1, 0), min(-(-c1 // cell) + 1, grid.shape[2])
    z = torch.from_numpy(np.ascontiguousarray(grid[:, i0:i1, j0:j1]))[None]
    dr, dc = i0 * cell, j0 * cell
    out = np.empty((grid.shape[0], r1 - r0, c1 - c0), dtype=np.float32)
    region = (r0 - dr, r1 - dr, c0 - dc, c1 - dc)
    with torch.inference_mode():
        # one channel at a time: the same values (bilinear weights do not mix channels;
        # tests/test_matting.py), about 1.5x faster than torch's multi-channel kernel
        for i in range(grid.shape[0]):
            out[i] = upsample_region(z[:, i : i + 1], cell, region)[0, 0].numpy()
    return out
