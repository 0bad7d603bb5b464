"""Restoration under thick cloud: the generator, its training, and the ``restored`` products."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from geocloud import restoration
from geocloud.models.matting import matting_spec
from geocloud.models.restore import HALO, RECEPTIVE_RADIUS, AttentiveDiscriminator, RestoreGenerator


def _tiny(seed: int = 0) -> RestoreGenerator:
    torch.manual_seed(seed)
    net = RestoreGenerator(width=4).eval()
    with torch.no_grad():  # a non-zero attention refinement, so every path carries signal
        for p in [*net.attention.net[-1].parameters(), *net.out.parameters()]:
            p.normal_(0, 0.1)
    return net


# --------------------------------------------------------------------------- the networks
def test_receptive_field_is_bounded_by_the_stated_radius() -> None:
    net = _tiny()
    n = 2 * RECEPTIVE_RADIUS + 40
    c = n // 2 // 4 * 4
    g = torch.Generator().manual_seed(1)
    y = torch.rand(1, 4, n, n, generator=g)
    a = torch.rand(1, 1, n, n, generator=g)
    r = torch.rand(1, 4, n, n, generator=g) * a
    with torch.no_grad():
        x0, _ = net(y, a, r)
        far = y.clone()
        d = RECEPTIVE_RADIUS + 1  # everything farther than the radius from (c, c) changes
        keep = torch.zeros(n, n, dtype=torch.bool)
        keep[c - d + 1 : c + d, c - d + 1 : c + d] = True
        far[..., ~keep] = torch.rand(int((~keep).sum()), generator=g)
        x1, _ = net(far, a, r)
        near = y.clone()
        near[..., c + 20, c + 20] += 0.5
        x2, _ = net(near, a, r)
        # the smooth fill alone reaches as far: a hole at the centre, one stable pixel far out
        ah = torch.ones(1, 1, n, n)
        ah[..., c + RECEPTIVE_RADIUS - 40, c] = 0.0
        st = (ah <= 0.8).float()
        f0 = net.fill(y, st, y, ah, r)
        f1 = net.fill(y * 2, st, y, ah, r)  # the least-squares fallback unchanged
    assert not torch.equal(f0[..., c, c], f1[..., c, c])
    assert torch.equal(x0[..., c, c], x1[..., c, c])
    assert not torch.equal(x0[..., c, c], x2[..., c, c])
    assert HALO >= RECEPTIVE_RADIUS and HALO % 8 == 0


def test_attention_starts_from_alpha_and_discriminator_shapes() -> None:
    net = RestoreGenerator(width=4)
    a = torch.tensor([0.0, 0.5, 0.8, 0.9, 1.0]).reshape(1, 1, 1, 5).expand(1, 1, 8, 5).contiguous()
    y = torch.full((1, 4, 8, 5), 0.3)
    _, att = net(y, a, a.expand(1, 4, 8, 5) * 0.8)
    row = att[0, 0, 4]
    assert torch.all(row[1:] >= row[:-1]) and row[0] < 0.01 and row[-1] > 0.99
    s, p = AttentiveDiscriminator(8)(torch.rand(2, 4, 32, 32), torch.rand(2, 1, 32, 32))
    assert s.shape == p.shape == (2, 1, 8, 8)


# --------------------------------------------------------------------------- training
class _StubMatting:
    """A stand-in matting model: alpha from the blocks' brightness, r_c = 0.8 alpha."""

    def predict(self, x, valid):  # type: ignore[no-untyped-def]
        from geocloud.models.base import Prediction

        a = np.clip((x.mean(axis=1, keepdims=True) - 0.1) * 2.0, 0, 1).astype(np.float32)
        return Prediction(maps={"score": a, "alpha": a, "reflectance": np.repeat(a * 0.8, 4, axis=1)})


def test_a_few_training_steps_run_save_and_load(tmp_path) -> None:
    from geocloud.errors import ModelError
    from geocloud.models.restore import load_generator
    from geocloud.training.restore import RestoreData, RestoreTrainConfig, save_result, train_restore

    rng = np.random.default_rng(0)
    bgs = (0.05 + 0.2 * rng.random((6, 4, 32, 32))).astype(np.float32)
    cfg = RestoreTrainConfig(steps=3, block=32, batch=2, width=4, bank_size=4)
    res = train_restore(None, cfg, data=RestoreData(bgs, train_hash="t"), matting=_StubMatting())
    final = res.meta["training"]["final"]
    assert all(np.isfinite(v) for v in final.values()), final
    again = train_restore(None, cfg, data=RestoreData(bgs, train_hash="t"), matting=_StubMatting())
    for (k, v), (_, w) in zip(res.net.state_dict().items(), again.net.state_dict().items(), strict=True):
        assert torch.equal(v, w), k  # seeded: the same weights
    path = save_result(res, tmp_path, {"note": "tiny"})
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["spec"]["halo"] == HALO and len(side["weights_sha256"]) == 64
    assert side["training"]["train_chip_hash"] == "t" and side["validation"] == {"note": "tiny"}
    net = load_generator(path)
    assert torch.equal(net.out.weight, res.net.out.weight)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="do not match their sidecar"):
        load_generator(path)


def test_thick_composites_know_their_background() -> None:
    from geocloud.compositing import compose
    from geocloud.training.restore import ThickComposites

    rng = np.random.default_rng(0)
    bgs = (0.05 + 0.2 * rng.random((3, 4, 32, 32))).astype(np.float32)
    comp = ThickComposites(bgs, np.random.default_rng(1), p_thin_over=0.0, bank_size=3)
    x, y, a = comp.batch(4)
    assert x.shape == y.shape == (4, 4, 32, 32) and a.shape == (4, 32, 32)
    assert (a > 0.8).any(axis=(1, 2)).all()
    # y = r_c + (1 - a) x with a grey-white cloud: y >= (1 - a) x everywhere
    assert np.all(y >= compose(x, a[:, None], np.zeros_like(x)) - 1e-6)


# --------------------------------------------------------------------------- the product
class _BlobMatting:
    """A matting helper whose alpha follows the input's brightness (thick where bright)."""

    def __init__(self, scale: float) -> None:
        from geocloud.models.base import CloudModel

        outer = self

        class _M(CloudModel):
            spec = dataclasses.replace(matting_spec(), cells={}, derived=())

            def predict(self, x, valid):  # type: ignore[no-untyped-def]
                from geocloud.models.base import Prediction

                a = np.clip(x[:, :3].mean(axis=1, keepdims=True) * outer.scale, 0, 1).astype(np.float32)
                # r_c = 0.3 alpha: a cloud colour dimmer than the ground it hides would leave the
                # inversion negative, which the clear product refuses (nodata)
                return Prediction(maps={"score": a, "alpha": a, "reflectance": np.repeat(a * 0.3, 4, axis=1)})

        self.scale = scale
        self.model = _M()


def _process(path, outdir, products, helper, decloud=None):  # type: ignore[no-untyped-def]
    from geocloud.config import OutputConfig, ProcessConfig
    from geocloud.declouding import DecloudConfig
    from geocloud.models import CombinedModel, load_model
    from geocloud.pipeline import process_scene

    cfg = ProcessConfig(output=OutputConfig(products=tuple(products)), decloud=decloud or DecloudConfig())
    return process_scene(path, outdir, cfg, model=CombinedModel(load_model("spectral"), [helper]))


@pytest.fixture
def tiny_generator(monkeypatch):  # type: ignore[no-untyped-def]
    net = _tiny()
    monkeypatch.setattr(restoration, "_NET", net)
    return net


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_restored_keeps_the_clear_product_dtype_crs_nodata(make_raster, tmp_path, tiny_generator, dtype) -> None:
    import rasterio

    from geocloud.declouding import DecloudConfig

    src = make_raster(f"r_{dtype}.tif", width=96, height=80, dtype=dtype,
                      nodata_kind="value" if dtype != "float32" else "nan", cloud_cover=0.5)  # fmt: skip
    products = ["clear", "restored", "restored_quality", "stats"]
    res = _process(src, tmp_path / "o", products, _BlobMatting(3.0).model, DecloudConfig(gate_with_mask=False))
    with (
        rasterio.open(src) as s,
        rasterio.open(res.outputs["clear"][0]) as c,
        rasterio.open(res.outputs["restored"][0]) as r,
        rasterio.open(res.outputs["restored_quality"][0]) as q,
    ):
        assert r.dtypes == c.dtypes == s.dtypes[:4] and r.count == 4
        assert r.crs == s.crs and r.transform == s.transform
        assert (np.isnan(r.nodata) and np.isnan(c.nodata)) if dtype == "float32" else r.nodata == c.nodata == s.nodata
        assert "NOT measurements" in r.tags()["GEOCLOUD_SYNTHESISED"]
        clear, out, qa = c.read(), r.read(), q.read(1)
        valid = s.read_masks(1) > 0
        inp = s.read()
    synth = qa == restoration.QUALITY_SYNTHESISED
    assert synth.any() and (qa == restoration.QUALITY_INVERTED).any()
    # every pixel that is not synthesised is the clear product, bit for bit
    np.testing.assert_array_equal(out[:, ~synth], clear[:, ~synth])
    # the synthesised pixels are exactly the clear product's holes on valid input
    hole = np.isnan(clear).all(0) if dtype == "float32" else (clear == c.nodata).all(0)
    np.testing.assert_array_equal(synth, hole & valid)
    assert np.isfinite(out[:, synth].astype(np.float64)).all()
    if dtype != "float32":
        assert (out[:, synth] != r.nodata).any(axis=0).all()
    # quality codes: 0 nodata, 1 unchanged input, 2 inverted, 3 synthesised
    assert (qa[~valid] == 0).all()
    same = (clear == inp[:4]).all(0) & valid & ~synth
    np.testing.assert_array_equal(qa == restoration.QUALITY_ORIGINAL, same)
    np.testing.assert_array_equal(qa == restoration.QUALITY_INVERTED, valid & ~synth & ~same)
    stats = json.loads(res.outputs["stats"][0].read_text())
    assert stats["restoration"]["restored_pixels"] == int(synth.sum())
    assert stats["pixels"]["clear"] + stats["pixels"]["cloud"] + stats["pixels"]["shadow"] == stats["pixels"]["valid"]
    assert stats["usable_fraction"] == pytest.approx(stats["pixels"]["clear"] / stats["pixels"]["valid"])


def test_a_window_without_thick_cloud_passes_through_without_the_generator(make_raster, tmp_path,
                                                                           monkeypatch) -> None:  # fmt: skip
    import rasterio

    class _Never:
        def __call__(self, *a, **k):  # type: ignore[no-untyped-def]
            raise AssertionError("the generator ran on a window without thick cloud")

    monkeypatch.setattr(restoration, "_NET", _Never())
    src = make_raster("thin.tif", width=64, height=64, dtype="uint16")
    res = _process(src, tmp_path / "o", ["clear", "restored", "restored_quality", "stats"], _BlobMatting(0.5).model)
    with rasterio.open(res.outputs["clear"][0]) as c, rasterio.open(res.outputs["restored"][0]) as r:
        np.testing.assert_array_equal(r.read(), c.read())
    with rasterio.open(res.outputs["restored_quality"][0]) as q:
        assert not (q.read(1) == restoration.QUALITY_SYNTHESISED).any()
    assert json.loads(res.outputs["stats"][0].read_text())["restoration"]["restored_pixels"] == 0


def test_restored_does_not_depend_on_the_window_layout(make_raster, tmp_path, tiny_generator, monkeypatch) -> None:
    import rasterio

    from geocloud import passes
    from geocloud.declouding import DecloudConfig

    src = make_raster("win.tif", width=120, height=200, dtype="float32", nodata_kind="nan", cloud_cover=0.5)
    helper = _BlobMatting(3.0).model
    res = _process(src, tmp_path / "a", ["restored"], helper, DecloudConfig(gate_with_mask=False))
    monkeypatch.setattr(passes, "PASS2_ROWS", 24)  # windows of 24 rows: seams would show here
    monkeypatch.setattr(restoration, "CHUNK_COLS", 40)
    res2 = _process(src, tmp_path / "b", ["restored"], helper, DecloudConfig(gate_with_mask=False))
    with rasterio.open(res.outputs["restored"][0]) as a, rasterio.open(res2.outputs["restored"][0]) as b:
        np.testing.assert_allclose(a.read(), b.read(), rtol=1e-5, atol=1e-6, equal_nan=True)


def test_restored_products_are_registered_and_documented() -> None:
    from geocloud.products import PRODUCTS

    assert PRODUCTS["restored"].suffix == "_restored.tif"
    assert PRODUCTS["restored_quality"].suffix == "_restored_quality.tif"
    assert "SYNTHESISED" in PRODUCTS["restored"].description


def test_shipped_weights_keep_the_contract() -> None:
    from geocloud.models.restore import WEIGHTS_FILE, load_generator
    from geocloud.models.weights import WeightsMeta

    if not WEIGHTS_FILE.exists():
        pytest.skip("restore weights not shipped in this checkout")
    meta = WeightsMeta.read("restore")
    assert meta.bands == ("blue", "green", "red", "nir") and meta.normalisation and meta.block_size > 0
    assert meta.sha256 and len(meta.sha256) == 64 and meta.training_data_hash
    assert meta.spec["halo"] == HALO and meta.spec["receptive_radius"] == RECEPTIVE_RADIUS
    assert "matte_alpha" in meta.validation and "true_alpha" in meta.validation
    meta.verify()
    assert isinstance(load_generator(), RestoreGenerator)
