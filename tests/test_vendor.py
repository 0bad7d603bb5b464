"""Vendor deliveries: XML metadata, calibration, RPCs, safe archives, ortho.

The XML and RPC fixtures are written here, modelled on the documented layout of GF-1
``<ProductMetaData>`` and ZY-3 ``<sensor_corrected_metadata>`` files; the values are
made up (only their consistency matters: the solar zenith matches the time and place).
"""

from __future__ import annotations

import io
import math
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from geocloud.errors import GeocloudError, InputError, SensorError
from geocloud.vendor import (
    ArchiveError,
    ExtractLimits,
    datetime_from_filename,
    earth_sun_distance,
    find_rpb,
    find_vendor_metadata,
    lookup_calibration,
    open_delivery,
    orthorectify,
    parse_metadata_xml,
    parse_rpb,
    read_rpb,
    safe_extract,
    solar_position,
)

GF1_WFV_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<ProductMetaData>
    <SatelliteID>GF1</SatelliteID>
    <SensorID>WFV2</SensorID>
    <ReceiveTime>2021-07-02 03:10:00</ReceiveTime>
    <OrbitID>12345</OrbitID>
    <ProduceType>STANDARD</ProduceType>
    <SceneID>111</SceneID>
    <ProductID>2222222</ProductID>
    <ProductLevel>LEVEL1A</ProductLevel>
    <ProductFormat>GEOTIFF</ProductFormat>
    <Bands>1,2,3,4</Bands>
    <StartTime>2021-07-02 11:09:45</StartTime>
    <EndTime>2021-07-02 11:10:15</EndTime>
    <CenterTime>2021-07-02 11:10:00</CenterTime>
    <ImageGSD>16</ImageGSD>
    <WidthInPixels>64</WidthInPixels>
    <HeightInPixels>48</HeightInPixels>
    <WidthInMeters />
    <CloudPercent>12</CloudPercent>
    <SolarAzimuth>{az:.3f}</SolarAzimuth>
    <SolarZenith>{zen:.4f}</SolarZenith>
    <SatelliteAzimuth>100.0</SatelliteAzimuth>
    <SatelliteZenith>85.0</SatelliteZenith>
    <TopLeftLatitude>30.60</TopLeftLatitude>
    <TopLeftLongitude>113.90</TopLeftLongitude>
    <TopRightLatitude>30.55</TopRightLatitude>
    <TopRightLongitude>114.60</TopRightLongitude>
    <BottomRightLatitude>29.95</BottomRightLatitude>
    <BottomRightLongitude>114.50</BottomRightLongitude>
    <BottomLeftLatitude>30.00</BottomLeftLatitude>
    <BottomLeftLongitude>113.80</BottomLeftLongitude>
    <TopLeftMapX />
</ProductMetaData>
"""

ZY3_XML = """<?xml version="1.0" encoding="UTF-8"?>
<sensor_corrected_metadata>
  <productComponents><metaDataFile>ZY3_MUX_E116.3_N39.9_20130412_L1A0001234567.xml</metaDataFile></productComponents>
  <ProductInfo>
    <SatelliteID>ZY3</SatelliteID>
    <SensorID>MUX</SensorID>
    <ProductID>1234567</ProductID>
    <ProductLevel>SC</ProductLevel>
    <CenterTime>2013-04-12 11:02:30</CenterTime>
    <SolarAzimuth>160.5</SolarAzimuth>
    <SolarZenith>35.2</SolarZenith>
    <CloudPercent>99</CloudPercent>
    <Bands>1,2,3,4</Bands>
    <TopLeftLatitude>40.2</TopLeftLatitude><TopLeftLongitude>116.0</TopLeftLongitude>
    <TopRightLatitude>40.2</TopRightLatitude><TopRightLongitude>116.6</TopRightLongitude>
    <BottomRightLatitude>39.6</BottomRightLatitude><BottomRightLongitude>116.6</BottomRightLongitude>
    <BottomLeftLatitude>39.6</BottomLeftLatitude><BottomLeftLongitude>116.0</BottomLeftLongitude>
  </ProductInfo>
  <imageInfo><CenterTime>1999-01-01 00:00:00</CenterTime></imageInfo>
</sensor_corrected_metadata>
"""

STEM = "GF1_WFV2_E114.2_N30.3_20210702_L1A0002222222"


def _rpb_text(lat0=30.3, lon0=114.2, rows=48, cols=64, deg_per_px=0.0002) -> str:
    """An RPC00B file for a north-up image: line = -lat_n, samp = lon_n (normalised)."""
    line_num = [0.0] * 20
    line_num[2] = -1.0  # P (latitude) term
    samp_num = [0.0] * 20
    samp_num[1] = 1.0  # L (longitude) term
    den = [1.0] + [0.0] * 19

    def coef(name, vals):
        body = ",\n".join(f"\t\t\t{v:+.15E}" for v in vals)
        return f"\t{name} = (\n{body});\n"

    return (
        'satId = "XXX";\nbandId = "XXX";\nSpecId = "XXX";\nBEGIN_GROUP = IMAGE\n'
        "\terrBias =   1.0;\n\terrRand =    0.0;\n"
        f"\tlineOffset = {rows / 2};\n\tsampOffset = {cols / 2};\n"
        f"\tlatOffset =   {lat0};\n\tlongOffset =  {lon0};\n\theightOffset = 0.0;\n"
        f"\tlineScale = {rows / 2};\n\tsampScale = {cols / 2};\n"
        f"\tlatScale =    {deg_per_px * rows / 2};\n\tlongScale =    {deg_per_px * cols / 2};\n"
        "\theightScale = 500.0;\n"
        + coef("lineNumCoef", line_num)
        + coef("lineDenCoef", den)
        + coef("sampNumCoef", samp_num)
        + coef("sampDenCoef", den)
        + "END_GROUP = IMAGE\nEND;\n"
    )


def _wfv_xml() -> str:
    when = datetime(2021, 7, 2, 3, 10, tzinfo=UTC)  # 11:10 Beijing time
    zen, az = solar_position(when, 30.275, 114.2)
    return GF1_WFV_XML.format(zen=zen, az=az)


def _write_delivery(folder: Path, with_rpb=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tif = folder / f"{STEM}.tiff"
    data = (np.arange(4 * 48 * 64, dtype=np.uint16).reshape(4, 48, 64) % 1000) + 1
    # L1A: no geotransform, only RPCs (GDAL reads the .rpb sidecar).
    with rasterio.open(
        tif, "w", driver="GTiff", width=64, height=48, count=4, dtype="uint16", nodata=0
    ) as ds:
        ds.write(data)
    (folder / f"{STEM}.xml").write_text(_wfv_xml())
    if with_rpb:
        (folder / f"{STEM}.rpb").write_text(_rpb_text())
    (folder / f"{STEM}_thumb.jpg").write_bytes(b"\xff\xd8\xff")
    return tif


# --------------------------------------------------------------------- metadata


def test_gf1_xml_fields_and_beijing_time(tmp_path):
    p = tmp_path / f"{STEM}.xml"
    p.write_text(_wfv_xml())
    m = parse_metadata_xml(p)
    assert (m.satellite, m.sensor, m.profile) == ("GF1", "WFV2", "gf1_wfv")
    assert m.acquired == datetime(2021, 7, 2, 3, 10, tzinfo=UTC)  # CenterTime is BJT = UTC+8
    assert m.cloud_percent == 12
    assert m.bands == (1, 2, 3, 4)
    assert (m.width, m.height) == (64, 48)
    assert len(m.corners) == 4
    lon, lat = m.center
    assert 113.8 < lon < 114.6 and 29.9 < lat < 30.6
    # the XML's sun zenith agrees with the sun position at the UTC time
    zen, _ = solar_position(m.acquired, lat, lon)
    assert abs(zen - m.sun_zenith) < 0.5
    assert m.sun_elevation == pytest.approx(90 - m.sun_zenith)


def test_zy3_sensor_corrected_metadata(tmp_path):
    p = tmp_path / "ZY3_MUX_E116.3_N39.9_20130412_L1A0001234567.xml"
    p.write_text(ZY3_XML)
    m = parse_metadata_xml(p)
    assert (m.satellite, m.sensor, m.profile) == ("ZY3", "MUX", "zy3_mux")
    # ProductInfo wins over other sections
    assert m.acquired == datetime(2013, 4, 12, 3, 2, 30, tzinfo=UTC)
    assert m.sun_elevation == pytest.approx(54.8)
    assert m.cloud_percent is None  # 99 means "not available"
    cal = m.calibration  # ZY3-01's own 2013 table: one source only, so approximate
    assert cal is not None and (cal.satellite, cal.epoch, cal.use) == ("ZY301", 2013, "exact") and cal.approximate


def test_bad_xml_is_a_clear_error(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text("<Other><a>1</a></Other>")
    with pytest.raises(InputError, match="ProductMetaData"):
        parse_metadata_xml(p)
    p.write_text("<ProductMetaData><SatelliteID>GF1")
    with pytest.raises(InputError, match="cannot be parsed"):
        parse_metadata_xml(p)


def test_find_vendor_metadata_same_stem_and_vendor_naming(tmp_path):
    tif = _write_delivery(tmp_path / "a")
    (tmp_path / "a" / "order.xml").write_text("<InterfaceFile/>")
    m = find_vendor_metadata(tif)
    assert m is not None and m.sensor == "WFV2"
    # PMS naming: MSS raster with the MSS XML, never the PAN one
    b = tmp_path / "b"
    b.mkdir()
    pms = "GF1_PMS1_E69.4_N33.3_20220624_L1A0001111111"
    (b / f"{pms}-PAN1.xml").write_text(
        _wfv_xml().replace("WFV2", "PMS1").replace("<Bands>1,2,3,4", "<Bands>5")
    )
    (b / f"{pms}-MSS1.xml").write_text(_wfv_xml().replace("WFV2", "PMS1"))
    m = find_vendor_metadata(b / f"{pms}-MSS1.tif")
    assert m is not None and m.sensor == "PMS1" and m.bands == (1, 2, 3, 4) and m.profile == "gf1_pms"
    assert find_vendor_metadata(tmp_path / "nothing" / "x.tif") is None


def test_datetime_from_filename():
    assert datetime_from_filename(f"{STEM}.tiff") == datetime(2021, 7, 2, tzinfo=UTC)
    assert datetime_from_filename("S2_20190101T101010_x.tif") == datetime(2019, 1, 1, 10, 10, 10, tzinfo=UTC)
    assert datetime_from_filename("scene.tif") is None


# ------------------------------------------------------------------ calibration


def test_calibration_table_corrected_rows():
    """The three rows the earlier table had wrong, as CRESDA published them."""
    pms1 = lookup_calibration("GF1", "PMS1", 2016)  # was the 2016 row shifted by one band (PAN as blue)
    assert pms1.gains == (0.2320, 0.1870, 0.1795, 0.1960) and pms1.status == "confirmed"
    pms2 = lookup_calibration("GF1", "PMS2", 2013)  # was the 2016 table; 2013 carries large offsets
    assert pms2.gains == (0.2072, 0.1776, 0.1770, 0.1909)
    assert pms2.offsets == (7.5348, 3.9395, -1.7445, -7.2053)
    assert lookup_calibration("GF1", "WFV2", 2013).gains == (0.1663, 0.1466, 0.1058, 0.1112)
    assert lookup_calibration("GF1", "WFV3", 2013).gains == (0.1718, 0.1603, 0.1427, 0.1297)
    assert lookup_calibration("GF1", "WFV1", 2013).gains[0] == pytest.approx(1 / 5.851, rel=1e-3)


def test_every_table_row_resolves_exactly():
    from geocloud.vendor import CALIBRATIONS

    sats = {c.satellite for epochs in CALIBRATIONS.values() for c in epochs}
    assert {"GF1", "GF1B", "GF1C", "GF1D", "GF2", "GF6", "ZY301", "ZY302", "ZY303"} <= sats
    n = 0
    for (sat, sensor), epochs in CALIBRATIONS.items():
        for cal in epochs:
            got = lookup_calibration(sat, sensor, cal.epoch)
            assert got is not None and got.epoch == cal.epoch and got.use == "exact", (sat, sensor, cal.epoch)
            assert got.approximate == (cal.status != "confirmed")
            assert all(0.02 < g < 0.4 for g in got.gains) and all(1000 < e < 2100 for e in got.esun)
            n += 1
    assert n >= 110
    # satellite and sensor spellings of the deliveries
    assert lookup_calibration("ZY3-01", "MUX", 2013).satellite == "ZY301"
    assert lookup_calibration("GF1B", "PMS1", 2020).sensor == "PMS"  # no per-camera split in the table
    assert lookup_calibration("GF4", "PMS", 2020) is None


def test_calibration_years_between_and_after_epochs_are_flagged():
    last = lookup_calibration("GF1", "WFV2", 2030)
    assert last.epoch == 2023 and last.use == "carried forward" and last.approximate
    assert "2023 table used for 2030" in last.note
    assert "approximate" in last.describe()
    gap = lookup_calibration("ZY302", "MUX", 2019)  # between the 2017 and 2020 tables
    assert gap.epoch == 2017 and gap.approximate
    early = lookup_calibration("GF6", "WFV", 2016)
    assert early.epoch == 2018 and early.use == "earliest" and early.approximate
    exact = lookup_calibration("GF2", "PMS1", 2020)
    assert exact.use == "exact" and not exact.approximate
    assert exact.describe() == "CRESDA GF2 PMS1 2020 (exact; confirmed)"
    assert lookup_calibration("GF1", "WFV1", 2019).status == "unresolved"  # zhao and snowy differ


def test_dn_reflectance_round_trip_with_every_table():
    from geocloud.sensors import Radiometry, toa_coefficients
    from geocloud.vendor import CALIBRATIONS

    dn = np.array([[1.0, 250.0, 1023.0, 4095.0]] * 4, dtype=np.float32)
    for epochs in CALIBRATIONS.values():
        cal = epochs[-1]
        a, b = toa_coefficients(cal.gains, cal.offsets, cal.esun, 45.0, datetime(2020, 6, 1, tzinfo=UTC))
        r = Radiometry("x", (1, 2, 3, 4), a, b, "table")
        back = r.to_dn(r.to_reflectance(dn))
        np.testing.assert_allclose(back, dn, rtol=1e-5, atol=1e-2)


def test_calibration_epochs_and_toa_formula(tmp_path):
    assert lookup_calibration("GF1", "WFV2", 2020).epoch == 2020
    assert not lookup_calibration("GF1", "WFV2", 2020).approximate
    assert lookup_calibration("GF1", "WFV2", 2024).approximate  # nearest earlier epoch
    p = tmp_path / f"{STEM}.xml"
    p.write_text(_wfv_xml())
    m = parse_metadata_xml(p)
    scale, offset = m.toa_scale_offset()
    cal = m.calibration
    d = earth_sun_distance(m.acquired)
    assert 1.015 < d < 1.018  # early July: aphelion
    dn = 500.0
    for b in range(4):
        radiance = cal.gains[b] * dn + cal.offsets[b]
        rho = math.pi * radiance * d * d / (cal.esun[b] * math.cos(math.radians(m.sun_zenith)))
        assert dn * scale[b] + offset[b] == pytest.approx(rho, rel=1e-9)
        assert 0.02 < rho < 0.5  # plausible reflectance for a mid-range 10-bit DN


def test_toa_without_table_is_a_sensor_error(tmp_path):
    p = tmp_path / "GF4_PMS_x.xml"
    p.write_text(_wfv_xml().replace("<SatelliteID>GF1", "<SatelliteID>GF4").replace("WFV2", "PMS"))
    m = parse_metadata_xml(p)
    assert m.profile is None
    with pytest.raises(SensorError, match="no DN->TOA calibration"):
        m.toa_scale_offset()


# --------------------------------------------------------------------------- RPC


def test_parse_rpb_to_rasterio_rpc(tmp_path):
    p = tmp_path / "x.rpb"
    p.write_text(_rpb_text())
    rpc = read_rpb(p)
    assert rpc.lat_off == pytest.approx(30.3) and rpc.samp_scale == 32
    assert len(rpc.line_num_coeff) == 20 and rpc.line_num_coeff[2] == -1
    assert float(rpc.to_gdal()["LINE_OFF"]) == 24
    with pytest.raises(InputError, match="lineNumCoef"):
        parse_rpb(_rpb_text().replace("lineNumCoef", "bogus"))


def test_gdal_reads_the_rpb_sidecar_and_ortho_warps(tmp_path):
    tif = _write_delivery(tmp_path / "d")
    assert find_rpb(tif) is not None
    with rasterio.open(tif) as ds:
        assert ds.rpcs is not None  # GDAL picks the .rpb up; outputs copied from it keep RPCs
        assert ds.rpcs.lat_off == pytest.approx(30.3)
    out = orthorectify(
        tif, tmp_path / "ortho.tif", dst_crs="EPSG:4326", resolution=0.0002, resampling="nearest"
    )
    with rasterio.open(out) as o, rasterio.open(tif) as src:
        assert o.crs.to_epsg() == 4326
        left, bottom, right, top = o.bounds
        assert left == pytest.approx(114.2 - 32 * 0.0002, abs=3e-4)
        assert top == pytest.approx(30.3 + 24 * 0.0002, abs=3e-4)
        assert (o.width, o.height) == pytest.approx((64, 48), abs=2)
        # the RPC is a north-up identity, so nearest-neighbour ortho reproduces the pixels
        a = o.read(1)
        b = src.read(1)
        h, w = min(a.shape[0], 48), min(a.shape[1], 64)
        assert np.mean(a[1 : h - 1, 1 : w - 1] == b[1 : h - 1, 1 : w - 1]) > 0.95


def test_ortho_without_rpcs_names_the_fix(tmp_path):
    tif = tmp_path / "plain.tif"
    with rasterio.open(
        tif,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="uint8",
        crs="EPSG:4326",
        transform=Affine(0.1, 0, 0, 0, -0.1, 0),
    ) as ds:
        ds.write(np.ones((1, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"\.rpb"):
        orthorectify(tif, tmp_path / "o.tif")


# ----------------------------------------------------------------------- archives


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


@pytest.mark.parametrize(
    "name,kind,link,match",
    [
        ("../evil.txt", tarfile.REGTYPE, "", "outside"),
        ("ok/../../evil.txt", tarfile.REGTYPE, "", "outside"),
        ("/etc/evil.txt", tarfile.REGTYPE, "", "absolute"),
        ("link", tarfile.SYMTYPE, "/etc/passwd", "link"),
        ("link", tarfile.SYMTYPE, "../../outside", "link"),
        ("hard", tarfile.LNKTYPE, "../x", "link"),
        ("dev", tarfile.CHRTYPE, "", "device"),
    ],
)
def test_tar_traversal_and_links_refused(tmp_path, name, kind, link, match):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    arc = _tar(tmp_path / "bad.tar.gz", [(info, b"x" if kind == tarfile.REGTYPE else None)])
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match=match) as e:
        safe_extract(arc, dest)
    assert isinstance(e.value, GeocloudError)
    assert not (tmp_path / "evil.txt").exists()
    assert not dest.exists() or not any(dest.iterdir())  # nothing written


def test_tar_size_limits(tmp_path):
    arc = _tar(
        tmp_path / "big.tar.gz",
        [(tarfile.TarInfo("a.bin"), b"0" * 1000), (tarfile.TarInfo("b.bin"), b"0" * 1000)],
    )
    with pytest.raises(ArchiveError, match="per member"):
        safe_extract(arc, tmp_path / "o1", ExtractLimits(max_member_bytes=500))
    with pytest.raises(ArchiveError, match="unpacks to more than"):
        safe_extract(arc, tmp_path / "o2", ExtractLimits(max_total_bytes=1500))
    with pytest.raises(ArchiveError, match="members"):
        safe_extract(arc, tmp_path / "o3", ExtractLimits(max_members=1))
    safe_extract(arc, tmp_path / "o4")
    assert (tmp_path / "o4" / "b.bin").stat().st_size == 1000


def test_not_a_tar(tmp_path):
    p = tmp_path / "x.tar.gz"
    p.write_bytes(b"not a tar")
    with pytest.raises(ArchiveError, match="not a readable tar"):
        safe_extract(p, tmp_path / "o")


def test_open_delivery_folder_and_targz(tmp_path):
    folder = tmp_path / STEM
    _write_delivery(folder)
    d = open_delivery(folder)
    assert d.raster.name == f"{STEM}.tiff" and d.metadata.sensor == "WFV2" and d.rpb is not None
    arc = tmp_path / f"{STEM}.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for p in sorted(folder.iterdir()):
            tf.add(p, arcname=p.name)
    d2 = open_delivery(arc, workdir=tmp_path / "work")
    assert d2.raster.parent.parent == tmp_path / "work"
    assert d2.metadata.acquired == d.metadata.acquired
    with rasterio.open(d2.raster) as ds:
        assert ds.rpcs is not None and ds.count == 4
    with pytest.raises(InputError, match="no multispectral GeoTIFF"):
        empty = tmp_path / "empty"
        empty.mkdir()
        open_delivery(empty)


def test_real_vendor_xml_when_available(shared_data):
    """The real GF-1 deliveries in ../shared/data parse, and their time is UTC+8."""
    xmls = sorted((shared_data / "gf_products" / "GAOFEN-1").rglob("*.xml"))
    if not xmls:
        pytest.skip("no GF-1 XML in shared data")
    for x in xmls:
        m = parse_metadata_xml(x)
        assert m.satellite == "GF1" and m.profile in ("gf1_wfv", "gf1_pms")
        lon, lat = m.center
        zen, _ = solar_position(m.acquired, lat, lon)
        assert abs(zen - m.sun_zenith) < 1.0
    for r in sorted((shared_data / "gf_products" / "GAOFEN-1").rglob("*.rpb")):
        assert read_rpb(r).line_scale > 0


def test_cli_ortho_warps_rpc_outputs(tmp_path):
    """geocloud process --ortho: detection in sensor geometry, raster outputs warped to UTM as COGs."""
    import warnings

    from click.testing import CliRunner
    from geocloud.cli.main import cli

    from geocloud.synthetic import make_scene

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = make_scene(tmp_path / "GF1_WFV1_x_20200523_L1A01.tif", 200, 160, seed=2, georef="rpc",
                           vendor_xml=True, write_truth=False, blocksize=32)  # fmt: skip
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["process", str(scene), "-o", str(out), "--products", "mask,score,stats", "--ortho",
                                 "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    for name, dtype in (("mask", "uint8"), ("score", "float32")):
        with rasterio.open(out / f"{scene.stem}_{name}.tif") as ds:
            assert ds.crs.to_epsg() == 32650  # UTM zone of 117E
            assert ds.dtypes[0] == dtype and ds.tags()["GEOCLOUD_ORTHO"] == "RPC"
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert 15 < ds.res[0] < 17
    with rasterio.open(out / f"{scene.stem}_mask.tif") as ds:
        assert set(np.unique(ds.read(1))) <= {0, 1, 255}


@pytest.mark.parametrize(
    ("satellite", "sensor", "profile", "table"),
    [
        ("GF1C", "PMS", "gf1_pms", "GF1C PMS 2021"),
        ("GF2", "PMS2", "gf2_pms", "GF2 PMS2 2021"),
        ("GF6", "WFV", "gf6_wfv", "GF6 WFV 2021"),
        ("GF6", "PMS", "gf6_pms", "GF6 PMS 2021"),
        ("ZY303", "MUX", "zy3_mux", "ZY303 MUX 2020"),
    ],
)
def test_vendor_xml_of_the_other_satellites(tmp_path, satellite, sensor, profile, table):
    p = tmp_path / f"{satellite}_{sensor}_x.xml"
    p.write_text(_wfv_xml().replace("<SatelliteID>GF1", f"<SatelliteID>{satellite}").replace("WFV2", sensor))
    m = parse_metadata_xml(p)
    assert m.profile == profile
    assert table in m.calibration.describe()  # acquired 2021: that year's table, or the latest before it
    assert m.as_dict()["calibration"]["table"] == m.calibration.describe()


def test_gf6_wfv_8_band_delivery_uses_bands_1_to_4(tmp_path):
    """GF-6 WFV carries 8 bands; blue, green, red, nir are 1-4, and the scene's year picks the table."""
    import json

    from click.testing import CliRunner
    from geocloud.cli.main import cli

    stem = "GF6_WFV_E114.2_N30.3_20210702_L1A1120000001"
    tif = tmp_path / f"{stem}.tif"
    rng = np.random.default_rng(0)
    data = rng.integers(200, 900, (8, 96, 96)).astype(np.uint16)
    data[4:] = 4000  # the red-edge, purple and yellow bands must not be read as blue..nir
    with rasterio.open(tif, "w", driver="GTiff", width=96, height=96, count=8, dtype="uint16", nodata=0,
                       crs="EPSG:32650", transform=Affine(16, 0, 500000, 0, -16, 3350000)) as ds:  # fmt: skip
        ds.write(data)
    xml = _wfv_xml().replace("<SatelliteID>GF1", "<SatelliteID>GF6").replace("WFV2", "WFV")
    (tmp_path / f"{stem}.xml").write_text(xml.replace("<Bands>1,2,3,4</Bands>", "<Bands>1,2,3,4,5,6,7,8</Bands>"))
    r = CliRunner().invoke(cli, ["info", str(tif), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["sensor"] == "gf6_wfv" and d["bands_used"] == {"blue": 1, "green": 2, "red": 3, "nir": 4}
    assert d["calibration_table"] == "CRESDA GF6 WFV 2021 (exact; confirmed)"
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["process", str(tif), "-o", str(out), "--model", "spectral",
                                 "--products", "mask,stats", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    with rasterio.open(out / f"{stem}_mask.tif") as ds:
        assert ds.tags()["GEOCLOUD_CALIBRATION"] == "CRESDA GF6 WFV 2021 (exact; confirmed)"
    stats = json.loads((out / f"{stem}_stats.json").read_text())
    assert stats["sensor"]["calibration"] == "CRESDA GF6 WFV 2021 (exact; confirmed)"
    assert stats["sensor"]["approximate"] is False
