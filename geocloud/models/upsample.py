"""Bilinear upsampling of a low-resolution map onto part of a block's pixel grid.

The CAM (z at 1/8) and the matte (per-cell coefficients at 1/8) are computed for the
whole block, which their receptive field needs, but the engine only keeps the block's
weighted region (:data:`geocloud.models.base.Region`).  :func:`upsample_region`
upsamples just the cells that region needs, plus one cell of margin for the bilinear
support, so the result equals the crop of the full upsampling: the source coordinates
differ by whole cells, which are exact in float32, and the values agree to float32
rounding (torch vectorises some output widths differently, which can move the last bit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Region


def upsample_region(z: torch.Tensor, stride: int, region: Region | None = None) -> torch.Tensor:
    """``F.interpolate(z, scale_factor=stride, mode="bilinear")[..., r0:r1, c0:c1]``, cheaply.

    ``z`` is (B, C, h, w) at 1/``stride`` of the block; ``region`` is in block pixels
    (``None``: the whole block, ``h * stride`` by ``w * stride``).
    """
    if region is None:
        return F.interpolate(z, scale_factor=stride, mode="bilinear", align_corners=False)
    r0, r1, c0, c1 = region
    h, w = z.shape[-2:]
    i0, i1 = max(r0 // stride - 1, 0), min(-(-r1 // stride) + 1, h)
    j0, j1 = max(c0 // stride - 1, 0), min(-(-c1 // stride) + 1, w)
    up = F.interpolate(z[..., i0:i1, j0:j1], scale_factor=stride, mode="bilinear", align_corners=False)
    dr, dc = i0 * stride, j0 * stride
    return up[..., r0 - dr : r1 - dr, c0 - dc : c1 - dc]
