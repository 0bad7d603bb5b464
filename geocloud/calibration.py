"""Radiometric calibration: the calibration type and the DN -> radiance -> reflectance formulas.

A radiance-calibrated sensor records DN with ``L = gain * DN + offset`` (W m-2 sr-1 um-1);
TOA reflectance is ``rho = pi * d^2 * L / (ESUN * sin(sun_elevation))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime


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


def earth_sun_distance(when: datetime | None) -> float:
    """Earth-Sun distance in AU (1.0 when the date is unknown)."""
    if when is None:
        return 1.0
    doy = when.timetuple().tm_yday
    return 1.0 - 0.01672 * math.cos(math.radians(0.9856 * (doy - 4)))


def toa_coefficients(
    gains: tuple[float, ...], biases: tuple[float, ...], esun: tuple[float, ...],
    sun_elevation: float, when: datetime | None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:  # fmt: skip
    """Per-band (a, b) with ``rho = a * DN + b`` for a radiance-calibrated sensor:
    ``rho = pi * d^2 * (gain * DN + bias) / (ESUN * sin(sun_elevation))``."""
    d = earth_sun_distance(when)
    k = [math.pi * d * d / (e * math.sin(math.radians(sun_elevation))) for e in esun]
    a = tuple(g * kk for g, kk in zip(gains, k, strict=True))
    b = tuple(bi * kk for bi, kk in zip(biases, k, strict=True))
    return a, b
