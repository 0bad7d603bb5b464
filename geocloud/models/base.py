"""The one small interface every cloud model implements.

A model takes a batch of blocks of TOA reflectance, in the band order its
:class:`ModelSpec` names, and returns per-pixel float maps of the same height and width.
The engine (``geocloud.pipeline``) does everything else: reading windows, reflectance
scaling, batching, feathered mosaicking, thresholding and writing.

Contract, which the seam test relies on:

* ``predict`` must be *local*: the output at a pixel may depend only on input pixels
  within ``spec.halo`` of it.  No per-block normalisation, no global pooling in the
  dense maps.  (A per-block scalar such as ``block_prob`` is fine: it is used for
  statistics, never pasted into the maps.)
* Invalid (nodata) pixels arrive filled with 0 and flagged in ``valid``; their outputs
  are ignored by the engine.
* Every map value is finite.  ``score`` is in [0, 1], higher meaning more cloud.

The engine calls :meth:`CloudModel.predict_region` with the *region* of the blocks that
carries mosaic weight (the block minus its zero-weight halo ring, except on sides that
touch the scene edge), and gets maps for that region only.  The default crops
``predict``'s maps; models with full-resolution work after a low-resolution network
(the CAM's and the matte's upsampling) override it to skip the halo ring, which is 39 %
of a default 656 px block.  Cropped maps must equal the crop of the full maps.  A model
may also return low-resolution *cell* maps for the whole block (``spec.cells``) and leave
out maps the engine can form later from them (``spec.derived``, :meth:`CloudModel.derive`):
the matte's r_c = alpha x cloud colour is made that way, per window of the second pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: rows ``[r0, r1)`` and columns ``[c0, c1)`` of a block, in block pixels.
Region = tuple[int, int, int, int]

#: The band names geocloud knows, in canonical order.
CANONICAL_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs and gives; stored in a weight file's JSON sidecar too."""

    name: str
    #: input band names, in the order ``predict`` expects them.
    bands: tuple[str, ...] = CANONICAL_BANDS
    #: pixels of context needed on each side of a pixel (>= receptive-field radius).
    halo: int = 0
    #: the engine fills the block's nodata pixels inside the scene with their nearest valid
    #: pixel's value before ``predict`` (:mod:`geocloud.models.fill`; else they hold 0).
    #: Such a model's halo must be at least twice its receptive-field radius.
    fill_nodata: bool = False
    #: block sides must be a multiple of this (network strides).
    block_multiple: int = 1
    #: block side the model was trained on / is fastest at.
    block_size: int = 512
    #: default blend width between blocks: 16 px for networks (their blocks may differ by
    #: float rounding at the same pixel), 0 for per-pixel models (blocks cannot differ).
    feather: int = 16
    #: the maps ``predict`` returns, name -> number of channels.  Must include "score".
    outputs: dict[str, int] = field(default_factory=lambda: {"score": 1})
    #: low-resolution maps ``predict_region`` returns for the whole block, at one value per
    #: ``cell_size`` x ``cell_size`` cell (name -> channels); the engine blends them at that
    #: resolution (:class:`geocloud.mosaic.CellMosaic`).
    cells: dict[str, int] = field(default_factory=dict)
    cell_size: int = 8
    #: maps of ``outputs`` that ``predict_region`` leaves out: the engine forms them per
    #: window of the second pass with :meth:`CloudModel.derive` from the other maps and the
    #: upsampled cell maps (e.g. the matte's r_c = alpha x cloud colour).
    derived: tuple[str, ...] = ()
    #: the stored maps each derived map is formed from (the engine stores them whenever the
    #: derived map is needed, asked for as products or not).
    derived_from: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: clear-sky statistics of ``score`` and the calibrated k of mu + k*sigma.
    clear_mu: float = 0.0
    clear_sigma: float = 0.1
    threshold_k: float = 3.0
    #: fallback fixed threshold when no clear-sky statistics can be derived.
    default_threshold: float = 0.5
    #: edge growing (hysteresis, :mod:`geocloud.threshold`): pixels at >= grow_ratio x the
    #: threshold within grow_radius px of a pixel at the threshold are cloud too (0: off).
    grow_ratio: float = 1.0
    grow_radius: int = 0
    #: anything else worth recording (training data hash, validation metrics...).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """The model's answer for a batch of B blocks of H x W pixels."""

    #: name -> float32 array (B, k, H, W).
    maps: dict[str, np.ndarray]
    #: optional per-block probability of "this block contains cloud", shape (B,).
    block_prob: np.ndarray | None = None
    #: name -> float32 (B, k, H / cell_size, W / cell_size): ``spec.cells``, whole blocks.
    cells: dict[str, np.ndarray] = field(default_factory=dict)


class CloudModel(ABC):
    """Base class of all models; see the module docstring for the contract."""

    spec: ModelSpec

    @abstractmethod
    def predict(self, x: np.ndarray, valid: np.ndarray) -> Prediction:
        """Predict maps for ``x`` float32 (B, C, H, W) with ``valid`` bool (B, H, W)."""

    def predict_region(self, x: np.ndarray, valid: np.ndarray, region: Region | None = None) -> Prediction:
        """Like :meth:`predict`, with maps only for ``region`` (``None``: the whole block).

        ``block_prob`` may be computed over the region only.  The default crops
        :meth:`predict`'s maps; override it to skip the work outside the region.
        """
        pred = self.predict(x, valid)
        if region is None:
            return pred
        r0, r1, c0, c1 = region
        return Prediction(
            {k: v[:, :, r0:r1, c0:c1] for k, v in pred.maps.items()}, pred.block_prob, pred.cells
        )

    def derive(self, name: str, maps: dict[str, np.ndarray], cells: dict[str, np.ndarray]) -> np.ndarray:
        """Form the derived map ``name`` (one of ``spec.derived``) for a window, from that
        window's other maps (k, h, w) and its cell maps upsampled to pixels (k, h, w)."""
        raise NotImplementedError(f"model {self.spec.name!r} derives no map {name!r}")

    @property
    def name(self) -> str:
        return self.spec.name

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary recorded in the outputs' stats and tags."""
        return {"name": self.spec.name, "bands": list(self.spec.bands), "halo": self.spec.halo}


class CombinedModel(CloudModel):
    """Runs a primary model (the cloud ``score``) and helpers that add other maps
    (e.g. matting's ``alpha`` and ``reflectance``) on the same blocks.

    The combined halo is the largest, the block multiple the least common multiple, and
    the score, threshold statistics and block probability are the primary's.
    """

    def __init__(self, primary: CloudModel, helpers: list[CloudModel]):
        from .weights import combine_specs

        self.primary = primary
        self.helpers = helpers
        self.spec = combine_specs(primary.spec, [h.spec for h in helpers])

    def predict(self, x: np.ndarray, valid: np.ndarray) -> Prediction:
        return self._merge(self.primary.predict(x, valid), [h.predict(x, valid) for h in self.helpers])

    def predict_region(self, x: np.ndarray, valid: np.ndarray, region: Region | None = None) -> Prediction:
        return self._merge(
            self.primary.predict_region(x, valid, region),
            [h.predict_region(x, valid, region) for h in self.helpers],
        )

    @staticmethod
    def _merge(pred: Prediction, others: list[Prediction]) -> Prediction:
        maps, cells = dict(pred.maps), dict(pred.cells)
        for hp in others:
            for k, v in hp.maps.items():
                maps.setdefault(k, v)
            for k, v in hp.cells.items():
                cells.setdefault(k, v)
        return Prediction(maps=maps, block_prob=pred.block_prob, cells=cells)

    def derive(self, name: str, maps: dict[str, np.ndarray], cells: dict[str, np.ndarray]) -> np.ndarray:
        for m in [self.primary, *self.helpers]:
            if name in m.spec.derived:
                return m.derive(name, maps, cells)
        return super().derive(name, maps, cells)

    def describe(self) -> dict[str, Any]:
        d = self.primary.describe()
        d["helpers"] = [h.describe() for h in self.helpers]
        d["name"] = self.spec.name
        return d
