"""Orthorectification of a scene, or of the raster outputs of a run, with their RPCs."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, NotARasterError
from ..profiles import ortho_cog, ortho_tiff
from .metadata import RASTER_SUFFIXES
from .rpc import find_rpb, read_rpb


def orthorectify(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    *,
    dst_crs: str | None = None,
    resolution: float | None = None,
    rpcs=None,
    dem: str | None = None,
    height: float | None = None,
    resampling: str = "bilinear",
    cog: bool = False,
    progress=None,
) -> Path:
    """Warp a scene with its RPCs onto a map grid, window by window (bounded memory).

    The band descriptions and tags are kept (plus ``GEOCLOUD_ORTHO=RPC``).  ``cog=True``
    writes a Cloud-Optimised GeoTIFF (overviews with ``nearest`` for masks, ``average``
    otherwise).  ``dst_path`` may equal ``src_path``: the result replaces it atomically.

    ``dst_crs`` defaults to the UTM zone of the scene centre; ``resolution`` to the
    native GSD.  ``rpcs`` default to the dataset's own (GDAL reads a sidecar ``.rpb``)
    or the ``.rpb`` beside it.  ``dem`` (a raster path) or ``height`` (metres) refine
    the terrain; without them the RPC height offset is used.
    """
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject
    from rasterio.warp import transform as warp_transform
    from rasterio.windows import transform as window_transform

    from ..errors import OutputError

    src_path, dst_path = Path(src_path), Path(dst_path)
    try:
        src = rasterio.open(src_path)
    except rasterio.errors.RasterioIOError as exc:
        raise NotARasterError(f"{src_path} cannot be opened as a raster ({exc})") from exc
    with src:
        if rpcs is None:
            rpcs = src.rpcs
        if rpcs is None:
            rpb = find_rpb(src_path)
            if rpb is None:
                raise InputError(
                    f"{src_path} has no RPCs (no RPC metadata and no .rpb beside it); "
                    "--ortho needs the vendor's .rpb file next to the scene"
                )
            rpcs = read_rpb(rpb)
        if dst_crs is None:
            zone = int((rpcs.long_off + 180) // 6) + 1
            dst_crs = f"EPSG:{(32600 if rpcs.lat_off >= 0 else 32700) + zone}"
        extras: dict[str, object] = {}
        if dem is not None:
            extras["RPC_DEM"] = str(dem)
        elif height is not None:
            extras["RPC_HEIGHT"] = float(height)
        else:
            extras["RPC_HEIGHT"] = float(rpcs.height_off)
        if resolution is None:
            # GSD from the RPC scale: degrees per pixel near the centre, in metres.
            xs, ys = warp_transform(
                "EPSG:4326",
                dst_crs,
                [rpcs.long_off, rpcs.long_off + rpcs.long_scale / rpcs.samp_scale],
                [rpcs.lat_off, rpcs.lat_off],
            )
            resolution = float(round(abs(xs[1] - xs[0]), 2)) or None
        transform, width, height_px = calculate_default_transform(
            "EPSG:4326", dst_crs, src.width, src.height, rpcs=rpcs, resolution=resolution, **extras
        )
        profile = {
            "driver": "GTiff",
            "width": width,
            "height": height_px,
            "count": src.count,
            "dtype": src.dtypes[0],
            "crs": dst_crs,
            "transform": transform,
            "nodata": src.nodata if src.nodata is not None else 0,
            **ortho_tiff(),
        }
        tmp = dst_path.with_name(dst_path.name + ".partial")
        try:
            dst = rasterio.open(tmp, "w", **profile)
        except rasterio.errors.RasterioIOError as exc:
            raise OutputError(f"cannot write {dst_path} ({exc}); check the output folder") from exc
        bands = list(range(1, src.count + 1))
        with dst:
            for i in bands:
                dst.set_band_description(i, src.descriptions[i - 1] or "")
            windows = [w for _, w in dst.block_windows(1)]
            for n, w in enumerate(windows):
                # GDAL warps from the dataset band, reading only the source chunks it needs.
                block = np.full(
                    (src.count, int(w.height), int(w.width)), profile["nodata"], dtype=profile["dtype"]
                )
                reproject(
                    rasterio.band(src, bands),
                    block,
                    rpcs=rpcs,
                    src_crs="EPSG:4326",
                    src_nodata=src.nodata,
                    dst_crs=dst_crs,
                    dst_transform=window_transform(w, transform),
                    dst_nodata=profile["nodata"],
                    resampling=Resampling[resampling],
                    **extras,
                )
                dst.write(block, window=w)
                if progress is not None:
                    progress(n + 1, len(windows))
            dst.update_tags(**src.tags(), GEOCLOUD_ORTHO="RPC", **{k: str(v) for k, v in extras.items()})
        if cog:
            from rasterio.shutil import copy as rio_copy

            tmp_cog = dst_path.with_name(dst_path.name + ".cog.partial")
            ovr = "NEAREST" if resampling == "nearest" else "AVERAGE"
            try:
                rio_copy(tmp, tmp_cog, driver="COG", **ortho_cog(ovr))
            finally:
                tmp.unlink(missing_ok=True)
            tmp = tmp_cog
        os.replace(tmp, dst_path)
    return dst_path


def orthorectify_outputs(
    outputs: dict[str, list[Path]],
    *,
    dst_crs: str | None = None,
    resolution: float | None = None,
    dem: str | None = None,
    height: float | None = None,
) -> dict[str, list[Path]]:
    """``--ortho``: warp the raster outputs of :func:`geocloud.pipeline.process_scene` with
    their RPCs, in place, as COGs (masks with nearest neighbour, maps bilinear).

    Cloud detection runs in the sensor geometry (no resampling of the input); only the
    products are warped.  Vector products are already in WGS84 (placed through the RPCs).
    Outputs that have a CRS already are left as they are.  Returns the warped paths.
    """
    import rasterio

    done: dict[str, list[Path]] = {}
    for name, paths in outputs.items():
        for p in paths:
            if p.suffix.lower() not in RASTER_SUFFIXES:
                continue
            with rasterio.open(p) as ds:
                if ds.crs is not None:
                    continue
                if ds.rpcs is None:
                    raise InputError(
                        f"{p.name} has neither a CRS nor RPCs, so --ortho cannot place it; keep the vendor .rpb "
                        "file beside the scene (GDAL reads it) or drop --ortho"
                    )
                nearest = ds.dtypes[0] == "uint8"
            orthorectify(p, p, dst_crs=dst_crs, resolution=resolution, dem=dem, height=height,
                         resampling="nearest" if nearest else "bilinear", cog=True)  # fmt: skip
            done.setdefault(name, []).append(p)
    return done
