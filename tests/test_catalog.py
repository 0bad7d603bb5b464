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
    assert (res.processed, res.unchanged, res.failed) == (5, 0, 1)
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
    assert (res.unchanged, res.processed) == (2, 3)
    full = read_catalog(cat)
    assert len(full) == 5 and set(part["path"]) <= set(full["path"])
    # nothing changed: everything skipped, same catalogue
    res2 = build_catalog([scenes], cat, _cfg())
    assert (res2.unchanged, res2.processed) == (5, 0)
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
    assert row["shadow_pct"] == pytest.approx(round(100 * stats["shadow_fraction"], 4))
    assert row["usable_pct"] == pytest.approx(round(100 * stats["usable_fraction"], 4))
    assert row["cloud_pct"] + row["shadow_pct"] + row["usable_pct"] == pytest.approx(100, abs=1e-3)
    assert row["threshold"] == pytest.approx(stats["threshold"]["value"])
    assert row["threshold_method"] == stats["threshold"]["method"]
    assert row["model"] == stats["model"]["name"]
    assert row["valid_px"] == stats["pixels"]["valid"] and row["cloud_px"] == stats["pixels"]["cloud"]
    assert row["sensor"] == stats["sensor"]["sensor"]
    assert row["geocloud_version"] == stats["geocloud_version"]


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


# ------------------------------------------------------------------ issue 21: the operator's catalogue


def _cli(args, **kw):
    from cli.main import cli

    return CliRunner().invoke(cli, ["catalog", *map(str, args)], **kw)


def test_exit_codes_and_json_summary(scenes, tmp_path):
    """0: all catalogued; 3: some failed, catalogue written; 2: nothing matched, nothing written."""
    r = _cli([scenes, "-o", tmp_path / "a.csv", "--workers", "0", "--json"])
    assert r.exit_code == 3, r.output
    assert (tmp_path / "a.csv").exists()
    summary = json.loads(r.stdout.strip().splitlines()[-1])  # the summary on stdout
    assert (summary["failed"], summary["scenes"]) == (1, 5)
    assert "broken.tif" in r.stderr and "broken.tif" not in r.stdout  # errors on stderr
    r = _cli([scenes / "sub", "-o", tmp_path / "b.csv", "--workers", "0"])
    assert r.exit_code == 0 and r.stdout == "" and "1 rows" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    for what in (empty, scenes / "nothing_*.tif"):
        r = _cli([what, "-o", tmp_path / "out" / "c.csv", "--workers", "0"])
        assert r.exit_code == 2 and "nothing to catalogue" in r.stderr
    assert not (tmp_path / "out").exists()
    assert "3  some scenes failed" in _cli(["--help"]).output


def _label_dataset(root: Path) -> Path:
    import numpy as np
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_scene(root / "scenes" / "Forest_01.tif", 96, 80, seed=3, write_truth=False, blocksize=32)
        (root / "labels").mkdir(parents=True)
        with rasterio.open(root / "labels" / "Forest_01.tif", "w", driver="GTiff", width=96, height=80,
                           count=1, dtype="uint8") as ds:  # fmt: skip
            ds.write(np.zeros((1, 80, 96), np.uint8))
    return root


def test_label_rasters_are_skipped_and_pattern_exclude(tmp_path):
    data = _label_dataset(tmp_path / "data")
    res = build_catalog([data], tmp_path / "cat.csv", _cfg())
    by_status = {r["status"]: r for r in res.rows}
    assert set(by_status) == {"ok", "skipped"} and res.failed == 0 and res.skipped == 1
    assert "labels" in by_status["skipped"]["path"] and "1 uint8 band" in by_status["skipped"]["error"]
    r = _cli([data, "-o", tmp_path / "c2.csv", "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    only = build_catalog([data], tmp_path / "ex.csv", _cfg(excludes=("labels/*",)))
    assert [Path(r["path"]).parent.name for r in only.rows] == ["scenes"]
    pat = discover_scenes([data], patterns=("Forest_*",), excludes=("*/labels/*",))
    assert [p.parent.name for p in pat] == ["scenes"]
    assert discover_scenes([data], patterns=("Water_*",)) == []


def test_workers_auto_and_range(scenes, tmp_path):
    from geocloud.catalog import auto_workers, usable_cores

    assert CatalogConfig().workers == "auto"
    assert auto_workers(20, cores=2)[0] == 0  # measured: serial beats worker processes on 2 cores
    assert auto_workers(1, cores=64)[0] == 0
    n, _ = auto_workers(20, cores=16)
    assert 1 < n <= 16
    r = _cli([scenes / "sub", "-o", tmp_path / "w.csv", "--workers", str(usable_cores() + 62)])
    assert r.exit_code == 2 and f"1..{usable_cores()}" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "w.csv").exists()
    r = _cli([scenes / "sub", "-o", tmp_path / "w.csv", "--workers", "lots"])
    assert r.exit_code == 2 and "auto" in r.stderr


def test_unreachable_scheduler_leaves_no_file(scenes, tmp_path):
    from geocloud.errors import ConfigError

    out = tmp_path / "cat"
    with pytest.raises(ConfigError, match="cannot reach"):
        build_catalog([scenes / "sub"], out / "d.csv", _cfg(scheduler="tcp://127.0.0.1:9", connect_timeout_s=1))
    assert not out.exists() or list(out.iterdir()) == []


def _delivery(tmp_path: Path, name: str = "GF1_WFV1_E117.0_N40.0_20200523_L1A0004819525") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_scene(folder / f"{name}.tif", 128, 96, seed=5, georef="rpc", vendor_xml=True, write_truth=False,
                   sensor_tags=False, blocksize=32)  # fmt: skip
    return folder


def test_malformed_vendor_xml_is_reported_in_the_row(tmp_path):
    folder = _delivery(tmp_path)
    good = build_catalog([folder], tmp_path / "good.csv", _cfg()).rows[0]
    assert good["status"] == "ok" and not good["warnings"]
    xml = next(folder.glob("*.xml"))
    text = xml.read_text()
    xml.write_text(text.replace("ProductMetaData", "ProductMetadata"))  # well-formed, not a GF product XML
    row = build_catalog([folder], tmp_path / "bad.csv", _cfg()).rows[0]
    assert row["status"] == "ok", row["error"]
    assert "vendor XML ignored" in row["warnings"] and xml.name in row["warnings"]
    assert "calibrated with: " + row["calibration"] in row["warnings"]
    assert row["calibration"] != good["calibration"] and row["calibration_approximate"]
    xml.write_text(text[:200])  # cut: not XML any more (GDAL, which reads <stem>.xml too, fails)
    row = build_catalog([folder], tmp_path / "cut.csv", _cfg()).rows[0]
    assert "vendor XML ignored" in row["warnings"]
    assert row["status"] == "ok" or "vendor XML beside the scene is malformed" in row["error"]
    xml.unlink()
    row = build_catalog([folder], tmp_path / "none.csv", _cfg()).rows[0]
    assert "no vendor XML" in row["warnings"]
    assert "\n" not in row["warnings"]
    df = read_catalog(tmp_path / "none.csv")
    assert "warnings" in df.columns and "no vendor XML" in df["warnings"].iloc[0]


def test_truncated_targz_gives_a_clear_error_row(tmp_path):
    folder = _delivery(tmp_path)
    arc = tmp_path / "in" / f"{folder.name}.tar.gz"
    arc.parent.mkdir()
    with tarfile.open(arc, "w:gz") as tf:
        for p in folder.iterdir():
            tf.add(p, arcname=f"{folder.name}/{p.name}")
    data = arc.read_bytes()
    arc.write_bytes(data[: len(data) // 2])
    row = build_catalog([arc], tmp_path / "cat.csv", _cfg()).rows[0]
    assert row["status"] == "error"
    assert row["error"].startswith("ArchiveError:") and "truncated or corrupt" in row["error"]
    assert "internal error" not in row["error"]


def _core_valid(d: dict) -> None:
    """pystac validation against the core Item schema (bundled with pystac: no network), and
    the eo fields through pystac's own eo extension class."""
    import pystac
    from pystac.extensions.eo import EOExtension

    assert EOExtension.get_schema_uri() in d["stac_extensions"]
    item = pystac.Item.from_dict(d)
    if "eo:cloud_cover" in d["properties"]:
        assert 0 <= EOExtension.ext(item).cloud_cover <= 100
    core = dict(d, stac_extensions=[])
    pystac.Item.from_dict(core).validate()


def test_stac_item_collection_and_static_catalogue(scenes, tmp_path):
    pytest.importorskip("pystac")
    import pystac

    res = build_catalog([scenes], tmp_path / "catalog.json", _cfg(stac_dir=tmp_path / "stac"))
    doc = json.loads(res.path.read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 5
    ic = pystac.ItemCollection.from_dict(doc)
    assert len(ic) == 5
    for f in doc["features"]:
        _core_valid(f)
        p = f["properties"]
        assert p["geocloud:status"] in ("ok", "error")
        if p["geocloud:status"] != "ok":
            assert f["geometry"] is None and "eo:cloud_cover" not in p
            continue
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon") and len(f["bbox"]) == 4
        assert -180 <= f["bbox"][0] <= f["bbox"][2] <= 180
        assert p["datetime"] is not None or (p["start_datetime"] and p["end_datetime"])
        for key in ("geocloud:threshold", "geocloud:model", "geocloud:thin_cloud_pct"):
            assert key in p
        a = f["assets"]
        assert a["mask"]["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
        assert a["mask"]["roles"] == ["data"] and a["scene"]["roles"] == ["data"]
        assert a["stats"]["roles"] == ["metadata"] and a["preview"]["roles"] == ["overview"]
        assert a["thumbnail"]["roles"] == ["thumbnail"]
        assert all(Path(v["href"]).is_absolute() and Path(v["href"]).exists() for v in a.values())
    plain = next(f for f in doc["features"] if f["id"] == "plain_scene")
    assert plain["properties"]["datetime"] == "2022-02-03T04:05:06Z"
    from geocloud.stac import item

    # a date alone (from the file name): datetime null and the UTC day as start/end, as STAC asks
    dated = item({"id": "x", "path": "/x.tif", "status": "ok", "acquired": "2021-06-01", "acquired_source": "file name"})
    assert dated["properties"]["datetime"] is None and dated["geometry"] is None and "bbox" not in dated
    assert (dated["properties"]["start_datetime"], dated["properties"]["end_datetime"]) == (
        "2021-06-01T00:00:00Z", "2021-06-01T23:59:59Z")
    _core_valid(dated)
    # the catalogue reads back as a table, and resumes
    assert len(read_catalog(res.path)) == 5
    assert build_catalog([scenes], tmp_path / "catalog.json", _cfg()).unchanged == 5
    # the static catalogue: pystac walks it, every Item file is a valid Item with existing assets
    cat = pystac.Catalog.from_file(str(tmp_path / "stac" / "catalog.json"))
    items = list(cat.get_items(recursive=True))
    assert len(items) == 5
    for it in items:
        _core_valid(it.to_dict(include_self_link=False, transform_hrefs=False))
        for asset in it.assets.values():
            assert Path(asset.get_absolute_href()).exists()
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.slow
def test_stac_validator(scenes, tmp_path):
    """stac-validator (fetches the schemas: skipped offline)."""
    sv = pytest.importorskip("stac_validator.validate")
    build_catalog([scenes / "sub"], tmp_path / "c.csv", _cfg(stac_dir=tmp_path / "stac"))
    v = sv.StacValidate(str(tmp_path / "stac" / "catalog.json"), recursive=True)
    ok = v.run()
    msgs = json.dumps(v.message)
    if not ok and ("ConnectionError" in msgs or "resolve" in msgs or "Max retries" in msgs):
        pytest.skip("stac-validator could not fetch the STAC schemas (no network)")
    assert ok, msgs


def test_columns_mtime_iso_and_absolute_paths(scenes, tmp_path, monkeypatch):
    from datetime import datetime

    monkeypatch.chdir(tmp_path)
    res = build_catalog([Path(os.path.relpath(scenes / "sub", tmp_path))], "rel/cat.csv", _cfg())
    df = read_catalog(tmp_path / "rel" / "cat.csv")
    row = df.iloc[0]
    for c in ("path", "mask", "thumbnail", "preview", "stats"):
        assert Path(row[c]).is_absolute() and Path(row[c]).exists(), c
    assert res.path.is_absolute()
    t = datetime.fromisoformat(row["mtime"].replace("Z", "+00:00"))
    assert t.utcoffset().total_seconds() == 0 and row["mtime"].endswith("Z")
    assert abs(t.timestamp() - (scenes / "sub" / "plain_scene.tif").stat().st_mtime) < 1e-3


def test_interrupt_message_is_honest(scenes, tmp_path, monkeypatch):
    import cli.catalog as clicat

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(clicat, "build_catalog", interrupted)
    r = _cli([scenes / "sub", "-o", tmp_path / "c.csv", "--workers", "0"])
    assert r.exit_code == 130
    assert "kept" in r.stderr and "resume" in r.stderr and "no partial outputs" not in r.stderr


def _gpkg_version(path: Path) -> int:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA user_version").fetchone()[0]
    finally:
        con.close()


def test_geopackages_are_version_1_2(scenes, tmp_path):
    import shutil
    import subprocess

    res = build_catalog([scenes / "sub"], tmp_path / "c.gpkg", _cfg(
        process=CatalogConfig().process.__class__(output=CatalogConfig().process.output.__class__(
            products=("mask", "stats", "vector")))))  # fmt: skip
    vec = next((tmp_path / "c_scenes").rglob("*_clouds.gpkg"))
    for g in (res.path, vec):
        assert _gpkg_version(g) == 10200, g  # GeoPackage 1.2
    ogrinfo = shutil.which("ogrinfo")
    if ogrinfo:  # the system GDAL (Debian 12: 3.6, as QGIS 3.22/3.28 LTR use)
        for g in (res.path, vec):
            out = subprocess.run([ogrinfo, "-so", "-al", str(g)], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0 and "Warning" not in out.stderr + out.stdout, out.stderr


def test_html_map_draws_visible_footprints():
    """Small footprints far apart must still be drawn a few pixels wide, not as invisible dots."""
    import re

    from geocloud.report import footprints_svg

    rows = [{"id": f"s{i}", "cloud_pct": 10.0 * i,
             "footprint": f"POLYGON(({x} {y},{x + 0.05} {y},{x + 0.05} {y + 0.05},{x} {y + 0.05},{x} {y}))"}
            for i, (x, y) in enumerate([(100, 20), (125, 48), (110, 35)])]  # fmt: skip
    svg = footprints_svg(rows)
    shapes = re.findall(r"<(polygon|rect|circle)([^>]*)><title>(s\d)", svg)
    assert sorted(s[2] for s in shapes) == ["s0", "s1", "s2"]
    for kind, attrs, _ in shapes:
        if kind == "polygon":
            pts = [tuple(map(float, p.split(","))) for p in re.search(r'points="([^"]+)"', attrs).group(1).split()]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            assert max(xs) - min(xs) >= 6 and max(ys) - min(ys) >= 6
        elif kind == "circle":
            assert float(re.search(r'r="([\d.]+)"', attrs).group(1)) >= 3
        assert re.search(r'fill-opacity="(0\.[3-9]|1)', attrs) or 'fill-opacity' not in attrs
