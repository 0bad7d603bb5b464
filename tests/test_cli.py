"""The command line through click's CliRunner: help, info, process on several scenes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner
from geocloud.cli.main import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [[], ["process"], ["info"]])
def test_help(args):
    r = CliRunner().invoke(cli, [*args, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output


def test_python_dash_m_geocloud_help():
    r = subprocess.run(
        [sys.executable, "-m", "geocloud", "--help"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    assert "process" in r.stdout and "info" in r.stdout


def _run_main(tmp_path, prelude: str, *args: str) -> subprocess.CompletedProcess:
    """Run the console-script entry point in a child, ``prelude`` just before it."""
    script = f"import sys\nfrom geocloud.cli.main import main\n{prelude}\nsys.argv = ['geocloud', *{list(args)!r}]\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def test_entry_point_exit_keeps_codes_output_atexit_and_threads(make_raster, tmp_path):
    """main() ends the process without the interpreter's teardown (slow after torch), but
    keeps what a normal exit gives: the exit code, all of stdout, atexit handlers, and a
    still-running non-daemon thread is waited for."""
    scene = make_raster("GF1_WFV1_scene.tif", width=64, height=48)
    hook = "import atexit\natexit.register(lambda: print('atexit ran'))"
    r = _run_main(tmp_path, hook, "info", str(scene), "--json")
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition("}")
    assert json.loads(body + "}")["sensor"] == "gf1_wfv" and tail.strip() == "atexit ran"
    r = _run_main(tmp_path, hook, "info", str(tmp_path / "missing.tif"))
    assert r.returncode == 2 and r.stdout.strip() == "atexit ran", (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    late = tmp_path / "late.txt"
    thread = (
        "import threading, time\n"
        f"threading.Thread(target=lambda: (time.sleep(0.5), open({str(late)!r}, 'w').write('done'))).start()"
    )
    r = _run_main(tmp_path, thread, "--help")
    assert r.returncode == 0 and late.read_text() == "done", r.stderr


def test_a_closed_output_pipe_ends_quietly(make_raster, tmp_path, monkeypatch):
    """`geocloud info SCENE | head -1`: the reader closes the pipe; geocloud stops with
    SIGPIPE's status and no "internal error: BrokenPipeError" (it printed one before).  A
    BrokenPipeError that is not about geocloud's own output is still reported."""
    import signal

    scene = make_raster("GF1_WFV1_scene.tif", width=64, height=48)
    proc = subprocess.Popen(
        [sys.executable, "-m", "geocloud", "info", str(scene)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before geocloud writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE and err == "", err

    import importlib

    info_module = importlib.import_module("geocloud.cli.info")

    def broken(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(info_module, "describe_scene", broken)
    r = CliRunner().invoke(cli, ["info", str(scene)])
    assert r.exit_code == 1 and "internal error: BrokenPipeError" in r.output, r.output


def test_info_reports_sensor_bands_scaling(make_raster):
    scene = make_raster("GF1_WFV1_scene.tif", width=64, height=48)
    r = CliRunner().invoke(cli, ["info", str(scene), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["sensor"] == "gf1_wfv"
    assert d["bands_used"] == {"blue": 1, "green": 2, "red": 3, "nir": 4}
    assert d["crs"].startswith("EPSG:") and d["size"].startswith("64 x 48")
    assert "calibration" in d["scaling"]
    assert "mask" in d["plan"]["products"]
    assert d["layout"].startswith(("tiles of", "strips of"))


def test_process_several_scenes_and_quiet(make_raster, tmp_path):
    a = make_raster("a.tif", width=80, height=70, seed=1)
    b = make_raster("b.tif", width=90, height=60, seed=2)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["process", str(a), str(b), "-o", str(out), "--model", "spectral",
                                 "--products", "mask,stats", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output == ""  # --quiet: nothing on stdout or stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_mask.tif", "a_stats.json", "b_mask.tif", "b_stats.json"]
    stats = json.loads((out / "b_stats.json").read_text())
    assert stats["size"] == {"width": 90, "height": 60, "bands": 4, "dtype": "uint16"}
    with rasterio.open(out / "a_mask.tif") as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255


def test_out_of_range_reflectance_warns(make_raster, tmp_path):
    """The classic "everything is cloud" failure: a wrong scale is refused, or, with
    --no-range-check, named in a warning."""
    scene = make_raster("s.tif", width=64, height=64)
    r = CliRunner().invoke(cli, ["process", str(scene), "-o", str(tmp_path / "o"), "--model", "spectral",
                                 "--scale", "0.01"])  # fmt: skip
    assert r.exit_code == 2 and "--no-range-check" in r.output and not (tmp_path / "o").exists()
    r = CliRunner().invoke(cli, ["process", str(scene), "-o", str(tmp_path / "o"), "--model", "spectral",
                                 "--scale", "0.01", "--no-range-check"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "DN scaling is probably wrong" in r.output
    stats = json.loads((tmp_path / "o" / "s_stats.json").read_text())
    assert any("--scale" in w for w in stats["warnings"])


@pytest.mark.parametrize("predictors", ["1", "3"])
def test_predictors_option_reaches_the_run_and_keeps_the_mask(make_raster, tmp_path, predictors):
    """--predictors N runs N model threads (recorded in the stats); the mask is the same."""
    scene = make_raster("s.tif", width=300, height=260)
    base, out = tmp_path / "base", tmp_path / "o"
    args = ["--model", "spectral", "--block-size", "64", "--products", "mask,stats"]
    assert CliRunner().invoke(cli, ["process", str(scene), "-o", str(base), *args]).exit_code == 0
    r = CliRunner().invoke(cli, ["process", str(scene), "-o", str(out), *args, "--predictors", predictors])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "s_stats.json").read_text())["inference"]["predictors"] == int(predictors)
    with rasterio.open(base / "s_mask.tif") as a, rasterio.open(out / "s_mask.tif") as b:
        assert (a.read() == b.read()).all()
    bad = CliRunner().invoke(cli, ["process", str(scene), "-o", str(out), "--predictors", "0"])
    assert bad.exit_code == 2 and "--predictors" in bad.output


def test_unknown_product_is_a_usage_error(make_raster, tmp_path):
    scene = make_raster("s.tif")
    r = CliRunner().invoke(
        cli, ["process", str(scene), "-o", str(tmp_path / "o"), "--products", "mask,bogus"]
    )
    assert r.exit_code == 2
    assert "bogus" in r.output and "--products" in r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_wheel_installs_cli_inside_the_package(tmp_path):
    """No bare top-level ``cli`` module may land in site-packages."""
    pytest.importorskip("setuptools")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip().splitlines()[-1:]}")
    (wheel,) = tmp_path.glob("geocloud-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "cli" not in tops
    assert "geocloud/cli/main.py" in names and "geocloud/cli/process.py" in names
    shipped = {f"geocloud/models/weights/{p.name}" for p in (REPO / "geocloud/models/weights").glob("*.*")}
    assert shipped <= set(names), "model weights or sidecars missing from the wheel"


def test_vector_min_area_option_reaches_the_polygons(tmp_path):
    scene = REPO / "sample_scenes" / "gf1_wfv_sample.tif"
    counts = {}
    for min_area in (0, 100000):
        out = tmp_path / f"o{min_area}"
        r = CliRunner().invoke(cli, ["process", str(scene), "-o", str(out), "--model", "spectral",
                                     "--products", "mask,vector", "--min-area", str(min_area), "-q"])  # fmt: skip
        assert r.exit_code == 0, r.output
        feats = json.loads((out / "gf1_wfv_sample_clouds.geojson").read_text())["features"]
        assert all(f["properties"]["area_m2"] >= min_area for f in feats)
        counts[min_area] = len(feats)
    assert 0 < counts[100000] < counts[0]


def test_products_all_writes_every_product(make_raster, tmp_path):
    scene = make_raster("a.tif", cloud_cover=0.4)
    out = tmp_path / "o"
    r = CliRunner().invoke(
        cli, ["process", str(scene), "-o", str(out), "--model", "spectral", "--products", "all", "-q"]
    )
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"a_{s}" for s in ("mask.tif", "score.tif", "alpha.tif", "reflectance.tif", "clear.tif",
                           "clear_quality.tif", "restored.tif", "restored_quality.tif", "stats.json", "clouds.geojson",
                           "clouds.gpkg", "preview.png")
    )  # fmt: skip
    r = CliRunner().invoke(cli, ["process", str(scene), "-o", str(out), "--products", "all,mask"])
    assert r.exit_code == 2 and "--products 'all,mask'" in r.output and "pass --products all" in r.output, r.output


def test_file_products_write_quietly(make_raster, tmp_path):
    """--quiet prints nothing for file products either: the GeoPackage is written under a
    temporary name that keeps the .gpkg suffix (GDAL's driver warned about '.partial')."""
    scene = make_raster("v.tif", cloud_cover=0.4)
    out = tmp_path / "o"
    r = subprocess.run(
        [sys.executable, "-m", "geocloud", "process", str(scene), "-o", str(out), "--model", "spectral",
         "--products", "mask,vector,preview,stats", "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["v_clouds.geojson", "v_clouds.gpkg", "v_mask.tif", "v_preview.png", "v_stats.json"]
    # a scene without georeferencing: geocloud's own one-line warnings only (pyogrio's
    # "'crs' was not provided" UserWarning leaked before)
    bare = make_raster("bare.tif", cloud_cover=0.4, georef="none")
    r = subprocess.run(
        [sys.executable, "-m", "geocloud", "process", str(bare), "-o", str(out), "--model", "spectral",
         "--products", "mask,vector"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    warned = [line for line in r.stderr.splitlines() if "warning" in line.lower()]
    assert r.returncode == 0 and len(warned) == 2, r.stderr
    assert all(line.startswith("geocloud: warning: bare.tif ") for line in warned), r.stderr


def test_sigterm_leaves_no_partial_files(tmp_path):
    """A killed run (SIGTERM from a scheduler) unwinds and removes its temporary files."""
    import signal
    import time

    import numpy as np
    from rasterio.transform import from_origin

    scene = tmp_path / "big.tif"
    rng = np.random.default_rng(0)
    data = rng.integers(200, 3000, (4, 3000, 3000), dtype=np.uint16)
    with rasterio.open(scene, "w", driver="GTiff", width=3000, height=3000, count=4, dtype="uint16",
                       crs="EPSG:32650", transform=from_origin(0, 0, 16, 16), tiled=True) as ds:  # fmt: skip
        ds.write(data)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "geocloud", "process", str(scene), "-o", str(out), "--scale", "0.0001",
         "--model", "cam", "--products", "mask,score,stats", "-q"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and any(p.name.endswith(".partial") for p in out.iterdir()):
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be signalled")
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    assert rc == 128 + signal.SIGTERM, f"exit code {rc}; stderr: {err[-2000:]}"
    # (the run made the folder, so it removes it too when it is left empty)
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], f"left behind: {left}; stderr: {err[-2000:]}"


@pytest.mark.parametrize("command", ["info", "process"])
def test_bad_bands_is_a_one_line_user_error(make_raster, tmp_path, command):
    scene = make_raster("s.tif")
    extra = ["-o", str(tmp_path / "o")] if command == "process" else []
    r = CliRunner().invoke(cli, [command, str(scene), *extra, "--bands", "1,x,3,4"])
    assert r.exit_code == 2, r.output
    assert "--bands" in r.output and "Traceback" not in r.output


def test_overwrite_replaces_the_whole_product_set(make_raster, tmp_path):
    """Issue 17 row 12: a new mask never sits beside the stats and score of an earlier run."""
    scene = make_raster("s.tif", width=64, height=64)
    out = tmp_path / "o"
    r = CliRunner().invoke(cli, ["process", str(scene), "-o", str(out), "--model", "spectral",
                                 "--products", "mask,score,stats", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    other = out / "other_mask.tif"  # another scene's products are never touched
    other.write_bytes(b"x")
    r = CliRunner().invoke(cli, ["process", str(scene), "-o", str(out), "--model", "spectral",
                                 "--products", "mask", "--threshold", "0.9", "--overwrite", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["other_mask.tif", "s_mask.tif"]
    with rasterio.open(out / "s_mask.tif") as ds:
        assert ds.tags()["GEOCLOUD_THRESHOLD"] == "0.9"


def test_a_second_run_for_the_same_scene_and_folder_is_refused(make_raster, tmp_path):
    """Issue 17 row 11: two runs into one -o for one scene; the second names the first."""
    from geocloud.outputs import scene_lock

    scene = make_raster("s.tif", width=64, height=64)
    out = tmp_path / "o"
    with scene_lock(out, "s"):
        r = CliRunner().invoke(cli, ["process", str(scene), "-o", str(out), "--model", "spectral",
                                     "--products", "mask", "-q"])  # fmt: skip
        assert r.exit_code == 2 and f"pid {os.getpid()}" in r.output and "another -o" in r.output, r.output
        other = make_raster("t.tif", width=64, height=64)  # another scene into the same folder: fine
        r = CliRunner().invoke(cli, ["process", str(other), "-o", str(out), "--model", "spectral",
                                     "--products", "mask", "-q"])  # fmt: skip
        assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["t_mask.tif"]  # the lock file is gone
    r = CliRunner().invoke(cli, ["process", str(scene), "-o", str(out), "--model", "spectral",
                                 "--products", "mask", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupt_while_the_command_starts_is_one_line(make_raster, tmp_path, sig):
    """Issue 17 row 15: ^C in the first second (while the command line is imported)."""
    import signal
    import time

    scene = make_raster("s.tif", width=64, height=64)
    proc = subprocess.Popen([sys.executable, "-m", "geocloud", "process", str(scene), "-o", str(tmp_path / "o")],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    time.sleep(0.3)  # the interpreter is up, the command line is still being imported
    if proc.poll() is not None:
        pytest.skip("the command started too fast to be interrupted early")
    proc.send_signal(getattr(signal, sig))
    rc = proc.wait(timeout=60)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    assert rc == 128 + getattr(signal, sig), err
    assert "Traceback" not in err and err.strip().startswith("geocloud: interrupted"), err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
