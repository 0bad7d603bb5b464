"""Running a model over the blocks of a scene: device choice, prefetching reads, batches.

Reads happen on a small thread pool (GDAL releases the GIL) with a bounded look-ahead,
so memory stays bounded while the model works on the previous batch.  Blocks come out
in the tiling's row-major order, which the mosaic relies on.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

import numpy as np

from .errors import ConfigError
from .models.base import CloudModel, Region
from .models.fill import fill_nodata, inside_scene
from .runtime import ThreadPool
from .scene import SceneReader
from .sensors import Radiometry
from .tiling import Block


@contextmanager
def cpu_threads(device: str, n: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` for a CPU run, restored afterwards.

    Does nothing on CUDA or when torch is not loaded (the spectral model never imports it).
    """
    torch = sys.modules.get("torch")
    if torch is None or device != "cpu":
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is visible, else ``cpu``; checks explicit choices."""
    if name == "cpu":
        return "cpu"
    import os

    if name == "auto" and "torch" not in sys.modules and not os.path.exists("/proc/driver/nvidia/version"):
        return "cpu"  # no NVIDIA driver: skip importing torch (seconds) just to learn that
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        if name == "auto":
            return "cpu"
        raise ConfigError(f"--device {name} needs PyTorch with CUDA; pass --device cpu") from None
    has_cuda = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if has_cuda else "cpu"
    if name.startswith("cuda"):
        if not has_cuda:
            raise ConfigError(
                f"--device {name} was asked for but no CUDA GPU is visible; pass --device cpu or auto"
            )
        return name
    raise ConfigError(f"device {name!r} is unknown; pass --device auto, cpu or cuda")


@dataclass
class BlockResult:
    block: Block
    #: name -> (k, r1 - r0, c1 - c0) float32 views into the batch's output, for the
    #: block pixels ``region`` only
    maps: dict[str, np.ndarray]
    region: Region
    #: name -> (k, h / cell, w / cell) low-resolution maps of the whole block (``spec.cells``)
    cells: dict[str, np.ndarray]
    #: (h, w) bool: where the input has data
    valid: np.ndarray
    block_prob: float | None
    #: how many valid pixel-band reflectances fell outside the physical range, and how many were checked
    out_of_range: int
    checked: int


class _Batch:
    """Preallocated arrays that the reader threads fill slot by slot."""

    def __init__(self, blocks: list[Block], bands: int):
        h, w = blocks[0].shape
        self.blocks = blocks
        self.x = np.empty((len(blocks), bands, h, w), dtype=np.float32)
        self.valid = np.empty((len(blocks), h, w), dtype=bool)


def _read_into(reader: SceneReader, radiometry: Radiometry, batch: _Batch, i: int,
               lo: float, hi: float, fill: bool) -> tuple[int, int]:  # fmt: skip
    """Read block ``i`` of ``batch`` as reflectance into its slot; return (out of range, checked)."""
    dn, valid = reader.read(batch.blocks[i].window)
    x = batch.x[i]
    np.multiply(dn, np.asarray(radiometry.a, np.float32)[:, None, None], out=x, casting="unsafe")
    x += np.asarray(radiometry.b, np.float32)[:, None, None]
    batch.valid[i] = valid
    if not valid.all():
        np.copyto(x, np.float32(0.0), where=~valid)
    if fill and not valid.all():
        # nodata inside the scene as its nearest valid pixel, not as black ground (a CNN
        # missed cloud along a collar); past the scene's edges it stays 0
        w = batch.blocks[i].window
        scene = (reader.info.height, reader.info.width)
        inside = inside_scene(int(w.row_off), int(w.col_off), valid.shape, scene)
        fill_nodata(x, valid, ~valid & inside)
    # the physical-range check looks at every 4th pixel of every 4th row: enough to catch a
    # wrong scaling (strided views and a mask product: no copy of the block)
    sub, ok = x[:, ::4, ::4], valid[::4, ::4]
    bad = (sub < lo) | (sub > hi)
    bad &= ok
    return int(np.count_nonzero(bad)), int(np.count_nonzero(ok)) * x.shape[0]


def weighted_region(blocks: list[Block]) -> Region:
    """The smallest region holding every block's positive mosaic weight (the blocks of a
    batch share one region; interior blocks lose their halo ring, edge blocks keep it on
    the scene-edge side)."""
    spans = []
    for weights in ("weight_rows", "weight_cols"):
        lo, hi = [], []
        for b in blocks:
            nz = np.flatnonzero(getattr(b, weights))
            lo.append(int(nz[0]) if len(nz) else 0)
            hi.append(int(nz[-1]) + 1 if len(nz) else 0)
        spans.append((min(lo), max(hi)))
    (r0, r1), (c0, c1) = spans
    return r0, max(r1, r0), c0, max(c1, c0)


class _Predicted(NamedTuple):
    """One batch through the model (a model-thread job's result)."""

    #: per block: (out-of-range reflectances, reflectances checked)
    counts: list[tuple[int, int]]
    maps: dict[str, np.ndarray]
    cells: dict[str, np.ndarray]
    block_prob: np.ndarray | None
    region: Region


@contextmanager
def autocast(device: str, dtype: str | None) -> Iterator[None]:
    """``torch.autocast`` on ``device`` with ``dtype`` ("bf16" or "fp16"); nothing for None."""
    if dtype is None:
        yield
        return
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    with torch.autocast(kind, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]):
        yield


def _predict(model: CloudModel, batch: _Batch, reads: list[Future[tuple[int, int]]], device: str = "cpu",
             amp: str | None = None) -> _Predicted:  # fmt: skip
    """Wait for the batch's reads, then run the model on its weighted region (a worker job),
    under autocast ``amp`` when given (the models return float32 numpy maps either way:
    numpy has no bfloat16)."""
    counts = [f.result() for f in reads]
    region = weighted_region(batch.blocks)
    r0, r1, c0, c1 = region
    if not batch.valid.any():
        n = len(batch.blocks)
        spec = model.spec
        maps = {
            k: np.zeros((n, c, r1 - r0, c1 - c0), np.float32)
            for k, c in spec.outputs.items()
            if k not in spec.derived
        }
        h, w = batch.x.shape[2:]
        cs = spec.cell_size
        cells = {k: np.zeros((n, c, -(-h // cs), -(-w // cs)), np.float32) for k, c in spec.cells.items()}
        return _Predicted(counts, maps, cells, None, region)
    with autocast(device, amp):
        pred = model.predict_region(batch.x, batch.valid, region)
    return _Predicted(counts, pred.maps, pred.cells, pred.block_prob, region)


def predict_blocks(
    reader: SceneReader,
    radiometry: Radiometry,
    blocks: Iterable[Block],
    model: CloudModel,
    *,
    batch_size: int = 4,
    readers: int = 2,
    predictors: int = 1,
    reflectance_range: tuple[float, float] = (-0.05, 1.6),
    device: str = "cpu",
    amp: str | None = None,
) -> Generator[BlockResult, None, None]:
    """Yield every block's model maps, in row-major order (``amp``: autocast dtype, see
    :func:`autocast`; ``device`` is the model's).

    Reads run ahead by up to two batches on ``readers`` threads, each writing its block
    straight into the batch array the model will see.  ``predictors`` batches go through
    the model at once, each on its own thread (torch releases the GIL); results still come
    out in order.
    """
    lo, hi = reflectance_range
    blocks = iter(blocks)
    bands = len(radiometry.indexes)
    predictors = max(1, predictors)
    ahead = predictors + 2  # batches being read or predicted
    inflight: deque[tuple[_Batch, Future[_Predicted]]] = deque()
    read_pool = ThreadPool(max_workers=max(1, readers), thread_name_prefix="geocloud-read")
    model_pool = ThreadPool(max_workers=predictors, thread_name_prefix="geocloud-model")
    reading: deque[tuple[_Batch, list[Future[tuple[int, int]]]]] = deque()
    try:

        def refill() -> None:
            while len(reading) + len(inflight) < ahead:
                chunk = list(islice(blocks, batch_size))
                if not chunk:
                    break
                batch = _Batch(chunk, bands)
                reads = [
                    read_pool.submit(_read_into, reader, radiometry, batch, i, lo, hi, model.spec.fill_nodata)
                    for i in range(len(chunk))
                ]
                reading.append((batch, reads))
            while reading and len(inflight) < predictors:
                batch, reads = reading.popleft()
                inflight.append((batch, model_pool.submit(_predict, model, batch, reads, device, amp)))

        refill()
        while inflight:
            batch, job = inflight.popleft()
            p = job.result()
            refill()
            for i, block in enumerate(batch.blocks):
                maps = {k: m[i] for k, m in p.maps.items()}
                cells = {k: m[i] for k, m in p.cells.items()}
                prob = None if p.block_prob is None else float(p.block_prob[i])
                yield BlockResult(block, maps, p.region, cells, batch.valid[i], prob, *p.counts[i])
    finally:  # also when the caller stops early: nothing new starts, running jobs finish
        model_pool.shutdown(wait=True, cancel_futures=True)
        read_pool.shutdown(wait=True, cancel_futures=True)
