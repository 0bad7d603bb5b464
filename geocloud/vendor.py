"""Vendor deliveries of GaoFen-1 WFV/PMS and ZiYuan-3 MUX scenes.

A delivery is a folder or a ``.tar.gz`` holding the GeoTIFF (often ``.tiff``), an XML
metadata file and an RPC00B ``.rpb`` file, e.g.::

    GF1_WFV3_E89.0_N23.9_20200523_L1A0004819525.tiff / .xml / .rpb
    GF1_PMS1_E69.4_N33.3_20220624_L1A0006547030-MSS1.tiff / .xml / .rpb
    ZY3_MUX_E116.5_N39.9_20130412_L1A0001234567.tif / .xml / .rpb

This module reads those pieces, never the pixels:

* :func:`parse_metadata_xml` reads GF ``<ProductMetaData>`` and ZY-3
  ``<sensor_corrected_metadata>`` (fields under ``ProductInfo``) into a
  :class:`VendorMetadata`: satellite, sensor, acquisition time in UTC, sun geometry,
  the vendor's ``CloudPercent``, corners and bands.
* :func:`find_vendor_metadata` finds that XML beside a scene (used by sensor detection).
* :class:`Calibration` holds the published DN -> radiance gains/offsets and the band
  solar irradiance (ESUN) for the sensor and year; :meth:`VendorMetadata.toa_scale_offset`
  folds them with the sun geometry into ``reflectance = DN * scale + offset`` per band.
* :func:`read_rpb` parses ``.rpb`` into :class:`rasterio.rpc.RPC`;
  :func:`orthorectify` warps a scene with its RPCs.
* :func:`safe_extract` unpacks a tar archive refusing traversal, links and oversize members;
  :func:`open_delivery` turns a folder or archive into a :class:`Delivery`.

Times: GF ``CenterTime``/``StartTime`` are Beijing time (UTC+8; the vendor order files say
``<TimeStandard>BJTime``, and ``ReceiveTime`` is exactly 8 h earlier). They are converted
to UTC here. The solar zenith of the real GF-1 deliveries agrees with the solar position
computed at that UTC time and the scene centre (tests check this on our fixtures).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .errors import GeocloudError, InputError, NotARasterError, SceneNotFoundError
from .sensors import earth_sun_distance as earth_sun_distance  # re-exported
from .sensors import toa_coefficients  # one home for the radiometric formulas

log = logging.getLogger(__name__)

#: Offset of the vendor's local time standard (Beijing time) from UTC.
BEIJING_UTC_OFFSET = timedelta(hours=8)

#: File suffixes of the pixel files of a delivery.
RASTER_SUFFIXES = (".tif", ".tiff")


class ArchiveError(GeocloudError, ValueError):
    """A delivery archive is unsafe (path traversal, links, too large) or unreadable."""


# --------------------------------------------------------------------------------------
# Calibration tables
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """DN -> TOA radiance (W m-2 sr-1 um-1) as ``L = gain * DN + offset``, and ESUN.

    One row of the package table ``geocloud/data/cresda_calibration.csv`` (CRESDA's yearly
    absolute calibration coefficients; see docs/archives.md).  Bands are blue, green, red,
    nir.  ``status`` is the row's provenance: ``confirmed`` (two or more independent
    transcriptions agree), ``single_source``, or ``unresolved`` (sources disagree, the
    row's note says how).  ``use`` says how it serves the scene asked for: ``exact`` (the
    acquisition year's table), ``carried forward`` (the nearest earlier year's) or
    ``earliest`` (before the first epoch).  ``approximate`` is True unless the table is
    exact and confirmed.
    """

    satellite: str
    sensor: str
    epoch: int
    gains: tuple[float, float, float, float]
    offsets: tuple[float, float, float, float]
    esun: tuple[float, float, float, float]
    source: str
    status: str = "confirmed"
    use: str = "exact"
    note: str = ""

    @property
    def approximate(self) -> bool:
        return self.use != "exact" or self.status != "confirmed"

    def describe(self) -> str:
        """One line for stats, tags and ``geocloud info``: which table, and how it applies."""
        how = self.use if self.use == "exact" else f"{self.use}, approximate"
        return f"CRESDA {self.satellite} {self.sensor} {self.epoch} ({how}; {self.status.replace('_', ' ')})"


#: the package table of CRESDA calibration coefficients (one row per satellite, sensor, year).
CALIBRATION_TABLE = Path(__file__).parent / "data" / "cresda_calibration.csv"
CALIBRATION_STATUSES = ("confirmed", "single_source", "unresolved")


def load_calibrations(path: str | os.PathLike[str] = CALIBRATION_TABLE) -> dict[tuple[str, str], tuple[Calibration, ...]]:
    """Read the calibration table: ``(satellite, sensor) -> epochs, oldest first``."""
    import csv

    table: dict[tuple[str, str], list[Calibration]] = {}
    bands = ("blue", "green", "red", "nir")
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                status = row["status"]
                if status not in CALIBRATION_STATUSES:
                    raise ValueError(f"status {status!r} is not one of {', '.join(CALIBRATION_STATUSES)}")
                cal = Calibration(
                    satellite=row["satellite"],
                    sensor=row["sensor"],
                    epoch=int(row["year"]),
                    gains=tuple(float(row[f"gain_{b}"]) for b in bands),  # type: ignore[arg-type]
                    offsets=tuple(float(row[f"offset_{b}"]) for b in bands),  # type: ignore[arg-type]
                    esun=tuple(float(row[f"esun_{b}"]) for b in bands),  # type: ignore[arg-type]
                    source=f"CRESDA absolute calibration {row['year']}, as transcribed by {row['sources']}",
                    status=status,
                    note=row.get("note") or "",
                )
            except (KeyError, ValueError) as exc:
                raise GeocloudError(f"calibration table {path} line {i} is malformed ({exc}); fix the row") from exc
            table.setdefault((cal.satellite, cal.sensor), []).append(cal)
    return {k: tuple(sorted(v, key=lambda c: c.epoch)) for k, v in table.items()}


#: (satellite, sensor) -> calibration epochs, oldest first.  See docs/archives.md.
CALIBRATIONS: dict[tuple[str, str], tuple[Calibration, ...]] = load_calibrations()


def lookup_calibration(satellite: str, sensor: str, year: int) -> Calibration | None:
    """The table for ``satellite``/``sensor`` of ``year``, or of the latest year before it.

    Before the first epoch the first one is used (``use="earliest"``).  A sensor named
    with a camera number the table does not split (GF-1B ``PMS1``) falls back to the
    sensor without it (``PMS``).  None when the table has nothing for the pair.
    """
    from dataclasses import replace

    sat = _norm_satellite(satellite)
    sen = sensor.upper().replace("-", "").replace("_", "")
    epochs = CALIBRATIONS.get((sat, sen)) or CALIBRATIONS.get((sat, sen.rstrip("0123456789")))
    if not epochs:
        return None
    earlier = [c for c in epochs if c.epoch <= year]
    if not earlier:
        return replace(epochs[0], use="earliest", note=_join(epochs[0].note, f"no table before {epochs[0].epoch}; used for {year}"))
    chosen = earlier[-1]
    if chosen.epoch == year:
        return chosen
    return replace(chosen, use="carried forward", note=_join(chosen.note, f"the {chosen.epoch} table used for {year}"))


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def _norm_satellite(sat: str) -> str:
    s = sat.upper().replace("-", "").replace("_", "")
    if s in ("ZY301", "ZY31", "ZY3", "ZY3A"):
        return "ZY301"
    if s in ("ZY302", "ZY32"):
        return "ZY302"
    if s in ("ZY303", "ZY33"):
        return "ZY303"
    return s


# --------------------------------------------------------------------------------------
# Sun geometry
# --------------------------------------------------------------------------------------


def solar_position(when: datetime, lat: float, lon: float) -> tuple[float, float]:
    """Solar (zenith, azimuth) in degrees at a UTC time and place (NOAA equations, ~0.1 deg)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    doy = when.timetuple().tm_yday
    hour = when.hour + when.minute / 60 + when.second / 3600
    g = 2 * math.pi / 365 * (doy - 1 + (hour - 12) / 24)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    tst = hour * 60 + eqtime + 4 * lon
    ha = math.radians(tst / 4 - 180)
    phi = math.radians(lat)
    cosz = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.acos(max(-1.0, min(1.0, cosz)))
    sinz = math.sin(zen)
    if sinz < 1e-9:
        return math.degrees(zen), 180.0
    cos_az = (math.sin(decl) - math.sin(phi) * cosz) / (math.cos(phi) * sinz)
    az = math.degrees(math.acos(max(-1.0, min(1.0, cos_az))))
    if ha > 0:
        az = 360 - az
    return math.degrees(zen), az


# --------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------

#: (satellite prefix, sensor id prefix) -> geocloud sensor profile name (first match wins;
#: GF-1B/C/D are GF1 prefixes, ZY3-01/02/03 ZY3 ones).
PROFILE_BY_SENSOR: tuple[tuple[str, str, str], ...] = (
    ("GF1", "WFV", "gf1_wfv"),
    ("GF1", "PMS", "gf1_pms"),
    ("GF2", "PMS", "gf2_pms"),
    ("GF6", "WFV", "gf6_wfv"),
    ("GF6", "PMS", "gf6_pms"),
    ("ZY3", "MUX", "zy3_mux"),
)


@dataclass(frozen=True)
class VendorMetadata:
    """What a vendor XML says about a scene."""

    path: Path
    satellite: str
    sensor: str
    profile: str | None
    acquired: datetime | None
    sun_zenith: float | None
    sun_azimuth: float | None
    cloud_percent: float | None
    #: (lon, lat) of the corners TL, TR, BR, BL, when given.
    corners: tuple[tuple[float, float], ...] = ()
    bands: tuple[int, ...] = ()
    width: int | None = None
    height: int | None = None
    product_id: str | None = None
    level: str | None = None
    gsd: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def sun_elevation(self) -> float | None:
        """Sun elevation in degrees (90 - zenith)."""
        return None if self.sun_zenith is None else 90.0 - self.sun_zenith

    @property
    def center(self) -> tuple[float, float] | None:
        """(lon, lat) of the scene centre, the mean of the corners."""
        if not self.corners:
            return None
        return (
            sum(c[0] for c in self.corners) / len(self.corners),
            sum(c[1] for c in self.corners) / len(self.corners),
        )

    @property
    def calibration(self) -> Calibration | None:
        if self.acquired is None:
            return None
        return lookup_calibration(self.satellite, self.sensor, self.acquired.year)

    # The attributes geocloud.sensors.resolve_radiometry reads from vendor metadata.
    @property
    def gains(self) -> tuple[float, ...] | None:
        """Published DN->radiance gains (blue, green, red, nir) for this sensor and year."""
        cal = self.calibration
        return None if cal is None else cal.gains

    @property
    def biases(self) -> tuple[float, ...] | None:
        cal = self.calibration
        return None if cal is None else cal.offsets

    @property
    def esun(self) -> tuple[float, ...] | None:
        cal = self.calibration
        return None if cal is None else cal.esun

    def toa_scale_offset(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-band (scale, offset) with ``TOA reflectance = DN * scale + offset``.

        ``rho = pi * d^2 * (gain * DN + offset) / (ESUN * cos(sun zenith))``.
        Raises :class:`~geocloud.errors.SensorError` when the table, the date or the sun
        zenith is missing.
        """
        from .errors import SensorError

        cal = self.calibration
        if cal is None:
            raise SensorError(
                f"no DN->TOA calibration for satellite {self.satellite!r} sensor {self.sensor!r} "
                f"acquired {self.acquired}; known: {', '.join('/'.join(k) for k in sorted(CALIBRATIONS))}. "
                "Pass --sensor with a reflectance scale instead"
            )
        zen = self.sun_zenith
        if zen is None and self.acquired is not None and self.center is not None:
            zen = solar_position(self.acquired, self.center[1], self.center[0])[0]
        if zen is None or zen >= 89.0:
            raise SensorError(
                f"sun zenith {zen} in {self.path} is missing or the sun is below the horizon; "
                "TOA reflectance is undefined. Pass --sensor with a reflectance scale instead"
            )
        return toa_coefficients(cal.gains, cal.offsets, cal.esun, 90.0 - zen, self.acquired)

    def as_dict(self) -> dict[str, object]:
        """A JSON-able summary (for stats and catalogue rows)."""
        cal = self.calibration
        return {
            "satellite": self.satellite,
            "sensor": self.sensor,
            "profile": self.profile,
            "acquired": self.acquired.isoformat() if self.acquired else None,
            "sun_elevation": self.sun_elevation,
            "sun_azimuth": self.sun_azimuth,
            "vendor_cloud_percent": self.cloud_percent,
            "calibration": None
            if cal is None
            else {
                "table": cal.describe(),
                "satellite": cal.satellite,
                "sensor": cal.sensor,
                "epoch": cal.epoch,
                "use": cal.use,
                "status": cal.status,
                "approximate": cal.approximate,
                "source": cal.source,
                "note": cal.note,
            },
        }


def _text(el: ET.Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    t = el.text.strip()
    return t or None


def _float(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        return float(s)
    except ValueError:
        return None


def _parse_time(s: str | None, utc_offset: timedelta) -> datetime | None:
    if not s:
        return None
    s = s.strip().replace("T", " ").rstrip("Z")
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y%m%d%H%M%S", "%Y:%m:%d %H:%M:%S"):
        try:
            dt = datetime.strptime(s, fmt)
        except ValueError:
            continue
        return (dt - utc_offset).replace(tzinfo=UTC)
    return None


class _Fields:
    """Case-insensitive lookup of leaf elements, preferring a section."""

    def __init__(self, root: ET.Element, prefer: str | None = None):
        self.first: dict[str, ET.Element] = {}
        sections = []
        if prefer is not None:
            sections = [e for e in root.iter() if _local(e.tag).lower() == prefer.lower()]
        for scope in [*sections, root]:
            for e in scope.iter():
                self.first.setdefault(_local(e.tag).lower(), e)

    def get(self, *names: str) -> str | None:
        for n in names:
            v = _text(self.first.get(n.lower()))
            if v is not None:
                return v
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_metadata_xml(path: str | os.PathLike[str], data: bytes | None = None) -> VendorMetadata:
    """Parse a GF ``<ProductMetaData>`` or ZY-3 ``<sensor_corrected_metadata>`` file."""
    path = Path(path)
    try:
        root = ET.fromstring(data) if data is not None else ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(
            f"vendor metadata {path} cannot be parsed as XML ({exc}); "
            "pass the scene's own .xml, or remove the broken file"
        ) from exc
    kind = _local(root.tag)
    if kind == "ProductMetaData":
        f = _Fields(root)
        time_offset = BEIJING_UTC_OFFSET
    elif kind.lower() == "sensor_corrected_metadata":
        f = _Fields(root, prefer="ProductInfo")
        time_offset = (
            BEIJING_UTC_OFFSET
            if (f.get("TimeStandard") or "BJTime").lower().startswith("bj")
            else timedelta(0)
        )
    else:
        raise InputError(
            f"vendor metadata {path} has root <{kind}>; expected <ProductMetaData> (GF-1) or "
            "<sensor_corrected_metadata> (ZY-3)"
        )
    satellite = f.get("SatelliteID", "Satellite") or ""
    sensor = f.get("SensorID", "Sensor") or ""
    if not satellite or not sensor:
        raise InputError(
            f"vendor metadata {path} names no SatelliteID/SensorID; is it a GF-1/ZY-3 product XML?"
        )
    profile = None
    sat_n = _norm_satellite(satellite)
    for sat_prefix, sensor_prefix, name in PROFILE_BY_SENSOR:
        if sat_n.startswith(sat_prefix) and sensor.upper().startswith(sensor_prefix):
            profile = name
            break
    acquired = _parse_time(
        f.get("CenterTime", "SceneCenterTime", "ImagingTime", "imagingTime", "StartTime"), time_offset
    )
    zen = _float(f.get("SolarZenith", "SunZenith"))
    if zen is None:
        elev = _float(f.get("SolarElevation", "SunElevation"))
        zen = None if elev is None else 90.0 - elev
    az = _float(f.get("SolarAzimuth", "SunAzimuth"))
    corners: list[tuple[float, float]] = []
    for c in ("TopLeft", "TopRight", "BottomRight", "BottomLeft"):
        lon = _float(f.get(f"{c}Longitude"))
        lat = _float(f.get(f"{c}Latitude"))
        if lon is not None and lat is not None:
            corners.append((lon, lat))
    if len(corners) != 4:
        corners = []
    bands_s = f.get("Bands") or ""
    bands = tuple(int(b) for b in re.findall(r"\d+", bands_s))
    width = _float(f.get("WidthInPixels", "ImageWidth"))
    height = _float(f.get("HeightInPixels", "ImageHeight"))
    cloud = _float(f.get("CloudPercent", "CloudCoverage", "CloudCover"))
    if cloud is not None and cloud >= 99:  # the vendor's "not available"
        cloud = None
    return VendorMetadata(
        path=path,
        satellite=satellite,
        sensor=sensor,
        profile=profile,
        acquired=acquired,
        sun_zenith=zen,
        sun_azimuth=az,
        cloud_percent=cloud,
        corners=tuple(corners),
        bands=bands,
        width=None if width is None else int(width),
        height=None if height is None else int(height),
        product_id=f.get("ProductID"),
        level=f.get("ProductLevel"),
        gsd=_float(f.get("ImageGSD")),
        extra={"root": kind, "receive_time": f.get("ReceiveTime") or ""},
    )


def _metadata_candidates(scene: Path) -> Iterator[Path]:
    stem = scene.name
    for suf in (*RASTER_SUFFIXES, ".vrt"):
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
    folder = scene.parent
    try:
        entries = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml")
    except OSError:
        return
    exact = [p for p in entries if p.stem.lower() == stem.lower()]
    yield from exact
    # Vendor naming: the product id is the part before '-'; MSS/PAN/MUX parts share it.
    product = stem.split("-")[0].lower()
    part = stem.split("-")[1].lower() if "-" in stem else ""
    for p in entries:
        name = p.name.lower()
        if p in exact or name.startswith("order") or name.endswith((".rpb.xml", ".aux.xml")):
            continue
        if name.startswith(product) and (not part or part in name):
            yield p


def find_vendor_metadata(
    scene_path: str | os.PathLike[str], problems: list[str] | None = None
) -> VendorMetadata | None:
    """The vendor XML beside a scene, parsed; ``None`` when there is none.

    Looks for ``<stem>.xml`` first, then the vendor naming (same product id, same
    MSS/PAN part).  Files that are not GF/ZY-3 metadata are skipped with a log line, and
    a one-line note per skipped file is appended to ``problems`` when it is given (a
    malformed XML then never goes unnoticed).
    """
    scene = Path(scene_path)
    for cand in _metadata_candidates(scene):
        try:
            return parse_metadata_xml(cand)
        except InputError as exc:
            log.debug("skipping %s: %s", cand, exc)
            if problems is not None:
                problems.append(f"vendor XML ignored: {str(exc).splitlines()[0]}")
    return None


_FILENAME_TIME = re.compile(r"(?<!\d)(20\d{2}|19\d{2})(\d{2})(\d{2})(?:[T_]?(\d{2})(\d{2})(\d{2}))?(?!\d)")


def datetime_from_filename(name: str) -> datetime | None:
    """An acquisition date (UTC) from a file name such as ``GF1_WFV3_..._20200523_L1A...``."""
    for m in _FILENAME_TIME.finditer(name):
        y, mo, d, hh, mm, ss = m.groups()
        try:
            return datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=UTC)
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------------------
# RPCs
# --------------------------------------------------------------------------------------

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


def orthorectify(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    *,
    dst_crs: str | None = None,
    resolution: float | None = None,
    rpcs=None,
    dem: str | None = None,
    height: float | None = None,
    resampling: str = "bilinear",
    cog: bool = False,
    progress=None,
) -> Path:
    """Warp a scene with its RPCs onto a map grid, window by window (bounded memory).

    The band descriptions and tags are kept (plus ``GEOCLOUD_ORTHO=RPC``).  ``cog=True``
    writes a Cloud-Optimised GeoTIFF (overviews with ``nearest`` for masks, ``average``
    otherwise).  ``dst_path`` may equal ``src_path``: the result replaces it atomically.

    ``dst_crs`` defaults to the UTM zone of the scene centre; ``resolution`` to the
    native GSD.  ``rpcs`` default to the dataset's own (GDAL reads a sidecar ``.rpb``)
    or the ``.rpb`` beside it.  ``dem`` (a raster path) or ``height`` (metres) refine
    the terrain; without them the RPC height offset is used.
    """
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject
    from rasterio.warp import transform as warp_transform
    from rasterio.windows import transform as window_transform

    from .errors import OutputError

    src_path, dst_path = Path(src_path), Path(dst_path)
    try:
        src = rasterio.open(src_path)
    except rasterio.errors.RasterioIOError as exc:
        raise NotARasterError(f"{src_path} cannot be opened as a raster ({exc})") from exc
    with src:
        if rpcs is None:
            rpcs = src.rpcs
        if rpcs is None:
            rpb = find_rpb(src_path)
            if rpb is None:
                raise InputError(
                    f"{src_path} has no RPCs (no RPC metadata and no .rpb beside it); "
                    "--ortho needs the vendor's .rpb file next to the scene"
                )
            rpcs = read_rpb(rpb)
        if dst_crs is None:
            zone = int((rpcs.long_off + 180) // 6) + 1
            dst_crs = f"EPSG:{(32600 if rpcs.lat_off >= 0 else 32700) + zone}"
        extras: dict[str, object] = {}
        if dem is not None:
            extras["RPC_DEM"] = str(dem)
        elif height is not None:
            extras["RPC_HEIGHT"] = float(height)
        else:
            extras["RPC_HEIGHT"] = float(rpcs.height_off)
        if resolution is None:
            # GSD from the RPC scale: degrees per pixel near the centre, in metres.
            xs, ys = warp_transform(
                "EPSG:4326",
                dst_crs,
                [rpcs.long_off, rpcs.long_off + rpcs.long_scale / rpcs.samp_scale],
                [rpcs.lat_off, rpcs.lat_off],
            )
            resolution = float(round(abs(xs[1] - xs[0]), 2)) or None
        transform, width, height_px = calculate_default_transform(
            "EPSG:4326", dst_crs, src.width, src.height, rpcs=rpcs, resolution=resolution, **extras
        )
        profile = {
            "driver": "GTiff",
            "width": width,
            "height": height_px,
            "count": src.count,
            "dtype": src.dtypes[0],
            "crs": dst_crs,
            "transform": transform,
            "nodata": src.nodata if src.nodata is not None else 0,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "ZSTD",
            "BIGTIFF": "IF_SAFER",
        }
        tmp = dst_path.with_name(dst_path.name + ".partial")
        try:
            dst = rasterio.open(tmp, "w", **profile)
        except rasterio.errors.RasterioIOError as exc:
            raise OutputError(f"cannot write {dst_path} ({exc}); check the output folder") from exc
        bands = list(range(1, src.count + 1))
        with dst:
            for i in bands:
                dst.set_band_description(i, src.descriptions[i - 1] or "")
            windows = [w for _, w in dst.block_windows(1)]
            for n, w in enumerate(windows):
                # GDAL warps from the dataset band, reading only the source chunks it needs.
                block = np.full(
                    (src.count, int(w.height), int(w.width)), profile["nodata"], dtype=profile["dtype"]
                )
                reproject(
                    rasterio.band(src, bands),
                    block,
                    rpcs=rpcs,
                    src_crs="EPSG:4326",
                    src_nodata=src.nodata,
                    dst_crs=dst_crs,
                    dst_transform=window_transform(w, transform),
                    dst_nodata=profile["nodata"],
                    resampling=Resampling[resampling],
                    **extras,
                )
                dst.write(block, window=w)
                if progress is not None:
                    progress(n + 1, len(windows))
            dst.update_tags(**src.tags(), GEOCLOUD_ORTHO="RPC", **{k: str(v) for k, v in extras.items()})
        if cog:
            from rasterio.shutil import copy as rio_copy

            tmp_cog = dst_path.with_name(dst_path.name + ".cog.partial")
            ovr = "NEAREST" if resampling == "nearest" else "AVERAGE"
            try:
                rio_copy(tmp, tmp_cog, driver="COG", COMPRESS="ZSTD", BLOCKSIZE=512, OVERVIEW_RESAMPLING=ovr,
                         BIGTIFF="IF_SAFER")  # fmt: skip
            finally:
                tmp.unlink(missing_ok=True)
            tmp = tmp_cog
        os.replace(tmp, dst_path)
    return dst_path


# --------------------------------------------------------------------------------------
# Archives and deliveries
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds on what :func:`safe_extract` accepts."""

    max_total_bytes: int = 64 * 1024**3
    max_member_bytes: int = 32 * 1024**3
    max_members: int = 10_000


def orthorectify_outputs(
    outputs: dict[str, list[Path]],
    *,
    dst_crs: str | None = None,
    resolution: float | None = None,
    dem: str | None = None,
    height: float | None = None,
) -> dict[str, list[Path]]:
    """``--ortho``: warp the raster outputs of :func:`geocloud.pipeline.process_scene` with
    their RPCs, in place, as COGs (masks with nearest neighbour, maps bilinear).

    Cloud detection runs in the sensor geometry (no resampling of the input); only the
    products are warped.  Vector products are already in WGS84 (placed through the RPCs).
    Outputs that have a CRS already are left as they are.  Returns the warped paths.
    """
    import rasterio

    done: dict[str, list[Path]] = {}
    for name, paths in outputs.items():
        for p in paths:
            if p.suffix.lower() not in RASTER_SUFFIXES:
                continue
            with rasterio.open(p) as ds:
                if ds.crs is not None:
                    continue
                if ds.rpcs is None:
                    raise InputError(
                        f"{p.name} has neither a CRS nor RPCs, so --ortho cannot place it; keep the vendor .rpb "
                        "file beside the scene (GDAL reads it) or drop --ortho"
                    )
                nearest = ds.dtypes[0] == "uint8"
            orthorectify(p, p, dst_crs=dst_crs, resolution=resolution, dem=dem, height=height,
                         resampling="nearest" if nearest else "bilinear", cog=True)  # fmt: skip
            done.setdefault(name, []).append(p)
    return done


def _check_member(m: tarfile.TarInfo, archive: Path) -> None:
    name = m.name
    p = Path(name)
    if name.startswith(("/", "\\")) or p.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"archive {archive} member {name!r} has an absolute path; refusing to extract it")
    if ".." in p.parts or ".." in Path(name.replace("\\", "/")).parts:
        raise ArchiveError(
            f"archive {archive} member {name!r} points outside the folder (..); refusing to extract it"
        )
    if m.issym() or m.islnk():
        target = Path(m.linkname)
        if target.is_absolute() or ".." in (p.parent / target).parts or ".." in target.parts:
            raise ArchiveError(
                f"archive {archive} member {name!r} is a link to {m.linkname!r} outside the folder; refusing to extract it"
            )
    elif not (m.isfile() or m.isdir()):
        raise ArchiveError(f"archive {archive} member {name!r} is a device or fifo; refusing to extract it")


def safe_extract(
    archive: str | os.PathLike[str], dest: str | os.PathLike[str], limits: ExtractLimits | None = None
) -> Path:
    """Extract a (gzipped) tar archive into ``dest`` after checking every member.

    Refuses absolute paths, ``..`` components, links pointing out of ``dest``, device
    files, more than ``max_members`` members, and members or totals above the size
    limits; raises :class:`ArchiveError` naming the member.  Nothing is written when a
    check fails.
    """
    limits = limits or ExtractLimits()
    archive, dest = Path(archive), Path(dest)
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(
            f"{archive} is not a readable tar archive ({exc}); pass a .tar or .tar.gz delivery"
        ) from exc
    with tf:
        members = []
        total = 0
        for i, m in enumerate(tf):
            if i >= limits.max_members:
                raise ArchiveError(
                    f"archive {archive} has more than {limits.max_members} members; refusing it"
                )
            _check_member(m, archive)
            if m.size > limits.max_member_bytes:
                raise ArchiveError(
                    f"archive {archive} member {m.name!r} is {m.size} bytes, above the "
                    f"{limits.max_member_bytes}-byte limit per member; raise ExtractLimits.max_member_bytes"
                )
            total += m.size
            if total > limits.max_total_bytes:
                raise ArchiveError(
                    f"archive {archive} unpacks to more than {limits.max_total_bytes} bytes; "
                    "raise ExtractLimits.max_total_bytes or free space"
                )
            members.append(m)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for m in members:
            target = (root / m.name).resolve()
            if root != target and root not in target.parents:
                raise ArchiveError(
                    f"archive {archive} member {m.name!r} resolves outside {dest}; refusing it"
                )
        tf.extractall(dest, members=members, filter="data")
    return dest


@dataclass(frozen=True)
class Delivery:
    """The pieces of one vendor delivery (multispectral part)."""

    root: Path
    raster: Path
    metadata: VendorMetadata | None
    rpb: Path | None


def _is_archive(p: Path) -> bool:
    n = p.name.lower()
    return p.is_file() and n.endswith((".tar.gz", ".tgz", ".tar"))


def open_delivery(
    path: str | os.PathLike[str],
    workdir: str | os.PathLike[str] | None = None,
    limits: ExtractLimits | None = None,
) -> Delivery:
    """A folder or ``.tar.gz`` delivery -> its multispectral raster, XML and RPCs.

    Archives are extracted safely into ``workdir`` (a new temporary folder by default;
    the caller removes it).  PAN rasters are skipped: geocloud needs the 4-band MSS/WFV/MUX part.
    """
    p = Path(path)
    if not p.exists():
        raise SceneNotFoundError(f"delivery {p} does not exist; check the path")
    if _is_archive(p):
        base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="geocloud-delivery-"))
        folder = safe_extract(p, base / re.sub(r"\.(tar\.gz|tgz|tar)$", "", p.name, flags=re.I), limits)
    elif p.is_dir():
        folder = p
    else:
        raise InputError(f"{p} is neither a folder nor a .tar/.tar.gz delivery")
    rasters = sorted(q for q in folder.rglob("*") if q.suffix.lower() in RASTER_SUFFIXES and q.is_file())
    ms = [q for q in rasters if "-pan" not in q.name.lower()]
    if not ms:
        raise InputError(
            f"delivery {p} holds no multispectral GeoTIFF (found: {[q.name for q in rasters] or 'none'}); "
            "expected a *.tif/*.tiff beside the product XML"
        )
    raster = ms[0]
    return Delivery(root=folder, raster=raster, metadata=find_vendor_metadata(raster), rpb=find_rpb(raster))


def cleanup_delivery(delivery: Delivery, workdir: str | os.PathLike[str]) -> None:
    """Remove what :func:`open_delivery` extracted into ``workdir``."""
    shutil.rmtree(workdir, ignore_errors=True)
