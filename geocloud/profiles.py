"""GeoTIFF and COG creation profiles: every set of creation options geocloud writes with.

Each function returns a fresh dict: the GTiff ones are merged after the driver, size,
dtype and georeferencing of a dataset profile (``rasterio.open(path, "w", **profile)``),
the COG ones are passed to ``rasterio.shutil.copy(..., driver="COG", **options)``.
"""

from __future__ import annotations

from typing import Any

#: the BIGTIFF choice of every file geocloud writes.
BIGTIFF = "IF_SAFER"


def work_tiff(block_rows: int, *, block_cols: int = 512) -> dict[str, Any]:
    """Intermediate uncompressed tiled GTiff (band-interleaved, sparse) of the streamed levels."""
    return {
        "tiled": True, "blockxsize": block_cols, "blockysize": block_rows,
        "compress": "NONE", "interleave": "band", "BIGTIFF": BIGTIFF, "SPARSE_OK": "TRUE",
    }  # fmt: skip


def output_cog(compress: str, blocksize: int, dtype: str) -> dict[str, Any]:
    """COG driver options of the products, built from streamed overviews.

    ZSTD at level 1; a horizontal predictor for integer data with ZSTD, DEFLATE or LZW.
    """
    opts: dict[str, Any] = {
        "COMPRESS": compress, "BLOCKSIZE": blocksize, "BIGTIFF": BIGTIFF,
        "OVERVIEWS": "FORCE_USE_EXISTING", "NUM_THREADS": "ALL_CPUS",
    }  # fmt: skip
    if compress == "ZSTD":
        opts["LEVEL"] = 1
    if compress in ("ZSTD", "DEFLATE", "LZW") and dtype != "float32":
        opts["PREDICTOR"] = "YES"
    return opts


def ortho_tiff() -> dict[str, Any]:
    """Tiled ZSTD GTiff of an orthorectified scene (512 px blocks)."""
    return {"tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "ZSTD", "BIGTIFF": BIGTIFF}


def ortho_cog(overview_resampling: str) -> dict[str, Any]:
    """COG driver options of an orthorectified scene (ZSTD, 512 px blocks, its own overviews)."""
    return {
        "COMPRESS": "ZSTD",
        "BLOCKSIZE": 512,
        "OVERVIEW_RESAMPLING": overview_resampling,
        "BIGTIFF": BIGTIFF,
    }


def synthetic_tiff(dtype: str, blocksize: int, compress: str | None, level: int | None) -> dict[str, Any]:
    """Pixel-interleaved tiled GTiff of a synthetic scene.

    ``compress`` None: uncompressed.  Otherwise the floating-point predictor for float32,
    the horizontal one for integers, and ``level`` as ZLEVEL (DEFLATE), ZSTD_LEVEL or
    LZMA_PRESET when given.
    """
    prof: dict[str, Any] = {
        "tiled": True, "blockxsize": blocksize, "blockysize": blocksize,
        "interleave": "pixel", "photometric": "MINISBLACK", "BIGTIFF": BIGTIFF,
    }  # fmt: skip
    if compress:
        prof["compress"] = compress
        prof["predictor"] = 3 if dtype == "float32" else 2
        if level is not None:
            key = {"DEFLATE": "zlevel", "ZSTD": "zstd_level", "LZMA": "lzma_preset"}.get(compress.upper())
            if key:
                prof[key] = level
    return prof
