"""Radiometric calibration: the calibration type and the DN <-> radiance <-> reflectance formulas.

A radiance-calibrated sensor records DN with ``L = gain * DN + offset`` (W m-2 sr-1 um-1);
TOA reflectance is ``rho = pi * d^2 * L / (ESUN * sin(sun_elevation))``, which folds into
one per-band linear map ``rho = a * DN + b`` (:func:`toa_coefficients`).
:func:`dn_to_reflectance` and :func:`reflectance_to_dn` apply that map and its inverse.

:class:`Calibration` is the one type for a set of gains, offsets and ESUN with its
provenance: a row of the CRESDA tables (:mod:`geocloud.vendor.calibration`), the default
table of a sensor profile (:mod:`geocloud.sensors`) and the encoding of the synthetic
scenes (:mod:`geocloud.synthetic`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

#: the canonical bands a calibration's tuples follow.
BANDS = ("blue", "green", "red", "nir")


@dataclass(frozen=True)
class Calibration:
    """DN -> TOA radiance (W m-2 sr-1 um-1) as ``L = gain * DN + offset``, and ESUN.

    ``gains``, ``offsets`` and ``esun`` (W m-2 um-1) hold one value per band: blue, green,
    red, nir (a synthetic scene with more bands repeats nir).  ``epoch`` is the year of the
    table (None when unknown); ``source`` says where the numbers come from.

    A row of the package table ``geocloud/data/cresda_calibration.csv`` (CRESDA's yearly
    absolute calibration coefficients; see docs/archives.md) has ``status`` ``confirmed``
    (two or more independent transcriptions agree), ``single_source``, or ``unresolved``
    (sources disagree, the row's note says how); a sensor profile's default table has
    ``status="profile"``.  ``use`` says how it serves the scene asked for: ``exact`` (the
    acquisition year's table), ``carried forward`` (the nearest earlier year's),
    ``earliest`` (before the first epoch) or ``profile`` (a sensor's default table, for
    any camera and year).  ``approximate`` is True unless the table is exact and confirmed.
    ``dn_max`` is the largest DN the sensor records, when known.
    """

    satellite: str
    sensor: str
    epoch: int | None
    gains: tuple[float, ...]
    offsets: tuple[float, ...]
    esun: tuple[float, ...]
    source: str
    status: str = "confirmed"
    use: str = "exact"
    note: str = ""
    dn_max: int | None = None

    @property
    def approximate(self) -> bool:
        return self.use != "exact" or self.status != "confirmed"

    def describe(self) -> str:
        """One line for stats, tags and ``geocloud info``: which table, and how it applies."""
        how = self.use if self.use == "exact" else f"{self.use}, approximate"
        return f"CRESDA {self.satellite} {self.sensor} {self.epoch} ({how}; {self.status.replace('_', ' ')})"

    def toa_coefficients(
        self, sun_elevation: float, when: datetime | None
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-band (a, b) with ``rho = a * DN + b`` (:func:`toa_coefficients`)."""
        return toa_coefficients(self.gains, self.offsets, self.esun, sun_elevation, when)

    #: item names of :meth:`__getitem__` -> attribute names.
    _ITEMS = {"gain": "gains", "offset": "offsets", "esun": "esun", "satellite": "satellite",
              "sensor": "sensor", "source": "source", "dn_max": "dn_max", "epoch": "epoch"}  # fmt: skip

    def __getitem__(self, key: str) -> Any:
        """The calibration as a record: ``gain``, ``offset``, ``esun``, ``bands``, ``dn_max``,
        ``satellite``, ``sensor``, ``source``, ``epoch``."""
        if key == "bands":
            return BANDS
        try:
            return getattr(self, self._ITEMS[key])
        except KeyError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]``, or ``default`` for a name it does not hold."""
        try:
            return self[key]
        except KeyError:
            return default


def earth_sun_distance(when: datetime | None) -> float:
    """Earth-Sun distance in AU (1.0 when the date is unknown)."""
    if when is None:
        return 1.0
    doy = when.timetuple().tm_yday
    return 1.0 - 0.01672 * math.cos(math.radians(0.9856 * (doy - 4)))


def toa_factors(esun: tuple[float, ...], sun_elevation: float, when: datetime | None) -> tuple[float, ...]:
    """Per-band ``k`` with ``rho = k * L``: ``pi * d^2 / (ESUN * sin(sun_elevation))``."""
    d = earth_sun_distance(when)
    return tuple(math.pi * d * d / (e * math.sin(math.radians(sun_elevation))) for e in esun)


def toa_coefficients(
    gains: tuple[float, ...], biases: tuple[float, ...], esun: tuple[float, ...],
    sun_elevation: float, when: datetime | None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:  # fmt: skip
    """Per-band (a, b) with ``rho = a * DN + b`` for a radiance-calibrated sensor:
    ``rho = pi * d^2 * (gain * DN + bias) / (ESUN * sin(sun_elevation))``."""
    k = toa_factors(esun, sun_elevation, when)
    a = tuple(g * kk for g, kk in zip(gains, k, strict=True))
    b = tuple(bi * kk for bi, kk in zip(biases, k, strict=True))
    return a, b


def _per_band(values: Any, ndim: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape((-1,) + (1,) * (ndim - 1))


def dn_to_reflectance(dn: np.ndarray, a: Any, b: Any) -> np.ndarray:
    """``rho = a * DN + b`` band by band: (C, ...) DN -> float32 reflectance (float32 arithmetic)."""
    out = np.asarray(dn).astype(np.float32, copy=True)
    out *= _per_band(a, out.ndim)
    out += _per_band(b, out.ndim)
    return out


def reflectance_to_dn(reflectance: np.ndarray, a: Any, b: Any) -> np.ndarray:
    """The inverse of :func:`dn_to_reflectance`, ``(rho - b) / a`` in float32 (not rounded)."""
    return (reflectance - _per_band(b, np.ndim(reflectance))) / _per_band(a, np.ndim(reflectance))
