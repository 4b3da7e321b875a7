"""A CT model given something that is not CT says so (a warning, the result is still written)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from medseg.cli.main import main
from medseg.inference.engine import input_warnings
from medseg.io import load_volume
from medseg.models import resolve_model

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "phantom"


@pytest.fixture(scope="module")
def model():
    return resolve_model("default")


@pytest.fixture(scope="module")
def ct():
    return load_volume(SAMPLE / "ct_dicom")


def test_ct_in_hu_passes(ct, model):
    assert ct.modality == "CT"
    assert input_warnings(ct, model) == []
    assert input_warnings(dataclasses.replace(ct, modality=""), model) == []  # NIfTI: no modality, HU checked


def test_rescaled_ct_and_other_modalities_warn(ct, model):
    rescaled = ct.with_array(((ct.array + 1024.0) / 4095.0).astype(np.float32), modality="")
    (warning,) = input_warnings(rescaled, model)
    assert "does not look like CT in Hounsfield units" in warning and "darkest 0.1 % is at 0" in warning
    (warning,) = input_warnings(dataclasses.replace(ct, modality="MR"), model)
    assert "is MR but the model medseg-default-ct-3mm was trained on CT" in warning


def _mr_like_phantom(path: Path) -> Path:
    """The phantom's anatomy with T1-like intensities (no HU: fat bright, fluid dark, air 0), as NIfTI."""
    import nibabel as nib

    organs = load_volume(SAMPLE / "organs.nii.gz")
    ct = load_volume(SAMPLE / "ct.nii.gz").array.astype(np.float32)
    t1 = np.interp(ct, [-1000, -850, -100, 0, 60, 150, 1000], [0, 40, 900, 300, 450, 520, 250])
    t1[organs.array == 10] = 300  # bone marrow
    nib.save(nib.Nifti1Image(np.rint(t1).astype(np.int16), organs.affine), str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("source", [pytest.param("real", marks=pytest.mark.shared_data), "phantom_t1"])
def test_real_mr_through_the_cli_warns_and_still_writes(shared_data, tmp_path, capsys, source):
    if source == "real":
        mr = shared_data / "totalsegmentator" / "example_mr_sm.nii.gz"
    else:
        mr = _mr_like_phantom(tmp_path / "t1.nii.gz")
    code = main(["segment", str(mr), "-o", str(tmp_path / "out"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0 and (tmp_path / "out" / "labels.nii.gz").is_file()
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "does not look like CT in Hounsfield units" in lines[0]
    provenance = (tmp_path / "out" / "provenance.json").read_text()
    assert "does not look like CT" in provenance
