"""Catalogues: contents match per-scene stats, resume after interruption, error rows,
formats, a real LocalCluster(2 processes) run equals the serial run, and the HTML page."""

from __future__ import annotations

import json
import os
import tarfile
import warnings
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from geocloud.catalog import (
    OWN_OUTPUT_COLUMNS,
    VOLATILE_COLUMNS,
    CatalogConfig,
    Journal,
    build_catalog,
    discover_scenes,
    read_catalog,
    scene_ids,
)
from geocloud.report import thumbnails_linked
from geocloud.synthetic import make_scene


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("scenes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (w, h) in enumerate([(160, 120), (128, 128), (200, 96)]):
            make_scene(d / f"GF1_WFV1_E116.0_N40.0_2021060{i + 1}_L1A000000{i}.tif", w, h, seed=i,
                       cloud_cover=0.15 + 0.25 * i, write_truth=False, blocksize=64)  # fmt: skip
        sub = d / "sub"
        sub.mkdir()
        make_scene(sub / "plain_scene.tif", 96, 96, seed=9, write_truth=False, blocksize=32,
                   acquisition_time="2022-02-03T04:05:06Z")  # fmt: skip
    (d / "broken.tif").write_bytes(b"II*\x00 this is not a tiff")
    (d / "notes.txt").write_text("not a scene")
    return d


def _cfg(**kw) -> CatalogConfig:
    return CatalogConfig(workers=kw.pop("workers", 0), **kw)


def _stable(df: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in (*VOLATILE_COLUMNS, *OWN_OUTPUT_COLUMNS) if c in df.columns]
    return df.drop(columns=drop).sort_values("path").reset_index(drop=True)


def test_discover_and_ids(scenes, tmp_path):
    found = discover_scenes([scenes])
    names = sorted(p.name for p in found)
    assert "broken.tif" in names and "plain_scene.tif" in names and "notes.txt" not in names
    assert len(found) == 5
    assert discover_scenes([str(scenes / "GF1_*.tif")]) == sorted(
        p for p in found if p.name.startswith("GF1")
    )
    # outputs (masks...) are never taken as inputs
    (tmp_path / "x_mask.tif").write_bytes(b"")
    (tmp_path / "x.tif").write_bytes(b"")
    (tmp_path / "GF1_PMS1_E1_N1_20200101_L1A01-PAN1.tiff").write_bytes(b"")  # vendor PAN part: 1 band
    assert [p.name for p in discover_scenes([tmp_path])] == ["x.tif"]
    a, b = tmp_path / "a" / "s.tif", tmp_path / "b" / "s.tif"
    ids = scene_ids([a, b])
    assert len(set(ids.values())) == 2 and all(v.startswith("s-") for v in ids.values())


def test_catalogue_matches_stats_and_bad_scene_row(scenes, tmp_path):
    res = build_catalog([scenes], tmp_path / "cat.csv", _cfg())
    assert (res.processed, res.skipped, res.failed) == (5, 0, 1)
    df = read_catalog(tmp_path / "cat.csv")
    assert list(df["path"]) == sorted(df["path"])
    bad = df[df["id"] == "broken"].iloc[0]
    assert bad["status"] == "error" and "NotARasterError" in bad["error"]
    ok = df[df["status"] == "ok"]
    assert len(ok) == 4
    for _, r in ok.iterrows():
        stats = json.loads(Path(r["stats"]).read_text())
        assert r["cloud_pct"] == pytest.approx(100 * stats["cloud_fraction"], abs=1e-3)
        assert r["threshold"] == pytest.approx(stats["threshold"]["value"])
        assert r["model"] == stats["model"]["name"]
        assert r["valid_px"] == stats["pixels"]["valid"] and r["cloud_px"] == stats["pixels"]["cloud"]
        assert r["sensor"] == stats["sensor"]["sensor"]
        assert r["footprint"].startswith(("POLYGON", "MULTIPOLYGON"))
        from geocloud.preview import read_png_size

        assert max(read_png_size(r["preview"])) <= 1024 and max(read_png_size(r["thumbnail"])) <= 256
    # acquisition time: tags of the synthetic scenes; footprints in lon/lat
    plain = ok[ok["id"] == "plain_scene"].iloc[0]
    assert plain["acquired"].startswith("2022-02-03T04:05:06") and plain["acquired_source"] == "tags"
    import shapely

    g = shapely.from_wkt(plain["footprint"])
    minx, miny, maxx, maxy = g.bounds
    assert 100 < minx < maxx < 130 and 30 < miny < maxy < 50


def test_resume_after_interruption(scenes, tmp_path):
    cat = tmp_path / "cat.parquet"
    seen = []

    def killer(done, total):
        seen.append(done)
        if done == 2:
            raise KeyboardInterrupt  # the user hits ^C after two finished scenes

    with pytest.raises(KeyboardInterrupt):
        build_catalog([scenes], cat, _cfg(), progress=killer)
    journal = Journal(cat.with_name(cat.name + ".journal.jsonl"))
    assert len(journal.load()) == 2
    part = read_catalog(cat)  # a valid catalogue of the finished rows
    assert len(part) == 2
    # a run killed in the middle of a journal write leaves a torn line: ignored
    with journal.path.open("a") as f:
        f.write('{"path": "/x", "status": "o')
    res = build_catalog([scenes], cat, _cfg())
    assert (res.skipped, res.processed) == (2, 3)
    full = read_catalog(cat)
    assert len(full) == 5 and set(part["path"]) <= set(full["path"])
    # nothing changed: everything skipped, same catalogue
    res2 = build_catalog([scenes], cat, _cfg())
    assert (res2.skipped, res2.processed) == (5, 0)
    pd.testing.assert_frame_equal(_stable(read_catalog(cat)), _stable(full))
    # a changed scene (mtime) is redone; --retry-errors redoes the bad one
    p = next(s for s in discover_scenes([scenes]) if s.name == "plain_scene.tif")
    st = p.stat()
    import os

    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert build_catalog([scenes], cat, _cfg()).processed == 1
    assert build_catalog([scenes], cat, _cfg(retry_errors=True)).processed == 1
    assert build_catalog([scenes], cat, _cfg(fingerprint="hash", resume=False)).processed == 5


def test_gpkg_footprints_in_wgs84(scenes, tmp_path):
    import pyogrio

    build_catalog([scenes / "sub"], tmp_path / "c.gpkg", _cfg())
    info = pyogrio.read_info(tmp_path / "c.gpkg")
    assert "4326" in info["crs"] and info["features"] == 1
    df = read_catalog(tmp_path / "c.gpkg")
    assert df["status"].tolist() == ["ok"]


def test_local_cluster_equals_serial(scenes, tmp_path):
    serial = build_catalog([scenes], tmp_path / "s" / "cat.csv", _cfg(html=False))
    par = build_catalog([scenes], tmp_path / "p" / "cat.csv", _cfg(workers=2, html=False))
    assert par.processed == 5 and par.failed == 1
    a, b = read_catalog(serial.path), read_catalog(par.path)
    pd.testing.assert_frame_equal(_stable(a), _stable(b))


def test_html_page_links_existing_thumbnails(scenes, tmp_path):
    res = build_catalog([scenes], tmp_path / "out" / "catalog.csv", _cfg())
    page = res.html.read_text()
    thumbs = thumbnails_linked(page)
    assert len(thumbs) == 4  # one per processed scene
    for t in thumbs:
        assert (res.html.parent / t).is_file()
    import re

    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # offline: no remote resources
    assert "<svg" in page and "cloud cover" in page


def test_vendor_targz_delivery(tmp_path):
    folder = tmp_path / "GF1_WFV1_E117.0_N40.0_20200523_L1A0004819525"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tif = make_scene(folder / f"{folder.name}.tif", 128, 96, seed=5, georef="rpc", vendor_xml=True,
                         write_truth=False, sensor_tags=False, blocksize=32)  # fmt: skip
    arc = tmp_path / "in" / f"{folder.name}.tar.gz"
    arc.parent.mkdir()
    with tarfile.open(arc, "w:gz") as tf:
        for p in folder.iterdir():
            tf.add(p, arcname=f"{folder.name}/{p.name}")
    assert tif.with_suffix(".xml").exists()
    res = build_catalog([arc.parent], tmp_path / "cat.csv", _cfg())
    row = read_catalog(res.path).iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["acquired_source"] == "vendor xml" and row["satellite"] == "GF1"
    assert row["georeferencing"] == "rpc" and isinstance(row["footprint"], str)  # RPC footprint, in lon/lat
    assert row["vendor_cloud_pct"] == 30
    # the calibration table the scene used: GF-1 WFV1's of its year, 2020
    assert row["calibration"] == "CRESDA GF1 WFV1 2020 (exact; confirmed)"
    assert str(row["calibration_approximate"]) == "False"


def test_cli_catalog(scenes, tmp_path):
    from cli.main import cli

    r = CliRunner().invoke(cli, ["catalog", str(scenes / "sub"), "-o", str(tmp_path / "c.csv"), "--workers", "0",
                                 "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c.csv").exists() and (tmp_path / "c.html").exists()
    r = CliRunner().invoke(cli, ["catalog", str(scenes), "-o", str(tmp_path / "c.xlsx"), "--workers", "0"])
    assert r.exit_code == 2 and "unknown extension" in r.output
    r = CliRunner().invoke(cli, ["catalog", str(tmp_path / "nope"), "-o", str(tmp_path / "d.csv")])
    assert r.exit_code == 2


def test_existing_scheduler_address(scenes, tmp_path):
    """--scheduler ADDRESS: tasks go to a cluster the user already runs."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        res = build_catalog([scenes / "sub"], tmp_path / "c.csv", _cfg(scheduler=cluster.scheduler_address))
    assert (res.processed, res.failed) == (1, 0)
    from geocloud.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot reach the dask scheduler"):
        build_catalog(
            [scenes / "sub"], tmp_path / "d.csv", _cfg(scheduler="tcp://127.0.0.1:9", connect_timeout_s=1)
        )


def test_catalogue_figures_equal_the_stats_json(scenes, tmp_path):
    """The catalogue reads the run's typed stats: every column it shares with the stats
    JSON holds the same figure (one definition of thin cloud: cloud pixels with alpha below
    thin_tau, over valid pixels; mean alpha over valid pixels)."""
    scene = next(scenes.glob("GF1_WFV1_*20210603*.tif"))
    from geocloud import ProcessConfig
    from geocloud.config import OutputConfig

    cfg = _cfg(process=ProcessConfig(model="spectral", output=OutputConfig(products=("mask", "alpha", "stats"))))
    res = build_catalog([scene], tmp_path / "c.csv", cfg)
    assert (res.processed, res.failed) == (1, 0)
    row = read_catalog(tmp_path / "c.csv").iloc[0]
    stats = json.loads(Path(row["stats"]).read_text())
    m = stats["matting"]
    assert row["thin_cloud_pct"] == pytest.approx(round(100 * m["thin_cloud_fraction"], 4))
    assert row["mean_alpha"] == pytest.approx(round(m["mean_alpha"], 4))
    assert 0 < m["mean_alpha"] < 1
    assert row["cloud_pct"] == pytest.approx(round(100 * stats["cloud_fraction"], 4))
    assert row["threshold"] == pytest.approx(stats["threshold"]["value"])
    assert row["threshold_method"] == stats["threshold"]["method"]
    assert row["model"] == stats["model"]["name"]
    assert row["valid_px"] == stats["pixels"]["valid"] and row["cloud_px"] == stats["pixels"]["cloud"]
    assert row["sensor"] == stats["sensor"]["sensor"]
    assert row["geocloud_version"] == stats["geocloud_version"]


def test_scene_stats_round_trip(scenes, tmp_path):
    """The stats JSON is SceneStats.to_dict(); from_dict reads it back unchanged."""
    from geocloud import ProcessConfig, process_scene
    from geocloud.config import OutputConfig
    from geocloud.stats import SceneStats

    scene = next(scenes.glob("GF1_WFV1_*20210601*.tif"))
    cfg = ProcessConfig(model="spectral", output=OutputConfig(products=("mask", "stats")))
    r = process_scene(scene, tmp_path / "o", cfg)
    on_disk = json.loads(r.outputs["stats"][0].read_text())
    assert on_disk == json.loads(json.dumps(r.stats.to_dict()))
    assert SceneStats.from_dict(on_disk) == r.stats
    assert r.stats.thin_cloud_fraction is None and "matting" not in on_disk


def test_footprint_of_separate_valid_areas_is_a_multipolygon(tmp_path):
    import numpy as np
    import rasterio
    import shapely
    from rasterio.transform import from_origin

    from geocloud.catalog import valid_footprint

    m = np.full((200, 200), 255, np.uint8)
    m[10:50, 10:50] = 0
    m[100:150, 120:190] = 1
    path = tmp_path / "m.tif"
    with rasterio.open(path, "w", driver="GTiff", width=200, height=200, count=1, dtype="uint8",
                       crs="EPSG:32650", transform=from_origin(500_000, 4_000_000, 16, 16)) as ds:  # fmt: skip
        ds.write(m, 1)
    fp = shapely.from_wkt(valid_footprint(path))
    assert fp.geom_type == "MultiPolygon" and len(fp.geoms) == 2
    assert fp.area == pytest.approx(
        (40 * 40 + 50 * 70) * 16 * 16 / 111_000**2 / np.cos(np.radians(36)), rel=0.05
    )


def test_a_rerun_removes_what_a_killed_catalogue_left(scenes, tmp_path, dead_pid):
    """A catalogue client killed outright leaves its catalogue's, HTML page's and
    thumbnails' temporaries; the next run removes those of dead processes."""
    from geocloud.outputs import _HOST

    thumbs = tmp_path / "cat_thumbs"
    thumbs.mkdir()
    first = sorted(discover_scenes([scenes]))[0]
    scene_id = scene_ids([first])[first]
    stale = [tmp_path / f".cat.{_HOST}-{dead_pid}.partial.csv", tmp_path / f".cat.html.{_HOST}-{dead_pid}.partial",
             thumbs / f".{scene_id}.png.{_HOST}-{dead_pid}.partial"]  # fmt: skip
    kept = tmp_path / f".cat.{_HOST}-{os.getppid()}.partial.csv"  # a live process's
    for f in [*stale, kept]:
        f.write_bytes(b"x")
    build_catalog([first], tmp_path / "cat.csv", _cfg())
    assert not any(f.exists() for f in stale) and kept.exists()
    assert (thumbs / f"{scene_id}.png").exists()
