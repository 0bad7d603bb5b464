"""Seamless mosaicking of overlapping block outputs in bounded memory.

Each block's maps are added into full-width strip accumulators as ``sum(w * v)`` and
``sum(w)``, with the block's feather weights (:mod:`geocloud.tiling`).  Blocks arrive in
row-major order, so once a block row starts at row ``r`` every row above ``r`` is final:
it is normalised and handed out, and the strip slides down.  Memory is
``(channels + 1) * width * block_height * 4`` bytes, independent of the scene height.

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


class StripAccumulator:
    """Streaming weighted-average accumulator over full-width strips of rows."""

    def __init__(self, width: int, height: int, block_height: int, channels: dict[str, int]):
        self.width = width
        self.height = height
        self.rows = block_height
        self.channels = dict(channels)
        self.top = 0  # scene row of accumulator row 0
        self.sums = {k: np.zeros((n, self.rows, width), dtype=np.float32) for k, n in channels.items()}
        self.weight = np.zeros((self.rows, width), dtype=np.float32)

    def _flush(self, upto: int) -> Strip | None:
        upto = min(upto, self.height)
        n = upto - self.top
        if n <= 0:
            return None
        w = self.weight[:n]
        has = w > 0
        out: dict[str, np.ndarray] = {}
        for k, s in self.sums.items():
            v = np.empty_like(s[:, :n])
            # division (not multiplication by 1/w) keeps exact values exact
            np.divide(s[:, :n], w, out=v, where=has)
            v[:, ~has] = np.nan
            out[k] = v
        strip = Strip(self.top, upto, out)
        # slide the strip down
        keep = self.rows - n
        if keep > 0:
            self.weight[:keep] = self.weight[n:]
            for s in self.sums.values():
                s[:, :keep] = s[:, n:]
        self.weight[keep:] = 0
        for s in self.sums.values():
            s[:, keep:] = 0
        self.top = upto
        return strip

    def add(self, block: Block, maps: dict[str, np.ndarray]) -> Iterator[Strip]:
        """Add one block's maps ((k, h, w) each); yield the strips this makes final."""
        r0, c0 = int(block.window.row_off), int(block.window.col_off)
        h, w = block.shape
        if r0 > self.top:
            strip = self._flush(r0)
            if strip is not None:
                yield strip
        # clip the block to the real scene (it may extend into the padding)
        rr1 = min(r0 + h, self.height)
        cc1 = min(c0 + w, self.width)
        bh, bw = rr1 - r0, cc1 - c0
        if bh <= 0 or bw <= 0:
            return
        a0 = r0 - self.top
        weights = block.weights()[:bh, :bw]
        self.weight[a0 : a0 + bh, c0:cc1] += weights
        for k, s in self.sums.items():
            s[:, a0 : a0 + bh, c0:cc1] += maps[k][:, :bh, :bw] * weights

    def finish(self) -> Iterator[Strip]:
        """Flush what is left once every block has been added."""
        while self.top < self.height:
            strip = self._flush(min(self.top + self.rows, self.height))
            if strip is None:
                break
            yield strip
