"""The shipped default model: a complete, small model folder that segments the sample and real CT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "medseg" / "models" / "default"
SAMPLE = REPO / "sample_data" / "phantom"

#: Organ Dice the shipped model reaches on the shipped sample (measured 2026-11-25 with
#: ``python -m medseg.training.heldout``; see docs/model_card.md), minus a margin for float
#: differences between machines. A retrained model that falls below these is a regression.
#: Measured: liver 0.879, spleen 0.612, kidneys 0.276 / 0.263, stomach 0.752, aorta 0.801, right lung
#: 0.654, bone 0.849, lesion 0.717. The phantom's kidneys are this model's known weak spot (model card).
SAMPLE_DICE_FLOOR = {"liver": 0.83, "spleen": 0.55, "kidney_right": 0.20, "kidney_left": 0.20, "stomach": 0.68,
                     "aorta": 0.74, "lung_right": 0.58, "bone": 0.80, "lesion": 0.62}
#: The same on the held-out real CT (TotalSegmentator's labels as reference); measured liver 0.888,
#: spleen 0.910, kidneys 0.672 / 0.798, aorta 0.848, right lung 0.901, bone 0.733.
REAL_CT_DICE_FLOOR = {"liver": 0.84, "spleen": 0.86, "kidney_right": 0.60, "kidney_left": 0.73, "aorta": 0.79,
                      "lung_right": 0.85, "bone": 0.68}
#: Each organ one piece (the spec's clean-up): liver HD95 was 185 mm without it, 15.6 mm with it.
REAL_CT_LIVER_HD95_MM = 25.0


def test_model_folder_is_complete_small_and_verified():
    from medseg.models import resolve_model
    from medseg.models.store import sha256_file
    from medseg.training.default_model import DEFAULT_MODEL_LABELS

    spec = json.loads((DEFAULT / "medseg-model.json").read_text())
    weights = DEFAULT / spec["weights"]["file"]
    assert weights.stat().st_size <= 30 * 1024 * 1024
    assert sha256_file(weights) == spec["weights"]["sha256"] and spec["weights"]["dtype"] == "float16"
    model = resolve_model("default")
    assert model.labels == DEFAULT_MODEL_LABELS
    assert model.labels.name_of(11) == "lesion" and model.labels.value_of("bone") == 10
    assert model.preprocessing.spacing_mm == (3.0, 3.0, 3.0) and model.preprocessing.orientation == "RAS"
    cases = model.provenance["cases"]
    # Trained on label maps and phantoms only: the real CTs are held out, seed 0 is never used.
    assert cases["synthetic"] == ["amos_0013", "totalseg_s0327", "totalseg_s0328"]
    assert cases["train"] == [f"phantom_seed{seed}" for seed in range(1, 9)]
    assert cases["validation"] == ["example_ct", "example_ct_dicom"]
    assert model.provenance["selection"] == "last"
    assert set(model.spec.keep_largest) == {"liver", "spleen", "kidney_right", "kidney_left", "stomach", "pancreas",
                                            "aorta", "lung_right", "lung_left"}


def _dice(pred: np.ndarray, ref: np.ndarray, value: int) -> float:
    a, b = pred == value, ref == value
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.slow
def test_default_model_segments_the_shipped_sample():
    from medseg.inference import segment
    from medseg.io import load_volume
    from medseg.models import resolve_model

    model = resolve_model("default")
    image = load_volume(SAMPLE / "ct.nii.gz")
    organs = load_volume(SAMPLE / "organs.nii.gz")
    lesions = load_volume(SAMPLE / "lesions.nii.gz")
    reference = np.where(lesions.array > 0, model.labels.value_of("lesion"), organs.array)
    result = segment(image, model, device="cpu")
    assert result.labels.same_grid(image)
    for name, floor in SAMPLE_DICE_FLOOR.items():
        value = model.labels.value_of(name)
        assert _dice(result.labels.array, reference, value) >= floor, name


@pytest.mark.slow
@pytest.mark.shared_data
def test_default_model_on_the_held_out_real_ct(shared_data):
    from medseg.inference import segment
    from medseg.io import load_volume
    from medseg.models import resolve_model
    from medseg.training.datasets import read_label_names
    from medseg.training.heldout import reference_in_model_classes

    model = resolve_model("default")
    image = load_volume(shared_data / "totalsegmentator" / "example_ct.nii.gz")
    names = read_label_names(shared_data / "train" / "labels_only" / "totalseg_total_classes.json")
    reference = reference_in_model_classes(
        load_volume(shared_data / "totalsegmentator" / "example_seg_fast_force_split.nii.gz"), names, model.labels)
    result = segment(image, model, device="cpu")
    for name, floor in REAL_CT_DICE_FLOOR.items():
        value = model.labels.value_of(name)
        assert _dice(result.labels.array, reference.array, value) >= floor, name
    from medseg.evaluation import evaluate

    liver = evaluate(result.labels, reference, labels={model.labels.value_of("liver"): "liver"}).classes[0]
    assert liver.name == "liver" and liver.hd95_mm <= REAL_CT_LIVER_HD95_MM
    assert result.provenance["postprocessing"]["removed_voxels"]["liver"] > 0


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_chest_only_cts_lungs_found_or_the_guard_says_they_are_missed(shared_data):
    """The shipped model on two real chest-only CTs (pyradiomics lung1/lung2, 5 mm slices).

    lung1: both lungs found with plausible volumes and no liver drawn in the chest. lung2: the
    known failure of the shipped model (issue 14: most of the lungs missed, a "liver" of ~800 mL in
    the chest); the run must then say so in its warnings, never stay silent.
    """
    from medseg.io import load_volume
    from medseg.pipeline import run_case

    folder = shared_data / "lesions" / "pyradiomics"
    one = run_case(load_volume(folder / "lung1_image.nrrd"), backend="torch", lesions=False)
    volumes = one.organ_volumes_ml()
    assert volumes["lung_right"] > 500 and volumes["lung_left"] > 500, volumes
    assert volumes.get("liver", 0.0) < 10.0, volumes
    assert not any("lungs are missed" in w for w in one.warnings), one.warnings

    two = run_case(load_volume(folder / "lung2_image.nrrd"), backend="torch", lesions=False)
    lungs = two.organ_volumes_ml().get("lung_right", 0.0) + two.organ_volumes_ml().get("lung_left", 0.0)
    missed = [w for w in two.warnings if "lung-like air" in w and "lungs are missed" in w]
    if lungs < 2000.0:  # the failure: then the guard must have spoken
        assert missed, two.warnings
    assert set(missed) <= set(two.provenance["warnings"])  # recorded with the case, not only printed
