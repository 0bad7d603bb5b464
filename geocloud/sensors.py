"""Sensor profiles: band order and the conversion from DN to TOA reflectance.

Every conversion geocloud applies is per-band linear, ``reflectance = a * DN + b``
(:class:`Radiometry`).  For sensors calibrated to radiance (GF-1, ZY-3) the coefficients
fold in the gain and bias, the solar irradiance ESUN, the sun elevation and the
Earth-Sun distance:

    rho = pi * d^2 * (gain * DN + bias) / (ESUN * sin(sun_elevation))

How a scene's radiometry is decided (first match wins):

1. ``--scale``/``--offset`` given: ``a = scale``, ``b = offset`` for every band.
2. the sensor: ``--sensor``, else the vendor XML beside the file, else the file's
   SATELLITE/SENSOR tags, else its file name (GF1_WFV..., ZY3_MUX..., LC08_..., S2A_...);
3. GDAL band scale/offset tags (other than 1/0) are honoured;
4. float32 scenes are taken as reflectance already;
5. otherwise (an integer scene of unknown scaling) a :class:`SensorError` names the flags.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

import numpy as np

from .calibration import Calibration, dn_to_reflectance, reflectance_to_dn
from .calibration import earth_sun_distance as earth_sun_distance  # re-exported
from .calibration import toa_coefficients as toa_coefficients  # re-exported
from .errors import InputError, SensorError
from .models.base import CANONICAL_BANDS

log = logging.getLogger(__name__)

#: Sun elevation assumed for radiance-calibrated sensors when neither the vendor XML nor a
#: SUN_ELEVATION tag nor --sun-elevation gives it (a warning says so).
DEFAULT_SUN_ELEVATION = 45.0

#: Physical range of TOA reflectance; outside it the DN scaling is probably wrong.
REFLECTANCE_RANGE = (-0.05, 1.6)


@dataclass(frozen=True)
class SensorProfile:
    """What geocloud knows about one sensor."""

    name: str
    description: str
    #: canonical names of the file's bands 1..n, in file order (the 4 we use must be there).
    file_bands: tuple[str, ...] = CANONICAL_BANDS
    #: DN -> reflectance directly: rho = DN * scale + offset (Landsat C2, Sentinel-2).
    scale: float | None = None
    offset: float = 0.0
    #: DN -> radiance (``L = gain * DN + offset``) and ESUN of a radiance-calibrated sensor.
    calibration: Calibration | None = None
    #: whether reflectance should be divided by sin(sun elevation) (Landsat's 'scale' gives rho*sin).
    sun_correct_scale: bool = False
    source: str = ""
    #: regular expressions matched against "SATELLITE SENSOR" tags and the file name.
    patterns: tuple[str, ...] = field(default=())
    #: other stacks of this sensor, by band count: the canonical name of each file band
    #: ("" for bands geocloud does not use), e.g. a 13-band Sentinel-2 L1C stack.
    layouts: tuple[tuple[str, ...], ...] = field(default=())
    #: band-description aliases that mean something else for this sensor (Sentinel-2's B5
    #: is red edge, not nir; Landsat's B1 is coastal, not blue; B8 is Landsat's pan band).
    not_aliases: tuple[str, ...] = field(default=())

    @property
    def gains(self) -> tuple[float, ...] | None:
        """DN -> radiance gains per canonical band (W m-2 sr-1 um-1 per DN), if calibrated."""
        return None if self.calibration is None else self.calibration.gains

    @property
    def biases(self) -> tuple[float, ...]:
        """DN -> radiance offsets per canonical band (zeros without a calibration)."""
        return (0.0, 0.0, 0.0, 0.0) if self.calibration is None else self.calibration.offsets

    @property
    def esun(self) -> tuple[float, ...] | None:
        """Exo-atmospheric solar irradiance per canonical band (W m-2 um-1), if calibrated."""
        return None if self.calibration is None else self.calibration.esun

    def __post_init__(self) -> None:
        # the profile's default table carries the profile's source
        if self.calibration is not None and not self.calibration.source:
            object.__setattr__(self, "calibration", replace(self.calibration, source=self.source))

    def layout(self, count: int) -> tuple[str, ...] | None:
        """The file bands of a ``count``-band stack of this sensor, if it has one."""
        if count == len(self.file_bands):
            return self.file_bands
        return next((lay for lay in self.layouts if len(lay) == count), None)


def _profile_table(
    satellite: str, sensor: str, epoch: int, gains: tuple[float, ...], esun: tuple[float, ...]
) -> Calibration:
    """A sensor profile's default table (zero offsets; its source is the profile's)."""
    return Calibration(satellite, sensor, epoch, gains, (0.0, 0.0, 0.0, 0.0), esun, source="",
                       status="profile", use="profile")  # fmt: skip


SENSORS: dict[str, SensorProfile] = {
    p.name: p
    for p in (
        SensorProfile(
            name="gf1_wfv",
            description="GaoFen-1 Wide Field View (WFV1-4), 16 m, 4 bands",
            calibration=_profile_table(
                "GF1", "WFV", 2013, (0.1709, 0.1398, 0.1195, 0.1338), (1968.6, 1849.2, 1570.2, 1078.2)
            ),
            source="CRESDA absolute calibration, GF-1 WFV1 (approximate, 2013 release); "
            "per-camera/year tables come from the vendor XML reader when present",
            patterns=(r"GF-?1\w*[ _]*WFV", r"^GF1_WFV"),
        ),
        SensorProfile(
            name="gf1_pms",
            description="GaoFen-1 Panchromatic/Multispectral Sensor MSS (PMS1/2), 8 m, 4 bands",
            calibration=_profile_table(
                "GF1", "PMS", 2013, (0.2082, 0.1672, 0.1748, 0.1883), (1945.5, 1854.2, 1542.9, 1080.8)
            ),
            source="CRESDA absolute calibration, GF-1 PMS1 MSS (approximate, 2013 release)",
            patterns=(r"GF-?1\w*[ _]*PMS", r"^GF1_PMS"),
        ),
        SensorProfile(
            name="gf2_pms",
            description="GaoFen-2 Panchromatic/Multispectral Sensor MSS (PMS1/2), 4 m, 4 bands",
            calibration=_profile_table(
                "GF2", "PMS", 2020, (0.1378, 0.1778, 0.1700, 0.1858), (1941.76, 1853.73, 1541.79, 1086.47)
            ),
            source="CRESDA absolute calibration, GF-2 PMS1 2020 (approximate for other cameras and years); "
            "per-camera/year tables come from the vendor XML reader when present",
            patterns=(r"GF-?2\w*[ _]*PMS", r"^GF2_PMS"),
        ),
        SensorProfile(
            name="gf6_wfv",
            description="GaoFen-6 Wide Field View, 16 m, 8 bands (1-4: blue, green, red, nir)",
            file_bands=("blue", "green", "red", "nir", "rededge1", "rededge2", "purple", "yellow"),
            calibration=_profile_table(
                "GF6", "WFV", 2020, (0.0675, 0.0552, 0.0513, 0.0314), (1952.16, 1847.43, 1554.76, 1074.06)
            ),
            source="CRESDA absolute calibration, GF-6 WFV 2020 (approximate for other years); "
            "per-year tables come from the vendor XML reader when present",
            patterns=(r"GF-?6\w*[ _]*WFV", r"^GF6_WFV"),
        ),
        SensorProfile(
            name="gf6_pms",
            description="GaoFen-6 Panchromatic/Multispectral Sensor MSS, 8 m, 4 bands",
            calibration=_profile_table(
                "GF6", "PMS", 2020, (0.0820, 0.0645, 0.0489, 0.0286), (1945.50, 1832.38, 1558.18, 1090.77)
            ),
            source="CRESDA absolute calibration, GF-6 PMS 2020 (approximate for other years); "
            "per-year tables come from the vendor XML reader when present",
            patterns=(r"GF-?6\w*[ _]*PMS", r"^GF6_PMS"),
        ),
        SensorProfile(
            name="zy3_mux",
            description="ZiYuan-3 multispectral camera (MUX), 5.8 m, 4 bands",
            calibration=_profile_table(
                "ZY3", "MUX", 2012, (0.2240, 0.2290, 0.1840, 0.2010), (1958.0, 1822.0, 1559.0, 1085.0)
            ),
            source="CRESDA absolute calibration, ZY-3 MUX (approximate, 2012 release)",
            patterns=(r"ZY-?3\w*[ _]*MUX", r"^ZY3_MUX"),
        ),
        SensorProfile(
            name="landsat8",
            description="Landsat 8/9 OLI, bands 2-5 stacked (Collection 2 Level-1 DN)",
            scale=2.0e-5,
            offset=-0.1,
            sun_correct_scale=True,
            source="USGS Collection 2 Level-1 REFLECTANCE_MULT/ADD (2.0e-5, -0.1)",
            patterns=(r"LANDSAT[_ -]?[89]", r"\bOLI\b", r"^L[CO]0[89]_"),
            layouts=(
                # OLI bands 1-7 (coastal, blue, green, red, nir, swir1, swir2)
                ("", "blue", "green", "red", "nir", "", ""),
                # bands 1-11 (8 is panchromatic, 9 cirrus, 10-11 thermal)
                ("", "blue", "green", "red", "nir", "", "", "", "", "", ""),
            ),
            not_aliases=("b1", "band1", "b8", "b08"),
        ),
        SensorProfile(
            name="sentinel2",
            description="Sentinel-2 MSI, B02/B03/B04/B08 stacked (L1C or L2A DN)",
            scale=1.0e-4,
            source="ESA quantification value 10000",
            patterns=(r"SENTINEL[-_ ]?2", r"^S2[ABC]_"),
            layouts=(
                # L1C, all 13 bands: B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B10 B11 B12
                ("", "blue", "green", "red", "", "", "", "nir", "", "", "", "", ""),
                # L2A, 12 bands (no B10)
                ("", "blue", "green", "red", "", "", "", "nir", "", "", "", ""),
                # the 10 m and 20 m bands: B02 B03 B04 B05 B06 B07 B08 B8A B11 B12
                ("blue", "green", "red", "", "", "", "nir", "", "", ""),
            ),
            not_aliases=("b1", "band1", "b5"),
        ),
        SensorProfile(
            name="generic",
            description="any 4-band blue, green, red, nir GeoTIFF; float = reflectance, integer needs --scale",
        ),
    )
}

#: Band description aliases -> canonical band name.
BAND_ALIASES: dict[str, str] = {
    "blue": "blue", "b": "blue", "b1": "blue", "b2": "blue", "b02": "blue", "band1": "blue",
    "green": "green", "g": "green", "b3": "green", "b03": "green",
    "red": "red", "r": "red", "b4": "red", "b04": "red",
    "nir": "nir", "near-infrared": "nir", "nearinfrared": "nir", "near infrared": "nir",
    "b5": "nir", "b8": "nir", "b08": "nir",
}  # fmt: skip


@dataclass(frozen=True)
class Radiometry:
    """How one scene's bands become TOA reflectance: rho = a * DN + b, band by band."""

    sensor: str
    #: 1-based band indexes in the file, in canonical (blue, green, red, nir) order.
    indexes: tuple[int, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]
    #: where the scaling came from, for ``geocloud info`` and the stats.
    source: str
    sun_elevation: float | None = None
    #: the calibration table used, in one line (vendor XML: satellite, sensor, epoch, how it
    #: applies, provenance), and whether it is only approximate for this scene.
    calibration: str | None = None
    approximate: bool = False

    def to_reflectance(self, dn: np.ndarray) -> np.ndarray:
        """Convert (C, ...) DN of the selected bands to float32 reflectance."""
        return dn_to_reflectance(dn, self.a, self.b)

    def to_dn(self, reflectance: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_reflectance` (float32; the caller rounds and casts)."""
        return reflectance_to_dn(reflectance, self.a, self.b)

    def as_dict(self) -> dict[str, object]:
        return {
            "sensor": self.sensor,
            "band_indexes": list(self.indexes),
            "gain": [float(v) for v in self.a],
            "offset": [float(v) for v in self.b],
            "source": self.source,
            "sun_elevation": self.sun_elevation,
            "calibration": self.calibration,
            "approximate": self.approximate,
        }


def get_sensor(name: str) -> SensorProfile:
    try:
        return SENSORS[name]
    except KeyError:
        raise SensorError(
            f"sensor {name!r} is unknown; pass --sensor with one of: {', '.join(SENSORS)}"
        ) from None


def detect_sensor(tags: Mapping[str, str], filename: str) -> str | None:
    """Guess the sensor from SATELLITE/SENSOR-like tags or the file name; None if unsure."""
    upper = {k.upper(): str(v) for k, v in tags.items()}
    tag_text = " ".join(
        upper[k]
        for k in ("SATELLITE", "SATELLITEID", "SPACECRAFT_ID", "SPACECRAFT_NAME", "SENSOR", "SENSORID",
                  "SENSOR_ID", "TIFFTAG_IMAGEDESCRIPTION", "PRODUCT_TYPE")
        if k in upper
    ).upper()  # fmt: skip
    for profile in SENSORS.values():
        for pattern in profile.patterns:
            if tag_text and re.search(pattern, tag_text):
                return profile.name
            if re.search(pattern, filename.upper()):
                return profile.name
    return None


def _acquired_from_tags(tags: Mapping[str, str]) -> datetime | None:
    """ACQUISITION_TIME / ACQUISITION_DATE / DATE_ACQUIRED tags (ISO 8601), if any."""
    for k, v in tags.items():
        if k.upper() in ("ACQUISITION_TIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "ACQUISITIONTIME"):
            try:
                return datetime.fromisoformat(str(v).strip().replace("Z", "+00:00"))
            except ValueError:
                log.warning(
                    "ignoring unparseable %s tag %r; expected ISO 8601 like 2020-06-01T03:12:00Z", k, v
                )
    return None


def _band_indexes_from_descriptions(
    descriptions: tuple[str | None, ...], profile: SensorProfile | None = None
) -> tuple[int, ...] | None:
    """File bands of blue, green, red, nir named by the band descriptions, or None.

    Colour names win over band codes (``blue`` over ``B1``), and codes that mean another
    band for the sensor are skipped (``profile.not_aliases``).  Without a sensor, ``B1``
    is taken as blue only when no ``B2``/``B02`` is described too (a stack whose B1 is the
    coastal band, as in Landsat 8 and Sentinel-2), and ``B5`` as nir only without a
    ``B8``/``B08`` (Sentinel-2's B5 is red edge).
    """
    names = [(d or "").strip().lower() for d in descriptions]
    skip = set(profile.not_aliases) if profile is not None else set()
    if {"b2", "b02"} & set(names):
        skip |= {"b1", "band1"}
    if {"b8", "b08"} & set(names):
        skip.add("b5")
    found: dict[str, int] = {}
    # exact colour names first, then codes
    for exact in (True, False):
        for i, name in enumerate(names, start=1):
            if not name or name in skip:
                continue
            canon = BAND_ALIASES.get(name)
            if (
                canon is None
                or canon in found
                or (
                    exact and name != canon and name not in ("near-infrared", "near infrared", "nearinfrared")
                )
            ):
                continue
            found[canon] = i
    if all(b in found for b in CANONICAL_BANDS):
        return tuple(found[b] for b in CANONICAL_BANDS)
    return None


def parse_bands(text: str, count: int) -> tuple[int, ...]:
    """Parse ``--bands`` ("3,2,1,4": file band numbers of blue, green, red, nir)."""
    try:
        idx = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(
            f"--bands {text!r} is not a list of band numbers; pass the 1-based file bands of "
            "blue,green,red,nir, e.g. --bands 1,2,3,4"
        ) from None
    if len(idx) != len(CANONICAL_BANDS):
        raise InputError(
            f"--bands {text!r} names {len(idx)} bands; pass 4 (blue,green,red,nir), e.g. --bands 1,2,3,4"
        )
    bad = [i for i in idx if not 1 <= i <= count]
    if bad:
        raise InputError(
            f"--bands {text!r}: band {bad[0]} does not exist in a {count}-band file; pass numbers 1..{count}"
        )
    dup = sorted({i for i in idx if idx.count(i) > 1})
    if dup:
        raise InputError(
            f"--bands {text!r} names band {dup[0]} more than once; pass four different bands "
            "(blue,green,red,nir), e.g. --bands 1,2,3,4"
        )
    return idx


class VendorRadiometry(Protocol):
    """What :func:`resolve_radiometry` reads from vendor metadata
    (:class:`geocloud.vendor.VendorMetadata` is one)."""

    @property
    def profile(self) -> str | None: ...

    @property
    def sun_elevation(self) -> float | None: ...

    @property
    def acquired(self) -> datetime | None: ...

    @property
    def calibration(self) -> Calibration | None: ...


@dataclass(frozen=True)
class SceneFacts:
    """What is known of a scene when its DN scaling is decided: the file, the user's flags
    and the vendor metadata (the arguments of :func:`resolve_radiometry`)."""

    count: int
    dtype: str
    tags: Mapping[str, str]
    descriptions: tuple[str | None, ...]
    band_scales: tuple[float, ...]
    band_offsets: tuple[float, ...]
    filename: str
    sensor: str | None = None
    bands: str | tuple[int, ...] | None = None
    scale: float | None = None
    offset: float = 0.0
    sun_elevation: float | None = None
    acquired: datetime | None = None
    vendor: VendorRadiometry | None = None
    colorinterp: tuple[str, ...] = ()
    #: the sun elevation of a Landsat MTL or Sentinel-2 tile metadata file beside the scene
    #: (:func:`geocloud.sun.find_sun_metadata`), degrees.
    metadata_sun_elevation: float | None = None


@dataclass(frozen=True)
class ScalingInput:
    """A scene whose sensor and bands are decided, as the scaling rules see it."""

    facts: SceneFacts
    profile: SensorProfile
    #: where the sensor came from ("--sensor", "vendor metadata", "file tags/name", "default").
    sensor_source: str
    indexes: tuple[int, ...]
    sun_elevation: float | None
    acquired: datetime | None


def choose_sensor(facts: SceneFacts) -> tuple[SensorProfile, str]:
    """The sensor profile of a scene and where it came from: ``--sensor``, else the vendor
    metadata's profile, else the file's tags or name, else ``generic``."""
    if facts.sensor is not None:
        return get_sensor(facts.sensor), "--sensor"
    if facts.vendor is not None and facts.vendor.profile:
        return get_sensor(facts.vendor.profile), "vendor metadata"
    detected = detect_sensor(facts.tags, facts.filename)
    if detected is not None:
        return get_sensor(detected), "file tags/name"
    return get_sensor("generic"), "default"


def choose_bands(facts: SceneFacts, profile: SensorProfile) -> tuple[int, ...]:
    """The 1-based file bands of blue, green, red, nir: ``--bands``, else the band
    descriptions, else the sensor's layout for the band count."""
    count, colorinterp = facts.count, facts.colorinterp
    if isinstance(facts.bands, str):
        indexes = parse_bands(facts.bands, count)
    elif facts.bands is not None:
        indexes = parse_bands(",".join(map(str, facts.bands)), count)
    else:
        alpha = [i for i, ci in enumerate(colorinterp, start=1) if ci.lower() == "alpha"]
        from_desc = _band_indexes_from_descriptions(facts.descriptions, profile)
        if from_desc is not None:
            indexes = from_desc
        else:
            if count - len(alpha) < len(CANONICAL_BANDS):
                hint = ""
                if alpha:
                    hint = f"; band {alpha[0]} is an alpha (transparency) band, a mask: there is no near-infrared band"
                elif count == 3:
                    hint = "; an RGB image has no near-infrared band"
                raise InputError(
                    f"scene has {count} band{'s' if count > 1 else ''} but geocloud needs 4 spectral bands "
                    f"(blue, green, red, nir){hint}: pass a 4-band blue,green,red,nir scene"
                )
            layout = profile.layout(count)
            if layout is None:
                raise InputError(
                    f"scene has {count} bands and no band names, and sensor {profile.name!r} has no "
                    f"{count}-band layout: pass --bands B,G,R,N (the file bands of blue, green, red, nir)"
                )
            indexes = tuple(layout.index(b) + 1 for b in CANONICAL_BANDS)
    hit = [i for i in indexes if i <= len(colorinterp) and colorinterp[i - 1].lower() == "alpha"]
    if hit:
        raise InputError(
            f"band {hit[0]} is an alpha (transparency) band, a mask and not a spectral band; "
            "pass --bands with the file bands of blue, green, red, nir"
        )
    if count < len(CANONICAL_BANDS) and facts.bands is None:
        raise InputError(
            f"scene has {count} band(s) but geocloud needs 4 (blue, green, red, nir); pass a 4-band scene"
        )
    return indexes


def scene_sun_elevation(facts: SceneFacts) -> float | None:
    """``--sun-elevation``, else the vendor metadata's, else a SUN_ELEVATION-like tag, else
    a Landsat MTL's or Sentinel-2 tile metadata's (:mod:`geocloud.sun`)."""
    sun_el = facts.sun_elevation
    if sun_el is None and facts.vendor is not None:
        sun_el = facts.vendor.sun_elevation
    if sun_el is None:
        for key in ("SUN_ELEVATION", "SUNELEVATION", "SUN_ELEV"):
            for k, v in facts.tags.items():
                if k.upper() == key:
                    with contextlib.suppress(ValueError):
                        sun_el = float(v)
    if sun_el is None:
        sun_el = facts.metadata_sun_elevation
    return sun_el


def scene_acquired(facts: SceneFacts) -> datetime | None:
    """The acquisition time: the argument, else the vendor metadata's, else the tags'."""
    when = facts.acquired or (facts.vendor.acquired if facts.vendor is not None else None)
    if when is None:
        when = _acquired_from_tags(facts.tags)
    return when


def user_scale_rule(s: ScalingInput) -> Radiometry | None:
    """``--scale``/``--offset``: the same linear map for every band."""
    scale, offset = s.facts.scale, s.facts.offset
    if scale is None and offset:
        raise SensorError(
            f"--offset {offset:g} is used only with --scale: pass both (reflectance = DN * SCALE + OFFSET), "
            "e.g. --scale 0.0001 --offset -0.1"
        )
    if scale is None:
        return None
    if not (math.isfinite(scale) and math.isfinite(offset)) or scale <= 0:
        raise SensorError(
            f"--scale {scale} --offset {offset} must be finite and the scale positive, "
            "e.g. --scale 0.0001 for reflectance x 10000"
        )
    n = len(s.indexes)
    return Radiometry(
        s.profile.name, s.indexes, (scale,) * n, (offset,) * n, "--scale/--offset", s.sun_elevation
    )


def gdal_scale_rule(s: ScalingInput) -> Radiometry | None:
    """The GDAL band scale/offset of the selected bands, when any is other than 1/0."""
    sel_scales = tuple(s.facts.band_scales[i - 1] for i in s.indexes)
    sel_offsets = tuple(s.facts.band_offsets[i - 1] for i in s.indexes)
    if any(v != 1.0 for v in sel_scales) or any(o != 0.0 for o in sel_offsets):
        return Radiometry(
            s.profile.name, s.indexes, sel_scales, sel_offsets, "GDAL band scale/offset", s.sun_elevation
        )
    return None


def float_reflectance_rule(s: ScalingInput) -> Radiometry | None:
    """A floating-point scene is reflectance already."""
    if not s.facts.dtype.startswith("float"):
        return None
    n = len(s.indexes)
    return Radiometry(
        s.profile.name, s.indexes, (1.0,) * n, (0.0,) * n, "float input taken as reflectance", s.sun_elevation
    )


def radiance_calibration_rule(s: ScalingInput) -> Radiometry | None:
    """A radiance calibration (the vendor table, else the sensor profile's) with the sun
    elevation (assumed :data:`DEFAULT_SUN_ELEVATION` when unknown) and Earth-Sun distance."""
    profile, vendor = s.profile, s.facts.vendor
    table = vendor.calibration if vendor is not None else None
    cal = table if table is not None else profile.calibration
    if cal is None:
        return None
    sun_el = s.sun_elevation
    if sun_el is None:
        log.warning(
            "sun elevation unknown for %s: assuming %.0f degrees; pass --sun-elevation DEG "
            "or keep the vendor XML beside the scene for exact TOA reflectance",
            profile.name,
            DEFAULT_SUN_ELEVATION,
        )
        sun_el = DEFAULT_SUN_ELEVATION
    if not 0 < sun_el <= 90:
        raise SensorError(f"sun elevation {sun_el} is outside (0, 90] degrees; pass --sun-elevation DEG")
    a, b = cal.toa_coefficients(sun_el, s.acquired)
    if table is not None:
        src = f"{profile.name} calibration (vendor XML: {table.describe()}), from {s.sensor_source}"
        return Radiometry(profile.name, s.indexes, a, b, src, sun_el, table.describe(), table.approximate)
    src = f"{profile.name} calibration ({'vendor XML' if vendor is not None else profile.source}), from {s.sensor_source}"
    return Radiometry(
        profile.name, s.indexes, a, b, src, sun_el, f"{profile.name} profile (approximate)", True
    )


def profile_scale_rule(s: ScalingInput) -> Radiometry | None:
    """The sensor's published reflectance scale (Landsat, Sentinel-2), divided by
    sin(sun elevation) where the sensor's scale gives ``rho * sin``."""
    profile = s.profile
    if profile.scale is None:
        return None
    div = 1.0
    if profile.sun_correct_scale and s.sun_elevation is not None:
        div = math.sin(math.radians(s.sun_elevation))
    n = len(s.indexes)
    return Radiometry(
        profile.name, s.indexes, (profile.scale / div,) * n, (profile.offset / div,) * n,
        f"{profile.name}: {profile.source}, from {s.sensor_source}", s.sun_elevation,
    )  # fmt: skip


#: The scaling rules of :func:`resolve_radiometry`, in order: the first that returns a
#: :class:`Radiometry` decides; a rule may raise :class:`SensorError` on a bad value.
SCALING_RULES: tuple[Callable[[ScalingInput], Radiometry | None], ...] = (
    user_scale_rule,
    gdal_scale_rule,
    float_reflectance_rule,
    radiance_calibration_rule,
    profile_scale_rule,
)


def radiometry_from_facts(facts: SceneFacts) -> Radiometry:
    """Decide the sensor, the bands, then the first of :data:`SCALING_RULES` that applies."""
    profile, sensor_source = choose_sensor(facts)
    indexes = choose_bands(facts, profile)
    scaling = ScalingInput(
        facts, profile, sensor_source, indexes, scene_sun_elevation(facts), scene_acquired(facts)
    )
    for rule in SCALING_RULES:
        rad = rule(scaling)
        if rad is not None:
            return rad
    raise SensorError(
        f"integer ({facts.dtype}) scene with unknown DN scaling; pass --sensor "
        f"({', '.join(n for n in SENSORS if n != 'generic')}) or --scale FACTOR "
        "(e.g. --scale 0.0001 for reflectance x 10000)"
    )


def resolve_radiometry(
    *,
    count: int,
    dtype: str,
    tags: Mapping[str, str],
    descriptions: tuple[str | None, ...],
    band_scales: tuple[float, ...],
    band_offsets: tuple[float, ...],
    filename: str,
    sensor: str | None = None,
    bands: str | tuple[int, ...] | None = None,
    scale: float | None = None,
    offset: float = 0.0,
    sun_elevation: float | None = None,
    acquired: datetime | None = None,
    vendor: VendorRadiometry | None = None,
    colorinterp: tuple[str, ...] = (),
    metadata_sun_elevation: float | None = None,
) -> Radiometry:
    """Decide the band order and DN->reflectance conversion of a scene (module docstring):
    :func:`radiometry_from_facts` of the :class:`SceneFacts` these arguments make."""
    return radiometry_from_facts(
        SceneFacts(
            count=count, dtype=dtype, tags=tags, descriptions=descriptions, band_scales=band_scales,
            band_offsets=band_offsets, filename=filename, sensor=sensor, bands=bands, scale=scale,
            offset=offset, sun_elevation=sun_elevation, acquired=acquired, vendor=vendor,
            colorinterp=colorinterp, metadata_sun_elevation=metadata_sun_elevation,
        )
    )  # fmt: skip
