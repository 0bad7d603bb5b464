"""RPC00B rational polynomial coefficients (``.rpb`` files) of vendor deliveries."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InputError, SceneNotFoundError

_RPB_SCALARS = {
    "lineOffset": "line_off",
    "sampOffset": "samp_off",
    "latOffset": "lat_off",
    "longOffset": "long_off",
    "heightOffset": "height_off",
    "lineScale": "line_scale",
    "sampScale": "samp_scale",
    "latScale": "lat_scale",
    "longScale": "long_scale",
    "heightScale": "height_scale",
    "errBias": "err_bias",
    "errRand": "err_rand",
}
_RPB_ARRAYS = {
    "lineNumCoef": "line_num_coeff",
    "lineDenCoef": "line_den_coeff",
    "sampNumCoef": "samp_num_coeff",
    "sampDenCoef": "samp_den_coeff",
}


def parse_rpb(text: str, path: str = "<rpb>"):  # -> rasterio.rpc.RPC
    """Parse RPC00B text (``.rpb``) into :class:`rasterio.rpc.RPC`."""
    from rasterio.rpc import RPC

    values: dict[str, object] = {}
    for key, name in _RPB_SCALARS.items():
        m = re.search(rf"\b{key}\s*=\s*([-+0-9.Ee]+)\s*;", text)
        if m:
            values[name] = float(m.group(1))
    for key, name in _RPB_ARRAYS.items():
        m = re.search(rf"\b{key}\s*=\s*\(([^)]*)\)", text, re.S)
        if m:
            coeffs = [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:[Ee][-+]?\d+)?", m.group(1))]
            if len(coeffs) != 20:
                raise InputError(f"RPC file {path}: {key} has {len(coeffs)} coefficients, expected 20")
            values[name] = coeffs
    missing = [
        key
        for key, k in (*_RPB_SCALARS.items(), *_RPB_ARRAYS.items())
        if k not in values and k not in ("err_bias", "err_rand")
    ]
    if missing:
        raise InputError(f"RPC file {path} lacks {', '.join(missing)}; is it an RPC00B .rpb file?")
    return RPC(**values)


def read_rpb(path: str | os.PathLike[str]):  # -> rasterio.rpc.RPC
    """Read an ``.rpb`` file into :class:`rasterio.rpc.RPC`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SceneNotFoundError(f"RPC file {p} cannot be read ({exc}); check the path") from exc
    return parse_rpb(text, str(p))


def find_rpb(scene_path: str | os.PathLike[str]) -> Path | None:
    """The ``.rpb`` beside a scene (same stem, any case), if any."""
    scene = Path(scene_path)
    stem = scene.stem.lower()
    try:
        for p in sorted(scene.parent.iterdir()):
            if p.suffix.lower() == ".rpb" and p.stem.lower() == stem:
                return p
    except OSError:
        return None
    return None
