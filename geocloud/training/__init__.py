"""Training: real chips (:mod:`.data`), synthetic cloud layers (:mod:`.synth`) and trainers.

Trainers (``geocloud.training.cam`` ...) import torch; ``data`` and ``synth`` need only
numpy, scipy and rasterio.
"""
