"""``medseg segment``: outputs on the input's exact grid, and one clear line for every bad input
with nothing written.

Each test runs on real inputs (an MR NIfTI stored LPS, a JPEG 2000 CT series, a zoo bundle
config) and on generated ones (the shipped phantom's NIfTI and RLE DICOM series, a bundle made by
``conftest.write_monai_bundle``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import DATA_KINDS, SAMPLE, write_monai_bundle

from medseg.cli.main import main
from medseg.io import load_volume, save_volume
from medseg.labels import LabelSet
from medseg.models.networks import build_network, default_network
from medseg.models.spec import ModelSpec, Preprocessing
from medseg.models.store import save_model

TS = "totalsegmentator"
#: Per kind of input: image file (and how the CLI reports it), DICOM series folder (and its report).
INPUTS = {
    "real": (f"{TS}/example_mr_sm.nii.gz", "117x91x20 LPS", f"{TS}/example_ct_dicom", "512x512x20 LPS"),
    "phantom": (SAMPLE / "ct.nii.gz", "200x170x70 LPS", SAMPLE / "ct_dicom", "200x170x70 LPS"),
}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    torch.manual_seed(0)
    spec = ModelSpec("cli-tiny", default_network("unet", size="tiny"),
                     LabelSet({0: "background", 1: "liver", 2: "spleen"}),
                     Preprocessing(spacing_mm=(4.0, 4.0, 4.0), roi_size=(32, 32, 32), overlap=0.25))
    return save_model(spec, build_network(spec.network, 3), tmp_path_factory.mktemp("m") / "cli-tiny")


@pytest.fixture(scope="module", params=DATA_KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def ct_path(kind, shared_data):
    return shared_data / INPUTS[kind][0]  # an absolute path (the phantom's) stays itself


def test_writes_labels_on_the_input_grid(kind, ct_path, model_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(ct_path), "-o", str(out), "--model", str(model_folder), "--device", "cpu",
                 "--uncertainty", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith(f"segmented {INPUTS[kind][1]} in ") and f"-> {out}" in stdout.splitlines()[0]
    source, labels = nib.load(str(ct_path)), nib.load(str(out / "labels.nii.gz"))
    assert labels.shape == source.shape and np.array_equal(labels.affine, source.affine)
    assert labels.get_data_dtype() == np.uint8
    assert json.loads((out / "labels.json").read_text()) == {"0": "background", "1": "liver", "2": "spleen"}
    uncertainty = nib.load(str(out / "uncertainty.nii.gz"))
    assert uncertainty.shape == source.shape and np.array_equal(uncertainty.affine, source.affine)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["model"]["name"] == "cli-tiny" and provenance["inference"]["device"] == "cpu"
    # The case folder: labels with their names and colour tables (3D Slicer, ITK-SNAP), provenance.
    assert sorted(p.name for p in out.iterdir()) == ["case.json", "labels.ctbl", "labels.itksnap.txt", "labels.json",
                                                     "labels.nii.gz", "provenance.json", "uncertainty.nii.gz"]


def test_dicom_series_in_and_labels_match_it(kind, shared_data, model_folder, tmp_path, capsys):
    series = shared_data / INPUTS[kind][2]
    out = tmp_path / "seg"
    assert main(["segment", str(series), "-o", str(out), "--model", str(model_folder), "--quiet"]) == 0
    labels, volume = load_volume(out / "labels.nii.gz"), load_volume(series)
    assert labels.shape == volume.shape and np.allclose(labels.affine, volume.affine, atol=1e-6)
    assert f"segmented {INPUTS[kind][3]}" in capsys.readouterr().out


def _broken_folder(model_folder, tmp_path, kind: str):
    folder = tmp_path / kind
    shutil.copytree(model_folder, folder)
    weights = folder / "weights.safetensors"
    if kind == "missing":
        weights.unlink()
    elif kind == "corrupt":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif kind == "shapes":
        spec = json.loads((folder / "medseg-model.json").read_text())
        spec["labels"].append({"channel": 3, "value": 3, "name": "kidney"})
        (folder / "medseg-model.json").write_text(json.dumps(spec))
    return folder


@pytest.mark.parametrize("case,expected", [
    ("missing", "weights.safetensors: is missing. Copy the complete model folder"),
    ("corrupt", "does not match the spec's"),
    ("shapes", "weights do not fit the network"),
    ("no-inference-config", "has no inference config (inference.json or inference.yaml)"),
    ("too-small", "is too small for the model"),
    ("cuda", "CUDA was asked for but is not available"),
    ("no-input", "does not exist"),
    ("inside-input", "lies inside the input"),
])
def test_bad_input_is_one_line_and_nothing_is_written(case, expected, kind, shared_data, ct_path, model_folder,
                                                        tmp_path, capsys, monkeypatch):
    if case == "cuda":  # on a GPU machine too: the answer where CUDA is missing
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, source, out = str(model_folder), str(ct_path), tmp_path / "out"
    extra = []
    if case in ("missing", "corrupt", "shapes"):
        model = str(_broken_folder(model_folder, tmp_path, case))
    elif case == "no-inference-config":
        bundle = tmp_path / "bundle"
        if kind == "real":
            shutil.copytree(shared_data / "monai_bundles" / "spleen_ct_segmentation", bundle)
        else:
            write_monai_bundle(bundle, "unet")
        (bundle / "configs" / "inference.json").unlink()
        model = str(bundle)
    elif case == "too-small":
        thin = load_volume(ct_path)
        source = str(save_volume(thin.crop((slice(None), slice(None), slice(0, 2))), tmp_path / "thin.nii.gz"))
    elif case == "cuda":
        extra = ["--device", "cuda"]
    elif case == "no-input":
        source = str(tmp_path / "absent.nii.gz")
    elif case == "inside-input":
        folder = tmp_path / "dicom"
        shutil.copytree(shared_data / INPUTS[kind][2], folder)
        source, out = str(folder), folder / "results"
    code = main(["segment", source, "-o", str(out), "--model", model, "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("medseg segment: error: ") and expected in err, err
    assert not out.exists()


def test_help_and_one_line_errors_from_the_real_command(tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "medseg.cli.main", "segment", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for option in ("--model", "--device", "--tta", "--trust-bundle", "-o CASE"):
        assert option in help_text
    proc = subprocess.run([sys.executable, "-m", "medseg.cli.main", "segment", str(tmp_path / "none.nii.gz"),
                           "-o", str(tmp_path / "o")], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
    assert not (tmp_path / "o").exists()
