"""Vendor XML metadata of GF-1/2/6 ``<ProductMetaData>`` and ZY-3 ``<sensor_corrected_metadata>``.

Times: GF ``CenterTime``/``StartTime`` are Beijing time (UTC+8; the vendor order files say
``<TimeStandard>BJTime``, and ``ReceiveTime`` is exactly 8 h earlier). They are converted
to UTC here. The solar zenith of the real GF-1 deliveries agrees with the solar position
computed at that UTC time and the scene centre.
"""

from __future__ import annotations

import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..calibration import Calibration, toa_coefficients
from ..errors import InputError
from .calibration import CALIBRATIONS, lookup_calibration, normalize_satellite

log = logging.getLogger(__name__)

#: Offset of the vendor's local time standard (Beijing time) from UTC.
BEIJING_UTC_OFFSET = timedelta(hours=8)

#: File suffixes of the pixel files of a delivery.
RASTER_SUFFIXES = (".tif", ".tiff")


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
        from ..errors import SensorError

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
    sat_n = normalize_satellite(satellite)
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
