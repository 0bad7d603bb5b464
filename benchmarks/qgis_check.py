"""Do a catalogue's outputs open in QGIS (3.22 LTR: Debian 12's qgis + python3-qgis, GDAL 3.6)?

    geocloud catalog sample_scenes -o /tmp/qgis/cat.gpkg --products mask,stats,vector,preview
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 benchmarks/qgis_check.py /tmp/qgis/cat.gpkg

Runs under the system Python that has PyQGIS (not the project's virtual environment: it
needs nothing from geocloud).  Loads, with PyQGIS and no window:

* the catalogue GeoPackage (layer ``catalog``, footprints in WGS84),
* every per-scene cloud-polygon GeoPackage (``*_clouds.gpkg``, layer ``clouds``) and GeoJSON,
* every raster product (``*_mask.tif`` and any other COG) of ``<catalogue stem>_scenes/``,

asserts that every layer is valid, has features or bands, a CRS where the product has one,
and that GDAL/OGR printed no warning while opening them (QGIS's message log is collected:
a GeoPackage 1.4 gives "This version of GeoPackage ... may only be partially supported"
with GDAL < 3.7).  Prints one line per layer and exits non-zero on any failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import Qgis, QgsApplication, QgsRasterLayer, QgsVectorLayer

    cat = Path(argv[1]).absolute()
    scenes = cat.with_name(f"{cat.stem}_scenes")
    app = QgsApplication([], False)
    app.initQgis()
    messages: list[str] = []

    def collect(msg: str, tag: str, level: int) -> None:
        if level >= Qgis.Warning:
            messages.append(f"[{tag}] {msg}")

    QgsApplication.messageLog().messageReceived.connect(collect)
    failures = 0
    layers: list[tuple[str, object]] = []
    import tempfile

    # GDAL prints its warnings ("Warning 1: This version of GeoPackage ...") on fd 2: catch them
    err = tempfile.TemporaryFile()  # noqa: SIM115 - fd 2 points at it until the layers are loaded
    saved = os.dup(2)
    os.dup2(err.fileno(), 2)
    if cat.suffix.lower() == ".gpkg":
        layers.append((f"{cat}|layername=catalog", QgsVectorLayer(f"{cat}|layername=catalog", "catalog", "ogr")))
    for g in sorted(scenes.rglob("*_clouds.gpkg")):
        layers.append((str(g), QgsVectorLayer(f"{g}|layername=clouds", g.stem, "ogr")))
    for g in sorted(scenes.rglob("*_clouds.geojson")):
        layers.append((str(g), QgsVectorLayer(str(g), g.stem, "ogr")))
    for r in sorted(scenes.rglob("*.tif")):
        layers.append((str(r), QgsRasterLayer(str(r), r.stem, "gdal")))
    os.dup2(saved, 2)
    err.seek(0)
    gdal_lines = [ln for ln in err.read().decode(errors="replace").splitlines() if "Warning" in ln or "ERROR" in ln]
    for ln in gdal_lines:
        messages.append(f"[GDAL] {ln}")
    for name, layer in layers:
        before = 0 if layer is layers[0][1] else len(messages)
        ok = layer.isValid()
        if ok and isinstance(layer, QgsVectorLayer):
            detail = f"{layer.featureCount()} features, {layer.crs().authid() or 'no CRS'}"
        elif ok:
            detail = f"{layer.bandCount()} bands, {layer.width()}x{layer.height()}, {layer.crs().authid() or 'no CRS / RPC'}"
        else:
            detail = layer.error().summary() if hasattr(layer, "error") else "invalid"
        app.processEvents()
        warned = messages[before:]
        status = "ok" if ok and not warned else "FAIL"
        failures += status != "ok"
        print(f"{status:4} {name}: {detail}" + (f" (warnings: {warned})" if warned else ""))
    if not layers:
        print(f"FAIL nothing found for {cat}")
        failures += 1
    print(f"QGIS {Qgis.QGIS_VERSION}: {len(layers) - failures}/{len(layers)} layers valid without warnings")
    app.exitQgis()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
