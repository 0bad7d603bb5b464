"""Model registry.

``MODELS`` maps a model name to ``"module:factory"``; the factory takes a ``torch``
device string (or ``"cpu"``) and returns a :class:`~geocloud.models.base.CloudModel`.
Modules are imported lazily, so ``--model spectral`` never imports torch.
"""

from __future__ import annotations

import importlib

from ..errors import ModelError
from .base import CANONICAL_BANDS, CloudModel, ModelSpec, Prediction

MODELS: dict[str, str] = {
    "spectral": "geocloud.models.spectral:load",
}

#: The model ``geocloud process`` uses when none is named.
DEFAULT_MODEL = "spectral"


def load_model(name: str, device: str = "cpu") -> CloudModel:
    """Build the model registered as ``name`` on ``device``."""
    try:
        target = MODELS[name]
    except KeyError:
        raise ModelError(
            f"model {name!r} is unknown; pass --model with one of: {', '.join(sorted(MODELS))}"
        ) from None
    module_name, factory = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, factory)(device)


__all__ = ["CANONICAL_BANDS", "CloudModel", "DEFAULT_MODEL", "MODELS", "ModelSpec", "Prediction", "load_model"]
