"""Running a model over the blocks of a scene: device choice, prefetching reads, batches.

Reads happen on a small thread pool (GDAL releases the GIL) with a bounded look-ahead,
so memory stays bounded while the model works on the previous batch.  Blocks come out
in the tiling's row-major order, which the mosaic relies on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .io import SceneReader
from .models.base import CloudModel
from .sensors import Radiometry
from .tiling import Block, Tiling

#: name of the internal map that carries pixel validity through the mosaic.
VALID_MAP = "_valid"


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is visible, else ``cpu``; checks explicit choices."""
    if name == "cpu":
        return "cpu"
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
            raise ConfigError(f"--device {name} was asked for but no CUDA GPU is visible; pass --device cpu or auto")
        return name
    raise ConfigError(f"device {name!r} is unknown; pass --device auto, cpu or cuda")


@dataclass
class BlockResult:
    block: Block
    #: name -> (k, h, w) float32; includes VALID_MAP (1, h, w)
    maps: dict[str, np.ndarray]
    block_prob: float | None
    #: how many valid pixel-band reflectances fell outside the physical range, and how many were checked
    out_of_range: int
    checked: int


def _read(reader: SceneReader, radiometry: Radiometry, block: Block,
          lo: float, hi: float) -> tuple[Block, np.ndarray, np.ndarray, int, int]:  # fmt: skip
    dn, valid = reader.read(block.window)
    x = radiometry.to_reflectance(dn)
    x[:, ~valid] = 0.0
    n_valid = int(valid.sum())
    if n_valid:
        sub = x[:, valid]
        bad = int(np.count_nonzero((sub < lo) | (sub > hi)))
        checked = sub.size
    else:
        bad = checked = 0
    return block, x, valid, bad, checked


def predict_blocks(
    reader: SceneReader,
    radiometry: Radiometry,
    tiling: Tiling,
    model: CloudModel,
    *,
    batch_size: int = 4,
    readers: int = 2,
    reflectance_range: tuple[float, float] = (-0.05, 1.6),
) -> Iterator[BlockResult]:
    """Yield every block's model maps, in row-major order."""
    lo, hi = reflectance_range
    blocks = iter(tiling)
    lookahead = max(2 * batch_size, readers + batch_size)
    pending: deque[Future[tuple[Block, np.ndarray, np.ndarray, int, int]]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="geocloud-read") as pool:

        def refill() -> None:
            while len(pending) < lookahead:
                b = next(blocks, None)
                if b is None:
                    return
                pending.append(pool.submit(_read, reader, radiometry, b, lo, hi))

        refill()
        while pending:
            batch = []
            while pending and len(batch) < batch_size:
                batch.append(pending.popleft().result())
                refill()
            x = np.stack([b[1] for b in batch])
            valid = np.stack([b[2] for b in batch])
            if not valid.any():
                pred_maps = {k: np.zeros((len(batch), n) + x.shape[2:], np.float32) for k, n in model.spec.outputs.items()}
                block_prob = None
            else:
                pred = model.predict(x, valid)
                pred_maps, block_prob = pred.maps, pred.block_prob
            for i, (block, _, v, bad, checked) in enumerate(batch):
                maps = {k: np.asarray(m[i], dtype=np.float32) for k, m in pred_maps.items()}
                maps[VALID_MAP] = v[None].astype(np.float32)
                prob = None if block_prob is None else float(block_prob[i])
                yield BlockResult(block, maps, prob, bad, checked)
