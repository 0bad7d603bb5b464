"""Model registry.

``MODELS`` maps a model name to ``"module:factory"``; the factory takes a ``torch``
device string (or ``"cpu"``) and returns a :class:`~geocloud.models.base.CloudModel`.
Modules are imported lazily, so ``--model spectral`` never imports torch.
"""

from __future__ import annotations

import importlib

from ..errors import ModelError
from .base import CANONICAL_BANDS, CloudModel, CombinedModel, ModelSpec, Prediction

MODELS: dict[str, str] = {
    "spectral": "geocloud.models.spectral:load",
    "matting": "geocloud.models.matting:load",
    "cam": "geocloud.models.cam:load",
}

#: The model ``geocloud process`` uses when none is named.
DEFAULT_MODEL = "cam"


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


#: Models that add maps other than the score, by the maps they provide; the engine runs
#: them beside the primary model when a product needs those maps.
MAP_PROVIDERS: dict[str, str] = {"alpha": "matting", "reflectance": "matting"}


def build_model(name: str, device: str, needs: set[str]) -> CloudModel:
    """The primary model ``name``, combined with map providers for whatever else ``needs`` names."""
    primary = load_model(name, device)
    missing = set(needs) - set(primary.spec.outputs)
    helpers: list[CloudModel] = []
    for map_name in sorted(missing):
        provider = MAP_PROVIDERS.get(map_name)
        if provider is None:
            raise ModelError(
                f"no model provides the {map_name!r} map that the chosen products need; "
                "choose other --products"
            )
        if provider not in [h.spec.name for h in helpers]:
            helpers.append(load_model(provider, device))
    return CombinedModel(primary, helpers) if helpers else primary


def read_spec(name: str, needs: set[str] | frozenset[str] = frozenset({"score"})) -> ModelSpec:
    """The spec :func:`build_model` would give, read from the weight sidecars without
    loading torch or the weights (``geocloud info``)."""
    from .weights import SHIPPED, WeightsMeta, combine_specs, spec_from_sidecar

    def one(model: str) -> ModelSpec:
        if model not in MODELS:
            load_model(model)  # the unknown-model error
        if model in SHIPPED:
            return spec_from_sidecar(WeightsMeta.read(model))
        return load_model(model).spec  # a model without weights is cheap to build

    primary = one(name)
    helpers: list[ModelSpec] = []
    for map_name in sorted(set(needs) - set(primary.outputs)):
        provider = MAP_PROVIDERS.get(map_name)
        if provider is None:
            raise ModelError(
                f"no model provides the {map_name!r} map that the chosen products need; choose other --products"
            )
        if provider not in [h.name for h in helpers]:
            helpers.append(one(provider))
    return combine_specs(primary, helpers) if helpers else primary


__all__ = [
    "read_spec",
    "CANONICAL_BANDS",
    "CloudModel",
    "CombinedModel",
    "DEFAULT_MODEL",
    "MAP_PROVIDERS",
    "build_model",
    "MODELS",
    "ModelSpec",
    "Prediction",
    "load_model",
]
