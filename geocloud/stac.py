"""STAC output of a catalogue: one Item per scene, as an ItemCollection or a static catalogue.

``geocloud catalog ... -o catalog.json`` writes a STAC API ItemCollection (a GeoJSON
FeatureCollection of STAC 1.1 Items); ``--stac DIR`` writes a self-contained static
catalogue (``DIR/catalog.json`` and ``DIR/<id>/<id>.json``) beside any catalogue format.
Plain JSON, no runtime dependency; the output is validated with pystac and stac-validator
in the tests.

Each Item has:

* ``geometry``: the valid-data footprint in WGS84 lon/lat and its ``bbox`` (``null`` and no
  bbox when the scene has none: not georeferenced, or it failed);
* ``datetime``: the acquisition time when known to the second (vendor XML, tags); a date
  alone (from the file name) gives ``datetime: null`` with ``start_datetime``/``end_datetime``
  spanning that UTC day; with no acquisition time at all, the same over the file's
  modification time (``geocloud:datetime_source`` says which);
* ``eo:cloud_cover`` (the eo extension, % of valid pixels) for processed scenes;
* ``geocloud:*``: the other catalogue columns (status, error, warnings, threshold, model,
  thin_cloud_pct, mean_alpha, calibration...);
* assets: ``scene`` (the input, role ``data``) and one per product file: COGs
  (``image/tiff; application=geotiff; profile=cloud-optimized``, role ``data``), the
  statistics (``application/json``, ``metadata``), the preview (``overview``) and the
  thumbnail (``thumbnail``), the cloud polygons (``data``).  Hrefs are absolute paths in the
  ItemCollection, relative to the Item file in a static catalogue.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

STAC_VERSION = "1.1.0"
EO_EXTENSION = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
GEOTIFF = "image/tiff; application=geotiff"

#: columns that are not repeated as ``geocloud:`` properties (they are the id, geometry,
#: eo:cloud_cover or assets).
_STANDARD = ("id", "footprint", "cloud_pct", "path", "preview", "thumbnail", "mask", "stats")

# product name -> (media type, roles, title)
_ASSETS: dict[str, tuple[str, list[str], str]] = {
    "mask": (COG, ["data"], "cloud mask: 0 clear, 1 cloud, 255 nodata"),
    "score": (COG, ["data"], "cloud score 0-1"),
    "alpha": (COG, ["data"], "cloud opacity 0-1"),
    "reflectance": (COG, ["data"], "cloud reflectance per band"),
    "clear": (COG, ["data"], "declouded scene"),
    "quality": (COG, ["data"], "confidence of the declouded scene"),
    "stats": ("application/json", ["metadata"], "geocloud statistics"),
    "vector": ("", ["data"], "cloud polygons"),
    "preview": ("image/png", ["overview"], "quicklook with the clouds outlined"),
    "thumbnail": ("image/png", ["thumbnail"], "thumbnail"),
}


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and v != ""


def _utc(s: str) -> str:
    dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _times(row: dict[str, Any]) -> dict[str, Any]:
    acq = row.get("acquired")
    if _present(acq):
        s = str(acq)
        if "T" in s:
            return {"datetime": _utc(s), "geocloud:datetime_source": row.get("acquired_source")}
        day = date.fromisoformat(s[:10])
        source = row.get("acquired_source")
    elif _present(row.get("mtime")):
        day = datetime.fromisoformat(str(row["mtime"]).replace("Z", "+00:00")).date()
        source = "file modification day"
    else:
        day, source = date(1970, 1, 1), "unknown"
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1) - timedelta(seconds=1)
    z = "%Y-%m-%dT%H:%M:%SZ"
    return {"datetime": None, "start_datetime": start.strftime(z), "end_datetime": end.strftime(z),
            "geocloud:datetime_source": source}  # fmt: skip


def _json_value(v: Any) -> Any:
    if not _present(v):
        return None
    if hasattr(v, "item"):  # numpy / pandas scalars
        v = v.item()
    if isinstance(v, float):
        return round(v, 6)
    return v


def _href(path: str, base: Path | None) -> str:
    if base is None:
        return str(Path(path).absolute())
    return Path(os.path.relpath(Path(path).absolute(), base)).as_posix()


def _assets(row: dict[str, Any], base: Path | None) -> dict[str, dict[str, Any]]:
    assets: dict[str, dict[str, Any]] = {}
    if _present(row.get("path")):
        name = str(row["path"]).lower()
        kind = GEOTIFF if name.endswith((".tif", ".tiff")) else "application/gzip"
        assets["scene"] = {"href": _href(str(row["path"]), base), "type": kind, "roles": ["data"],
                           "title": "input scene"}  # fmt: skip
    products: dict[str, list[str]] = dict(row.get("products") or {})
    for key in ("mask", "stats", "preview", "thumbnail"):  # rows from tables have these columns only
        if key not in products and _present(row.get(key)):
            products[key] = [str(row[key])]
    if _present(row.get("thumbnail")):
        products["thumbnail"] = [str(row["thumbnail"])]
    for name, paths in products.items():
        media, roles, title = _ASSETS.get(name, ("", ["data"], name))
        for i, p in enumerate(paths):
            key = name if i == 0 else f"{name}_{Path(p).suffix.lstrip('.')}"
            media_i = media or {".geojson": "application/geo+json", ".gpkg": "application/geopackage+sqlite3"}.get(
                Path(p).suffix.lower(), "application/octet-stream"
            )
            assets[key] = {"href": _href(p, base), "type": media_i, "roles": roles, "title": title}
    return assets


def item(row: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """The STAC Item of one catalogue row (``base``: the Item file's folder, for relative hrefs)."""
    import shapely

    from .catalog import COLUMNS

    geometry = bbox = None
    fp = row.get("footprint")
    if _present(fp):
        g = shapely.from_wkt(str(fp))
        geometry = json.loads(shapely.to_geojson(g))
        bbox = [round(float(v), 6) for v in shapely.bounds(g)]
    props: dict[str, Any] = _times(row)
    ok = row.get("status") == "ok"
    if ok and _present(row.get("cloud_pct")):
        props["eo:cloud_cover"] = round(float(row["cloud_pct"]), 4)
    if _present(row.get("satellite")):
        props["platform"] = str(row["satellite"]).lower()
    for c in COLUMNS:
        if c not in _STANDARD:
            props[f"geocloud:{c}"] = _json_value(row.get(c))
    out: dict[str, Any] = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EO_EXTENSION],
        "id": str(row["id"]),
        "geometry": geometry,
    }
    if bbox is not None:
        out["bbox"] = bbox
    out.update(properties=props, links=[], assets=_assets(row, base))
    return out


def item_collection(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A STAC ItemCollection (GeoJSON FeatureCollection) of the rows, hrefs absolute."""
    return {"type": "FeatureCollection", "features": [item(r) for r in rows], "links": []}


def rows_from_items(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Catalogue rows back from an ItemCollection written by :func:`item_collection`."""
    import shapely

    rows = []
    for f in doc.get("features", []):
        p = f.get("properties", {})
        row = {k.split(":", 1)[1]: v for k, v in p.items() if k.startswith("geocloud:")}
        row["id"] = f["id"]
        row["cloud_pct"] = p.get("eo:cloud_cover")
        row["footprint"] = None if f.get("geometry") is None else shapely.to_wkt(shapely.from_geojson(json.dumps(f["geometry"])))
        a = f.get("assets", {})
        for key, col in (("scene", "path"), ("mask", "mask"), ("stats", "stats"), ("preview", "preview"),
                         ("thumbnail", "thumbnail")):  # fmt: skip
            row[col] = a[key]["href"] if key in a else None
        rows.append(row)
    return rows


def write_stac_catalog(rows: list[dict[str, Any]], folder: Path, title: str = "geocloud catalogue") -> Path:
    """A self-contained static STAC catalogue: ``folder/catalog.json`` and ``folder/<id>/<id>.json``.

    Every file is written through a temporary name and a rename; Items of scenes that are
    no longer in the catalogue are left alone.  Returns the path of ``catalog.json``.
    """
    from .outputs import atomic_write_text

    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    links = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
    for r in sorted(rows, key=lambda r: str(r["path"])):
        sid = str(r["id"])
        d = folder / sid
        d.mkdir(exist_ok=True)
        it = item(r, base=d)
        it["links"] = [{"rel": "root", "href": "../catalog.json", "type": "application/json"},
                       {"rel": "parent", "href": "../catalog.json", "type": "application/json"}]  # fmt: skip
        atomic_write_text(d / f"{sid}.json", json.dumps(it, indent=1))
        links.append({"rel": "item", "href": f"./{sid}/{sid}.json", "type": "application/geo+json"})
    cat = {"type": "Catalog", "stac_version": STAC_VERSION, "id": "geocloud-catalogue", "title": title,
           "description": "Cloud cover of each scene, by geocloud", "links": links}  # fmt: skip
    out = folder / "catalog.json"
    atomic_write_text(out, json.dumps(cat, indent=1))
    return out
