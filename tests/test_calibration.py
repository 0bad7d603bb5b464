"""The calibration type, the DN <-> reflectance conversion and the order of the scaling rules."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from geocloud import sensors
from geocloud.calibration import (
    Calibration,
    dn_to_reflectance,
    earth_sun_distance,
    reflectance_to_dn,
    toa_coefficients,
    toa_factors,
)

CAL = Calibration("GF1", "WFV1", 2013, (0.17, 0.14, 0.12, 0.13), (0.5, 0.0, 0.0, -0.2),
                  (1968.6, 1849.2, 1570.2, 1078.2), "test")  # fmt: skip
WHEN = datetime(2020, 6, 1, tzinfo=UTC)


def test_toa_coefficients_fold_radiance_and_sun() -> None:
    a, b = CAL.toa_coefficients(40.0, WHEN)
    d = earth_sun_distance(WHEN)
    for g, o, e, ai, bi, k in zip(
        CAL.gains, CAL.offsets, CAL.esun, a, b, toa_factors(CAL.esun, 40.0, WHEN), strict=True
    ):
        assert k == pytest.approx(math.pi * d * d / (e * math.sin(math.radians(40.0))))
        assert ai == g * k and bi == o * k
    assert (a, b) == toa_coefficients(CAL.gains, CAL.offsets, CAL.esun, 40.0, WHEN)


def test_dn_reflectance_round_trip() -> None:
    a, b = CAL.toa_coefficients(55.0, WHEN)
    dn = np.arange(1, 4 * 6 + 1, dtype=np.uint16).reshape(4, 2, 3) * 50
    rho = dn_to_reflectance(dn, a, b)
    assert rho.dtype == np.float32
    np.testing.assert_allclose(rho[0], np.float32(a[0]) * dn[0] + np.float32(b[0]), rtol=1e-6)
    np.testing.assert_allclose(reflectance_to_dn(rho, a, b), dn, atol=1e-2)


def test_calibration_reads_as_a_record() -> None:
    assert CAL["gain"] == CAL.gains and CAL["offset"] == CAL.offsets and CAL["esun"] == CAL.esun
    assert CAL["bands"] == ("blue", "green", "red", "nir")
    assert CAL.get("dn_max") is None and CAL.get("nope", 7) == 7
    with pytest.raises(KeyError):
        CAL["nope"]


def test_sensor_profiles_hold_calibrations() -> None:
    prof = sensors.get_sensor("gf1_wfv")
    assert isinstance(prof.calibration, Calibration)
    assert prof.gains == prof.calibration.gains and prof.biases == (0.0,) * 4
    assert prof.calibration.approximate and prof.calibration.source == prof.source
    assert sensors.get_sensor("landsat8").calibration is None


def test_scaling_rules_order() -> None:
    assert [r.__name__ for r in sensors.SCALING_RULES] == [
        "user_scale_rule",
        "gdal_scale_rule",
        "float_reflectance_rule",
        "radiance_calibration_rule",
        "profile_scale_rule",
    ]


def _resolve(**kw):
    args = dict(count=4, dtype="uint16", tags={}, descriptions=(None,) * 4, band_scales=(1.0,) * 4,
                band_offsets=(0.0,) * 4, filename="GF1_WFV1_x.tif", sun_elevation=50.0)  # fmt: skip
    args.update(kw)
    return sensors.resolve_radiometry(**args)


def test_first_matching_rule_decides() -> None:
    assert _resolve(scale=1e-4, band_scales=(2.0,) * 4).source == "--scale/--offset"
    assert _resolve(band_scales=(2.0,) * 4, dtype="float32").source == "GDAL band scale/offset"
    assert _resolve(dtype="float32").source == "float input taken as reflectance"
    rad = _resolve()
    assert rad.source.startswith("gf1_wfv calibration") and rad.approximate
    assert _resolve(filename="LC08_x.tif").source.startswith("landsat8: ")
    with pytest.raises(sensors.SensorError, match="unknown DN scaling"):
        _resolve(filename="x.tif")
    with pytest.raises(sensors.SensorError, match="used only with --scale"):
        _resolve(offset=0.1, dtype="float32")
