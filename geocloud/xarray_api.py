"""A lazy xarray/dask API for notebooks: the same clouds as ``geocloud process``.

>>> import geocloud.xarray_api as gx
>>> scene = gx.open_scene("GF1_WFV3_....tif", chunks=1024)    # lazy DataArray (band, y, x) of DN
>>> ds = gx.detect_clouds("GF1_WFV3_....tif")                  # lazy Dataset: score, mask, threshold
>>> ds.mask.rio.to_raster("mask.tif")  # or ds.mask.sel(x=..., y=...).plot(); ds.compute()

How it maps onto the engine:

* the scene's band order and DN -> reflectance conversion are decided exactly as the CLI
  does (:func:`geocloud.plan.scene_radiometry`: vendor XML, tags, --sensor...);
* pixel validity is GDAL's mask for the selected bands (plus finiteness), as
  :class:`geocloud.scene.SceneReader` decides it, read lazily chunk by chunk;
* the model runs on every chunk grown by the model's halo inside the scene
  (``dask.array.overlap`` with no boundary padding: a chunk at the scene edge starts or
  ends there, like the engine's edge blocks, and one at the far edge is padded with
  invalid zeros to the model's block multiple, as the engine pads the scene), and the halo
  is trimmed.  Models are *local* (see :mod:`geocloud.models.base`), so this equals the
  engine's feathered mosaic up to float rounding, edges included, as long as the chunk
  size is a multiple of the model's block multiple (8 for the CAM; the default 1024 is);
* the scene threshold is a lazy reduction of :class:`geocloud.threshold.ScoreStats` over
  full-width strips, then :func:`geocloud.threshold.fit_threshold`; the mask is
  :func:`geocloud.threshold.classify` with it (0 clear, 1 cloud, 255 nodata);
* cloud shadow (class 2, unless ``config.shadow`` is False): the displacement is searched
  once on a pooled view of the scene and the class marked per chunk grown by the halo of
  the longest displacement, as the engine's shadow stage does (:func:`_shadow`).

Everything stays lazy until computed; results carry the input's x/y coordinates and CRS.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .config import ProcessConfig
from .errors import ConfigError, InputError
from .models.fill import fill_nodata


def open_scene(path: str | os.PathLike[str], chunks: int | dict[str, int] = 1024, **kwargs: Any):
    """The scene as a lazy (band, y, x) DataArray of its stored values (rioxarray).

    ``chunks`` is the chunk side in pixels (bands are always one chunk) or a rioxarray
    chunks dict.  Extra keywords go to :func:`rioxarray.open_rasterio`.
    """
    import rioxarray

    from .scene import open_scene as _check

    info = _check(path)  # the engine's checks and error messages (missing, not a raster...)
    ch = chunks if isinstance(chunks, dict) else {"band": -1, "y": int(chunks), "x": int(chunks)}
    da = rioxarray.open_rasterio(info.path, chunks=ch, **kwargs)
    if isinstance(da, list) or not hasattr(da, "dims") or "band" not in da.dims:
        raise InputError(f"{info.path} did not open as one (band, y, x) raster; pass a single-image GeoTIFF")
    da.attrs["geocloud_path"] = str(info.path)
    return da


def _valid_block(
    block: np.ndarray, path: str, indexes: tuple[int, ...], block_info: Any = None
) -> np.ndarray:
    from rasterio.windows import Window

    from .scene import SceneReader
    from .scene import open_scene as _open

    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    with SceneReader(_open(path), indexes) as reader:
        _, valid = reader.read(Window(c0, r0, c1 - c0, r1 - r0))
    return valid


def _score_block(x: np.ndarray, model: Any, n_bands: int, multiple: int = 1) -> np.ndarray:
    """(bands + 1, h, w): reflectance bands and validity -> (h, w) score, NaN where invalid.

    A block whose sides are not multiples of ``multiple`` (one at the far scene edge) is
    padded with invalid zeros first, as the engine pads the scene.
    """
    valid = x[n_bands] > 0.5
    h, w = valid.shape
    if not valid.any():
        return np.full(valid.shape, np.nan, np.float32)
    ph, pw = (-h) % multiple, (-w) % multiple
    refl = np.zeros((n_bands, h + ph, w + pw), np.float32)
    refl[:, :h, :w] = x[:n_bands]
    ok = np.zeros((h + ph, w + pw), bool)
    ok[:h, :w] = valid
    refl[:, ~ok] = 0.0
    if model.spec.fill_nodata:  # inside the scene only: the padding lies past its edge
        fill_nodata(refl, ok, np.pad(~valid, ((0, ph), (0, pw))))
    score = model.predict(refl[None], ok[None]).maps["score"][0, 0, :h, :w].astype(np.float32)
    score[~valid] = np.nan
    return score


def _aligned_chunks(n: int, size: int, multiple: int, halo: int) -> tuple[int, ...]:
    """Chunk lengths along an axis of ``n`` px: about ``size`` each, every boundary a
    multiple of ``multiple``, none shorter than ``halo`` (a short last one joins its neighbour)."""
    size = max(multiple, -(-size // multiple) * multiple, -(-halo // multiple) * multiple)
    out = [size] * (n // size)
    rest = n - sum(out)
    if rest:
        if out and rest < halo:
            out[-1] += rest
        else:
            out.append(rest)
    return tuple(out) or (n,)


def _partial_stats(strip: np.ndarray, row0: int, height: int, width: int, cloudy_above: float) -> np.ndarray:
    from .threshold import ScoreStats

    st = ScoreStats(height, width, cloudy_above)
    st.update(row0, strip)
    return np.stack([st.count.astype(np.float64), st.total, st.total_sq, st.above.astype(np.float64)])


def _fit(parts: list[np.ndarray], height: int, width: int, spec: Any, threshold_cfg: Any) -> Any:
    from .threshold import ScoreStats, fit_threshold

    st = ScoreStats(height, width, spec.default_threshold)
    total = np.sum(parts, axis=0)
    st.count = total[0].astype(np.int64)
    st.total, st.total_sq = total[1], total[2]
    st.above = total[3].astype(np.int64)
    return fit_threshold(st, spec, threshold_cfg)


def _mask(score: Any, result: Any, spec: Any, threshold_cfg: Any) -> Any:
    """The lazy mask of a lazy score.  ``result`` is the delayed :class:`ThresholdResult`;
    edge growing (the model's ``grow_radius``) reads the score ``grow_radius`` px around
    each chunk, as the engine's second pass does, so the mask equals the engine's."""
    import dask
    import dask.array as da

    from .threshold import classify, growing_radius

    def scalar(get: Any) -> Any:
        return da.from_delayed(dask.delayed(lambda r: np.float64(get(r)))(result), shape=(), dtype=np.float64)

    t = scalar(lambda r: r.value)
    low = scalar(lambda r: np.nan if r.grow_low is None else r.grow_low)
    rad = scalar(lambda r: r.grow_radius)

    def one(s: np.ndarray, t: np.ndarray, low: np.ndarray, rad: np.ndarray) -> np.ndarray:
        lo = None if np.isnan(low) else float(low)
        return classify(s, float(t), lo, int(rad))

    radius = growing_radius(spec, threshold_cfg)
    if radius <= 0:
        return da.map_blocks(one, score, t, low, rad, dtype=np.uint8)
    edges = {0: "none", 1: "none"}
    grown = da.overlap.overlap(score, depth={0: radius, 1: radius}, boundary=edges)
    m = da.map_blocks(one, grown, t, low, rad, dtype=np.uint8)
    return da.overlap.trim_internal(m, {0: radius, 1: radius}, boundary=edges)


def _shadow_block(x: np.ndarray, n_bands: int, shift: Any, config: Any) -> np.ndarray:
    """(bands + 2, h, w): reflectance, validity and the mask -> the mask with class 2 on
    the clear pixels :func:`geocloud.shadow.shadow_mask` finds."""
    from .shadow import shadow_mask
    from .threshold import CLEAR, CLOUD, NODATA, SHADOW

    mask = x[n_bands + 1].astype(np.uint8)
    if shift is None:
        return mask
    cloud = mask == CLOUD
    if not cloud.any():
        return mask
    valid = (x[n_bands] > 0.5) & (mask != NODATA)
    shadow = shadow_mask(x[:n_bands], cloud, valid, shift, config)
    mask[shadow & (mask == CLEAR)] = SHADOW
    return mask


def _shadow(refl: Any, valid: Any, mask: Any, *, n_bands: int, sun_azimuth: float | None,
            sun_elevation: float | None, pixel_size: float | None) -> Any:  # fmt: skip
    """The lazy mask with the cloud-shadow class.

    The displacement is searched once on a view of the scene pooled to at most
    :data:`geocloud.passes.SHADOW_VIEW_PX` px on its long side (:func:`geocloud.passes.shadow_view_factor`), as the engine's shadow stage
    does; each chunk is then grown by the halo of the longest displacement searched (the
    actual one is not known when the graph is built), which covers what
    :func:`geocloud.shadow.shadow_mask` reads around it.
    """
    import dask
    import dask.array as da

    from .passes import shadow_view_factor
    from .shadow import ShadowConfig, ShadowShift, pooled_shift
    from .threshold import CLOUD

    cfg = ShadowConfig()
    height, width = mask.shape
    f = shadow_view_factor(height, width)
    h, w = height // f, width // f
    ck = max(f, 1024 // f * f)
    ok = valid[: h * f, : w * f].astype(np.float32).rechunk(ck)
    cl = ((mask[: h * f, : w * f] == CLOUD) & valid[: h * f, : w * f]).astype(np.float32).rechunk(ck)
    rs = (refl[:, : h * f, : w * f] * ok[None]).rechunk({0: -1, 1: ck, 2: ck})
    n_ok, n_cloud = da.coarsen(np.sum, ok, {0: f, 1: f}), da.coarsen(np.sum, cl, {0: f, 1: f})
    mean = da.coarsen(np.sum, rs, {0: 1, 1: f, 2: f}) / da.maximum(n_ok, 1)[None]
    shift = dask.delayed(pooled_shift)(mean, n_ok, n_cloud, f, sun_azimuth=sun_azimuth, sun_elevation=sun_elevation,
                                       pixel_size=pixel_size, config=cfg)  # fmt: skip
    longest = cfg.max_shift_px(pixel_size) + f
    depth = cfg.halo(ShadowShift(dy=longest, dx=0.0, score=0.0))
    stack = da.concatenate([refl, valid[None].astype(np.float32), mask[None].astype(np.float32)], axis=0)
    # chunks at least as long as the halo (dask's overlap needs it); an axis that fits in
    # one such chunk needs no overlap at all
    sizes, depths = {0: -1}, {0: 0}
    for axis, n in ((1, height), (2, width)):
        size = max(depth, max(mask.chunks[axis - 1]))
        sizes[axis], depths[axis] = (-1, 0) if size >= n else (size, depth)
    stack = stack.rechunk(sizes)
    out = da.map_overlap(_shadow_block, stack, depth=depths, boundary="none",
                         drop_axis=0, dtype=np.uint8, n_bands=n_bands, shift=shift, config=cfg)  # fmt: skip
    return out.rechunk(mask.chunks)


def detect_clouds(
    scene: Any,
    config: ProcessConfig | None = None,
    *,
    chunks: int = 1024,
    model: Any = None,
    scale: float | None = None,
    offset: float = 0.0,
    sun_elevation: float | None = None,
    sun_azimuth: float | None = None,
):
    """Lazy cloud score and mask of a scene (path, or a DataArray from :func:`open_scene`).

    Returns an ``xarray.Dataset`` with ``score`` (float32, NaN nodata), ``mask`` (uint8:
    0 clear, 1 cloud, 2 cloud shadow, 255 nodata; no class 2 with ``config.shadow``
    False, as ``--no-shadow``) and ``threshold`` (0-d), with the scene's coordinates and
    CRS, all lazy.  ``config`` is the same :class:`~geocloud.config.ProcessConfig` the CLI
    builds (model, sensor, bands, threshold options); ``sun_azimuth`` is ``--sun-azimuth``
    (default: the vendor XML, a Landsat MTL or Sentinel-2 ``MTD_TL.xml`` beside the scene,
    else searched).
    """
    import dask
    import dask.array as da
    import xarray as xr

    from .plan import SceneMetadata, load_model_for, scene_radiometry
    from .scene import open_scene as _open

    cfg = config or ProcessConfig()
    cfg.validate()
    arr = scene if isinstance(scene, xr.DataArray) else open_scene(scene, chunks)
    path = arr.attrs.get("geocloud_path")
    if path is None:
        raise ConfigError(
            "this DataArray does not come from geocloud.xarray_api.open_scene, so its file (for the vendor "
            "XML, tags and nodata mask) is unknown; open it with open_scene(path) first"
        )
    info = _open(path)
    meta = SceneMetadata.read(info.path)
    radiometry = scene_radiometry(info, cfg, scale=scale, offset=offset, sun_elevation=sun_elevation, metadata=meta)
    model = model or load_model_for(cfg)
    spec = model.spec
    halo = spec.halo if cfg.tiling.halo is None else cfg.tiling.halo

    dn = arr.data
    if dn.chunks[0] != (dn.shape[0],):
        dn = dn.rechunk({0: -1})
    sel = dn[[i - 1 for i in radiometry.indexes]]
    a = np.asarray(radiometry.a, np.float32)[:, None, None]
    b = np.asarray(radiometry.b, np.float32)[:, None, None]
    refl = sel.astype(np.float32) * a + b
    plane = dn[0]
    valid = plane.map_blocks(_valid_block, path=str(info.path), indexes=tuple(radiometry.indexes), dtype=bool)
    stack = da.concatenate([refl, valid[None].astype(np.float32)], axis=0).rechunk({0: -1})
    n_bands = len(radiometry.indexes)
    # chunks are grown by the halo inside the scene only: like the engine's edge blocks, a
    # chunk at the scene edge starts (or ends) there, so the model sees the same edge.  Chunk
    # edges sit on multiples of the model's block multiple (as the engine's block origins),
    # and no chunk is thinner than the halo (dask would otherwise rechunk off that grid).
    stack = stack.rechunk(
        {1: _aligned_chunks(stack.shape[1], chunks, spec.block_multiple, halo),
         2: _aligned_chunks(stack.shape[2], chunks, spec.block_multiple, halo)}
    )  # fmt: skip
    if halo > 0:
        grown = da.overlap.overlap(
            stack, depth={0: 0, 1: halo, 2: halo}, boundary={0: "none", 1: "none", 2: "none"}
        )
    else:
        grown = stack
    score_g = grown.map_blocks(
        _score_block,
        model=model,
        n_bands=n_bands,
        multiple=spec.block_multiple,
        drop_axis=0,
        dtype=np.float32,
    )
    score = (
        da.overlap.trim_internal(score_g, {0: halo, 1: halo}, boundary={0: "none", 1: "none"})
        if halo > 0
        else score_g
    )

    h, w = score.shape
    strips = score.rechunk({0: 512, 1: -1})
    offsets = np.cumsum((0,) + strips.chunks[0][:-1])
    parts = [
        dask.delayed(_partial_stats)(blk, int(r0), h, w, spec.default_threshold)
        for blk, r0 in zip(strips.to_delayed().ravel(), offsets, strict=True)
    ]
    result = dask.delayed(_fit)(parts, h, w, spec, cfg.threshold)
    thr = da.from_delayed(dask.delayed(lambda r: np.float64(r.value))(result), shape=(), dtype=np.float64)
    mask = _mask(score, result, spec, cfg.threshold)
    classes = "0 clear, 1 cloud, 255 nodata"
    if cfg.shadow:
        from .plan import pixel_size_m

        mask = _shadow(
            refl, valid, mask, n_bands=n_bands,
            sun_azimuth=sun_azimuth if sun_azimuth is not None else meta.sun_azimuth,
            sun_elevation=radiometry.sun_elevation, pixel_size=pixel_size_m(info),
        )  # fmt: skip
        classes = "0 clear, 1 cloud, 2 cloud shadow, 255 nodata"

    coords = {"y": arr.coords["y"], "x": arr.coords["x"]}
    ds = xr.Dataset(
        {
            "score": (("y", "x"), score, {"long_name": "cloud score", "_FillValue": np.nan}),
            "mask": (
                ("y", "x"),
                mask,
                {"long_name": "cloud mask", "flag_values": classes, "_FillValue": 255},
            ),  # fmt: skip
            "threshold": ((), thr, {"long_name": "scene threshold on the score"}),
        },
        coords=coords,
        attrs={"model": spec.name, "sensor": radiometry.sensor, "scene": info.path.name, "halo": halo},
    )
    if "spatial_ref" in arr.coords:
        ds = ds.assign_coords(spatial_ref=arr.coords["spatial_ref"])
    if arr.rio.crs is not None:
        ds = ds.rio.write_crs(arr.rio.crs)
    return ds


__all__ = ["detect_clouds", "open_scene"]
