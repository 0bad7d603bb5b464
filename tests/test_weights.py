"""The weights contract (geocloud.models.weights): one sidecar type for every model, the
SHA-256 checked on load, and specs read without torch."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from geocloud.errors import ModelError
from geocloud.models.weights import SHIPPED, WeightsMeta

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", ["cam", "matting"])
def test_shipped_sidecars_carry_the_contract(model):
    meta = WeightsMeta.read(model)
    assert meta.bands == ("blue", "green", "red", "nir")
    assert meta.normalisation and meta.block_size > 0
    assert set(meta.threshold) == {"clear_mu", "clear_sigma", "threshold_k", "default_threshold"}
    assert meta.sha256 and len(meta.sha256) == 64
    assert meta.training_data_hash
    assert meta.validation
    meta.verify()


def _copy(model: str, dest: Path) -> Path:
    src = SHIPPED[model]
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest / src.name)
    shutil.copy(src.with_suffix(".json"), dest / src.with_suffix(".json").name)
    return dest / src.name


@pytest.mark.parametrize("model", ["cam", "matting"])
def test_damaged_weights_are_refused_with_the_fix(model, tmp_path):
    path = _copy(model, tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor: safetensors still loads it
    path.write_bytes(bytes(data))
    if model == "cam":
        from geocloud.models.cam import load_weights

        load = lambda: load_weights(path)  # noqa: E731
    else:
        from geocloud.models.matting import load_net

        load = lambda: load_net(path)  # noqa: E731
    with pytest.raises(ModelError, match="do not match their sidecar.*reinstall geocloud"):
        load()


def test_a_sidecar_without_a_hash_is_refused(tmp_path):
    import json

    path = _copy("cam", tmp_path)
    side = path.with_suffix(".json")
    doc = json.loads(side.read_text())
    del doc["training"]["weights_sha256"]
    side.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="records no weights_sha256"):
        WeightsMeta.read("cam", path).verify()


def test_a_malformed_sidecar_names_the_fix(tmp_path):
    path = _copy("cam", tmp_path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="malformed.*retrain"):
        WeightsMeta.read("cam", path)


@pytest.mark.parametrize(
    "name,needs",
    [("cam", {"score"}), ("matting", {"score"}), ("spectral", {"score"}), ("cam", {"score", "alpha", "reflectance"})],
)
def test_read_spec_equals_the_loaded_models_spec(name, needs):
    from geocloud.models import build_model, read_spec

    def fields(spec):
        return {k: v for k, v in dataclasses.asdict(spec).items() if k != "extra"}

    assert fields(read_spec(name, needs)) == fields(build_model(name, "cpu", needs).spec)


def test_geocloud_info_does_not_import_torch():
    code = (
        "import sys; from geocloud.pipeline import describe_scene; "
        "d = describe_scene('sample_scenes/gf1_wfv_sample.tif'); "
        "assert d['plan']['model'].startswith('cam'), d; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
