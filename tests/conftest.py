"""Shared fixtures: the real-data folder, and a factory of tiny seeded rasters.

* ``shared_data``: ``../shared/data`` next to the repository; tests using it skip when absent.
* ``make_raster``: builds small GeoTIFFs in ``tmp_path`` by dtype, nodata kind, georeferencing
  and band count, from :mod:`geocloud.synthetic` (realistic GF-1 WFV-like content with clouds),
  plus the degenerate rasters the error tests need (complex dtype, all nodata, ...).
* ``dead_pid``: the pid of a process that has ended (what a killed run left behind carries).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pyproject.toml; repeated so the markers exist whatever the ini file.
    config.addinivalue_line("markers", "slow: long-running tests, excluded by default (run with -m slow)")
    config.addinivalue_line("markers", "shared_data: needs ../shared/data (skipped when absent)")
    config.addinivalue_line("markers", "gpu: needs CUDA")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run only where torch sees a CUDA device."""
    if not any("gpu" in item.keywords for item in items):
        return
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:
        skip = pytest.mark.skip(reason="no CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def dead_pid() -> int:
    """The pid of a child process that has already exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data`` (relative to the repository root); skips when it is absent."""
    if not (SHARED_DATA / "catalog.csv").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


MakeRaster = Callable[..., Path]


def _write_plain(
    path: Path,
    *,
    width: int,
    height: int,
    bands: int,
    dtype: str,
    seed: int,
    content: str,
    nodata: float | None,
    georef: str,
    tags: dict[str, str] | None,
) -> Path:
    """A raster of random or constant values, for the dtypes/contents synthetic.py refuses."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    shape = (bands, height, width)
    if content == "nodata":
        data = np.full(shape, 0 if nodata is None else nodata, dtype=dtype)
    elif np.dtype(dtype).kind == "c":
        data = (rng.uniform(0, 1000, shape) + 1j * rng.uniform(0, 1000, shape)).astype(dtype)
    elif np.dtype(dtype).kind == "f":
        data = rng.uniform(0.02, 0.5, shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(max(1, info.min), min(info.max, 2000), shape, endpoint=True).astype(dtype)
    prof: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": dtype,
    }
    if nodata is not None:
        prof["nodata"] = nodata
    if georef == "crs":
        prof["crs"] = "EPSG:32650"
        prof["transform"] = Affine(16.0, 0.0, 399_968.0, 0.0, -16.0, 4_500_032.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **prof) as dst:
            dst.write(data)
            if tags:
                dst.update_tags(**tags)
            for i, name in enumerate(("blue", "green", "red", "nir")[:bands], start=1):
                dst.set_band_description(i, name)
    return path


@pytest.fixture
def make_raster(tmp_path: Path) -> MakeRaster:
    """Factory of tiny seeded rasters in ``tmp_path``; returns the path.

    ``make_raster(name="scene.tif", *, width=64, height=64, dtype="uint16", nodata_kind="value",
    georef="crs", bands=4, seed=0, cloud_cover=0.3, content="synthetic", **options)``

    * ``dtype``: uint8 | uint16 | int16 | float32 (synthetic scenes: uint16 is GF-1 WFV DN with
      SATELLITE/SENSOR/SUN_ELEVATION tags, uint8/int16 carry a GDAL reflectance scale, float32
      is reflectance); any other numpy dtype (e.g. ``complex64``) gives random pixels.
    * ``nodata_kind``: value | nan (float32) | mask (internal mask band) | none (no collar).
    * ``georef``: crs | rpc | none.
    * ``content``: ``"synthetic"`` (land, clouds and a nodata collar), ``"nodata"`` (every
      pixel is the nodata value), ``"random"`` (random pixels, no tags).
    * ``options``: any other :class:`geocloud.synthetic.SceneSpec` field (``sensor_tags``,
      ``collar``, ``vendor_xml``, ``write_truth``, ``sun_elevation``, ``cloud_scale``...).
      ``write_truth`` defaults to False; clouds and land use small scales so that a
      64-pixel raster still holds both.
    """
    from geocloud import synthetic

    def factory(
        name: str = "scene.tif",
        *,
        width: int = 64,
        height: int = 64,
        dtype: str = "uint16",
        nodata_kind: str = "value",
        georef: str = "crs",
        bands: int = 4,
        seed: int = 0,
        cloud_cover: float = 0.3,
        content: str = "synthetic",
        **options: Any,
    ) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "synthetic" and dtype in synthetic.DTYPES:
            options.setdefault("write_truth", False)
            options.setdefault("compress", None)
            options.setdefault("blocksize", 256)
            options.setdefault("cloud_scale", 64)
            options.setdefault("land_scale", 64)
            return synthetic.make_scene(
                path,
                width,
                height,
                seed=seed,
                cloud_cover=cloud_cover,
                dtype=dtype,
                nodata=nodata_kind,
                georef=georef,
                bands=bands,
                **options,
            )
        if content not in ("synthetic", "nodata", "random"):
            raise ValueError(f"content {content!r} is not synthetic, nodata or random")
        if options:
            raise TypeError(f"options {sorted(options)} only apply to synthetic content")
        if nodata_kind == "nan":
            nodata: float | None = float("nan")
        elif nodata_kind == "value":
            nodata = synthetic.NODATA_VALUE.get(dtype, 0)
        else:
            nodata = None
        tags = None
        if content == "nodata" and dtype == "uint16":
            tags = {"SATELLITE": "GF1", "SENSOR": "WFV1", "SUN_ELEVATION": "55.0"}
        return _write_plain(
            path,
            width=width,
            height=height,
            bands=bands,
            dtype=dtype,
            seed=seed,
            content=content,
            nodata=nodata,
            georef=georef,
            tags=tags,
        )

    return factory
