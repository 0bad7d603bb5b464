"""geocloud: whole-scene cloud detection, cloud matting and declouding for 4-band
(blue, green, red, near-infrared) satellite imagery.

The library API::

    from geocloud import ProcessConfig, process_scene
    result = process_scene("scene.tif", "out/", ProcessConfig(model="spectral"))
    result.stats.cloud_fraction

Heavy dependencies (torch, dask) are imported only by the parts that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .config import InferenceConfig, OutputConfig, ProcessConfig, ThresholdConfig, TilingConfig
    from .errors import GeocloudError
    from .pipeline import SceneResult, process_scene

#: the public names, imported on first use so that ``import geocloud`` (and the command's
#: start, during which ^C must already be handled) costs milliseconds, not the second that
#: rasterio and numpy take.
_LAZY = {
    "InferenceConfig": "config", "OutputConfig": "config", "ProcessConfig": "config",
    "ThresholdConfig": "config", "TilingConfig": "config", "GeocloudError": "errors",
    "SceneResult": "pipeline", "process_scene": "pipeline",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geocloud' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "GeocloudError",
    "InferenceConfig",
    "OutputConfig",
    "ProcessConfig",
    "SceneResult",
    "ThresholdConfig",
    "TilingConfig",
    "__version__",
    "process_scene",
]
