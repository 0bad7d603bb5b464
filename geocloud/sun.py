"""The sun's position at acquisition, from the metadata files that travel with a scene.

The shadow stage (:mod:`geocloud.shadow`) searches only the distance of the shadows when
the sun azimuth is known, and bounds it by cloud heights when the elevation is known too;
the elevation also corrects top-of-atmosphere reflectance (:mod:`geocloud.sensors`).
CRESDA's vendor XML is read by :mod:`geocloud.vendor`.  This module reads the other
common sources, beside the scene or above it:

* a **Landsat MTL** file (``<product id>_MTL.txt``, Collection 1 or 2): ``SUN_AZIMUTH``
  and ``SUN_ELEVATION`` in degrees;
* a **Sentinel-2 tile metadata** file (``MTD_TL.xml`` of a granule, in the scene's folder or
  up to two folders above it, as in a SAFE product's ``GRANULE/<tile>/IMG_DATA``):
  ``Tile_Angles/Mean_Sun_Angle`` ``ZENITH_ANGLE`` and ``AZIMUTH_ANGLE``.

An MTL belongs to the scene when its product id starts the scene's file name (a band
``LC08_..._T1_B4.TIF`` or a stack ``LC08_..._T1_stack.tif``), or when it is the only MTL
in the folder.  Several MTL files of which none matches: none is used (the scene is
ambiguous), and the shadow stage searches the azimuth as it does without metadata.
Command-line angles (``--sun-azimuth``, ``--sun-elevation``) and the vendor XML come first.
"""

from __future__ import annotations

import contextlib
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SunAngles", "find_sun_metadata", "read_landsat_mtl", "read_s2_tile_metadata"]

_MTL_VALUE = re.compile(r"^\s*(SUN_AZIMUTH|SUN_ELEVATION)\s*=\s*\"?([-+0-9.eE]+)\"?\s*$", re.MULTILINE)


@dataclass(frozen=True)
class SunAngles:
    """The sun at acquisition: azimuth in degrees clockwise from north, elevation in
    degrees above the horizon (either may be unknown), and the file they came from."""

    azimuth: float | None
    elevation: float | None
    source: Path

    def describe(self) -> str:
        az = "?" if self.azimuth is None else f"{self.azimuth:.2f}"
        el = "?" if self.elevation is None else f"{self.elevation:.2f}"
        return f"sun azimuth {az}, elevation {el} degrees ({self.source.name})"


def _checked(azimuth: float | None, elevation: float | None, source: Path) -> SunAngles | None:
    """Angles in their physical ranges (azimuth taken modulo 360), or None when neither is."""
    az = azimuth % 360.0 if azimuth is not None and -360.0 <= azimuth <= 720.0 else None
    el = elevation if elevation is not None and 0.0 < elevation <= 90.0 else None
    return None if az is None and el is None else SunAngles(az, el, source)


def read_landsat_mtl(path: str | Path) -> SunAngles | None:
    """``SUN_AZIMUTH`` and ``SUN_ELEVATION`` of a Landsat ``*_MTL.txt`` (None if it has neither)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    values: dict[str, float] = {}
    for key, value in _MTL_VALUE.findall(text):
        with contextlib.suppress(ValueError):
            values.setdefault(key, float(value))
    return _checked(values.get("SUN_AZIMUTH"), values.get("SUN_ELEVATION"), path)


def read_s2_tile_metadata(path: str | Path) -> SunAngles | None:
    """The mean sun angles of a Sentinel-2 ``MTD_TL.xml`` (elevation = 90 - zenith)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] != "Mean_Sun_Angle":
            continue
        found: dict[str, float] = {}
        for child in el:
            name = child.tag.rsplit("}", 1)[-1]
            with contextlib.suppress(TypeError, ValueError):
                found[name] = float(child.text)  # type: ignore[arg-type]
        zenith = found.get("ZENITH_ANGLE")
        return _checked(found.get("AZIMUTH_ANGLE"), None if zenith is None else 90.0 - zenith, path)
    return None


def _matching_mtl(folder: Path, stem: str) -> Path | None:
    try:
        with os.scandir(folder) as entries:  # (a few ms for a folder of 10 000 files)
            mtls = sorted(Path(e.path) for e in entries if e.name.upper().endswith("_MTL.TXT") and e.is_file())
    except OSError:
        return None
    named = [p for p in mtls if stem.upper().startswith(p.name[: -len("_MTL.txt")].upper())]
    if named:
        return max(named, key=lambda p: len(p.name))  # the longest product id that matches
    return mtls[0] if len(mtls) == 1 else None


def find_sun_metadata(scene: str | Path) -> SunAngles | None:
    """The sun angles of ``scene`` from a Landsat MTL beside it, else a Sentinel-2
    ``MTD_TL.xml`` beside it or up to two folders above (module docstring); None if neither."""
    scene = Path(scene)
    folder = scene.parent
    mtl = _matching_mtl(folder, scene.stem)
    if mtl is not None:
        sun = read_landsat_mtl(mtl)
        if sun is not None:
            return sun
    for d in (folder, folder.parent, folder.parent.parent):
        candidate = d / "MTD_TL.xml"
        if candidate.is_file():
            return read_s2_tile_metadata(candidate)
    return None
