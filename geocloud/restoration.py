"""The ``restored`` product: the clear product with its thick-cloud holes filled.

The clear product (:mod:`geocloud.declouding`) inverts the matte only where
alpha <= alpha_max; elsewhere it is nodata.  ``restored`` is that product, value for value,
with those nodata pixels (valid input, alpha above alpha_max) filled by the attentive
generator (:mod:`geocloud.models.restore`).  Filled pixels are **synthesised, not
measured**: the COG's tags say so, ``restored_quality`` marks them, the stats count them,
and nothing else (the clear product, the mask, the usable share) ever sees them.

Quality codes (``<stem>_restored_quality.tif``, uint8):

* 0 nodata (input nodata);
* 1 original: the clear product keeps the input value (cloud-free, or an inversion that
  rounds to the same value);
* 2 inverted: the clear product's matte inversion (alpha <= alpha_max);
* 3 synthesised by the generator.

Per window, nothing runs unless the window holds a pixel to fill; then the generator reads
the window grown by :data:`geocloud.models.restore.HALO` px (its receptive field), with the
grown window's origin on the network's stride grid, so each output pixel is the same
whatever the window layout (no seams between windows).  Wide windows are done in column
chunks of :data:`CHUNK_COLS` to bound memory.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from rasterio.windows import Window

QUALITY_NODATA, QUALITY_ORIGINAL, QUALITY_INVERTED, QUALITY_SYNTHESISED = 0, 1, 2, 3
QUALITY_CODES = {QUALITY_NODATA: "nodata", QUALITY_ORIGINAL: "original", QUALITY_INVERTED: "inverted",
                 QUALITY_SYNTHESISED: "synthesised"}  # fmt: skip
#: the tags of the restored COG.
RESTORED_TAGS = (
    ("GEOCLOUD_SYNTHESISED", "Pixels marked 3 in the _restored_quality.tif product were synthesised by a "
     "generative network under thick cloud (alpha > alpha_max); they are NOT measurements and must not be "
     "used as reflectance for analysis"),
    ("GEOCLOUD_QUALITY_CODES", ",".join(f"{k}={v}" for k, v in QUALITY_CODES.items())),
)  # fmt: skip
QUALITY_COLOURS = ((0, (0, 0, 0, 0)), (1, (40, 160, 40, 255)), (2, (230, 200, 40, 255)), (3, (220, 40, 40, 255)))
#: window columns run through the generator at a time: a 256-row window grown by the halo
#: to 544 x 800 px takes about 0.55 GB of activations (1024 columns: 0.9 GB).  At 4000^2 with
#: mask,score,alpha,clear,stats,restored: 512 columns 37.4 s and 2.06 GB peak RSS, 1024
#: columns 47.0 s and 2.72 GB, 256 columns 44.9 s and 1.67 GB (2-core VM).
CHUNK_COLS = 512

_NET: Any = None
_NET_LOCK = threading.Lock()


def generator() -> Any:
    """The shipped generator (loaded once per process, SHA-256 checked)."""
    global _NET
    with _NET_LOCK:
        if _NET is None:
            from .models.restore import load_generator

            _NET = load_generator()
        return _NET


def use_generator(net: Any) -> None:
    """Make ``net`` the generator of this process's ``restored`` products (benchmarks of
    other weights; tests).  ``None`` goes back to the shipped weights."""
    global _NET
    with _NET_LOCK:
        _NET = net


def _is_nodata(a: np.ndarray, nodata: float | int | None) -> np.ndarray:
    if nodata is None:
        return np.zeros(a.shape[1:], bool)
    if isinstance(nodata, float) and np.isnan(nodata):
        return np.isnan(a).all(axis=0)
    return (a == np.asarray(nodata).astype(a.dtype)).all(axis=0)


def _window_parts(ctx: Any) -> dict[str, Any]:
    """The clear product of the window, the input, the pixels to fill (cached per window)."""
    got = ctx.cache.get("restore_parts")
    if got is not None:
        return got
    from .declouding import clear_product_nodata, compute_clear

    clear = compute_clear(ctx)
    dn, valid_in = ctx.read_input()
    valid = ctx.valid & valid_in
    nodata = clear_product_nodata(ctx.scene)
    fill = valid & _is_nodata(clear, nodata)
    parts = {"clear": clear, "dn": dn, "valid": valid, "fill": fill, "nodata": nodata}
    ctx.cache["restore_parts"] = parts
    # the synthesised pixels, counted once per window whichever restored product asks first
    ctx.tally["restored_pixels"] = ctx.tally.get("restored_pixels", 0) + int(np.count_nonzero(fill))
    return parts


def _grown(r0: int, r1: int, c0: int, c1: int, halo: int, multiple: int, h: int, w: int) -> Window:
    """``[r0, r1) x [c0, c1)`` grown by ``halo`` and clipped to the scene, its origin on the
    ``multiple`` grid of scene pixels (the network's strides)."""
    e0 = max(0, (r0 - halo) // multiple * multiple)
    f0 = max(0, (c0 - halo) // multiple * multiple)
    return Window(f0, e0, min(w, c1 + halo) - f0, min(h, r1 + halo) - e0)


def synthesise(ctx: Any, net: Any, window: Window) -> np.ndarray:
    """The generator's background x (4, h, w) reflectance for ``window``, from the input and
    the matte maps of the window grown by the receptive field."""
    from .models.restore import BLOCK_MULTIPLE, HALO, restore_background

    info = ctx.scene
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    ext = _grown(r0, r1, c0, c1, HALO, BLOCK_MULTIPLE, info.height, info.width)
    dn, ok = ctx.read_input(ext)
    if ctx.read_maps is not None:
        maps = ctx.read_maps(ext)
    else:  # no reader of other windows: the window itself (the halo is then missing)
        ext, dn, ok, maps = ctx.window, *ctx.read_input(), ctx.maps
    y = ctx.radiometry.to_reflectance(dn).astype(np.float32)
    alpha = maps["alpha"][0]
    r_c = maps["reflectance"]
    bad = ~ok | ~np.isfinite(alpha)
    # nodata: y = r_c = 0 under an opaque "cloud" (alpha 1), so it neither looks stable nor
    # weighs in the least-squares fill
    y[:, bad] = 0.0
    x, _ = restore_background(net, y, np.where(bad, 1.0, alpha), np.where(bad[None], 0.0, r_c))
    a0, b0 = r0 - int(ext.row_off), c0 - int(ext.col_off)
    return x[:, a0 : a0 + (r1 - r0), b0 : b0 + (c1 - c0)]


def compute_restored(ctx: Any, net: Any = None) -> np.ndarray:
    """Pass-2 window of ``restored``: the clear product, its fill pixels from the generator."""
    parts = _window_parts(ctx)
    out = parts["clear"]
    fill = parts["fill"]
    if not fill.any():  # no thick cloud here: the clear product as it is, no generator run
        return out
    from .declouding import reflectance_to_dn

    net = net if net is not None else generator()
    out = out.copy()
    rad, info = ctx.radiometry, ctx.scene
    r0, c0 = int(ctx.window.row_off), int(ctx.window.col_off)
    h, w = fill.shape
    cols = np.flatnonzero(fill.any(axis=0))
    for k0 in range(int(cols[0]) // CHUNK_COLS * CHUNK_COLS, int(cols[-1]) + 1, CHUNK_COLS):
        k1 = min(w, k0 + CHUNK_COLS)
        sub = fill[:, k0:k1]
        if not sub.any():
            continue
        x = synthesise(ctx, net, Window(c0 + k0, r0, k1 - k0, h))
        dn = reflectance_to_dn(x, rad.a, rad.b, info.dtype, parts["nodata"])
        view = out[:, :, k0:k1]
        np.copyto(view, dn, where=sub[None])
    return out


def compute_restored_quality(ctx: Any) -> np.ndarray:
    """Pass-2 window of ``restored_quality`` (uint8 codes, see the module docs)."""
    parts = _window_parts(ctx)
    clear, dn = parts["clear"], parts["dn"]
    same = (clear == dn.astype(clear.dtype, copy=False)).all(axis=0)
    q = np.where(same, QUALITY_ORIGINAL, QUALITY_INVERTED).astype(np.uint8)
    q[parts["fill"]] = QUALITY_SYNTHESISED
    q[~parts["valid"]] = QUALITY_NODATA
    return q[None]


__all__ = [
    "QUALITY_CODES",
    "RESTORED_TAGS",
    "compute_restored",
    "compute_restored_quality",
    "synthesise",
    "use_generator",
]
