"""Vendor deliveries of GaoFen-1 WFV/PMS and ZiYuan-3 MUX scenes.

A delivery is a folder or a ``.tar.gz`` holding the GeoTIFF (often ``.tiff``), an XML
metadata file and an RPC00B ``.rpb`` file, e.g.::

    GF1_WFV3_E89.0_N23.9_20200523_L1A0004819525.tiff / .xml / .rpb
    GF1_PMS1_E69.4_N33.3_20220624_L1A0006547030-MSS1.tiff / .xml / .rpb
    ZY3_MUX_E116.5_N39.9_20130412_L1A0001234567.tif / .xml / .rpb

This package reads those pieces, never the pixels.  Its modules:

* :mod:`.metadata`: :func:`parse_metadata_xml` reads GF ``<ProductMetaData>`` and ZY-3
  ``<sensor_corrected_metadata>`` (fields under ``ProductInfo``) into a
  :class:`VendorMetadata`: satellite, sensor, acquisition time in UTC, sun geometry,
  the vendor's ``CloudPercent``, corners and bands; :func:`find_vendor_metadata` finds
  that XML beside a scene (used by sensor detection).
* :mod:`.calibration`: the CRESDA tables of :class:`~geocloud.calibration.Calibration`
  (published DN -> radiance gains/offsets and the band solar irradiance ESUN per sensor
  and year); :meth:`VendorMetadata.toa_scale_offset` folds them with the sun geometry
  into ``reflectance = DN * scale + offset`` per band.
* :mod:`.rpc`: :func:`read_rpb` parses ``.rpb`` into :class:`rasterio.rpc.RPC`.
* :mod:`.ortho`: :func:`orthorectify` warps a scene with its RPCs.
* :mod:`.delivery`: :func:`safe_extract` unpacks a tar archive refusing traversal, links
  and oversize members; :func:`open_delivery` turns a folder or archive into a
  :class:`Delivery`; :func:`delivery_scene` gives ``geocloud process`` the raster of a
  delivery, named after the delivery, and removes what it extracted.
"""

from __future__ import annotations

from ..calibration import Calibration, earth_sun_distance
from ..errors import ArchiveError
from .calibration import (
    CALIBRATION_STATUSES,
    CALIBRATION_TABLE,
    CALIBRATIONS,
    load_calibrations,
    lookup_calibration,
    normalize_satellite,
)
from .delivery import (
    Delivery,
    ExtractLimits,
    cleanup_delivery,
    delivery_scene,
    delivery_stem,
    is_archive,
    is_delivery,
    open_delivery,
    safe_extract,
)
from .metadata import (
    BEIJING_UTC_OFFSET,
    PROFILE_BY_SENSOR,
    RASTER_SUFFIXES,
    VendorMetadata,
    datetime_from_filename,
    find_vendor_metadata,
    parse_metadata_xml,
    solar_position,
)
from .ortho import orthorectify, orthorectify_outputs
from .rpc import find_rpb, parse_rpb, read_rpb

__all__ = [
    "BEIJING_UTC_OFFSET",
    "CALIBRATIONS",
    "CALIBRATION_STATUSES",
    "CALIBRATION_TABLE",
    "PROFILE_BY_SENSOR",
    "RASTER_SUFFIXES",
    "ArchiveError",
    "Calibration",
    "Delivery",
    "ExtractLimits",
    "VendorMetadata",
    "cleanup_delivery",
    "datetime_from_filename",
    "delivery_scene",
    "delivery_stem",
    "earth_sun_distance",
    "find_rpb",
    "find_vendor_metadata",
    "is_archive",
    "is_delivery",
    "load_calibrations",
    "lookup_calibration",
    "normalize_satellite",
    "open_delivery",
    "orthorectify",
    "orthorectify_outputs",
    "parse_metadata_xml",
    "parse_rpb",
    "read_rpb",
    "safe_extract",
    "solar_position",
]
