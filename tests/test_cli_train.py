"""``medseg train`` from the command line: a tiny run (on real CT slabs, and on phantom slabs), and bad
input as one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_KINDS, write_phantom_ct_pairs, write_real_ct_pairs

from medseg.cli.main import main


def _write(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, affine), str(path))


@pytest.fixture(scope="module", params=DATA_KINDS)
def ct_pairs(request, shared_data, tmp_path_factory) -> Path:
    """Two slabs (300 x 240 x 60 mm) of a CT with liver and spleen labels, as image/label pairs: the
    real 3 mm CT, or the phantom (2 x 2 x 3 mm, organ values 1 and 2)."""
    out = tmp_path_factory.mktemp("cli_pairs")
    names = {1: "liver", 2: "spleen"}
    if request.param == "real":
        return write_real_ct_pairs(shared_data, out, {5: 1, 1: 2}, names, {"a": 64, "b": 76}, i0=10, j0=10,
                                   size_ij=(100, 80), depth=20)
    return write_phantom_ct_pairs(out, {1: 1, 2: 2}, names, {"a": 34, "b": 46}, i0=25, j0=20,
                                  size_ij=(150, 120), depth=20)


def test_help_lists_the_options_without_importing_torch():
    code = ("import sys; from medseg.cli.main import main\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    for option in ("--arch", "--spacing", "--epochs", "--from", "--val-fraction", "--device", "-o MODEL_DIR"):
        assert option in out
    assert "corrected" in out and out.strip().endswith("NO-TORCH")


@pytest.mark.slow
def test_cli_trains_on_image_label_pairs_and_resumes(ct_pairs, tmp_path, capsys):
    out = tmp_path / "model"
    args = ["train", str(ct_pairs), "-o", str(out), "--size", "tiny", "--roi", "32", "--spacing", "6",
            "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "1", "--val-fraction", "0.5", "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "2 case(s), pairs layout; classes liver, spleen" in text
    assert "epoch 2/2: loss" in text and "validation mean Dice" in text
    assert f"segment with: medseg segment IMAGE --model {out}" in text
    spec = json.loads((out / "medseg-model.json").read_text())
    assert [c["name"] for c in spec["labels"]] == ["background", "liver", "spleen"]
    assert spec["preprocessing"]["spacing_mm"] == [6.0, 6.0, 6.0] and spec["network"]["arch"] == "unet"
    # The same command again: nothing left to train, the model is kept.
    assert main(args) == 0
    assert "resuming" in capsys.readouterr().out


def _one_line_error(args, capsys) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("medseg train: error: ")
    return err


def test_empty_data_folder_is_one_line(tmp_path, capsys):
    err = _one_line_error(["train", str(tmp_path), "-o", str(tmp_path / "m")], capsys)
    assert "holds no training cases" in err


def test_bad_inputs_are_one_line_errors(ct_pairs, tmp_path, capsys):
    import shutil

    import nibabel as nib

    base = ["-o", str(tmp_path / "m"), "--size", "tiny", "--roi", "32", "--spacing", "6", "--epochs", "1",
            "--steps-per-epoch", "1", "--quiet"]
    # An image without a label map.
    orphan = tmp_path / "orphan"
    shutil.copytree(ct_pairs, orphan)
    (orphan / "b_label.nii.gz").unlink()
    assert "b_image.nii.gz: 1 image(s) have no label map (b)" in _one_line_error(["train", str(orphan), *base], capsys)
    # A label map on another grid than its image: the error names both files.
    shifted = tmp_path / "shifted"
    shutil.copytree(ct_pairs, shifted)
    img = nib.load(str(shifted / "a_label.nii.gz"))
    affine = img.affine.copy()
    affine[2, 3] += 15.0
    _write(shifted / "a_label.nii.gz", np.asarray(img.dataobj), affine)
    err = _one_line_error(["train", str(shifted), *base], capsys)
    assert "a_label.nii.gz: is on another grid than its image" in err and "a_image.nii.gz" in err
    # Label values that have no name.
    unnamed = tmp_path / "unnamed"
    shutil.copytree(ct_pairs, unnamed)
    (unnamed / "labels.json").write_text('{"1": "liver"}')
    err = _one_line_error(["train", str(unnamed), *base], capsys)
    assert "has label values [2] that have no class name" in err
    # An option out of range.
    err = _one_line_error(["train", str(ct_pairs), *base, "--val-fraction", "1.5"], capsys)
    assert "val_fraction must be in [0, 1)" in err
