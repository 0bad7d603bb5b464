"""Cloud polygons: whole-mask (not block-by-block), holes kept, valid, RFC 7946 GeoJSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin
from shapely.geometry import shape

from geocloud.errors import ConfigError, InputError
from geocloud.vectorize import VectorizeConfig, cloud_polygons, write_cloud_vectors

CRS = "EPSG:32650"
ORIGIN = (400_000.0, 4_500_000.0)
PX = 16.0


def _blobs(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A mask with clouds of all shapes: large ones crossing any strip border, holes,
    diagonal contacts, single pixels, and nodata (255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w), np.uint8)
    for _ in range(12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(3, max(4, h // 4))
        m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    # a ring: cloud with a hole (and a cloud islet inside the hole)
    d2 = (yy - h // 2) ** 2 + (xx - w // 3) ** 2
    m[(d2 < (h // 5) ** 2) & (d2 >= (h // 10) ** 2)] = 1
    m[d2 < 4] = 1
    # diagonal-only contact and speckle
    m[2, 2] = m[3, 3] = 1
    m[rng.random((h, w)) < 0.01] = 1
    m[:, -3:] = 255  # nodata collar
    return m


def _write_mask(path, m, crs=CRS, transform=None, **kw):
    transform = transform or from_origin(*ORIGIN, PX, PX)
    with rasterio.open(path, "w", driver="GTiff", width=m.shape[1], height=m.shape[0], count=1, dtype="uint8",
                       nodata=255, crs=crs, transform=transform, **kw) as ds:  # fmt: skip
        ds.write(m[None])
    return path


@pytest.mark.parametrize("strip_rows", [1, 7, 16, 33])
def test_strips_equal_one_go(tmp_path, strip_rows):
    m = _blobs(96, 80)
    p = _write_mask(tmp_path / "m.tif", m)
    full = cloud_polygons(p)
    strips = cloud_polygons(p, strip_rows=strip_rows)
    assert len(full) == len(strips)
    u1, u2 = shapely.union_all(full.pixel_geometries), shapely.union_all(strips.pixel_geometries)
    assert u1.symmetric_difference(u2).area == 0
    assert sorted(g.area for g in full.pixel_geometries) == sorted(g.area for g in strips.pixel_geometries)
    # polygon area == cloud pixel count, exactly
    assert sum(g.area for g in strips.pixel_geometries) == (m == 1).sum()
    assert all(g.is_valid for g in strips.geometries)


def test_holes_kept_and_polygons_cross_blocks(tmp_path):
    m = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    d2 = (yy - 32) ** 2 + (xx - 32) ** 2
    m[(d2 < 28**2) & (d2 >= 10**2)] = 1
    p = _write_mask(tmp_path / "m.tif", m, tiled=True, blockxsize=16, blockysize=16)
    polys = cloud_polygons(p, strip_rows=16)
    assert len(polys) == 1  # one ring across 16 internal blocks and 4 strips
    (g,) = polys.pixel_geometries
    assert len(g.interiors) == 1
    assert g.area == (m == 1).sum()
    assert polys.areas_m2[0] == pytest.approx(g.area * PX * PX)


def test_min_area_and_simplify(tmp_path):
    m = _blobs(96, 80, seed=3)
    p = _write_mask(tmp_path / "m.tif", m)
    allp = cloud_polygons(p)
    big = cloud_polygons(p, VectorizeConfig(min_area_m2=20 * PX * PX))
    assert 0 < len(big) < len(allp)
    assert min(big.areas_m2) >= 20 * PX * PX
    simp = cloud_polygons(p, VectorizeConfig(simplify_px=1.5))
    nv = lambda ps: sum(shapely.get_num_coordinates(g) for g in ps.geometries)  # noqa: E731
    assert nv(simp) < nv(allp)
    assert all(g.is_valid and not g.is_empty for g in simp.geometries)
    with pytest.raises(ConfigError):
        cloud_polygons(p, VectorizeConfig(min_area_m2=-1))


def test_geojson_rfc7946_wgs84_and_gpkg_native(tmp_path):
    m = _blobs(64, 64, seed=1)
    p = _write_mask(tmp_path / "s_mask.tif", m)
    out = write_cloud_vectors(p, tmp_path, "s", properties={"model": "spectral"})
    doc = json.loads(out["vector_geojson"].read_text())
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert doc["geocloud"]["model"] == "spectral"
    tr = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    xs = [ORIGIN[0], ORIGIN[0] + 64 * PX] * 2
    ys = [ORIGIN[1]] * 2 + [ORIGIN[1] - 64 * PX] * 2
    lons, lats = tr.transform(xs, ys)
    lon0, lon1, lat1, lat0 = min(lons), max(lons), min(lats), max(lats)
    total = 0.0
    for f in doc["features"]:
        g = shape(f["geometry"])
        assert g.is_valid
        minx, miny, maxx, maxy = g.bounds
        assert lon0 - 1e-4 <= minx and maxx <= lon1 + 1e-4 and lat1 - 1e-4 <= miny and maxy <= lat0 + 1e-4
        for poly in getattr(g, "geoms", [g]):
            assert poly.exterior.is_ccw  # RFC 7946 right-hand rule
            assert all(not r.is_ccw for r in poly.interiors)
        total += f["properties"]["area_m2"]
    assert total == pytest.approx((m == 1).sum() * PX * PX)
    assert doc["bbox"][0] <= doc["bbox"][2]

    import pyogrio

    info = pyogrio.read_info(out["vector_gpkg"])
    assert info["features"] == len(doc["features"])
    assert "32650" in info["crs"]
    _, _, geoms, fields = pyogrio.raw.read(out["vector_gpkg"])
    assert shapely.union_all(shapely.from_wkb(geoms)).area == pytest.approx((m == 1).sum() * PX * PX)


def test_geographic_mask_uses_geodesic_area(tmp_path):
    m = np.zeros((10, 10), np.uint8)
    m[2:8, 2:8] = 1
    p = _write_mask(tmp_path / "g.tif", m, crs="EPSG:4326", transform=from_origin(10.0, 1.0, 0.001, 0.001))
    polys = cloud_polygons(p)
    # 36 pixels of ~111.3 m x 110.6 m at the equator
    assert polys.areas_m2[0] == pytest.approx(36 * 111.32 * 110.57, rel=0.01)


def test_rpc_only_mask_goes_to_wgs84(tmp_path):
    from rasterio.rpc import RPC

    den = [1.0] + [0.0] * 19
    ln, sn = [0.0] * 20, [0.0] * 20
    ln[2], sn[1] = -1.0, 1.0
    rpc = RPC(height_off=0, height_scale=100, lat_off=30.0, lat_scale=0.002, line_den_coeff=den,
              line_num_coeff=ln, line_off=10, line_scale=10, long_off=114.0, long_scale=0.002,
              samp_den_coeff=den, samp_num_coeff=sn, samp_off=10, samp_scale=10)  # fmt: skip
    m = np.zeros((20, 20), np.uint8)
    m[0:10, 10:20] = 1  # the north-east quarter
    p = tmp_path / "r_mask.tif"
    with rasterio.open(p, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8", rpcs=rpc) as ds:
        ds.write(m[None])
    out = write_cloud_vectors(p, tmp_path, "r")
    g = shape(json.loads(out["vector_geojson"].read_text())["features"][0]["geometry"])
    minx, miny, maxx, maxy = g.bounds
    # RPC line/sample address pixel centres (GDAL shifts by half a pixel = 0.0001 deg)
    assert minx == pytest.approx(113.9999, abs=1e-6) and maxx == pytest.approx(114.0019, abs=1e-6)
    assert miny == pytest.approx(30.0001, abs=1e-6) and maxy == pytest.approx(30.0021, abs=1e-6)


def test_ungeoreferenced_mask(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[1:3, 1:3] = 1
    p = tmp_path / "n.tif"
    with rasterio.open(p, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as ds:
        ds.write(m[None])
    out = write_cloud_vectors(p, tmp_path, "n")
    assert "vector_geojson" not in out and out["vector_gpkg"].exists()
    bad = tmp_path / "f.tif"
    with rasterio.open(bad, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32") as ds:
        ds.write(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(InputError, match="uint8"):
        cloud_polygons(bad)


def test_empty_mask(tmp_path):
    p = _write_mask(tmp_path / "e_mask.tif", np.zeros((16, 16), np.uint8))
    out = write_cloud_vectors(p, tmp_path, "e")
    assert json.loads(out["vector_geojson"].read_text())["features"] == []
    import pyogrio

    assert pyogrio.read_info(out["vector_gpkg"])["features"] == 0


def _mapping_coordinates(g, nd):
    """The GeoJSON coordinates of ``g`` built one coordinate at a time (the reference)."""
    from shapely.geometry import mapping

    def rnd(obj):
        if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], float):
            return [round(v, nd) for v in obj]
        return [rnd(v) for v in obj]

    return rnd(json.loads(json.dumps(mapping(g)["coordinates"])))


def test_geojson_coordinates_of_polygons_holes_and_multipolygons():
    from shapely.geometry import MultiPolygon, Polygon

    from geocloud.vectorize import _geojson_coordinates

    holed = Polygon(
        [(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (4, 2), (4, 4), (2, 4)], [(6, 6), (8, 6), (8, 8)]]
    )
    square = Polygon([(20.123456789, 0), (21, 0), (21, 1.000000049), (20.123456789, 1)])
    multi = MultiPolygon([square, holed])
    geoms = np.array([holed, multi, square], dtype=object)
    got = _geojson_coordinates(geoms, 7)
    assert got == [_mapping_coordinates(g, 7) for g in geoms]
    assert got[2][0][0] == [20.1234568, 0.0]  # rounded to 7 decimals
    assert len(got[1]) == 2 and len(got[1][1]) == 3  # two polygons; the second has two holes


def test_geojson_of_a_noisy_mask_is_valid_and_matches_the_gpkg(tmp_path):
    """Speckle gives many polygons, each a few pixels (the case vectorised for speed)."""
    rng = np.random.default_rng(3)
    m = (rng.random((120, 150)) < 0.35).astype(np.uint8)
    p = _write_mask(tmp_path / "noise_mask.tif", m)
    polys = cloud_polygons(p)
    assert len(polys) > 1000
    assert sum(g.area for g in polys.pixel_geometries) == (m == 1).sum()
    out = write_cloud_vectors(p, tmp_path, "noise")
    feats = json.loads(out["vector_geojson"].read_text())["features"]
    assert [f["id"] for f in feats] == list(range(1, len(polys) + 1))
    wgs = [shape(f["geometry"]) for f in feats]
    assert all(g.is_valid and g.exterior.is_ccw for g in wgs)
    to_utm = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    for f, g, native in zip(feats[::97], wgs[::97], polys.geometries[::97], strict=False):
        back = shapely.transform(g, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
        assert back.symmetric_difference(native).area < 0.01 * native.area
        assert f["properties"]["area_m2"] == pytest.approx(native.area, abs=0.01)


def test_geojson_drops_what_vanishes_at_its_precision(tmp_path):
    """A polygon thinner than the GeoJSON precision becomes invalid when its coordinates are
    rounded; GEOS's precision reduction removes it and its id is skipped."""
    from geocloud.vectorize import CloudPolygons, write_geojson

    from_wgs = from_origin(116.0, 40.0, 1e-6, 1e-6)
    sliver = shapely.box(0, 0, 300, 0.04)  # 4e-8 degrees tall, in pixels of 1e-6 degrees
    square = shapely.box(0, 5, 10, 15)
    pix = [sliver, square]
    native = [
        shapely.transform(g, lambda xy: np.column_stack([116 + xy[:, 0] * 1e-6, 40 - xy[:, 1] * 1e-6]))
        for g in pix
    ]
    polys = CloudPolygons(native, [1.0, 2.0], rasterio.crs.CRS.from_epsg(4326), None, from_wgs, pix)
    doc = json.loads(write_geojson(polys, tmp_path / "x.geojson").read_text())
    assert [f["id"] for f in doc["features"]] == [2]
    assert shape(doc["features"][0]["geometry"]).is_valid


def test_made_valid_keeps_the_order_and_splits_only_the_invalid():
    """Invalid polygons become their make_valid parts in place; valid ones pass as they are."""
    from geocloud.vectorize import _made_valid

    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])  # two triangles
    spike = shapely.Polygon([(10, 0), (12, 0), (12, 2), (10, 2), (10, 0), (9, -1), (10, 0)])
    squares = [shapely.box(i * 5, 20, i * 5 + 1, 21) for i in range(3)]
    geoms = np.array([squares[0], bowtie, squares[1], spike, squares[2]], dtype=object)
    got = _made_valid(geoms)

    def reference(g):
        if g.is_valid:
            return [g]
        fixed = shapely.make_valid(g)
        return [p for p in getattr(fixed, "geoms", [fixed]) if p.geom_type == "Polygon" and not p.is_empty]

    want = [p for g in geoms for p in reference(g)]
    assert len(got) == len(want) == 6  # the bowtie's two triangles, the spike's square
    assert all(a.equals_exact(b, 0) for a, b in zip(got, want, strict=True))
    assert got[0] is squares[0] and got[3] is squares[1] and all(shapely.is_valid(got))
