"""Every bad input of issue 2 item 11, through the CLI (click's CliRunner).

Each case must give exit code 2, a one-line message that names the problem and the fix,
no traceback, and leave no output (nor partial/temporary file) behind in OUTDIR.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from geocloud.cli.main import cli


def runner() -> CliRunner:
    """A CliRunner with stderr kept apart (the default from click 8.2; ``mix_stderr=False`` before)."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def run(*args: str) -> Result:
    return runner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_user_error(result: Result, problem: str, fix: str) -> str:
    """Exit code 2, one line on stderr matching ``problem`` and ``fix`` (regexes), no traceback."""
    text = result.output + (result.stderr or "")
    assert result.exit_code == 2, (
        f"exit code {result.exit_code}, expected 2; output:\n{text}\n{result.exception!r}"
    )
    assert "Traceback" not in text
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        result.exception
    )
    lines = error_lines(result)
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    msg = lines[0]
    assert re.search(problem, msg, re.IGNORECASE), f"message does not name the problem ({problem!r}): {msg}"
    assert re.search(fix, msg, re.IGNORECASE), f"message does not name the fix ({fix!r}): {msg}"
    return msg


def files_in(outdir: Path) -> list[str]:
    """Everything under ``outdir`` (hidden and partial files included); [] if it does not exist."""
    if not outdir.exists():
        return []
    return sorted(str(p.relative_to(outdir)) for p in outdir.rglob("*"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    return tmp_path / "out"


def test_missing_file(tmp_path: Path, outdir: Path) -> None:
    res = run("process", tmp_path / "nope.tif", "-o", outdir)
    assert_user_error(res, r"nope\.tif.*(does not exist|not found|no such)", r"check the path|pass")
    assert files_in(outdir) == []


def test_not_a_raster(tmp_path: Path, outdir: Path) -> None:
    scene = tmp_path / "notes.tif"
    scene.write_text("this is a text file, not a GeoTIFF\n" * 20)
    res = run("process", scene, "-o", outdir)
    assert_user_error(
        res, r"not a raster|not recognized|cannot be read", r"pass a GeoTIFF|geotiff|re-?export"
    )
    assert files_in(outdir) == []


def test_empty_file(tmp_path: Path, outdir: Path) -> None:
    scene = tmp_path / "empty.tif"
    scene.touch()
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"empty|0 bytes", r"re-?download|re-?export|pass")
    assert files_in(outdir) == []


def test_truncated_file(make_raster, outdir: Path) -> None:
    scene = make_raster("truncated.tif", width=300, height=300, compress=None, blocksize=64)
    data = scene.read_bytes()
    scene.write_bytes(data[: len(data) // 2])
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"truncated|corrupt|cannot be read", r"re-?download|re-?export")
    assert files_in(outdir) == []


@pytest.mark.parametrize("bands", [3, 2])
def test_wrong_band_count(make_raster, outdir: Path, bands: int) -> None:
    scene = make_raster(f"b{bands}.tif", bands=bands)
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, rf"{bands} band", r"4.band|blue, green, red, nir|--bands")
    assert ("RGB" in res.stderr) == (bands == 3)  # the RGB hint only where it fits
    assert files_in(outdir) == []


def _stack(path: Path, n: int, descriptions: list[str] | None = None, alpha_band: int | None = None) -> Path:
    """A small float32 reflectance stack of ``n`` bands; band i (1-based) holds 0.01 * i."""
    import numpy as np
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import Affine

    data = np.stack([np.full((64, 64), 0.01 * (i + 1), np.float32) for i in range(n)])
    # an RGBA file: photometric RGB with an extra sample marked alpha (what GDAL writes for RGBA)
    rgba = {"photometric": "RGB", "alpha": "YES"} if alpha_band is not None else {}
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=n, dtype="float32",
                       crs="EPSG:32650", transform=Affine(10, 0, 500000, 0, -10, 3000000), **rgba) as ds:  # fmt: skip
        ds.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            ds.set_band_description(i, d)
    if alpha_band is not None:
        with rasterio.open(path) as ds:
            assert ds.colorinterp[alpha_band - 1] == ColorInterp.alpha
    return path


def _bands_used(scene: Path, *extra: str) -> dict[str, int]:
    import json

    res = run("info", scene, "--json", *extra)
    assert res.exit_code == 0, res.output + (res.stderr or "")
    return json.loads(res.stdout)["bands_used"]


S2_13 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]


@pytest.mark.parametrize("described", [False, True])
def test_sentinel2_stacks_use_b02_b03_b04_b08(tmp_path: Path, described: bool) -> None:
    """Issue 17 row 1: B01 is not blue and B05 is not nir in a Sentinel-2 stack."""
    want = {"blue": 2, "green": 3, "red": 4, "nir": 8}
    scene = _stack(tmp_path / "s2_13.tif", 13, S2_13 if described else None)
    assert _bands_used(scene, "--sensor", "sentinel2") == want
    l2a = _stack(tmp_path / "s2_12.tif", 12, None)  # L2A without B10
    assert _bands_used(l2a, "--sensor", "sentinel2") == want
    ten = _stack(tmp_path / "s2_10.tif", 10, None)  # B02 B03 B04 B05 B06 B07 B08 B8A B11 B12
    assert _bands_used(ten, "--sensor", "sentinel2") == {"blue": 1, "green": 2, "red": 3, "nir": 7}
    if described:  # the band names alone are enough, even without --sensor
        assert _bands_used(scene) == want
        zero = _stack(tmp_path / "s2_names.tif", 13, [f"B{b[1:].zfill(2)}" if b[1:].isdigit() else b for b in S2_13])
        assert _bands_used(zero) == want


def test_more_than_four_unnamed_bands_needs_bands(tmp_path: Path, outdir: Path) -> None:
    """Issue 17 row 2."""
    scene = _stack(tmp_path / "five.tif", 5)
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"5 bands and no band names", r"--bands B,G,R,N")
    assert files_in(outdir) == []
    assert _bands_used(scene, "--bands", "2,3,4,5") == {"blue": 2, "green": 3, "red": 4, "nir": 5}


def test_an_alpha_band_is_never_nir(tmp_path: Path, outdir: Path) -> None:
    """Issue 17 row 3: RGBA is a 3-band image with a mask."""
    scene = _stack(tmp_path / "rgba.tif", 4, alpha_band=4)
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"alpha.*no near-infrared band", r"4-band|--bands")
    assert files_in(outdir) == []
    res = run("process", scene, "-o", outdir, "--bands", "1,2,3,4")
    assert_user_error(res, r"band 4 is an alpha", r"--bands")


def test_duplicate_bands_are_refused(make_raster, outdir: Path) -> None:
    """Issue 17 row 4."""
    scene = make_raster("dup.tif")
    res = run("process", scene, "-o", outdir, "--bands", "1,1,1,1")
    assert_user_error(res, r"band 1 more than once", r"four different bands")
    assert files_in(outdir) == []


def test_complex_dtype(make_raster, outdir: Path) -> None:
    scene = make_raster("complex.tif", dtype="complex64")
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"complex|dtype", r"uint16|float32|convert|gdal_translate")
    assert files_in(outdir) == []


def test_all_nodata_scene(make_raster, outdir: Path) -> None:
    scene = make_raster("blank.tif", content="nodata")
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"nodata", r"nodata value|a_nodata|another scene|pass")
    assert files_in(outdir) == []


def test_all_nan_float_scene(make_raster, outdir: Path) -> None:
    scene = make_raster("blank_nan.tif", dtype="float32", nodata_kind="nan", content="nodata")
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"nodata", r"nodata value|a_nodata|another scene|pass")
    assert files_in(outdir) == []


def test_one_pixel_scene(make_raster, outdir: Path) -> None:
    scene = make_raster("one.tif", width=1, height=1, collar=False)
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"1\s*x\s*1|1 pixel|too small", r"larger scene|at least")
    assert files_in(outdir) == []


def test_unknown_sensor_name(make_raster, outdir: Path) -> None:
    scene = make_raster("s.tif")
    res = run("process", scene, "-o", outdir, "--sensor", "gf9_xyz")
    assert_user_error(res, r"gf9_xyz", r"gf1_wfv")  # the message lists the known sensors
    assert files_in(outdir) == []


def test_unknown_sensor_integer_scene_without_scaling(make_raster, outdir: Path) -> None:
    # uint16 DN with no SATELLITE/SENSOR tags, no vendor XML, no GDAL scale: the scaling is unknown
    scene = make_raster("anonymous.tif", sensor_tags=False)
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"scal|sensor", r"--sensor|--scale")
    assert files_in(outdir) == []


@contextlib.contextmanager
def unwritable_dir(path: Path) -> Iterator[Path]:
    """A directory nobody can create files in: chmod 555, or ``chattr +i`` for root
    (root ignores permissions); skips when neither works here."""
    path.mkdir()
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if is_root:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("running as root and chattr +i is unavailable: cannot make a directory unwritable")
        undo = [chattr, "-i", str(path)]
    else:
        path.chmod(0o555)
    try:
        probe = path / "probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("could not make a directory unwritable on this file system")
        yield path
    finally:
        if is_root:
            subprocess.run(undo, capture_output=True)
        else:
            path.chmod(0o755)


def test_unwritable_output_dir(make_raster, tmp_path: Path) -> None:
    scene = make_raster("s.tif")
    with unwritable_dir(tmp_path / "locked") as locked:
        res = run("process", scene, "-o", locked)
        assert_user_error(
            res, r"not writable|cannot be created|permission|not permitted", r"-o|--outdir|writable"
        )
        assert files_in(locked) == []


def test_unwritable_output_subdir(make_raster, tmp_path: Path) -> None:
    scene = make_raster("s.tif")
    with unwritable_dir(tmp_path / "locked") as locked:
        res = run("process", scene, "-o", locked / "out")
        assert_user_error(
            res, r"cannot be created|not writable|permission|not permitted", r"-o|--outdir|writable"
        )
        assert files_in(locked) == []


def test_output_dir_is_a_file(make_raster, tmp_path: Path) -> None:
    scene = make_raster("s.tif")
    target = tmp_path / "a_file"
    target.write_text("not a directory")
    res = run("process", scene, "-o", target)
    assert_user_error(res, r"a_file", r"-o|--outdir|directory")
    assert target.read_text() == "not a directory"


def test_output_dir_below_a_file(make_raster, tmp_path: Path) -> None:
    scene = make_raster("s.tif")
    (tmp_path / "a_file").write_text("x")
    res = run("process", scene, "-o", tmp_path / "a_file" / "out")
    assert_user_error(res, r"a_file", r"-o|--outdir|writable|directory")
    assert not (tmp_path / "a_file" / "out").exists()


def test_existing_output_without_overwrite(make_raster, outdir: Path) -> None:
    scene = make_raster("scene.tif", width=96, height=96)
    first = run("process", scene, "-o", outdir, "--quiet")
    assert first.exit_code == 0, first.output
    before = {name: digest(outdir / name) for name in files_in(outdir)}
    mtimes = {name: (outdir / name).stat().st_mtime_ns for name in before}
    assert {"scene_mask.tif", "scene_score.tif", "scene_stats.json"} <= set(before)

    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"exists", r"--overwrite")
    assert files_in(outdir) == sorted(before)  # nothing added, no partial files
    assert {name: digest(outdir / name) for name in before} == before
    assert {name: (outdir / name).stat().st_mtime_ns for name in before} == mtimes

    # and --overwrite does replace them
    again = run("process", scene, "-o", outdir, "--overwrite", "--quiet")
    assert again.exit_code == 0, again.output
    assert files_in(outdir) == sorted(before)


def test_existing_single_output_blocks_the_whole_run(make_raster, outdir: Path) -> None:
    scene = make_raster("scene.tif", width=96, height=96)
    outdir.mkdir()
    (outdir / "scene_stats.json").write_text('{"old": true}')
    res = run("process", scene, "-o", outdir)
    assert_user_error(res, r"scene_stats\.json.*exists|exists.*scene_stats\.json", r"--overwrite")
    assert files_in(outdir) == ["scene_stats.json"]
    assert (outdir / "scene_stats.json").read_text() == '{"old": true}'


def test_debug_shows_the_traceback(tmp_path: Path, outdir: Path) -> None:
    res = run("--debug", "process", tmp_path / "nope.tif", "-o", outdir)
    assert res.exit_code != 0
    assert res.exception is not None and not isinstance(res.exception, SystemExit)


def test_bad_scene_among_good_ones_fails_with_2_and_keeps_the_good(
    make_raster, tmp_path: Path, outdir: Path
) -> None:
    good = make_raster("good.tif", width=80, height=80)
    res = run("process", tmp_path / "missing.tif", good, "-o", outdir, "--quiet")
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    names = files_in(outdir)
    assert "good_mask.tif" in names and not any(n.startswith("missing") for n in names)
    assert not any(n.startswith(".") or n.endswith(".partial") for n in names)


@pytest.mark.parametrize("command", ["cam", "matting"])
def test_train_checks_its_output_folder_before_training(tmp_path: Path, command: str) -> None:
    """An --out that cannot be written fails at once (not after minutes of training), and a
    bad --data fails before any progress bar is drawn."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run("train", command, "--data", tmp_path, "--out", blocker / "weights")
    assert_user_error(res, r"cannot be created|not a directory", r"--out")
    res = run("train", command, "--data", tmp_path, "--out", tmp_path / "w")
    assert_user_error(res, r"catalog\.csv", r"--data")
    assert "train " not in res.stderr  # no progress bar before the error


@pytest.mark.parametrize("scales", ["0", "1,a", ""])
def test_train_matting_rejects_bad_layer_scales(tmp_path: Path, scales: str) -> None:
    res = run("train", "matting", "--data", tmp_path, "--out", tmp_path / "w", "--layer-scales", scales)
    assert_user_error(res, r"whole numbers >= 1", r"--layer-scales 1,2,4")


def test_internal_error_is_one_line_naming_the_debug_rerun(monkeypatch, tmp_path: Path) -> None:
    """An unexpected exception: exit 1, one line, and a rerun hint that works for every
    command (``--debug`` is an option of ``geocloud`` itself, not of ``evaluate``)."""

    def boom(*args, **kwargs):
        raise ValueError("something unexpected\nsecond line")

    monkeypatch.setattr("geocloud.cli.evaluate.pair_inputs", boom)
    res = run("evaluate", tmp_path, "--truth", tmp_path)
    assert res.exit_code == 1
    lines = error_lines(res)
    assert lines == [
        "geocloud: internal error: ValueError: something unexpected "
        "(rerun as 'geocloud --debug evaluate ...' for the traceback and report it)"
    ]
    again = run("--debug", "evaluate", tmp_path, "--truth", tmp_path)
    assert isinstance(again.exception, ValueError)  # the hint's command shows the traceback


def test_a_rerun_removes_what_a_killed_run_left(make_raster, outdir: Path, dead_pid: int) -> None:
    """SIGKILL, the OOM killer or a stopped dask worker leave a run's temporaries behind
    (2.8 GB per 100 Mpx of intermediates); the next run of that scene removes those of dead
    processes on this host, and keeps those of live ones and of other hosts."""
    from geocloud.outputs import _HOST

    scene = make_raster("s.tif", width=80, height=80)
    dead, live = dead_pid, os.getppid()  # (not our own pid: that is the run's own folder)
    stale = [f".geocloud-s-{_HOST}-{dead}.partial", f".s_mask.tif.{_HOST}-{dead}.partial",
             f".s_clouds.{_HOST}-{dead}.partial.gpkg"]  # fmt: skip
    kept = [f".geocloud-s-{_HOST}-{live}.partial", f".geocloud-s-elsewhere-{dead}.partial",
            f".geocloud-t-{_HOST}-{dead}.partial", f".s_score.tif.{_HOST}-{dead}.partial"]  # fmt: skip
    outdir.mkdir(parents=True, exist_ok=True)
    for name in stale + kept:
        if name.startswith(".geocloud-"):
            (outdir / name).mkdir()
            (outdir / name / "s_score.map.tif").write_bytes(b"x" * 100)
        else:
            (outdir / name).write_bytes(b"x" * 100)
    res = run("process", scene, "-o", outdir, "--products", "mask,vector,stats", "--quiet")
    assert res.exit_code == 0, res.output
    names = files_in(outdir)
    assert not set(stale) & set(names), names
    assert set(kept) <= set(names)  # alive, another host, another scene, not a product of this run
    assert {"s_mask.tif", "s_clouds.gpkg", "s_stats.json"} <= set(names)


@pytest.mark.parametrize("free_mb", [1, 50_000])
def test_a_full_disk_is_a_user_error(make_raster, outdir: Path, monkeypatch, free_mb: int) -> None:
    """GDAL's TIFF write errors say nothing of the cause: with the output's disk (nearly)
    full, the failure is reported as a full disk (exit 2, no partial outputs); with space
    left it stays an internal error."""
    import collections

    from rasterio.errors import RasterioIOError

    from geocloud.cog import RasterSink

    scene = make_raster("s.tif", width=80, height=80)

    def fail(self, *args, **kwargs):
        raise RasterioIOError("Write failed. See previous exception for details.")

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(RasterSink, "write_window", fail)
    monkeypatch.setattr(
        "shutil.disk_usage", lambda p: usage(10**12, 10**12 - free_mb * 2**20, free_mb * 2**20)
    )
    res = run("process", scene, "-o", outdir, "--quiet")
    assert files_in(outdir) == []
    if free_mb < 64:
        assert_user_error(res, "no space left on the disk", "free some space or pass another -o")
        assert "1 MB free" in res.stderr
    else:
        assert res.exit_code == 1 and "internal error: RasterioIOError" in res.stderr, res.stderr


def test_gdal_messages_are_quiet_unless_debugging(make_raster, monkeypatch) -> None:
    """GDAL's own stderr messages (a full disk gave 120 lines of them) go to os.devnull
    through CPL_LOG; --debug, CPL_DEBUG or the user's own CPL_LOG keep them."""
    from geocloud.runtime import quiet_gdal

    scene = make_raster("s.tif", width=40, height=40)
    for key in ("CPL_LOG", "CPL_DEBUG"):
        monkeypatch.delenv(key, raising=False)
    assert run("--debug", "info", scene).exit_code == 0
    assert "CPL_LOG" not in os.environ
    assert run("info", scene).exit_code == 0
    assert os.environ["CPL_LOG"] == os.devnull
    monkeypatch.setenv("CPL_LOG", "/tmp/gdal.log")
    assert not quiet_gdal() and os.environ["CPL_LOG"] == "/tmp/gdal.log"
    monkeypatch.delenv("CPL_LOG")
    monkeypatch.setenv("CPL_DEBUG", "ON")
    assert not quiet_gdal() and "CPL_LOG" not in os.environ


def test_a_vrt_whose_source_is_missing_names_the_missing_file(
    make_raster, tmp_path: Path, outdir: Path
) -> None:
    from rasterio.shutil import copy

    src = make_raster("src.tif", width=40, height=40)
    vrt = tmp_path / "scene.vrt"
    copy(src, vrt, driver="VRT")
    src.unlink()
    msg = assert_user_error(
        run("process", vrt, "-o", outdir), "src.tif: No such file", "refers to is missing"
    )
    assert "rebuild scene.vrt" in msg
    assert files_in(outdir) == []


@pytest.mark.parametrize(
    ("args", "problem", "fix"),
    [
        (["--k", "nan"], r"'nan' is not a finite number", r"--k|number such as"),
        (["--k", "inf"], r"'inf' is not a finite number", r"--k|number such as"),
        (["--scale", "nan"], r"'nan' is not a finite number", r"--scale|0\.0001"),
        (["--scale", "inf"], r"'inf' is not a finite number", r"--scale|0\.0001"),
        (["--scale", "0"], r"must be greater than 0", r"--scale"),
        (["--offset", "0.1"], r"--offset 0\.1 is used only with --scale", r"pass both"),
        (["--threads", "100000"], r"100000 is not in the range 1<=x<=256", r"--threads"),
        (["--predictors", "100000"], r"100000 is not in the range", r"--predictors"),
    ],
)
def test_numeric_options_are_checked(make_raster, outdir: Path, args: list[str], problem: str, fix: str) -> None:
    """Issue 17 rows 8-10: nan, inf, an --offset without --scale and absurd thread counts."""
    scene = make_raster("num.tif")
    res = run("process", scene, "-o", outdir, *args)
    assert_user_error(res, problem, fix)
    assert files_in(outdir) == []


def test_messages_name_what_was_typed(make_raster, outdir: Path) -> None:
    """Issue 17 row 19."""
    scene = make_raster("typed.tif")
    res = run("process", scene, "-o", outdir, "--products", "all,mask")
    assert_user_error(res, r"--products 'all,mask'.*cannot be combined", r"--products all")
    res = run("process", scene, "-o", outdir, "--model", "cam", "--block-size", "17")
    msg = assert_user_error(res, r"block size 17 \(rounded up to 24", r"--block-size of at least")
    assert "block size 24 leaves" not in msg
    assert files_in(outdir) == []


@pytest.mark.parametrize("factor", [10000.0, 100.0])
def test_reflectance_scaled_as_float_is_refused(tmp_path: Path, outdir: Path, factor: float) -> None:
    """Issue 17 row 5: reflectance x 10000 (or percent) stored as float is not reflectance."""
    import numpy as np
    import rasterio
    from rasterio.transform import Affine

    scene = tmp_path / f"x{int(factor)}.tif"
    data = (np.random.default_rng(0).uniform(0.03, 0.4, (4, 96, 96)) * factor).astype(np.float32)
    with rasterio.open(scene, "w", driver="GTiff", width=96, height=96, count=4, dtype="float32",
                       crs="EPSG:32650", transform=Affine(10, 0, 500000, 0, -10, 3000000)) as ds:  # fmt: skip
        ds.write(data)
    res = run("process", scene, "-o", outdir, "--model", "spectral")
    assert_user_error(res, r"100% of the valid reflectances .* fall outside", r"--scale.*--no-range-check")
    assert files_in(outdir) == []
    ok = run("process", scene, "-o", outdir, "--model", "spectral", "--scale", str(1 / factor), "-q")
    assert ok.exit_code == 0, ok.output + (ok.stderr or "")
    forced = run("process", scene, "-o", tmp_path / "forced", "--model", "spectral", "--no-range-check", "-q")
    assert forced.exit_code == 0, forced.output + (forced.stderr or "")


def test_info_describes_a_scene_of_unknown_scaling(tmp_path: Path) -> None:
    """Issue 17 row 6: `info` is what a user runs when processing refuses; it must answer."""
    import json

    import numpy as np
    import rasterio
    from rasterio.transform import Affine

    scene = tmp_path / "plain_uint16.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint16",
                       crs="EPSG:32650", transform=Affine(10, 0, 500000, 0, -10, 3000000)) as ds:  # fmt: skip
        ds.write(np.full((4, 64, 64), 500, np.uint16))
    res = run("process", scene, "-o", tmp_path / "o")
    assert_user_error(res, r"unknown DN scaling", r"--scale")
    res = run("info", scene, "--json")
    assert res.exit_code == 0, res.output + (res.stderr or "")
    d = json.loads(res.stdout)
    assert d["bands_used"] == {"blue": 1, "green": 2, "red": 3, "nir": 4} and d["reflectance_gain"] is None
    assert d["scaling"].startswith("UNKNOWN") and "--scale" in d["scaling"]
    assert "blocks" in d["plan"]["blocks"]


def test_symlink_loop_and_dangling_link(tmp_path: Path, outdir: Path) -> None:
    """Issue 17 row 18."""
    loop = tmp_path / "loop.tif"
    loop.symlink_to(loop)
    assert_user_error(run("process", loop, "-o", outdir), r"is a symlink loop", r"point the link")
    dangling = tmp_path / "dangling.tif"
    dangling.symlink_to(tmp_path / "gone.tif")
    assert_user_error(run("process", dangling, "-o", outdir), r"symlink to .*gone\.tif.*does not exist", r"check the link")
    assert files_in(outdir) == []


def test_evaluate_json_to_an_unwritable_path(make_raster, tmp_path: Path) -> None:
    """Issue 17 row 16: a path that cannot be written is a user error, found before the work."""
    import numpy as np
    import rasterio

    mask = tmp_path / "m.tif"
    with rasterio.open(mask, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        # root ignores permissions: then use a path under a file instead
        target = mask / "report.json" if os.access(ro, os.W_OK) else ro / "report.json"
        res = run("evaluate", mask, "--truth", mask, "--json", target)
        assert_user_error(res, r"cannot be created|not writable|not a directory", r"--json")
    finally:
        ro.chmod(0o700)


def test_a_gcp_scene_keeps_its_gcps(make_raster, outdir: Path) -> None:
    """Issue 17 row 7: a scene georeferenced by GCPs only keeps them (and their CRS) on its
    raster outputs, and its polygons are made in that CRS (tests/test_georef.py has more)."""
    import pyogrio
    import rasterio

    scene = make_raster("gcp.tif", width=96, height=96, georef="gcps", cloud_cover=0.4)
    res = run("process", scene, "-o", outdir, "--products", "mask,vector", "-q")
    assert res.exit_code == 0, res.output + (res.stderr or "")
    with rasterio.open(outdir / "gcp_mask.tif") as ds:
        gcps, crs = ds.gcps
        assert len(gcps) == 16 and crs is not None and crs.to_epsg() == 32650
    assert pyogrio.read_info(outdir / "gcp_clouds.gpkg")["crs"] == "EPSG:32650"


DELIVERY = "GF1_WFV1_E117.0_N40.0_20200523_L1A0004819525"


def _vendor_delivery(tmp_path: Path, *, raster_name: str = DELIVERY, archive: str | None = None) -> Path:
    """A synthetic GF-1 WFV L1A delivery (raster with RPCs, vendor XML) as a .tar.gz (or
    the folder when ``archive`` is ``""``)."""
    import tarfile
    import warnings

    from geocloud.synthetic import make_scene

    folder = tmp_path / "src" / (archive or DELIVERY)
    folder.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_scene(folder / f"{raster_name}.tiff", 128, 96, seed=5, georef="rpc", vendor_xml=True,
                   write_truth=False, sensor_tags=False, blocksize=32)  # fmt: skip
    if archive == "":
        return folder
    arc = tmp_path / f"{archive or DELIVERY}.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for p in sorted(folder.iterdir()):
            tf.add(p, arcname=f"{folder.name}/{p.name}")
    return arc


@pytest.mark.parametrize("kind", ["tar", "folder", "renamed"])
def test_process_accepts_a_vendor_delivery(tmp_path: Path, outdir: Path, kind: str) -> None:
    """Issue 17 row 17: `process DELIVERY.tar.gz` (or a delivery folder) processes its
    raster with its vendor XML, names the outputs after the delivery and keeps nothing of
    what it extracted."""
    import json

    import rasterio

    if kind == "tar":
        scene, stem = _vendor_delivery(tmp_path), DELIVERY
    elif kind == "folder":
        scene, stem = _vendor_delivery(tmp_path, archive=""), DELIVERY
    else:  # the archive is named otherwise than the raster inside it
        scene, stem = _vendor_delivery(tmp_path, archive="order 42.v1"), "order 42.v1"
    res = run("process", scene, "-o", outdir, "--products", "mask,stats", "-q")
    assert res.exit_code == 0, res.output + (res.stderr or "")
    assert files_in(outdir) == [f"{stem}_mask.tif", f"{stem}_stats.json"]
    stats = json.loads((outdir / f"{stem}_stats.json").read_text())
    assert stats["stem"] == stem and stats["scene"] == str(scene)
    assert stats["sensor"]["calibration"] == "CRESDA GF1 WFV1 2020 (exact; confirmed)"  # the vendor XML's table
    assert stats["georeferencing"] == "rpc"
    with rasterio.open(outdir / f"{stem}_mask.tif") as ds:
        assert ds.rpcs is not None


def test_a_bad_vendor_delivery_leaves_nothing(tmp_path: Path, outdir: Path, monkeypatch, dead_pid: int) -> None:
    """Issue 17 row 17: a truncated archive, a folder of several scenes, and a run that
    fails or is interrupted after the extraction: one line, and no extracted files left."""
    import geocloud.cli.process as process_cli

    from geocloud.outputs import delivery_workdir

    arc = _vendor_delivery(tmp_path)
    data = arc.read_bytes()
    cut = tmp_path / "cut" / arc.name
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    assert_user_error(run("process", cut, "-o", outdir), r"truncated or corrupt", r"download the delivery again")
    assert files_in(outdir) == []

    several = tmp_path / "several"
    several.mkdir()
    for name in ("a.tif", "b.tif"):
        shutil.copy(tmp_path / "src" / DELIVERY / f"{DELIVERY}.tiff", several / name)
    assert_user_error(run("process", several, "-o", outdir), r"holds 2 multispectral GeoTIFFs", r"geocloud catalog")
    assert files_in(outdir) == []

    # what a killed (kill -9) run left is swept by the next run of the delivery
    outdir.mkdir()
    stale = Path(str(delivery_workdir(outdir, DELIVERY)).replace(f"-{os.getpid()}.", f"-{dead_pid}."))
    (stale / DELIVERY).mkdir(parents=True)

    def fail(path, *args, **kwargs):
        assert Path(path).is_file() and ".delivery.partial" in str(path)  # extracted, and in use
        raise KeyboardInterrupt

    monkeypatch.setattr(process_cli, "process_scene", fail)
    res = run("process", arc, "-o", outdir)
    assert res.exit_code == 130, res.output + (res.stderr or "")
    assert files_in(outdir) == []
