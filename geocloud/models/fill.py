"""Nearest-valid fill of a block's nodata pixels before the models see them.

The engine reads a scene's nodata pixels (a collar around the footprint, NaNs, masked
pixels) as 0.  A CNN reads those zeros as very dark ground: a cloud that touches a
collar loses half its context and is missed in a strip as wide as the receptive field.
Filling each nodata pixel inside the scene with its nearest valid pixel's value (the
replicate padding a CNN is used to at image borders) gives pixels along a collar the
context interior pixels have.  Pixels past the scene's edges are left at 0, as before:
how far a block reaches past the edge depends on the block layout, so filling them would
make the edge pixels' scores depend on the block size.

Block independence: a valid pixel ``p`` reads the fill at a nodata pixel ``q`` only
within its receptive radius ``r``; ``q``'s nearest valid pixel is no farther than ``p``
is, so it lies within ``2 r`` of ``p``.  A model whose halo is at least ``2 r`` (the CAM's,
:func:`geocloud.models.cam.build_spec`) thus sees the same filled input at every weighted
pixel in every block; ties between equally near pixels are broken by position order, the
same in every block.  Models that pool over valid pixels only (the matte) and per-pixel
models never read the filled values.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def fill_nodata(x: np.ndarray, valid: np.ndarray, holes: np.ndarray) -> None:
    """Set ``x`` (C, H, W) at every ``holes`` pixel (H, W bool, nodata to fill) to the
    value of its nearest ``valid`` pixel (Euclidean), in place.  Nothing happens when
    there is no hole, or no valid pixel to fill from."""
    if not holes.any() or not valid.any():
        return
    iy, ix = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    x[:, holes] = x[:, iy[holes], ix[holes]]


def inside_scene(row_off: int, col_off: int, shape: tuple[int, int], scene: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: which pixels of the window at (``row_off``, ``col_off``) of ``shape``
    lie inside a scene of ``scene`` = (height, width) pixels."""
    h, w = shape
    rows = (np.arange(row_off, row_off + h) >= 0) & (np.arange(row_off, row_off + h) < scene[0])
    cols = (np.arange(col_off, col_off + w) >= 0) & (np.arange(col_off, col_off + w) < scene[1])
    return rows[:, None] & cols[None, :]
