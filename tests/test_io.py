"""SceneReader's shared tile cache: the same pixels as windowed reads, each tile decoded once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio
from rasterio.shutil import copy as rio_copy
from rasterio.transform import from_origin
from rasterio.windows import Window

from geocloud.scene import SceneReader, TileCache, open_scene


def _scene(make_raster, name="s.tif", *, dtype="uint16", nodata_kind="value", tiled=True):
    """A 150 x 200 px ZSTD scene in 64 px tiles (conftest's ``make_raster``: land, clouds,
    a nodata collar), or its copy in strips."""
    path = make_raster(name, width=150, height=200, dtype=dtype, nodata_kind=nodata_kind, compress="ZSTD",
                       blocksize=64)  # fmt: skip
    if dtype == "float32":
        with rasterio.open(path, "r+") as ds:  # NaN in one band only: invalid too
            band = ds.read(2)
            band[20:40, 30:70] = np.nan
            ds.write(band, 2)
    if tiled:
        return path
    striped = path.with_name(f"striped_{path.name}")
    rio_copy(path, striped, driver="GTiff", TILED="NO", COMPRESS="ZSTD")
    return striped


@pytest.mark.parametrize(
    ("dtype", "kind", "tiled"),
    [
        ("uint16", "value", True),
        ("float32", "nan", True),
        ("uint16", "mask", True),
        ("uint16", "value", False),
    ],
)
def test_shared_tile_reads_equal_windowed_reads(make_raster, dtype, kind, tiled) -> None:
    info = open_scene(_scene(make_raster, dtype=dtype, nodata_kind=kind, tiled=tiled))
    assert info.nodata_kind == kind
    rng = np.random.default_rng(1)
    windows = [
        Window(-20, -10, 90, 70),
        Window(100, 150, 80, 80),
        Window(0, 0, 150, 200),
        Window(63, 64, 1, 1),
    ]
    windows += [
        Window(int(c), int(r), int(s), int(s))
        for r, c, s in rng.integers([-40, -40, 1], [220, 170, 120], (30, 3))
    ]
    with (
        SceneReader(info, (1, 2, 3, 4)) as shared,
        SceneReader(info, (1, 2, 3, 4), cache_bytes=None) as direct,
    ):
        assert shared.cache is not None and direct.cache is None
        if not tiled:  # whole rows: bands of strips across the full width
            assert shared.tile is not None and shared.tile[1] == info.width
        for win in windows:
            (a, va), (b, vb) = shared.read(win), direct.read(win)
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(va, vb)
        # the scene's nodata collar (and the float scene's NaN band) reads as invalid
        assert not direct.read(Window(0, 0, info.width, info.height))[1].all()


def test_each_tile_is_decoded_once_by_concurrent_readers(make_raster) -> None:
    info = open_scene(_scene(make_raster))
    windows = [Window(c, r, 80, 80) for r in range(-16, 200, 48) for c in range(-16, 150, 48)] * 3
    with SceneReader(info, (1, 2, 3, 4), cache_bytes=2**30) as reader:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(reader.read, windows))
        assert reader.cache is not None
        assert reader.cache.loads == 4 * 3  # 200 x 150 px in 64 px tiles: 4 rows, 3 columns


def test_tall_strips_are_read_window_by_window(tmp_path) -> None:
    path = tmp_path / "s.tif"
    data = np.random.default_rng(0).integers(1, 4000, (4, 1200, 40)).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=40, height=1200, count=4, dtype="uint16",
                       BLOCKYSIZE="1100", crs="EPSG:32650", transform=from_origin(0, 0, 1, 1)) as ds:  # fmt: skip
        ds.write(data)
    info = open_scene(path)
    assert info.block_shapes[0] == (1100, 40)  # one strip taller than MAX_SHARED_TILE
    with SceneReader(info, (1, 2, 3, 4)) as reader:
        assert reader.cache is None
        got, valid = reader.read(Window(10, 10, 30, 30))
        np.testing.assert_array_equal(got, data[:, 10:40, 10:40])
        assert valid.all()


def test_tile_cache_bounds_its_bytes_and_forgets_failed_loads() -> None:
    cache = TileCache(capacity=3 * 800)
    tile = lambda v: (np.full(100, v, np.float64), None)  # noqa: E731  (800 bytes)
    for k in range(10):
        assert cache.get(k, lambda k=k: tile(k))[0][0] == k
    assert cache._bytes <= cache.capacity and len(cache._entries) == 3
    assert cache.get(9, lambda: tile(-1))[0][0] == 9  # recent: still held, not reloaded
    assert cache.loads == 10

    calls = []

    def failing():
        calls.append(1)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        cache.get("bad", failing)
    assert cache.get("bad", lambda: tile(7))[0][0] == 7  # retried, not the stored failure
    assert len(calls) == 1


def test_waiters_get_the_loaders_result() -> None:
    cache = TileCache(capacity=2**20)
    started, release = threading.Event(), threading.Event()
    loads = []

    def slow():
        loads.append(1)
        started.set()
        release.wait(5)
        return (np.arange(3),)

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(cache.get, "t", slow)
        started.wait(5)
        others = [pool.submit(cache.get, "t", slow) for _ in range(3)]
        release.set()
        results = [f.result(5)[0] for f in [first, *others]]
    assert len(loads) == 1 and all((r == np.arange(3)).all() for r in results)


def test_tile_cache_clear_drops_finished_tiles() -> None:
    cache = TileCache(capacity=2**20)
    cache.get("a", lambda: (np.zeros(10),))
    cache.clear()
    assert cache._bytes == 0 and not cache._entries
    assert cache.get("a", lambda: (np.ones(10),))[0][0] == 1  # loaded again
    assert cache.loads == 2


def test_malloc_is_tuned_unless_the_user_chose(monkeypatch) -> None:
    import ctypes.util
    import platform

    from geocloud.runtime import MALLOC_ARENAS, MMAP_THRESHOLD, TRIM_THRESHOLD, tune_malloc

    if ctypes.util.find_library("c") is None or platform.libc_ver()[0] != "glibc":
        monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
        assert tune_malloc() == {}  # nothing to tune
        return
    for env in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(env, raising=False)
    assert tune_malloc() == {
        "MALLOC_ARENA_MAX": MALLOC_ARENAS,
        "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD,
        "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD,
    }
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    # the user's settings win: only the trim threshold is set
    assert tune_malloc() == {"MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD}


def test_input_cache_holds_two_rows_of_blocks_within_its_bound(make_raster) -> None:
    from geocloud.plan import INPUT_CACHE_MB, input_cache_bytes

    info = open_scene(_scene(make_raster))  # 150 px wide, uint16
    # tiled: (2 blocks + a tile) rows x (swath + a tile) columns x bands x 2 bytes
    assert input_cache_bytes(info, 4, 200, 80, (64, 64)) == (200 + 64) * (80 + 64) * 4 * 2
    # striped: whole rows, whatever the swath
    assert input_cache_bytes(info, 4, 200, 80, (30, 150)) == (200 + 30) * 150 * 4 * 2
    assert input_cache_bytes(info, 4, 2 * 10**6, 80, (30, 150)) == INPUT_CACHE_MB * 2**20


def test_scene_layout_names_tiles_or_strips_and_compression(make_raster) -> None:
    tiled = open_scene(_scene(make_raster, "t.tif"))
    striped = open_scene(_scene(make_raster, tiled=False))
    assert tiled.layout == "tiles of 64x64 px, ZSTD"
    assert striped.layout.startswith("strips of ") and striped.layout.endswith(" rows, ZSTD")


def test_striped_is_whole_rows(make_raster) -> None:
    assert open_scene(_scene(make_raster, tiled=False)).striped
    assert not open_scene(_scene(make_raster, "t.tif")).striped


# ---------------------------------------------------------------- derived sinks
def _field(window: Window, count: int = 3) -> np.ndarray:
    """A deterministic float32 field of the pixel coordinates (with a NaN patch), (count, h, w)."""
    r0, c0 = int(window.row_off), int(window.col_off)
    rr, cc = np.mgrid[r0 : r0 + int(window.height), c0 : c0 + int(window.width)].astype(np.float32)
    out = np.stack([np.sin(rr / 17 + k) * np.cos(cc / 23) + k for k in range(count)]).astype(np.float32)
    out[:, (rr > 300) & (rr < 340) & (cc > 100) & (cc < 130)] = np.nan
    return out


def _stream(sink, width: int, height: int) -> None:
    """Write the field in 96-row strips over two swaths (the pipeline's order)."""
    for c0, c1 in ((0, 512), (512, width)):
        for r0 in range(0, height, 96):
            w = Window(c0, r0, c1 - c0, min(96, height - r0))
            sink.write_window(_field(w), r0, c0)


def _sinks(tmp_path, compute):
    from geocloud.cog import RasterSink, RasterSpec

    width, height = 700, 1100
    spec = RasterSpec(width=width, height=height, count=3, dtype="float32", nodata=float("nan"),
                      crs=rasterio.CRS.from_epsg(32650), transform=from_origin(500000, 4e6, 16, 16),
                      rpcs=None, descriptions=("a", "b", "c"))  # fmt: skip
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    stored = RasterSink(tmp_path / "stored.tif", spec, work, blocksize=256)
    derived = RasterSink(tmp_path / "derived.tif", spec, work, blocksize=256, compute=compute)
    for s in (stored, derived):
        _stream(s, width, height)
    return stored, derived


def test_a_derived_sink_writes_the_same_cog_without_storing_its_full_resolution(tmp_path) -> None:
    """The full resolution comes from ``compute`` through GDAL's Python pixel function;
    overviews from the strips; the COG equals the one assembled from a stored raster."""
    from geocloud.cog import python_pixel_functions

    if not python_pixel_functions():
        pytest.skip("this GDAL cannot call Python pixel functions (the pipeline stores every level)")
    stored, derived = _sinks(tmp_path, _field)
    assert not derived.tmp.exists() and stored.tmp.exists()  # no full-resolution work file
    np.testing.assert_array_equal(derived.read(Window(5, 7, 60, 40)), _field(Window(5, 7, 60, 40)))
    a = stored.finalize({"K": "v"})
    b = derived.finalize({"K": "v"})
    with rasterio.open(a) as fa, rasterio.open(b) as fb:
        assert fb.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert fb.tags()["K"] == "v" and fb.descriptions == ("a", "b", "c") and fb.crs == fa.crs
        assert fb.transform == fa.transform and np.isnan(fb.nodata)
        assert fb.overviews(1) == fa.overviews(1) == [2, 4, 8]
        np.testing.assert_array_equal(fb.read(), _field(Window(0, 0, 700, 1100)))
        for k in (1, 2, 3):
            shape = (3, -(-1100 // 2**k), -(-700 // 2**k))
            np.testing.assert_array_equal(fb.read(out_shape=shape), fa.read(out_shape=shape))
    assert not list((tmp_path / "work").iterdir())  # intermediates discarded


def test_a_failing_derived_computation_raises_its_own_error_and_leaves_no_file(tmp_path) -> None:
    from geocloud.cog import python_pixel_functions
    from geocloud.errors import OutputError

    if not python_pixel_functions():
        pytest.skip("this GDAL cannot call Python pixel functions")

    def compute(window: Window) -> np.ndarray:
        if int(window.row_off) >= 512:
            raise OutputError("the alpha work file is gone")
        return _field(window)

    _, derived = _sinks(tmp_path, compute)
    dest = tmp_path / "derived.partial.tif"
    with pytest.raises(OutputError, match="^the alpha work file is gone$"):  # its own message
        derived.finalize({}, dest)
    assert not dest.exists() and not (tmp_path / "derived.tif").exists()


def test_info_plan_names_the_swaths(make_raster) -> None:
    """geocloud info: a compressed striped scene is read in one swath (each swath decodes
    whole rows), a tiled one in swaths of TilingConfig.swath_width."""
    from geocloud.config import ProcessConfig, TilingConfig
    from geocloud.pipeline import describe_scene

    cfg = ProcessConfig(model="spectral", tiling=TilingConfig(swath_width=64))
    striped = describe_scene(_scene(make_raster, tiled=False), cfg)["plan"]["swaths"]
    tiled = describe_scene(_scene(make_raster, "t.tif"), cfg)["plan"]["swaths"]
    assert striped.startswith("1 of at most 150 columns (compressed strips")
    assert tiled == "1 of at most 150 columns"  # one block column: one swath, no note
