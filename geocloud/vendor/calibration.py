"""CRESDA absolute calibration tables of GaoFen and ZiYuan-3 sensors.

The package table ``geocloud/data/cresda_calibration.csv`` holds one row per satellite,
sensor and year; :func:`lookup_calibration` picks the row that serves a scene.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..calibration import Calibration
from ..errors import GeocloudError

#: the package table of CRESDA calibration coefficients (one row per satellite, sensor, year).
CALIBRATION_TABLE = Path(__file__).parent.parent / "data" / "cresda_calibration.csv"
CALIBRATION_STATUSES = ("confirmed", "single_source", "unresolved")


def load_calibrations(
    path: str | os.PathLike[str] = CALIBRATION_TABLE,
) -> dict[tuple[str, str], tuple[Calibration, ...]]:
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
                raise GeocloudError(
                    f"calibration table {path} line {i} is malformed ({exc}); fix the row"
                ) from exc
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

    sat = normalize_satellite(satellite)
    sen = sensor.upper().replace("-", "").replace("_", "")
    epochs = CALIBRATIONS.get((sat, sen)) or CALIBRATIONS.get((sat, sen.rstrip("0123456789")))
    if not epochs:
        return None
    earlier = [c for c in epochs if c.epoch <= year]
    if not earlier:
        return replace(
            epochs[0],
            use="earliest",
            note=_join(epochs[0].note, f"no table before {epochs[0].epoch}; used for {year}"),
        )
    chosen = earlier[-1]
    if chosen.epoch == year:
        return chosen
    return replace(
        chosen, use="carried forward", note=_join(chosen.note, f"the {chosen.epoch} table used for {year}")
    )


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b


def normalize_satellite(sat: str) -> str:
    s = sat.upper().replace("-", "").replace("_", "")
    if s in ("ZY301", "ZY31", "ZY3", "ZY3A"):
        return "ZY301"
    if s in ("ZY302", "ZY32"):
        return "ZY302"
    if s in ("ZY303", "ZY33"):
        return "ZY303"
    return s
