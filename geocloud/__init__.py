"""geocloud: whole-scene cloud detection, cloud matting and declouding for 4-band
(blue, green, red, near-infrared) satellite imagery.

The library API::

    from geocloud import ProcessConfig, process_scene
    result = process_scene("scene.tif", "out/", ProcessConfig(model="spectral"))
    result.stats["cloud_fraction"]

Heavy dependencies (torch, dask) are imported only by the parts that need them.
"""

from ._version import __version__
from .config import InferenceConfig, OutputConfig, ProcessConfig, ThresholdConfig, TilingConfig
from .errors import GeocloudError
from .pipeline import SceneResult, process_scene

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
