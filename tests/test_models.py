"""``resolve_model``: 'default', medseg model folders, and their failure modes (one clear line each)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from medseg import models
from medseg.errors import ModelError
from medseg.models import SegmentationModel, resolve_model
from medseg.labels import LabelSet
from medseg.models.networks import build_network, default_network
from medseg.models.spec import ModelSpec, Preprocessing
from medseg.models.store import SPEC_FILE, save_model


def tiny_spec(classes: int = 3) -> ModelSpec:
    return ModelSpec("tiny", default_network("unet", size="tiny"),
                     LabelSet({c: ("background" if c == 0 else f"organ_{c}") for c in range(classes)}),
                     Preprocessing(spacing_mm=(3.0, 3.0, 3.0), roi_size=(32, 32, 32)), version="1.2.3")


@pytest.fixture
def model_folder(tmp_path):
    torch.manual_seed(0)
    spec = tiny_spec()
    net = build_network(spec.network, 3)
    return save_model(spec, net, tmp_path / "tiny"), net


def test_model_folder_round_trip(model_folder):
    folder, net = model_folder
    model = resolve_model(folder)
    assert isinstance(model, SegmentationModel) and model.source == "medseg-model"
    assert (model.name, model.version, model.labels.names) == ("tiny", "1.2.3", ("background", "organ_1", "organ_2"))
    assert len(model.weights_sha256) == 64 and model.path == str(folder)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(model.network.state_dict()[key], value)
    json.dumps(model.describe())  # plain data for provenance files
    assert resolve_model(model) is model


def test_default_model(monkeypatch, tmp_path, model_folder):
    monkeypatch.setattr(models, "default_model_path", lambda: tmp_path / "nothing-here")
    with pytest.raises(ModelError, match=r"model=default: the default model is not installed.*Pass model"):
        resolve_model("default")
    folder, _ = model_folder
    monkeypatch.setattr(models, "default_model_path", lambda: folder)
    assert resolve_model("default").name == "tiny"


def test_broken_model_folders_are_one_clear_line(model_folder, tmp_path):
    folder, _ = model_folder
    weights = folder / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"weights.safetensors: sha256 .* does not match.*corrupt"):
        resolve_model(folder)
    with pytest.raises(ModelError, match="is not a readable safetensors file"):
        resolve_model(folder, verify_sha256=False)
    weights.unlink()
    with pytest.raises(ModelError, match=r"weights.safetensors: is missing"):
        resolve_model(folder)

    other = save_model(tiny_spec(4), build_network(tiny_spec(4).network, 4), tmp_path / "four")
    spec = json.loads((other / SPEC_FILE).read_text())
    spec["labels"] = tiny_spec(3).to_dict()["labels"]  # the spec now builds 3 outputs, the weights have 4
    (other / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(ModelError, match=r"weights do not fit the network: .* has shape \(8, 4, .* the spec builds \(8, 3,"):
        resolve_model(other)

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="is neither a medseg model folder .* nor a MONAI bundle"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(tmp_path / "absent")


def test_importing_models_and_inference_loads_no_torch():
    code = ("import sys, medseg.models, medseg.inference, medseg.cli.segment; "
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
