"""The weights contract every trained model keeps: a weight file and its JSON sidecar.

A weight file ``NAME.safetensors`` has a sidecar ``NAME.json`` that records what the
weights need and what they were measured to do; :class:`WeightsMeta` is its typed view,
the same for every model:

* ``bands`` and ``normalisation``: the input the network expects;
* ``block_size`` and the threshold statistics (``clear_mu``, ``clear_sigma``,
  ``threshold_k``, ``default_threshold``): how the engine serves it;
* ``sha256``: the weight file's SHA-256, checked on every load (:meth:`WeightsMeta.verify`);
* ``training_data_hash`` and ``training``: what it was trained on, and how;
* ``validation``: the figures measured on data it never saw.

Reading a sidecar needs neither torch nor the weights, so ``geocloud info`` and the plan
of a run (:func:`read_spec`) know a model's halo, stride and maps without loading it.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import CANONICAL_BANDS, ModelSpec

#: where each model's sidecar records the weight file's SHA-256.
SHA_KEYS: dict[str, tuple[str, ...]] = {
    "cam": ("training", "weights_sha256"),
    "matting": ("weights_sha256",),
    "restore": ("weights_sha256",),
}
#: where each model's sidecar records the hash of its training data.
DATA_HASH_KEYS: dict[str, tuple[str, ...]] = {
    "cam": ("training", "training_list_hash"),
    "matting": ("training", "train_chip_hash"),
    "restore": ("training", "train_chip_hash"),
}
#: the shipped weight files, by model name.
WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED: dict[str, Path] = {
    "cam": WEIGHTS_DIR / "cam.safetensors",
    "matting": WEIGHTS_DIR / "matting.safetensors",
    "restore": WEIGHTS_DIR / "restore.safetensors",
}
#: the command that makes each model's weights, for error messages.
TRAIN_COMMAND = {
    "cam": "geocloud train cam --data DIR --out DIR",
    "matting": "geocloud train matting --data DIR --out DIR",
    "restore": "geocloud train restore --data DIR --out DIR",
}


def _get(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d


@dataclass(frozen=True)
class WeightsMeta:
    """The sidecar of one weight file (see the module docs)."""

    model: str
    path: Path
    sidecar: Path
    bands: tuple[str, ...]
    normalisation: dict[str, Any]
    block_size: int
    #: clear_mu, clear_sigma, threshold_k, default_threshold.
    threshold: dict[str, float]
    sha256: str | None
    training_data_hash: str | None
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    #: the sidecar's ``spec`` section, and the whole sidecar as read.
    spec: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, model: str, path: str | Path | None = None) -> WeightsMeta:
        """The sidecar of ``path`` (default: the shipped weights of ``model``); a
        :class:`ModelError` naming the fix when either file is missing or malformed."""
        path = Path(path) if path is not None else SHIPPED[model]
        side = path.with_suffix(".json")
        if not path.is_file() or not side.is_file():
            raise ModelError(
                f"{model} weights {str(path)!r} (or their sidecar {side.name}) are missing; "
                f"train them with `{TRAIN_COMMAND.get(model, 'geocloud train')}` or reinstall geocloud"
            )
        try:
            raw = json.loads(side.read_text())
            spec = dict(raw.get("spec", {}))
            if model == "cam":
                cfg = raw["config"]
                norm: dict[str, Any] = {"band_mean": list(cfg["band_mean"]), "band_std": list(cfg["band_std"])}
            else:
                norm = dict(raw.get("normalisation", {}))
            threshold = {k: float(spec[k]) for k in ("clear_mu", "clear_sigma", "threshold_k", "default_threshold")
                         if k in spec}  # fmt: skip
            return cls(
                model=model,
                path=path,
                sidecar=side,
                bands=tuple(spec.get("bands", CANONICAL_BANDS)),
                normalisation=norm,
                block_size=int(spec.get("block_size", 512)),
                threshold=threshold,
                sha256=_get(raw, SHA_KEYS.get(model, ("weights_sha256",))),
                training_data_hash=_get(raw, DATA_HASH_KEYS.get(model, ())),
                training=dict(raw.get("training", {})),
                validation=dict(raw.get("validation", {})),
                spec=spec,
                raw=raw,
            )
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise ModelError(f"sidecar {str(side)!r} is malformed ({e}); re-export or retrain the weights") from e

    def verify(self) -> None:
        """Raise :class:`ModelError` unless the weight file's SHA-256 is the one the
        sidecar records (a sidecar without one is refused too)."""
        if not self.sha256:
            raise ModelError(
                f"sidecar {str(self.sidecar)!r} records no weights_sha256; retrain with "
                f"`{TRAIN_COMMAND.get(self.model, 'geocloud train')}`"
            )
        got = _file_sha256(self.path)
        if got != self.sha256:
            raise ModelError(
                f"{self.model} weights {str(self.path)!r} do not match their sidecar (sha256 {got[:12]}..., "
                f"sidecar {self.sha256[:12]}...): the file is damaged or was replaced; reinstall geocloud, "
                f"or retrain with `{TRAIN_COMMAND.get(self.model, 'geocloud train')}`"
            )


_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def _file_sha256(path: Path) -> str:
    """SHA-256 of ``path``, remembered by (path, size, mtime) so a catalogue's many loads hash once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _SHA_LOCK:
        if key in _SHA_CACHE:
            return _SHA_CACHE[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    with _SHA_LOCK:
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def spec_from_sidecar(meta: WeightsMeta) -> ModelSpec:
    """The :class:`ModelSpec` a sidecar describes (what loading the model gives, without
    torch: the CAM's halo is the one the sidecar records, which its loader checks against
    the network's receptive field)."""
    s = meta.spec
    kwargs: dict[str, Any] = {
        "name": s.get("name", meta.model),
        "bands": meta.bands,
        "halo": int(s.get("halo", 0)),
        "fill_nodata": bool(s.get("fill_nodata", False)),
        "block_multiple": int(s.get("block_multiple", 1)),
        "block_size": meta.block_size,
        "feather": int(s.get("feather", 16)),
        "outputs": dict(s.get("outputs", {"score": 1})),
        "cells": dict(s.get("cells", {})),
        "cell_size": int(s.get("cell_size", 8)),
        "derived": tuple(s.get("derived", ())),
        "grow_ratio": float(s.get("grow_ratio", 1.0)),
        "grow_radius": int(s.get("grow_radius", 0)),
        **meta.threshold,
    }
    if "derived_from" in s:
        kwargs["derived_from"] = {k: tuple(v) for k, v in s["derived_from"].items()}
    elif kwargs["derived"]:  # the matte's r_c is formed from alpha
        kwargs["derived_from"] = {d: ("alpha",) for d in kwargs["derived"]}
    return ModelSpec(**kwargs)


def combine_specs(primary: ModelSpec, helpers: list[ModelSpec]) -> ModelSpec:
    """The spec of a primary model run with helper models on the same blocks: the largest
    halo, the least common multiple of the strides, the primary's score and threshold
    statistics, every model's maps and cell maps."""
    outputs = dict(primary.outputs)
    multiple = primary.block_multiple
    cells = dict(primary.cells)
    derived = list(primary.derived)
    derived_from = dict(primary.derived_from)
    for h in helpers:
        outputs.update({k: v for k, v in h.outputs.items() if k not in outputs})
        multiple = math.lcm(multiple, h.block_multiple)
        cells.update({k: v for k, v in h.cells.items() if k not in cells})
        new = [d for d in h.derived if d not in derived and d not in primary.outputs]
        derived += new
        derived_from.update({d: h.derived_from[d] for d in new if d in h.derived_from})
    sizes = {s.cell_size for s in [primary, *helpers] if s.cells}
    if len(sizes) > 1:
        raise ModelError(f"models with cell maps at different cell sizes {sorted(sizes)} cannot be combined")
    return replace(
        primary,
        name="+".join([primary.name] + [h.name for h in helpers]),
        halo=max([primary.halo] + [h.halo for h in helpers]),
        fill_nodata=any(s.fill_nodata for s in [primary, *helpers]),
        block_multiple=multiple,
        outputs=outputs,
        cells=cells,
        cell_size=sizes.pop() if sizes else primary.cell_size,
        derived=tuple(derived),
        derived_from=derived_from,
    )


__all__ = ["SHIPPED", "WeightsMeta", "combine_specs", "spec_from_sidecar"]
