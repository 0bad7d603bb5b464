"""Realistic synthetic GaoFen-1 WFV-like scenes, of any size, with known cloud opacity.

A scene is a 4-band (blue, green, red, nir) raster built from three layers:

* a **land surface** of TOA reflectance: water, forest, cropland, bare soil and urban
  spectra mixed by seamless fractal noise fields, with texture and sensor noise;
* **thick and thin clouds**: fractal opacity fields ``alpha`` and a spectrally flat cloud
  reflectance ``c``, composited with :func:`geocloud.compositing.compose`
  (``y = r_c + (1 - alpha) * x`` with ``r_c = alpha * c``), and optionally their shadows
  on the ground (``shadows=True``);
* the **sensor**: TOA reflectance turned into GF-1 WFV1 digital numbers with
  :data:`GF1_WFV_CALIBRATION` (``L = gain * DN + offset``, ``rho = pi L d^2 / (ESUN cos(sza))``),
  a rotated/skewed valid footprint inside a nodata collar, a UTM grid of 16 m pixels and
  the tags geocloud's sensor detection reads.

Every field is a pure function of the global pixel coordinates and the seed (lattice
values come from a coordinate hash), so a scene is generated and written window by
window with bounded memory, with no seams between windows, and identically whatever
the window size.  ``make_scene`` writes scenes of 20000 x 20000 pixels in a few hundred
MB of RAM.  The opacity is written beside the scene as ground truth
(``<stem>_alpha_truth.tif``, float32, NaN outside the footprint).

The dtype, nodata kind and georeferencing kind can be varied for tests:

* ``dtype``: ``uint16`` (calibrated DN, the default), ``uint8`` and ``int16`` (reflectance
  scaled by a GDAL band scale), ``float32`` (reflectance);
* ``nodata``: ``"value"`` (a nodata value), ``"nan"`` (float32 only), ``"mask"`` (an
  internal GDAL mask band, the collar holding 0), ``"none"`` (no collar at all);
* ``georef``: ``"crs"`` (CRS + transform), ``"rpc"`` (RPCs only, like an L1A product),
  ``"gcps"`` (ground control points in ``crs`` only, no geotransform), ``"none"`` (a bare
  pixel grid).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import BANDS, Calibration, toa_factors
from .calibration import dn_to_reflectance as dn_to_reflectance_linear
from .compositing import compose
from .profiles import synthetic_tiff


def _profile_calibration() -> Calibration:
    from .sensors import get_sensor

    prof = get_sensor("gf1_wfv")
    assert prof.calibration is not None
    return replace(
        prof.calibration,
        satellite="GF1",
        sensor="WFV1",
        source=f"geocloud.sensors gf1_wfv profile: {prof.source}",
        dn_max=DN_MAX,
    )


#: Largest DN of the synthetic sensor (uint16 storage of 12-bit data).
DN_MAX = 4095

#: Radiometry assumed for GF-1 WFV1 (DN -> TOA radiance -> TOA reflectance), taken from the
#: ``gf1_wfv`` profile of :mod:`geocloud.sensors` so that synthetic scenes round-trip:
#: ``gain`` / ``offset`` in W m-2 sr-1 um-1 per DN with ``L = gain * DN + offset``
#: (CRESDA's WFV1 absolute calibration, ~0.12-0.17), ``esun`` in W m-2 um-1, and
#: ``rho = pi * L * d^2 / (ESUN * sin(sun_elevation))``.  Land is a few hundred DN, thick
#: cloud ~1500-3000 DN; DN are stored in uint16 and saturate at ``dn_max``.  A scene
#: written with ``vendor_xml=True`` is encoded with the calibration table
#: :mod:`geocloud.vendor` picks for that XML instead (see :func:`scene_calibration`).
GF1_WFV_CALIBRATION: Calibration = _profile_calibration()

#: TOA reflectance (blue, green, red, nir) of the land covers, path radiance included.
SURFACE_SPECTRA: dict[str, tuple[float, float, float, float]] = {
    "water": (0.085, 0.065, 0.045, 0.025),
    "forest": (0.075, 0.080, 0.055, 0.330),
    "cropland": (0.090, 0.105, 0.085, 0.280),
    "soil": (0.115, 0.140, 0.175, 0.240),
    "urban": (0.145, 0.150, 0.160, 0.195),
}

#: GDAL band scale of the integer dtypes that store reflectance rather than DN.
REFLECTANCE_SCALE = {"uint8": 1.0 / 250.0, "int16": 1.0e-4, "float32": 1.0}
#: nodata value written per dtype when ``nodata="value"``.
NODATA_VALUE = {"uint16": 0, "uint8": 0, "int16": -9999, "float32": -9999.0}

DTYPES = ("uint16", "uint8", "int16", "float32")
NODATA_KINDS = ("value", "nan", "mask", "none")
GEOREF_KINDS = ("crs", "rpc", "gcps", "none")


# --------------------------------------------------------------------------- radiometry


def earth_sun_distance(when: _dt.datetime | _dt.date | str) -> float:
    """Earth-Sun distance in astronomical units on a date (accurate to ~1e-4 AU)."""
    from .sensors import earth_sun_distance as _distance

    if isinstance(when, str):
        when = parse_time(when)
    if not isinstance(when, _dt.datetime):
        when = _dt.datetime(when.year, when.month, when.day)
    return _distance(when)


def parse_time(text: str) -> _dt.datetime:
    """Parse an ISO 8601 time (``Z`` suffix allowed) as UTC."""
    t = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=_dt.UTC)


def as_calibration(calibration: Calibration | Mapping[str, Any]) -> Calibration:
    """A :class:`~geocloud.calibration.Calibration`, or one made from a mapping with the keys
    ``gain``, ``offset``, ``esun`` and optionally ``satellite``, ``sensor``, ``source``,
    ``dn_max``."""
    if isinstance(calibration, Calibration):
        return calibration
    c = calibration
    return Calibration(
        satellite=str(c.get("satellite", "GF1")),
        sensor=str(c.get("sensor", "WFV1")),
        epoch=c.get("epoch"),
        gains=tuple(c["gain"]),
        offsets=tuple(c["offset"]),
        esun=tuple(c["esun"]),
        source=str(c.get("source", "")),
        dn_max=c.get("dn_max", DN_MAX),
    )


def dn_to_reflectance(
    dn: np.ndarray,
    sun_elevation: float,
    acquisition_time: str,
    calibration: Calibration | Mapping[str, Any] = GF1_WFV_CALIBRATION,
) -> np.ndarray:
    """DN (C, ...) -> TOA reflectance (C, ...) float32, with the assumed calibration
    (the engine's conversion, :func:`geocloud.calibration.dn_to_reflectance`)."""
    cal = as_calibration(calibration)
    a, b = cal.toa_coefficients(sun_elevation, parse_time(acquisition_time))
    return dn_to_reflectance_linear(np.asarray(dn), a, b)


def reflectance_to_dn(
    rho: np.ndarray,
    sun_elevation: float,
    acquisition_time: str,
    calibration: Calibration | Mapping[str, Any] = GF1_WFV_CALIBRATION,
) -> np.ndarray:
    """TOA reflectance (C, ...) -> DN (C, ...) uint16, rounded, clipped to 1..dn_max: the
    sensor's quantisation, ``DN = rho / (k * gain) - offset / gain`` in float32 with
    ``k`` from :func:`geocloud.calibration.toa_factors`."""
    cal = as_calibration(calibration)
    k = np.asarray(toa_factors(cal.esun, sun_elevation, parse_time(acquisition_time)), dtype=np.float64)
    gain = np.asarray(cal.gains, dtype=np.float64)
    offset = np.asarray(cal.offsets, dtype=np.float64)
    shape = (-1,) + (1,) * (np.ndim(rho) - 1)
    scale = (1.0 / (k * gain)).astype(np.float32).reshape(shape)
    off = (offset / gain).astype(np.float32).reshape(shape)
    dn = np.asarray(rho, dtype=np.float32) * scale - off
    return np.clip(np.rint(dn), 1, cal.dn_max if cal.dn_max is not None else DN_MAX).astype(np.uint16)


# --------------------------------------------------------------------------- noise

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_K_ROW = np.uint64(0x9E3779B97F4A7C15)
_K_COL = np.uint64(0xC2B2AE3D27D4EB4F)
_K_SALT = np.uint64(0x165667B19E3779F9)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array."""
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def _hash2(rows: np.ndarray, cols: np.ndarray, key: int) -> np.ndarray:
    """uint64 hash of every (row, col) pair of two int64 index vectors, shape (len(rows), len(cols))."""
    with np.errstate(over="ignore"):
        r = _mix64(rows.astype(np.uint64) * _K_ROW + np.uint64(key & 0xFFFFFFFFFFFFFFFF))
        c = cols.astype(np.uint64) * _K_COL
        return _mix64(r[:, None] ^ c[None, :])


def _uniform(h: np.ndarray) -> np.ndarray:
    """uint64 hash -> float32 uniform in [-1, 1)."""
    return ((h >> np.uint64(40)).astype(np.float32) * np.float32(2.0 / (1 << 24))) - np.float32(1.0)


def _lerp_axis(arr: np.ndarray, lo: int, pos: np.ndarray, step: int, axis: int) -> np.ndarray:
    """Linear interpolation of lattice values ``arr`` (lattice index ``lo`` first along ``axis``)
    at integer positions ``pos`` measured in units of 1/``step`` lattice spacing."""
    i = pos // step - lo
    t = (pos % step).astype(np.float32) / np.float32(step)
    a = np.take(arr, i, axis=axis)
    b = np.take(arr, i + 1, axis=axis)
    shape = [1, 1]
    shape[axis] = -1
    t = t.reshape(shape)
    return a + (b - a) * t


@dataclass(frozen=True)
class FractalNoise:
    """Seamless fractal value noise on the global pixel grid.

    Octaves have lattice spacings ``max_scale, max_scale/2, ..., min_scale`` (powers of
    two) and amplitudes ``persistence**k``.  The sum is built coarse to fine on lattices
    (each level linearly refined onto the next), then linearly interpolated to pixels,
    which is exactly the sum of bilinear value-noise octaves at a cost that does not grow
    with the number of octaves.  Values are normalised to roughly unit standard deviation.
    """

    seed: int
    salt: int
    max_scale: int = 2048
    min_scale: int = 2
    persistence: float = 0.55

    def __post_init__(self) -> None:
        for s in (self.max_scale, self.min_scale):
            if s < 1 or s & (s - 1):
                raise ValueError(f"noise scale {s} must be a power of two")
        if self.min_scale > self.max_scale:
            raise ValueError("min_scale must not exceed max_scale")

    @property
    def _levels(self) -> list[int]:
        out, s = [], self.max_scale
        while s >= self.min_scale:
            out.append(s)
            s //= 2
        return out

    @property
    def _norm(self) -> float:
        # Var of a uniform[-1,1) lattice value is 1/3; bilinear interpolation keeps on
        # average ~4/9 of it -> std of one octave ~ sqrt(4/27).
        amps = [self.persistence**k for k in range(len(self._levels))]
        return 1.0 / math.sqrt(sum(a * a for a in amps) * 4.0 / 27.0)

    def _key(self, level: int) -> int:
        return (self.seed * 0x2545F4914F6CDD1D + self.salt * 0x9E3779B1 + level * 0x632BE5AB) & (2**64 - 1)

    def window(self, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        """The noise over pixels ``[row0, row0+height) x [col0, col0+width)``, float32."""
        levels = self._levels
        # lattice index ranges [lo, hi] (inclusive) needed at each level, finest first
        fin = levels[-1]
        ranges = [
            ((row0 // fin, (row0 + height - 1) // fin + 1), (col0 // fin, (col0 + width - 1) // fin + 1))
        ]
        for _ in levels[:-1]:
            (r0, r1), (c0, c1) = ranges[-1]
            ranges.append(((r0 // 2, r1 // 2 + 1), (c0 // 2, c1 // 2 + 1)))
        ranges.reverse()  # coarsest first, aligned with ``levels``

        # coarsest level: fresh lattice values; each finer level: the coarser one refined
        # (linear, exact at shared lattice points) plus its own fresh values
        (r0, r1), (c0, c1) = ranges[0]
        grid = _uniform(
            _hash2(
                np.arange(r0, r1 + 1, dtype=np.int64),
                np.arange(c0, c1 + 1, dtype=np.int64),
                self._key(levels[0]),
            )
        )
        pr0, pc0 = r0, c0
        for k in range(1, len(levels)):
            (r0, r1), (c0, c1) = ranges[k]
            rows = np.arange(r0, r1 + 1, dtype=np.int64)
            cols = np.arange(c0, c1 + 1, dtype=np.int64)
            fresh = _uniform(_hash2(rows, cols, self._key(levels[k]))) * np.float32(self.persistence**k)
            up = _lerp_axis(grid, pc0, cols, 2, axis=1)
            grid = _lerp_axis(up, pr0, rows, 2, axis=0) + fresh
            pr0, pc0 = r0, c0
        rows = np.arange(row0, row0 + height, dtype=np.int64)
        cols = np.arange(col0, col0 + width, dtype=np.int64)
        out = _lerp_axis(grid, pc0, cols, fin, axis=1)
        out = _lerp_axis(out, pr0, rows, fin, axis=0)
        out *= np.float32(self._norm)
        return np.ascontiguousarray(out, dtype=np.float32)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _pixel_noise(row0: int, col0: int, height: int, width: int, key: int, n: int) -> np.ndarray:
    """``n`` (<= 4) independent per-pixel uniform[-1, 1) fields from one hash, (n, h, w)."""
    h = _hash2(
        np.arange(row0, row0 + height, dtype=np.int64), np.arange(col0, col0 + width, dtype=np.int64), key
    )
    out = np.empty((n, height, width), dtype=np.float32)
    for i in range(n):
        out[i] = ((h >> np.uint64(16 * i)) & np.uint64(0xFFFF)).astype(np.float32) * np.float32(
            2.0 / 65536
        ) - 1.0
    return out


# --------------------------------------------------------------------------- the scene


@dataclass(frozen=True)
class SceneSpec:
    """Everything that defines a synthetic scene; ``make_scene`` takes these as keywords."""

    width: int
    height: int
    seed: int = 0
    #: fraction of the valid footprint under thick cloud (alpha > 0.5).
    cloud_cover: float = 0.3
    #: fraction of the valid footprint under thin cloud / haze (alpha up to ``thin_alpha``).
    thin_cover: float = 0.15
    thin_alpha: float = 0.4
    #: cloud-system size: lattice spacing of the coarsest cloud octave, in pixels.
    cloud_scale: int = 1024
    #: land-pattern size: lattice spacing of the coarsest land octave, in pixels.
    land_scale: int = 1024
    sun_elevation: float = 55.0
    #: degrees clockwise from north; sets where cloud shadows fall.
    sun_azimuth: float = 150.0
    #: darken the ground in the shadows of thick clouds (cast ``cloud_height`` m up, along
    #: the sun azimuth and elevation); the alpha truth is unchanged, ``layers()["shadow"]``
    #: gives the shadow's strength.
    shadows: bool = False
    cloud_height: float = 1500.0
    acquisition_time: str = "2020-05-23T05:03:08Z"
    dtype: str = "uint16"
    nodata: str = "value"
    georef: str = "crs"
    #: a rotated/skewed footprint inside a nodata collar (ignored with ``nodata="none"``).
    collar: bool = True
    bands: int = 4
    crs: str = "EPSG:32650"
    pixel_size: float = 16.0
    origin: tuple[float, float] = (399_968.0, 4_500_032.0)
    #: sensor tags (SATELLITE, SENSOR, SUN_ELEVATION, ACQUISITION_TIME); off = anonymous raster.
    sensor_tags: bool = True
    #: also write a GF-1 style ``<stem>.xml`` (``<ProductMetaData>``) beside the scene.
    vendor_xml: bool = False
    write_truth: bool = True
    blocksize: int = 512
    compress: str | None = "ZSTD"
    #: ZLEVEL (DEFLATE) / ZSTD_LEVEL; None: GDAL's default.
    compress_level: int | None = None
    #: DN calibration of uint16 scenes (a :class:`~geocloud.calibration.Calibration` or a
    #: mapping for :func:`as_calibration`); None: :func:`scene_calibration` decides.
    calibration: Calibration | Mapping[str, Any] | None = None

    def validate(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"scene size {self.width}x{self.height} must be at least 1x1")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        if self.nodata not in NODATA_KINDS:
            raise ValueError(f"nodata {self.nodata!r} is not one of {NODATA_KINDS}")
        if self.nodata == "nan" and self.dtype != "float32":
            raise ValueError("nodata='nan' needs dtype='float32'")
        if self.georef not in GEOREF_KINDS:
            raise ValueError(f"georef {self.georef!r} is not one of {GEOREF_KINDS}")
        if not (0.0 <= self.cloud_cover <= 1.0 and 0.0 <= self.thin_cover <= 1.0):
            raise ValueError("cloud_cover and thin_cover must be in 0..1")
        if self.bands < 1:
            raise ValueError("bands must be at least 1")
        if self.blocksize % 16:
            raise ValueError("blocksize must be a multiple of 16")

    @property
    def has_collar(self) -> bool:
        return self.collar and self.nodata != "none"

    @property
    def band_names(self) -> tuple[str, ...]:
        names = BANDS
        return tuple(names[i] if i < 4 else f"band{i + 1}" for i in range(self.bands))


def scene_calibration(spec: SceneSpec) -> Calibration:
    """The DN calibration a uint16 scene is encoded with: ``spec.calibration`` if given,
    else the table :mod:`geocloud.vendor` reads for the XML when ``vendor_xml`` is on,
    else :data:`GF1_WFV_CALIBRATION` (the ``gf1_wfv`` sensor profile)."""
    if spec.calibration is not None:
        return as_calibration(spec.calibration)
    if spec.vendor_xml:
        from .vendor import lookup_calibration

        cal = lookup_calibration("GF1", "WFV1", parse_time(spec.acquisition_time).year)
        if cal is not None:
            return replace(
                GF1_WFV_CALIBRATION,
                gains=tuple(cal.gains),
                offsets=tuple(cal.offsets),
                esun=tuple(cal.esun),
                source=f"geocloud.vendor table GF1/WFV1 epoch {cal.epoch}",
            )
    return GF1_WFV_CALIBRATION


class SyntheticScene:
    """A synthetic scene evaluated window by window (see the module docstring)."""

    def __init__(self, spec: SceneSpec) -> None:
        spec.validate()
        self.spec = spec
        self.calibration = scene_calibration(spec)
        s = spec.seed
        lscale = max(16, spec.land_scale)
        cscale = max(16, spec.cloud_scale)
        self._terrain = FractalNoise(s, 1, lscale, 4, 0.55)
        self._veg = FractalNoise(s, 2, max(8, lscale // 2), 4, 0.6)
        self._urban = FractalNoise(s, 3, max(8, lscale // 4), 2, 0.55)
        self._texture = FractalNoise(s, 4, 64, 2, 0.7)
        self._thick = FractalNoise(s, 5, cscale, 2, 0.6)
        self._thin = FractalNoise(s, 6, 2 * cscale, 8, 0.6)
        self._pixel_key = (s * 0x9E3779B97F4A7C15 + 7) & (2**64 - 1)
        self._footprint = self._make_footprint()
        # Thresholds from a sample of the fields over the footprint.
        thick, thin, terrain, urban = self._sample_fields()
        self.edge_thick = 0.35
        self.edge_thin = 0.8
        self.t_thick = float(_quantile(thick, 1.0 - spec.cloud_cover)) - self.edge_thick / 2
        self.t_thin = float(_quantile(thin, 1.0 - spec.thin_cover)) - self.edge_thin / 2
        self.t_water = float(_quantile(terrain, 0.08))
        self.t_urban = float(_quantile(urban, 0.90))
        self._spectra = np.asarray(list(SURFACE_SPECTRA.values()), dtype=np.float32)  # (5, 4)

    # -- geometry -------------------------------------------------------------

    def _make_footprint(self) -> np.ndarray | None:
        """Half-planes (a, b, c) with a*x + b*y + c >= 0 inside a rotated/skewed quadrilateral."""
        if not self.spec.has_collar:
            return None
        w, h = self.spec.width, self.spec.height
        rng = np.random.default_rng(self.spec.seed + 1234)
        f = rng.uniform(0.08, 0.14, size=4)
        # one vertex on each raster edge, like an L1 scene in a north-up frame
        pts = [
            (f[0] * w, 0.02 * h),
            (w * 0.98, f[1] * h),
            ((1 - f[2]) * w, h * 0.98),
            (0.02 * w, (1 - f[3]) * h),
        ]
        planes = []
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
            # inside is to the right of each edge when walking clockwise in image coords
            a, b = -(y1 - y0), x1 - x0
            planes.append((a, b, -(a * x0 + b * y0)))
        return np.asarray(planes, dtype=np.float64)

    def valid(self, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        if self._footprint is None:
            return np.ones((height, width), dtype=bool)
        y = np.arange(row0, row0 + height, dtype=np.float64)[:, None] + 0.5
        x = np.arange(col0, col0 + width, dtype=np.float64)[None, :] + 0.5
        ok = np.ones((height, width), dtype=bool)
        for a, b, c in self._footprint:
            ok &= a * x + b * y + c >= 0
        return ok

    def _sample_fields(self) -> tuple[np.ndarray, ...]:
        w, h = self.spec.width, self.spec.height
        n = 12
        size = 32
        samples: list[list[np.ndarray]] = [[], [], [], []]
        for i in range(n):
            for j in range(n):
                r0 = int((h - min(size, h)) * i / max(1, n - 1))
                c0 = int((w - min(size, w)) * j / max(1, n - 1))
                hh, ww = min(size, h), min(size, w)
                ok = self.valid(r0, c0, hh, ww)
                if not ok.any():
                    continue
                for k, fld in enumerate((self._thick, self._thin, self._terrain, self._urban)):
                    samples[k].append(fld.window(r0, c0, hh, ww)[ok])
        if not samples[0]:  # degenerate (tiny) scene: sample everything
            ok = np.ones((h, w), dtype=bool)
            for k, fld in enumerate((self._thick, self._thin, self._terrain, self._urban)):
                samples[k].append(fld.window(0, 0, h, w)[ok])
        return tuple(np.concatenate(s) for s in samples)

    # -- content ----------------------------------------------------------------

    def shadow_offset(self) -> tuple[int, int]:
        """(rows, cols) from a ground pixel to the cloud pixel that shades it (towards the sun)."""
        sp = self.spec
        dist = sp.cloud_height / math.tan(math.radians(max(sp.sun_elevation, 1.0))) / sp.pixel_size
        az = math.radians(sp.sun_azimuth)
        return int(round(-math.cos(az) * dist)), int(round(math.sin(az) * dist))

    def layers(self, row0: int, col0: int, height: int, width: int) -> dict[str, np.ndarray]:
        """All layers of a window: ``background`` (4, h, w), ``alpha`` (h, w), ``r_c`` (h, w),
        ``reflectance`` (4, h, w) = compose(background, alpha, r_c), ``valid`` (h, w) and
        ``shadow`` (h, w): the fraction of light the ground lost to cloud shadow (0 unless
        ``shadows``; already applied to ``background``)."""
        win = (row0, col0, height, width)
        terrain = self._terrain.window(*win)
        veg = self._veg.window(*win)
        urban = self._urban.window(*win)
        texture = self._texture.window(*win)

        # land-cover weights: water where the terrain is low, urban patches, and a
        # forest / cropland / soil gradient elsewhere
        w_water = _smoothstep((self.t_water - terrain) / 0.08 + 0.5)
        w_urban = _smoothstep((urban - self.t_urban) / 0.3 + 0.5) * (1 - w_water)
        land = 1.0 - w_water - w_urban
        v = _smoothstep(veg * 0.6 + 0.5)  # 0 soil .. 1 vegetation
        w_forest = land * _smoothstep(v * 2.0 - 1.0)
        w_crop = land * (1.0 - np.abs(v * 2.0 - 1.0))
        w_soil = land - w_forest - w_crop
        weights = np.stack([w_water, w_forest, w_crop, w_soil, w_urban])  # (5, h, w)
        background = np.tensordot(self._spectra.T, weights, axes=1)  # (4, h, w)
        # texture: brightness (stronger on land) and a little per-pixel sensor noise
        bright = 1.0 + 0.12 * texture * (0.3 + 0.7 * (1.0 - w_water))
        background *= bright[None]
        noise = _pixel_noise(*win, self._pixel_key, 4)
        background += noise * np.float32(0.004)
        np.clip(background, 0.005, None, out=background)

        thick = self._thick.window(*win)
        a_thick = _smoothstep((thick - self.t_thick) / self.edge_thick)
        shadow = np.zeros_like(a_thick)
        if self.spec.shadows:
            dr, dc = self.shadow_offset()
            cast = self._thick.window(row0 + dr, col0 + dc, height, width)
            shadow = (0.6 * _smoothstep((cast - self.t_thick) / self.edge_thick)).astype(np.float32)
            background *= (1.0 - shadow)[None]
        thin = self._thin.window(*win)
        a_thin = np.float32(self.spec.thin_alpha) * _smoothstep((thin - self.t_thin) / self.edge_thin)
        c_thick = (
            0.80 + 0.06 * np.clip(thick - self.t_thick - self.edge_thick, 0.0, 2.0) / 2.0 + 0.03 * texture
        )
        c_thin = np.float32(0.62)
        # thick layer over thin layer over ground: alpha and r_c of the combined layer
        alpha = 1.0 - (1.0 - a_thick) * (1.0 - a_thin)
        r_c = c_thick * a_thick + (1.0 - a_thick) * c_thin * a_thin
        alpha = alpha.astype(np.float32)
        r_c = r_c.astype(np.float32)
        reflectance = compose(background, alpha[None], r_c[None]).astype(np.float32)
        return {
            "background": background.astype(np.float32),
            "alpha": alpha,
            "r_c": r_c,
            "reflectance": reflectance,
            "valid": self.valid(*win),
            "shadow": shadow,
        }

    def encode(self, reflectance: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reflectance (4, h, w) -> (pixels in the spec's dtype with its band count, valid)."""
        sp = self.spec
        bands = [reflectance[min(i, 3)] for i in range(sp.bands)]
        refl = np.stack(bands)
        if sp.dtype == "uint16":
            c, n = self.calibration, sp.bands
            cal = replace(
                c,
                gains=tuple(c.gains[min(i, 3)] for i in range(n)),
                offsets=tuple(c.offsets[min(i, 3)] for i in range(n)),
                esun=tuple(c.esun[min(i, 3)] for i in range(n)),
            )
            data = reflectance_to_dn(refl, sp.sun_elevation, sp.acquisition_time, cal)
        elif sp.dtype == "float32":
            data = refl.astype(np.float32)
        else:
            info = np.iinfo(sp.dtype)
            data = np.clip(np.rint(refl / REFLECTANCE_SCALE[sp.dtype]), max(1, info.min), info.max).astype(
                sp.dtype
            )
        if sp.has_collar:
            fill = {"value": NODATA_VALUE[sp.dtype], "nan": np.nan, "mask": 0}[sp.nodata]
            data[:, ~valid] = fill
        return data, valid

    def pixels(self, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        """The stored pixels of a window, (bands, h, w) in the spec's dtype."""
        lay = self.layers(row0, col0, height, width)
        return self.encode(lay["reflectance"], lay["valid"])[0]

    def alpha_truth(self, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        """Ground-truth opacity of a window, float32, NaN outside the footprint."""
        lay = self.layers(row0, col0, height, width)
        return np.where(lay["valid"], lay["alpha"], np.float32(np.nan)).astype(np.float32)

    # -- georeferencing and tags ----------------------------------------------------

    def transform(self) -> Any:
        from affine import Affine

        x0, y0 = self.spec.origin
        ps = self.spec.pixel_size
        return Affine(ps, 0.0, x0, 0.0, -ps, y0)

    def gcps(self) -> Any:
        """A 4x4 grid of ground control points over the scene, in ``spec.crs``: the pixel
        grid rotated by 5 degrees about the top-left corner (so no plain geotransform)."""
        from rasterio.control import GroundControlPoint

        sp = self.spec
        x0, y0 = sp.origin
        ps = sp.pixel_size
        c, s = math.cos(math.radians(5.0)), math.sin(math.radians(5.0))
        pts = []
        for i in range(4):
            for j in range(4):
                row, col = sp.height * i / 3, sp.width * j / 3
                x = x0 + ps * (c * col + s * row)
                y = y0 + ps * (s * col - c * row)
                pts.append(GroundControlPoint(row=row, col=col, x=x, y=y, z=0.0, id=str(4 * i + j + 1)))
        return pts

    def rpcs(self) -> Any:
        """Plausible RPC00B coefficients: a slightly rotated affine map around (117E, 40N)."""
        from rasterio.rpc import RPC

        sp = self.spec
        lat0, lon0 = 40.0, 117.0
        half_h = sp.height * sp.pixel_size / 2 / 111_320.0
        half_w = sp.width * sp.pixel_size / 2 / (111_320.0 * math.cos(math.radians(lat0)))
        rot = math.radians(8.0)
        zero = [0.0] * 20
        line_num, samp_num, den = list(zero), list(zero), list(zero)
        den[0] = 1.0
        # terms 1, L, P, H, ...: line = -P (north up), samp = L, then rotated by 8 degrees
        line_num[1], line_num[2] = math.sin(rot), -math.cos(rot)
        samp_num[1], samp_num[2] = math.cos(rot), math.sin(rot)
        return RPC(
            height_off=50.0,
            height_scale=500.0,
            lat_off=lat0,
            lat_scale=half_h,
            line_den_coeff=den,
            line_num_coeff=line_num,
            line_off=sp.height / 2,
            line_scale=sp.height / 2,
            long_off=lon0,
            long_scale=half_w,
            samp_den_coeff=den,
            samp_num_coeff=samp_num,
            samp_off=sp.width / 2,
            samp_scale=sp.width / 2,
        )

    def tags(self) -> dict[str, str]:
        sp = self.spec
        tags = {
            "GEOCLOUD_SYNTHETIC": "1",
            "SYNTHETIC_SEED": str(sp.seed),
            "SYNTHETIC_CLOUD_COVER": f"{sp.cloud_cover:.4f}",
        }
        if sp.sensor_tags:
            tags.update(
                {
                    "SATELLITE": self.calibration.satellite,
                    "SENSOR": self.calibration.sensor,
                    "SUN_ELEVATION": f"{sp.sun_elevation:.4f}",
                    "SUN_AZIMUTH": f"{sp.sun_azimuth:.4f}",
                    "ACQUISITION_TIME": sp.acquisition_time,
                }
            )
        return tags

    def profile(self) -> dict[str, Any]:
        sp = self.spec
        prof: dict[str, Any] = {
            "driver": "GTiff",
            "width": sp.width,
            "height": sp.height,
            "count": sp.bands,
            "dtype": sp.dtype,
            **synthetic_tiff(sp.dtype, sp.blocksize, sp.compress, sp.compress_level),
        }
        if sp.georef == "crs":
            prof["crs"] = sp.crs
            prof["transform"] = self.transform()
        if sp.has_collar and sp.nodata == "value":
            prof["nodata"] = NODATA_VALUE[sp.dtype]
        elif sp.has_collar and sp.nodata == "nan":
            prof["nodata"] = float("nan")
        return prof

    def vendor_xml(self) -> str:
        sp = self.spec
        # GF deliveries state times in Beijing time (UTC+8), as geocloud.vendor expects
        t = (parse_time(sp.acquisition_time) + _dt.timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")
        fields = {
            "SatelliteID": self.calibration.satellite,
            "SensorID": self.calibration.sensor,
            "ReceiveTime": t,
            "ProductLevel": "LEVEL2A" if sp.georef == "crs" else "LEVEL1A",
            "ProductFormat": "GEOTIFF",
            "Bands": ",".join(str(i + 1) for i in range(sp.bands)),
            "CenterTime": t,
            "ImageGSD": f"{sp.pixel_size:g}",
            "WidthInPixels": sp.width,
            "HeightInPixels": sp.height,
            "CloudPercent": round(100 * sp.cloud_cover),
            "SolarAzimuth": f"{sp.sun_azimuth:.4f}",
            "SolarZenith": f"{90.0 - sp.sun_elevation:.4f}",
        }
        body = "\n".join(f"    <{k}>{v}</{k}>" for k, v in fields.items())
        return f'<?xml version="1.0" encoding="UTF-8" ?>\n<ProductMetaData>\n{body}\n</ProductMetaData>\n'


def _quantile(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, min(1.0, max(0.0, q)))) if x.size else 0.0


def truth_path(path: str | os.PathLike[str]) -> Path:
    """Where ``make_scene`` writes the alpha ground truth of ``path``."""
    p = Path(path)
    return p.with_name(f"{p.stem}_alpha_truth.tif")


def _windows(width: int, height: int, size: int):
    from rasterio.windows import Window

    for r in range(0, height, size):
        for c in range(0, width, size):
            yield Window(c, r, min(size, width - c), min(size, height - r))


def make_scene(
    path: str | os.PathLike[str],
    width: int,
    height: int,
    seed: int = 0,
    cloud_cover: float = 0.3,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> Path:
    """Write a synthetic GF-1 WFV-like scene to ``path`` (and its alpha truth beside it).

    ``options`` are the fields of :class:`SceneSpec` (dtype, nodata, georef, thin_cover,
    sun_elevation, compress, write_truth, vendor_xml...).  Written window by window
    (``blocksize`` tiles), so memory does not depend on the scene size.
    Returns ``path``.
    """
    import rasterio
    from rasterio.crs import CRS

    from .scene import without_georef_warning

    spec = replace(SceneSpec(width=width, height=height), seed=seed, cloud_cover=cloud_cover, **options)
    scene = SyntheticScene(spec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prof = scene.profile()
    wins = list(_windows(width, height, spec.blocksize))
    truth = truth_path(path)
    truth_prof = dict(
        prof, count=1, dtype="float32", nodata=float("nan"), predictor=3 if spec.compress else None
    )
    truth_prof.pop("photometric", None)
    truth_prof = {k: v for k, v in truth_prof.items() if v is not None}

    env = {"GDAL_CACHEMAX": 64, "GDAL_TIFF_INTERNAL_MASK": True, "GDAL_NUM_THREADS": 1}
    with rasterio.Env(**env), without_georef_warning():
        extra = {"rpcs": scene.rpcs()} if spec.georef == "rpc" else {}
        with rasterio.open(path, "w", **prof, **extra) as dst:
            dst.update_tags(**scene.tags())
            for i, name in enumerate(spec.band_names, start=1):
                dst.set_band_description(i, name)
            if spec.dtype in ("uint8", "int16"):
                dst.scales = (REFLECTANCE_SCALE[spec.dtype],) * spec.bands
                dst.offsets = (0.0,) * spec.bands
            tdst = rasterio.open(truth, "w", **truth_prof, **extra) if spec.write_truth else None
            if spec.georef == "gcps":
                for ds in (dst, tdst):
                    if ds is not None:
                        ds.gcps = (scene.gcps(), CRS.from_user_input(spec.crs))
            try:
                if tdst is not None:
                    tdst.update_tags(
                        GEOCLOUD_SYNTHETIC="1", CONTENT="cloud opacity alpha, y = r_c + (1 - alpha) x"
                    )
                    tdst.set_band_description(1, "alpha")
                for k, w in enumerate(wins):
                    lay = scene.layers(int(w.row_off), int(w.col_off), int(w.height), int(w.width))
                    data, valid = scene.encode(lay["reflectance"], lay["valid"])
                    dst.write(data, window=w)
                    if spec.has_collar and spec.nodata == "mask":
                        dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=w)
                    if tdst is not None:
                        a = np.where(lay["valid"], lay["alpha"], np.float32(np.nan)).astype(np.float32)
                        tdst.write(a[None], window=w)
                    if progress is not None:
                        progress(k + 1, len(wins))
            finally:
                if tdst is not None:
                    tdst.close()
    if spec.vendor_xml:
        path.with_suffix(".xml").write_text(scene.vendor_xml(), encoding="utf-8")
    return path


__all__ = [
    "DN_MAX",
    "DTYPES",
    "GEOREF_KINDS",
    "GF1_WFV_CALIBRATION",
    "NODATA_KINDS",
    "NODATA_VALUE",
    "REFLECTANCE_SCALE",
    "SURFACE_SPECTRA",
    "FractalNoise",
    "SceneSpec",
    "SyntheticScene",
    "as_calibration",
    "dn_to_reflectance",
    "earth_sun_distance",
    "make_scene",
    "reflectance_to_dn",
    "scene_calibration",
    "truth_path",
]
