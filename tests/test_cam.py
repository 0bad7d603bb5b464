"""The weakly supervised CAM detector: network, LPP, training, weights, evaluate, data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

torch = pytest.importorskip("torch")

from geocloud.errors import InputError, ModelError, OutputError  # noqa: E402
from geocloud.evaluate import evaluate_arrays, metrics, pair_inputs  # noqa: E402
from geocloud.models.cam import (  # noqa: E402
    DEFAULT_WEIGHTS,
    CamConfig,
    CamModel,
    CamNet,
    CamSidecar,
    DenseCam,
    load_weights,
    save_weights,
)
from geocloud.training.data import BlockRule, extract_blocks  # noqa: E402
from geocloud.training.synth import BlockGenerator, GeneratorConfig, cloud_layer  # noqa: E402


def _net(block: int = 64, seed: int = 0) -> CamNet:
    torch.manual_seed(seed)
    net = CamNet(CamConfig(channels=(8, 8, 8), train_block=block))
    # non-trivial BatchNorm statistics, so folding is actually tested
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, 4, block, block))
    return net.eval()


# --------------------------------------------------------------------------- network


def test_gcp_shapes_and_gradients() -> None:
    net = _net(64)
    net.train()
    x = torch.rand(3, 4, 64, 64, requires_grad=True)
    f = net.features(x)
    assert f.shape == (3, 8, 4, 4)  # 64 / (stem 4 * two 2x2 pools)
    delta = net.pool(f)
    assert delta.shape == (3, 8)
    # delta_k = sum_ij W_k(i,j) F_k(i,j)
    assert torch.allclose(delta, (f * net.gcp[None]).sum(dim=(-2, -1)))
    logits = net.fc(delta)
    assert logits.shape == (3, 2)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1]))
    loss.backward()
    assert net.gcp.grad is not None and net.gcp.grad.abs().sum() > 0
    assert net.conv1.weight.grad is not None and net.conv1.weight.grad.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_gcp_rejects_other_block_sizes() -> None:
    net = _net(64)
    with pytest.raises(ModelError, match="train on blocks of 64"):
        net(torch.rand(1, 4, 128, 128))


@pytest.mark.parametrize(("mode", "stride"), [("dilate", 4), ("remove", 4), ("dilate_last", 8), ("none", 16)])
def test_lpp_resolution_from_same_weights(mode: str, stride: int) -> None:
    net = _net(64)
    dense = DenseCam(net, mode)
    z = dense(torch.rand(2, 4, 128, 96))
    # both pools pruned: only the 4x stem stride is left; one pool pruned: 8; none: 16
    assert dense.stride == stride
    assert z.shape == (2, 1, 128 // stride, 96 // stride)
    model = CamModel(net, CamSidecar(config=net.config, lpp_mode=mode))
    pred = model.predict(
        np.random.default_rng(0).random((2, 4, 128, 96), dtype=np.float32), np.ones((2, 128, 96), bool)
    )
    s = pred.maps["score"]
    assert s.shape == (2, 1, 128, 96) and s.dtype == np.float32
    assert np.isfinite(s).all() and s.min() >= 0 and s.max() <= 1
    assert pred.block_prob is not None and pred.block_prob.shape == (2,)
    assert model.spec.halo >= dense.receptive_radius()


def test_pixel_branch_variant_shapes() -> None:
    torch.manual_seed(0)
    net = CamNet(CamConfig(channels=(8, 8, 8), train_block=64, pixel_hidden=4)).eval()
    x = torch.rand(2, 4, 64, 64)
    f = net.features(x)
    u = net.pixel_logits(x, net.cell_logits(f))
    assert u.shape == (2, 64, 64)
    model = CamModel(net, CamSidecar(config=net.config, lpp_mode="dilate"))
    s = model.predict(x.numpy(), np.ones((2, 64, 64), bool)).maps["score"]
    assert s.shape == (2, 1, 64, 64) and np.isfinite(s).all()


def test_brightness_gate_is_per_pixel() -> None:
    net = _net(64)
    side = CamSidecar(
        config=net.config, lpp_mode="dilate_last", refine={"method": "vis_min_ramp", "lo": 0.05, "hi": 0.15}
    )
    model = CamModel(net, side)
    x = np.full((1, 4, 128, 128), 0.5, np.float32)
    x[:, 2, 60:70, 60:70] = 0.01  # a pixel dark in red cannot be cloud
    s = model.predict(x, np.ones((1, 128, 128), bool)).maps["score"]
    assert (s[0, 0, 60:70, 60:70] == 0).all()
    assert model.spec.halo == CamModel(net, CamSidecar(config=net.config, lpp_mode="dilate_last")).spec.halo


def test_lpp_dilate_is_the_training_network_evaluated_densely() -> None:
    net = _net(64)
    x = torch.rand(2, 4, 128, 128) * 0.6
    with torch.no_grad():
        cells = net.cell_logits(net.features(x))  # (2, 8, 8) at 1/16
        z = DenseCam(net, "dilate")(x)[:, 0]  # (2, 32, 32) at 1/4
    # training cell i sits at dense position 4 i + 1; cells clear of the zero-padding
    # border (2 cells deep) are exact
    for i in range(2, 6):
        for j in range(2, 6):
            assert torch.allclose(z[:, 4 * i + 1, 4 * j + 1], cells[:, i, j], atol=1e-4)


@pytest.mark.parametrize("mode", ["dilate", "dilate_last", "remove", "none"])
def test_predict_is_local_within_halo(mode: str) -> None:
    """Score at a pixel depends only on input within spec.halo (engine contract)."""
    net = _net(64)
    model = CamModel(net, CamSidecar(config=net.config, lpp_mode=mode))
    rng = np.random.default_rng(1)
    x = rng.random((1, 4, 384, 256), dtype=np.float32) * 0.5
    v = np.ones((1, 384, 256), bool)
    a = model.predict(x, v).maps["score"]
    x2 = x.copy()
    h = model.spec.halo
    assert 192 - h - 4 > 0
    x2[..., : 192 - h - 4, :] = 0.9  # change everything farther than the halo from rows >= 192
    b = model.predict(x2, v).maps["score"]
    np.testing.assert_allclose(a[..., 192:, :], b[..., 192:, :], atol=1e-6)
    # with nodata filled as the engine fills it: the fill a pixel reads comes from within the halo
    from geocloud.models.fill import fill_nodata

    v[:, 192 - h // 2 : 192 + 8] = False
    for arr in (x, x2):
        fill_nodata(arr[0], v[0], ~v[0])
    a = model.predict(x, v).maps["score"]
    b = model.predict(x2, v).maps["score"]
    np.testing.assert_allclose(a[..., 200:, :], b[..., 200:, :], atol=1e-6)


@pytest.mark.parametrize("mode", ["dilate", "dilate_last", "none"])
def test_block_offsets_aligned_to_block_multiple_agree(mode: str) -> None:
    net = _net(64)
    model = CamModel(net, CamSidecar(config=net.config, lpp_mode=mode))
    rng = np.random.default_rng(2)
    n = 512
    x = rng.random((1, 4, n, n), dtype=np.float32) * 0.5
    full = model.predict(x, np.ones((1, n, n), bool)).maps["score"]
    m, h = model.spec.block_multiple, model.spec.halo
    off = 3 * m
    sub = model.predict(x[..., off:, off:], np.ones((1, n - off, n - off), bool)).maps["score"]
    core = slice(h, n - off - h)
    assert core.stop - core.start > 100
    np.testing.assert_allclose(sub[..., core, core], full[..., off:, off:][..., core, core], atol=1e-5)


# --------------------------------------------------------------------------- training


def test_tiny_training_converges_on_separable_task() -> None:
    from geocloud.training.cam import CamTrainConfig, train_net

    rng = np.random.default_rng(0)
    backgrounds = rng.uniform(0.02, 0.12, (16, 4, 32, 32)).astype(np.float32)
    gen = BlockGenerator(backgrounds, None, rng, GeneratorConfig(p_thin=0.0))
    cfg = CamTrainConfig(epochs=3, steps_per_epoch=25, batch_size=32, lr=1e-2, block=32, threads=1)
    net, losses = train_net(gen, cfg, CamConfig(channels=(8, 8, 8), train_block=32))
    assert losses[-1] < losses[0]
    x, y = gen.sample(128)
    with torch.no_grad():
        acc = (net(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert acc > 0.9


def test_training_is_reproducible() -> None:
    from geocloud.training.cam import CamTrainConfig, train_net

    def run() -> torch.Tensor:
        rng = np.random.default_rng(3)
        bg = rng.uniform(0.02, 0.12, (8, 4, 32, 32)).astype(np.float32)
        gen = BlockGenerator(bg, None, rng)
        cfg = CamTrainConfig(epochs=1, steps_per_epoch=3, batch_size=8, block=32, seed=5)
        net, _ = train_net(gen, cfg, CamConfig(channels=(4, 4, 4), train_block=32))
        return net.conv1.weight.detach().clone()

    assert torch.equal(run(), run())


def test_cloud_layer_and_generator() -> None:
    rng = np.random.default_rng(0)
    for kind in ("thick", "thin"):
        a, rc = cloud_layer(rng, 64, kind)
        assert a.shape == (64, 64) and rc.shape == (4, 64, 64)
        assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
        assert np.all(rc <= 1.2 * a[None] + 1e-6)  # r_c = alpha * brightness
    bg = np.full((4, 4, 64, 64), 0.05, np.float32)
    x, y = BlockGenerator(bg, None, np.random.default_rng(1)).sample(32)
    assert x.shape == (32, 4, 64, 64) and set(np.unique(y)) <= {0, 1}
    # clear blocks are backgrounds (up to gain), cloudy ones are brighter
    assert x[y == 1].mean() > x[y == 0].mean()


def test_block_rule() -> None:
    refl = np.zeros((4, 128, 128), np.float32)
    label = np.zeros((128, 128), np.uint8)
    label[:8, :8] = 1  # 64 px: 1.6 % of a 64x64 block -> ambiguous
    label[64:, 64:] = 2  # a fully thin-cloudy quadrant
    label[100:110, :10] = 3  # shadow is not cloud
    b = extract_blocks(refl, label, rule=BlockRule(size=64, stride=64))
    # blocks: (0,0) ambiguous dropped; (0,64) clear; (64,0) clear (shadow); (64,64) cloudy
    assert sorted(b.y.tolist()) == [0, 0, 1]
    assert extract_blocks(refl, label, quality="unreliable").y.size == 0


# --------------------------------------------------------------------------- weights


def test_weights_round_trip_and_band_check(tmp_path: Path) -> None:
    net = _net(64)
    side = CamSidecar(config=net.config, lpp_mode="dilate", z_lo=-3.0, z_hi=3.0)
    save_weights(net, side, tmp_path / "cam.safetensors")
    meta = json.loads((tmp_path / "cam.json").read_text())
    assert meta["training"]["weights_sha256"]
    net2, side2 = load_weights(tmp_path / "cam.safetensors")
    x = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), net2(x))
    model = CamModel(net2, side2)
    model.check_bands(("blue", "green", "red", "nir"))
    with pytest.raises(ModelError, match="--bands"):
        model.check_bands(("red", "green", "blue"))
    with pytest.raises(ModelError, match="4-band"):
        model.predict(np.zeros((1, 3, 64, 64), np.float32), np.ones((1, 64, 64), bool))


def test_interrupted_weight_save_keeps_the_previous_weights(tmp_path: Path, monkeypatch) -> None:
    """Saving goes through temporary names: a failure mid-write leaves the old pair intact."""
    import hashlib

    import safetensors.torch

    net = _net(64)
    side = CamSidecar(config=net.config, lpp_mode="dilate", z_lo=-3.0, z_hi=3.0)
    path = tmp_path / "cam.safetensors"
    save_weights(net, side, path)
    before = path.read_bytes(), (tmp_path / "cam.json").read_text()

    def half_write(state, filename):
        Path(filename).write_bytes(b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    with pytest.raises(OutputError, match="cam.safetensors"):
        save_weights(_net(64), CamSidecar(config=net.config), path)
    assert (path.read_bytes(), (tmp_path / "cam.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.json", "cam.safetensors"]
    assert json.loads(before[1])["training"]["weights_sha256"] == hashlib.sha256(before[0]).hexdigest()


def test_weights_load_safely(tmp_path: Path) -> None:
    net = _net(64)
    side = CamSidecar(config=net.config)
    # a plain state dict saved with torch.save loads with weights_only=True
    import hashlib

    def record_sha() -> None:  # the sidecar records the file's hash, checked on load
        side.training["weights_sha256"] = hashlib.sha256((tmp_path / "cam.pt").read_bytes()).hexdigest()
        (tmp_path / "cam.json").write_text(json.dumps(side.to_json()))

    torch.save(net.state_dict(), tmp_path / "cam.pt")
    record_sha()
    load_weights(tmp_path / "cam.pt")

    # a pickle that would run code is refused, even with a sidecar that vouches for it
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "cam.pt")
    record_sha()
    with pytest.raises(ModelError, match="cannot be loaded"):
        load_weights(tmp_path / "cam.pt")
    with pytest.raises(ModelError, match="geocloud train cam"):
        load_weights(tmp_path / "missing.safetensors")


# --------------------------------------------------------------------------- shipped model


needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="CAM weights not shipped yet")


@needs_weights
def test_shipped_model_is_registered_and_default() -> None:
    from geocloud.models import DEFAULT_MODEL, MODELS, load_model

    assert MODELS["cam"] == "geocloud.models.cam:load"
    assert DEFAULT_MODEL == "cam"
    model = load_model("cam")
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert meta["spec"]["bands"] == ["blue", "green", "red", "nir"]
    assert DEFAULT_WEIGHTS.stat().st_size < 20 * 2**20
    # clear dark land scores low, a bright white block high
    x = np.full((2, 4, 128, 128), 0.05, np.float32)
    x[1] = 0.8
    s = model.predict(x, np.ones((2, 128, 128), bool)).maps["score"]
    assert s[0].mean() < s[1].mean()


@needs_weights
def test_default_model_runs_in_process(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner
    from geocloud.cli.main import cli

    scene = make_raster("scene.tif", width=96, height=80, cloud_cover=0.4)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["process", str(scene), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    stats = json.loads(next(out.glob("*stats.json")).read_text())
    assert stats["model"]["name"].split("+")[0] == "cam"  # default products may add matting
    import rasterio

    with rasterio.open(next(out.glob("*_mask.tif"))) as src:
        m = src.read(1)
    assert m.shape == (80, 96) and set(np.unique(m)) <= {0, 1, 2, 255}


# --------------------------------------------------------------------------- evaluate


def test_evaluate_codes() -> None:
    truth = np.array([[0, 1, 2, 3], [255, 1, 0, 0]], np.uint8)
    pred = np.array([[1, 1, 0, 1], [1, 255, 0, 0]], np.uint8)
    c = evaluate_arrays(pred, truth)
    # pixels: (0,0) fp, (0,1) tp, (0,2) fn (thin is cloud), (0,3) fp (shadow is not cloud),
    # (1,0) ignored (truth 255), (1,1) ignored (pred 255), (1,2) tn, (1,3) tn
    assert c == {"tp": 1, "fp": 2, "fn": 1, "tn": 2}
    m = metrics(c)
    assert m["oa"] == pytest.approx(3 / 6) and m["iou"] == pytest.approx(1 / 4)
    with pytest.raises(InputError, match="codes"):
        evaluate_arrays(np.full((2, 4), 7, np.uint8), truth)
    score = np.full((2, 4), 0.25, np.float32)  # a score raster, not a mask (was a ValueError on NaN)
    score[0, 0] = np.nan
    with pytest.raises(InputError, match=r"values \[0.25, nan\] outside"):
        evaluate_arrays(score, truth)
    with pytest.raises(InputError, match="shape"):
        evaluate_arrays(pred[:, :2], truth)


def _write_mask(path: Path, arr: np.ndarray) -> Path:
    import rasterio

    with rasterio.open(
        path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype="uint8"
    ) as dst:
        dst.write(arr, 1)
    return path


def test_evaluate_cli_folders_and_pairs(tmp_path: Path) -> None:
    import warnings

    from click.testing import CliRunner
    from geocloud.cli.main import cli

    warnings.filterwarnings("ignore", module="rasterio")
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    t = np.zeros((16, 16), np.uint8)
    t[:8] = 1
    p = t.copy()
    p[8:10] = 1
    _write_mask(tmp_path / "truth" / "a.tif", t)
    _write_mask(tmp_path / "truth" / "b.tif", t)
    _write_mask(tmp_path / "pred" / "a_mask.tif", p)
    _write_mask(tmp_path / "pred" / "b_mask.tif", t)
    assert len(pair_inputs([tmp_path / "pred"], [tmp_path / "truth"])) == 2
    # a folder of geocloud outputs holds score rasters too: only its masks are evaluated,
    # also against another run's outputs (matched by the whole stem)
    _write_mask(tmp_path / "pred" / "a_score.tif", p)
    _write_mask(tmp_path / "truth" / "a_score.tif", p)
    assert [q.name for q, _ in pair_inputs([tmp_path / "pred"], [tmp_path / "truth"])] == [
        "a_mask.tif",
        "b_mask.tif",
    ]
    (tmp_path / "run2").mkdir()
    _write_mask(tmp_path / "run2" / "a_mask.tif", t)
    _write_mask(tmp_path / "run2" / "a_score.tif", t)
    assert [(q.name, t_.name) for q, t_ in pair_inputs([tmp_path / "pred"], [tmp_path / "run2"])] == [
        ("a_mask.tif", "a_mask.tif")
    ]
    runner = CliRunner()
    res = runner.invoke(
        cli,
        [
            "evaluate",
            str(tmp_path / "pred"),
            "--truth",
            str(tmp_path / "truth"),
            "--json",
            str(tmp_path / "m.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "POOLED" in res.output
    d = json.loads((tmp_path / "m.json").read_text())
    assert d["scenes"]["b"]["oa"] == 1.0
    assert d["pooled"]["fp"] == 32
    res = runner.invoke(
        cli,
        ["evaluate", str(tmp_path / "pred" / "a_mask.tif"), "--truth", str(tmp_path / "truth" / "a.tif")],
    )
    assert res.exit_code == 0 and "a " in res.output
    res = runner.invoke(
        cli, ["evaluate", str(tmp_path / "pred" / "a_mask.tif"), "--truth", str(tmp_path / "nope")]
    )
    assert res.exit_code == 2 and "does not exist" in res.output


def test_evaluate_refuses_georeferenced_masks_on_different_grids(tmp_path: Path) -> None:
    """Same shape, but the truth lies 3 pixels east or in another CRS: its pixels are not the
    prediction's, so the metrics would be wrong; a one-line error says so.  The same grid,
    or a raster without georeferencing, is evaluated."""
    import rasterio
    from click.testing import CliRunner
    from geocloud.cli.main import cli
    from rasterio.transform import from_origin

    t = np.zeros((16, 16), np.uint8)
    t[:8] = 1

    def write(name: str, crs: str, x0: float) -> Path:
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8",
                           crs=crs, transform=from_origin(x0, 5000.0, 16.0, 16.0)) as dst:  # fmt: skip
            dst.write(t, 1)
        return path

    pred = write("p.tif", "EPSG:32650", 400000.0)
    same = write("same.tif", "EPSG:32650", 400000.0 + 0.001)  # within a thousandth of a pixel
    east = write("east.tif", "EPSG:32650", 400048.0)
    other_crs = write("crs.tif", "EPSG:32651", 400000.0)
    bare = _write_mask(tmp_path / "bare.tif", t)
    runner = CliRunner()
    for truth in (same, bare):
        r = runner.invoke(cli, ["evaluate", str(pred), "--truth", str(truth)])
        assert r.exit_code == 0 and "1.0000" in r.output, r.output
    for truth, shown in ((east, "(400048.000, 5000.000)"), (other_crs, "EPSG:32651")):
        r = runner.invoke(cli, ["evaluate", str(pred), "--truth", str(truth)])
        assert r.exit_code == 2 and "not on the same grid" in r.output and shown in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


# --------------------------------------------------------------------------- data


def test_tagged_archive(tmp_path: Path) -> None:
    import rasterio

    from geocloud.training.cam import CamTrainConfig, gather

    data = np.full((4, 128, 128), 500, np.uint16)
    data[:, :64, :64] = 8000
    with rasterio.open(
        tmp_path / "s.tif", "w", driver="GTiff", width=128, height=128, count=4, dtype="uint16"
    ) as dst:
        dst.write(data)
    (tmp_path / "tags.csv").write_text(
        "scene,row,col,size,label,scale\ns.tif,0,0,64,cloudy,0.0001\ns.tif,64,64,64,clear,0.0001\n"
        "s.tif,0,64,32,clear,0.0001\n"
    )
    td = gather(tmp_path, CamTrainConfig(block=64))
    assert len(td.backgrounds) == 2 and len(td.cloudy) == 1
    assert td.cloudy.x.shape == (1, 4, 64, 64) and td.cloudy.x.mean() == pytest.approx(0.8)
    (tmp_path / "tags.csv").write_text("scene,row,col,size,label\ns.tif,0,0,64,cloudy\n")
    with pytest.raises(InputError, match="scale"):
        gather(tmp_path, CamTrainConfig(block=64))
    (tmp_path / "tags.csv").write_text("scene,row,col,label\n")
    with pytest.raises(InputError, match="size"):
        gather(tmp_path, CamTrainConfig(block=64))


@pytest.mark.shared_data
def test_shared_catalog(shared_data: Path) -> None:
    from geocloud.training.data import load_catalog, read_chip, split_chips

    chips = load_catalog(shared_data)
    four = [c for c in chips if c.is_4band]
    assert len(four) >= 40
    rgb = next(c for c in chips if not c.is_4band)
    with pytest.raises(InputError, match="blue,green,red,nir"):
        read_chip(rgb)
    s2 = next(c for c in four if c.set == "s2_oncloudn" and c.label_quality == "good")
    refl, label = read_chip(s2)
    assert refl.shape == (4, s2.height, s2.width) and refl.dtype == np.float32
    assert 0.0 <= float(np.median(refl)) < 1.6
    bad = next(c for c in four if c.label_quality == "unreliable")
    assert (read_chip(bad)[1] == 255).all()  # unreliable labels are never truth
    a = split_chips(chips, seed=0)
    b = split_chips(chips, seed=0)
    assert a == b
    assert not {c.key for c in a.train} & {c.key for c in a.val}
    assert all(c.label_quality != "unreliable" for c in a.val + a.train)
    assert {c.surface for c in a.val if c.set == "l8_biome"} == {
        c.surface for c in four if c.set == "l8_biome"
    }


def test_train_config_is_frozen() -> None:
    from geocloud.training.cam import CamTrainConfig

    cfg = CamTrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


@needs_weights
def test_cam_mosaic_is_block_size_independent(make_raster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import rasterio
    from click.testing import CliRunner
    from geocloud.cli.main import cli

    scene = make_raster("seam.tif", width=330, height=260, cloud_cover=0.4)
    scores = []
    for bs in ("200", "320"):
        out = tmp_path / f"o{bs}"
        res = CliRunner().invoke(
            cli, ["process", str(scene), "-o", str(out), "--model", "cam", "--products", "score,stats",
                  "--block-size", bs, "-q"],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        with rasterio.open(next(out.glob("*_score.tif"))) as src:
            scores.append(src.read(1))
    a, b = scores
    ok = np.isfinite(a) & np.isfinite(b)
    assert ok.mean() > 0.5
    np.testing.assert_allclose(a[ok], b[ok], atol=1e-5)


@pytest.mark.parametrize("mode", ["dilate_last", "dilate", "none"])
@pytest.mark.parametrize("region", [(64, 192, 56, 200), (0, 200, 0, 256), (3, 97, 61, 250)])
def test_predict_region_is_the_crop_of_predict(mode: str, region: tuple[int, int, int, int]) -> None:
    """The engine asks only for a block's weighted region; it must equal the crop (to float rounding)."""
    net = _net(64)
    model = CamModel(net, CamSidecar(config=net.config, lpp_mode=mode, refine={"lo": 0.1, "hi": 0.2}))
    rng = np.random.default_rng(3)
    x = rng.random((2, 4, 256, 256), dtype=np.float32) * 0.5
    v = np.ones((2, 256, 256), bool)
    v[1, :40] = False
    full = model.predict(x, v)
    part = model.predict_region(x, v, region)
    r0, r1, c0, c1 = region
    np.testing.assert_allclose(part.maps["score"], full.maps["score"][:, :, r0:r1, c0:c1], rtol=0, atol=1e-6)
    assert part.maps["score"].shape == (2, 1, r1 - r0, c1 - c0)
    # the block probability is the largest score over the region's valid pixels
    expect = np.where(v[:, None, r0:r1, c0:c1], part.maps["score"], 0).reshape(2, -1).max(axis=1)
    np.testing.assert_array_equal(part.block_prob, expect)


@pytest.mark.parametrize("shape", [(2, 3, 20, 20), (1, 2, 17, 13)])
def test_fast_pools_equal_torch_pooling(shape: tuple[int, ...]) -> None:
    import torch
    import torch.nn.functional as F

    from geocloud.models.cam import _max2, _max2_dense

    x = torch.randn(*shape)
    assert torch.equal(_max2(x), F.max_pool2d(x, 2))
    assert torch.equal(_max2_dense(x), F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, stride=1))
    dense2 = F.max_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 2, stride=1, dilation=2)
    assert torch.equal(_max2_dense(x, dilation=2), dense2)


@needs_weights
def test_shipped_model_edge_growing_follows_its_sidecar() -> None:
    from geocloud.config import ThresholdConfig
    from geocloud.models import load_model
    from geocloud.threshold import ScoreStats, fit_threshold

    spec = load_model("cam").spec
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert (spec.grow_ratio, spec.grow_radius) == (meta["spec"]["grow_ratio"], meta["spec"]["grow_radius"])
    stats = ScoreStats(64, 64, cloudy_above=spec.default_threshold)
    t = fit_threshold(stats, spec, ThresholdConfig())
    assert t.grow_radius == spec.grow_radius
    if spec.grow_radius:
        assert t.grow_low == pytest.approx(spec.grow_ratio * t.value)
    else:
        assert t.grow_low is None


# --------------------------------------------------------------------------- detector recipe


def test_spectral_shape_ignores_a_common_gain() -> None:
    from geocloud.models.cam import spectral_shape

    x = torch.tensor([[0.10, 0.15, 0.22, 0.30], [0.5, 0.5, 0.5, 0.45]]).T.reshape(1, 4, 1, 2)
    a, b = spectral_shape(x), spectral_shape(2.0 * x)
    assert a.shape == (1, 5, 1, 2)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # the shape does not change with brightness
    torch.testing.assert_close(b[:, 4] - a[:, 4], torch.full((1, 1, 2), float(np.log(2.0))))
    # sloped bare soil and white cloud differ in shape even at the same brightness
    assert float((a[0, :4, 0, 0] - a[0, :4, 0, 1]).abs().max()) > 0.3


def test_spectral_features_fold_exactly_into_the_dense_cam() -> None:
    torch.manual_seed(0)
    net = CamNet(CamConfig(channels=(8, 8, 8), train_block=64, spectral_features=True, band_mean=(0.1, 0.1, 0.1, 0.2)))
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, 4, 64, 64))
    net.eval()
    x = torch.rand(2, 4, 128, 128) * 0.5
    with torch.no_grad():
        cells = net.cell_logits(net.features(x))  # (2, 8, 8) at 1/16
        z = DenseCam(net, "dilate")(x)[:, 0]  # (2, 32, 32) at 1/4
    # as for the plain bands: cells clear of the zero-padding border are exact
    for i in range(2, 6):
        for j in range(2, 6):
            torch.testing.assert_close(z[:, 4 * i + 1, 4 * j + 1], cells[:, i, j], atol=1e-4, rtol=1e-4)


def test_bright_hard_negatives_keep_the_spectral_shape() -> None:
    rng = np.random.default_rng(0)
    bg = np.stack([np.full((4, 32, 32), v, np.float32) * np.array([0.8, 0.9, 1.0, 1.1], np.float32)[:, None, None]
                   for v in (0.05, 0.06, 0.07, 0.3)])  # fmt: skip
    cfg = GeneratorConfig(p_cloudy=0.0, p_brighten=1.0, bright_gain=(2.0, 2.0), p_bright_background=1.0)
    gen = BlockGenerator(bg, None, rng, cfg)
    assert list(gen.bright_idx) == [3]  # the brightest quarter
    x, y = gen.sample(8)
    assert (y == 0).all()
    # every clear sample is the brightest background, brightened x2 (then the augmentation's
    # gains of +-15 % and +-4 % per band): bright, and still sloped from blue to nir
    assert x[:, :3].mean() > 0.45
    ratio = x[:, 3].mean(axis=(1, 2)) / x[:, 0].mean(axis=(1, 2))
    assert (ratio > 1.2).all()
    # a background that a gain of 2 would push past bright_max (0.7) is left as it is:
    # nothing is clipped white
    gen = BlockGenerator(bg[3:] * 2, None, rng, cfg)
    x, _ = gen.sample(8)
    assert x.max() < 0.66 * 1.15 * 1.04 + 1e-6


def test_generator_opacity_matches_the_block_labels() -> None:
    rng = np.random.default_rng(2)
    bg = np.full((6, 4, 32, 32), 0.05, np.float32)
    real = np.full((3, 4, 32, 32), 0.6, np.float32)
    gen = BlockGenerator(bg, real, rng, GeneratorConfig(p_real_cloudy=0.4, bank_size=8))
    x, y, alpha = gen.sample_alpha(64)
    assert alpha.shape == (64, 32, 32)
    assert (alpha[y == 0] == 0).all()  # clear blocks: no cloud at all
    cloudy = alpha[y == 1]
    real_blocks = np.isnan(cloudy).all(axis=(1, 2))
    assert real_blocks.any() and (~real_blocks).any()  # real (unknown opacity) and composited
    synth = cloudy[~real_blocks]
    assert ((synth >= 0.1).mean(axis=(1, 2)) >= 0.05).all()  # the generator's cloudy rule
    # composited pixels are brighter where the opacity is higher (same flips and rotations)
    xs = x[y == 1][~real_blocks]
    hi, lo = synth > 0.5, synth < 0.05
    assert xs[:, 0][hi].mean() > xs[:, 0][lo].mean() + 0.1


def test_head_targets_without_pixel_labels() -> None:
    from geocloud.training.cam import CamTrainConfig, head_targets

    cfg = CamTrainConfig()
    nan = float("nan")
    alpha = torch.tensor([[[0.0, 0.0, 0.0]], [[0.5, 0.05, 0.01]], [[nan, nan, nan]]])
    cam = torch.tensor([[[0.9, 0.9, 0.9]], [[0.0, 0.0, 0.0]], [[0.9, 0.3, 0.05]]])
    x = torch.full((3, 4, 1, 3), 0.3)
    t = head_targets(x, alpha, cam, cfg, alpha_min=0.1)
    assert t[0].tolist() == [[0.0, 0.0, 0.0]]  # a clear block is clear whatever the CAM says
    assert t[1, 0, 0] == 1.0 and torch.isnan(t[1, 0, 1]) and t[1, 0, 2] == 0.0  # known opacity
    assert t[2, 0, 0] == 1.0 and torch.isnan(t[2, 0, 1]) and t[2, 0, 2] == 0.0  # pseudo-labels
    dark = torch.full((1, 4, 1, 1), 0.02)
    assert head_targets(dark, torch.tensor([[[nan]]]), torch.tensor([[[0.95]]]), cfg, 0.1).item() == 0.0


def _head_model(mode: str = "dilate_last") -> CamModel:
    torch.manual_seed(1)
    cfg = CamConfig(channels=(8, 8, 8), train_block=64, spectral_features=True, head_hidden=4)
    net = CamNet(cfg).eval()
    return CamModel(net, CamSidecar(config=cfg, lpp_mode=mode, z_lo=-1.0, z_hi=1.0))


@pytest.mark.parametrize("region", [(64, 192, 56, 200), (0, 200, 0, 256), (3, 97, 61, 250)])
def test_refinement_head_region_is_the_crop_of_predict(region: tuple[int, int, int, int]) -> None:
    model = _head_model()
    from geocloud.models.cam import HEAD_RADIUS

    plain = CamNet(CamConfig(channels=(8, 8, 8), train_block=64, spectral_features=True)).eval()
    assert model.dense.receptive_radius() == DenseCam(plain, "dilate_last").receptive_radius() + HEAD_RADIUS
    assert model.spec.halo >= model.dense.receptive_radius()
    rng = np.random.default_rng(4)
    x = rng.random((1, 4, 256, 256), dtype=np.float32) * 0.5
    v = np.ones((1, 256, 256), bool)
    full = model.predict(x, v).maps["score"]
    r0, r1, c0, c1 = region
    part = model.predict_region(x, v, region).maps["score"]
    np.testing.assert_allclose(part, full[:, :, r0:r1, c0:c1], rtol=0, atol=1e-6)
    assert full.min() >= 0.0 and full.max() <= 1.0


def test_refinement_head_round_trips(tmp_path: Path) -> None:
    model = _head_model()
    save_weights(model.net, model.sidecar, tmp_path / "cam.safetensors")
    net, side = load_weights(tmp_path / "cam.safetensors")
    assert side.config.head_hidden == 4 and side.config.spectral_features
    again = CamModel(net, side)
    x = np.random.default_rng(5).random((1, 4, 128, 128), dtype=np.float32) * 0.5
    v = np.ones((1, 128, 128), bool)
    np.testing.assert_array_equal(again.predict(x, v).maps["score"], model.predict(x, v).maps["score"])


def skip_unless_shipped_chip_list(shared_data: Path, cfg: object) -> None:
    """Skip (with the reason) unless ``shared_data`` holds the chips the shipped weights were
    trained on: chips added to, or removed from, the shared data change every calibrated
    value, which is then no regression of the code."""
    from geocloud.training.data import chip_list_hash, load_catalog, split_chips

    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())["training"]
    split = split_chips(load_catalog(shared_data, four_band_only=True), val_fraction=cfg.val_fraction, seed=cfg.seed)  # type: ignore[attr-defined]
    now = chip_list_hash(list(split.train) + list(split.unlabelled))
    if now != meta["training_list_hash"]:
        pytest.skip(
            f"the shared data's training chips (hash {now}) are not the ones the shipped weights "
            f"were trained on ({meta['training_list_hash']}): retrain, then update the weights"
        )


@pytest.mark.slow
@pytest.mark.shared_data
@needs_weights
def test_recalibrating_the_shipped_net_reproduces_its_sidecar(shared_data: Path, tmp_path: Path) -> None:
    from geocloud.models import load_model
    from geocloud.training.cam import CamTrainConfig, recalibrate

    skip_unless_shipped_chip_list(shared_data, CamTrainConfig())

    side = recalibrate(shared_data, DEFAULT_WEIGHTS, tmp_path, baseline=load_model("spectral"))
    shipped = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    for k in ("default_threshold", "threshold_k", "clear_mu", "clear_sigma", "grow_ratio", "grow_radius"):
        assert side["spec"][k] == pytest.approx(shipped["spec"][k], abs=1e-4), k
    assert side["refine"] == shipped["refine"]
    assert (side["z_lo"], side["z_hi"]) == pytest.approx((shipped["z_lo"], shipped["z_hi"]), abs=1e-4)
    assert (tmp_path / "cam.safetensors").read_bytes() == DEFAULT_WEIGHTS.read_bytes()
    # the shipped sidecar carries the k-fold cross-validation of its recipe (eval_cam.py --sidecar)
    assert "cross-validation" in shipped["validation"]["kind"]
    assert len(shipped["validation"]["cam"]["chips"]) == sum(len(f) for f in shipped["validation"]["folds"])
def test_kfold_chips_are_disjoint_stratified_and_reproducible() -> None:
    from geocloud.training.data import Chip, kfold_chips

    def chip(set_: str, id_: str, quality: str = "good", bands: str = "blue,green,red,nir") -> Chip:
        return Chip(set=set_, id=id_, scene=Path("s.tif"), label=Path("l.tif"), sensor="x",
                    bands=tuple(bands.split(",")), dtype="float32", scale=None, georeferenced=False,
                    height=8, width=8, cloud_frac=0.0, thin_frac=0.0, shadow_frac=0.0,
                    label_quality=quality)  # fmt: skip

    chips = [chip("l8_biome", f"Barren_{i:02d}_0101") for i in range(5)]
    chips += [chip("l8_biome", f"SnowIce_{i:02d}_0101") for i in range(5)]
    chips += [chip("s2", f"g{i}") for i in range(4)] + [chip("s2", f"u{i}", "unreliable") for i in range(3)]
    chips += [chip("rgb", "q", bands="red,green,blue")]
    folds = kfold_chips(chips, 5, seed=0)
    keys = [c.key for f in folds for c in f]
    assert len(keys) == len(set(keys)) == 14  # every usable 4-band chip once; no unreliable, no RGB
    assert all(len(f) in (2, 3) for f in folds)  # balanced
    for f in folds:  # each surface spread: a fold holds at most one chip of a 5-chip stratum
        assert sum(c.id.startswith("Barren") for c in f) == 1 and sum(c.id.startswith("SnowIce") for c in f) == 1
    assert kfold_chips(chips, 5, seed=0) == folds
    assert kfold_chips(chips, 5, seed=1) != folds
    with pytest.raises(InputError, match="folds"):
        kfold_chips(chips, 1)


def test_spectral_score_in_torch_equals_numpy() -> None:
    from geocloud.models.spectral import spectral_score, spectral_score_torch

    x = np.random.default_rng(6).random((2, 4, 16, 16), dtype=np.float32) * 0.8
    x[0, :, :4] = 0.0  # nodata-like zeros
    np.testing.assert_allclose(spectral_score_torch(torch.from_numpy(x))[:, 0].numpy(), spectral_score(x), atol=1e-6)


def test_refinement_head_with_the_spectral_score_round_trips(tmp_path: Path) -> None:
    cfg = CamConfig(channels=(8, 8, 8), train_block=64, spectral_features=True, head_hidden=4, head_spectral=True)
    torch.manual_seed(2)
    net = CamNet(cfg).eval()
    assert net.head is not None and net.head.conv1.in_channels == 4 + 5 + 1 + 1
    model = CamModel(net, CamSidecar(config=cfg, lpp_mode="dilate_last", z_lo=-1.0, z_hi=1.0))
    save_weights(net, model.sidecar, tmp_path / "cam.safetensors")
    again = CamModel(*load_weights(tmp_path / "cam.safetensors"))
    x = np.random.default_rng(7).random((1, 4, 128, 128), dtype=np.float32) * 0.5
    v = np.ones((1, 128, 128), bool)
    np.testing.assert_array_equal(again.predict(x, v).maps["score"], model.predict(x, v).maps["score"])


@pytest.mark.gpu
def test_the_default_pipeline_on_cuda_matches_the_cpu(tmp_path: Path) -> None:
    """On a GPU (run by benchmarks/gpu_check.sh where one is lent): the same mask as on the CPU,
    up to pixels within float rounding of the threshold."""
    from geocloud import ProcessConfig, process_scene
    from geocloud.config import InferenceConfig, OutputConfig

    scene = Path(__file__).resolve().parents[1] / "sample_scenes" / "gf1_wfv_sample.tif"
    masks = {}
    for device in ("cpu", "cuda"):
        cfg = ProcessConfig(inference=InferenceConfig(device=device),
                            output=OutputConfig(products=("mask", "score")))  # fmt: skip
        r = process_scene(scene, tmp_path / device, cfg)
        with rasterio.open(r.outputs["mask"][0]) as m:
            masks[device] = m.read(1)
    assert (masks["cpu"] == masks["cuda"]).mean() > 0.999


def _collar_scene(path: Path) -> Path:
    """256^2 float32 reflectance: vegetation, and a thick cloud block touching a nodata
    strip (columns 196-255) on its right."""
    from rasterio.transform import from_origin

    rng = np.random.default_rng(5)
    x = np.empty((4, 256, 256), np.float32)
    for b, v in enumerate((0.04, 0.07, 0.05, 0.30)):
        x[b] = v + rng.normal(0, 0.01, (256, 256))
    x[:, 20:236, 36:196] = 0.55 + rng.normal(0, 0.01, (4, 216, 160))
    x[:, :, 196:] = -9999.0
    prof = dict(driver="GTiff", width=256, height=256, count=4, dtype="float32", nodata=-9999.0,
                crs="EPSG:32650", transform=from_origin(500000, 4000000, 16, 16))  # fmt: skip
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(x)
        dst.descriptions = ("blue", "green", "red", "nir")
    return path


@needs_weights
@pytest.mark.parametrize("block", ["", "200"])
def test_cloud_touching_a_nodata_collar_is_found_up_to_the_collar(tmp_path: Path, block: str) -> None:
    """A block at a collar holds nodata (stored as 0 for the model): the CAM must not read it
    as dark ground and lose the cloud along the edge (issue 17, row 14)."""
    from click.testing import CliRunner
    from geocloud.cli.main import cli

    scene = _collar_scene(tmp_path / "collar.tif")
    extra = ["--block-size", block] if block else []
    res = CliRunner().invoke(cli, ["process", str(scene), "-o", str(tmp_path / "o"), "--model", "cam",
                                   "--products", "mask", "--no-shadow", "-q", *extra])  # fmt: skip
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "o" / "collar_mask.tif") as src:
        m = src.read(1)
    assert (m[:, 196:] == 255).all()
    edge = m[40:220, 176:196]  # the 20 px of cloud next to the collar
    inner = m[40:220, 80:140]
    assert (inner == 1).mean() > 0.99
    assert (edge == 1).mean() > 0.99, f"cloud next to the collar found at {(edge == 1).mean():.3f}"


def test_fill_nodata_fills_holes_from_the_nearest_valid_pixel() -> None:
    from geocloud.models.fill import fill_nodata, inside_scene

    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    v = np.ones((3, 4), bool)
    v[:, :2] = False  # the left half is nodata
    holes = ~v
    holes[:, 0] = False  # ... but column 0 lies past the scene's edge: left as it is
    fill_nodata(x, v, holes)
    np.testing.assert_array_equal(x[0], [[0, 2, 2, 3], [4, 6, 6, 7], [8, 10, 10, 11]])
    y = np.zeros((1, 3, 4), np.float32)
    fill_nodata(y, np.zeros((3, 4), bool), np.ones((3, 4), bool))  # nothing to fill from
    assert (y == 0).all()
    inside = inside_scene(-1, 2, (3, 4), (10, 5))
    np.testing.assert_array_equal(inside, [[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]])
