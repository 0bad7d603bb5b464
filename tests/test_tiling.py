"""Tiling properties: every pixel covered with positive weight, no duplicate blocks,
full-size edge blocks, aligned origins, tiny scenes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geocloud.errors import ConfigError
from geocloud.tiling import layout_axis, make_tiling


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(1, 3000),
    size=st.integers(32, 700),
    halo=st.integers(0, 12),
    feather=st.sampled_from([0, 4, 16]),
    multiple=st.sampled_from([1, 2, 4, 8]),
)
def test_axis_layout_covers_every_pixel_once_per_origin(length, size, halo, feather, multiple):
    try:
        axis = layout_axis(length, size, halo, feather, multiple)
    except ConfigError:
        assert size - 2 * halo - feather < multiple * 2  # only tiny blocks are refused
        return
    origins = axis.origins
    assert len(set(origins)) == len(origins), "a block appears twice"
    assert list(origins) == sorted(origins)
    assert all(o % multiple == 0 for o in origins)
    assert axis.padded % multiple == 0 and axis.padded - length < multiple
    assert origins[0] == 0 and origins[-1] + axis.size == axis.padded
    # edge blocks are full size where the scene allows
    assert axis.size == min(axis.padded, -(-size // multiple) * multiple)
    # every real pixel gets positive weight from at least one block
    from geocloud.tiling import axis_weights

    total = np.zeros(axis.padded)
    for o in origins:
        total[o : o + axis.size] += axis_weights(o, axis.size, axis.padded, halo, feather)
    assert (total[:length] > 0).all()


@settings(max_examples=50, deadline=None)
@given(h=st.integers(1, 700), w=st.integers(1, 700), size=st.sampled_from([64, 100, 256]))
def test_tiling_2d_weights_positive_everywhere(h, w, size):
    t = make_tiling(h, w, block_size=size, halo=4, feather=16)
    weight = np.zeros((t.rows.padded, t.cols.padded))
    seen = set()
    for b in t:
        r0, c0 = int(b.window.row_off), int(b.window.col_off)
        assert (r0, c0) not in seen
        seen.add((r0, c0))
        assert b.shape == t.block_shape
        weight[r0 : r0 + b.shape[0], c0 : c0 + b.shape[1]] += b.weights()
    assert (weight[:h, :w] > 0).all()
    assert len(seen) == len(t)


def test_scene_smaller_than_one_block():
    t = make_tiling(10, 13, block_size=512, halo=8, feather=16, multiple=4)
    blocks = list(t)
    assert len(blocks) == 1
    assert blocks[0].shape == (12, 16)  # rounded up to the multiple
    assert (blocks[0].weights() == 1).all()


def test_weights_are_dyadic_and_zero_in_halo_ring():
    t = make_tiling(1000, 1000, block_size=256, halo=8, feather=16)
    b = next(iter(t))
    w = b.weights()
    assert ((w * 256) == np.round(w * 256)).all()
    inner = list(t)[len(t) // 2 + 1]
    wi = inner.weights()
    assert (wi[:8] == 0).all() and (wi[:, :8] == 0).all() and (wi[-8:] == 0).all()


def test_block_too_small_for_halo_is_refused():
    with pytest.raises(ConfigError, match="block-size"):
        make_tiling(1000, 1000, block_size=40, halo=16, feather=16)


@settings(max_examples=100, deadline=None)
@given(
    width=st.integers(1, 2500),
    size=st.sampled_from([64, 100, 256]),
    halo=st.integers(0, 8),
    swath=st.integers(64, 900),
    align=st.sampled_from([1, 2, 8]),
)
def test_swaths_partition_columns_and_hold_every_contributing_block(width, size, halo, swath, align):
    from geocloud.tiling import axis_weights, make_swaths

    t = make_tiling(50, width, block_size=size, halo=halo, feather=16)
    sws = make_swaths(t, swath, align)
    assert sws[0].x0 == 0 and sws[-1].x1 == width
    for a, b in zip(sws[:-1], sws[1:], strict=True):
        assert a.x1 == b.x0 and b.x0 % align == 0
    for sw in sws:
        assert sw.c0 <= sw.x0 < sw.x1 <= sw.c1
        for j, o in enumerate(t.cols.origins):
            w = axis_weights(o, t.cols.size, t.cols.padded, halo, 16)
            lo, hi = max(sw.x0, o), min(sw.x1, o + t.cols.size)
            gives_weight = hi > lo and (w[lo - o : hi - o] > 0).any()
            assert not gives_weight or j in sw.block_cols, "a block feeding the swath's columns is missing"
