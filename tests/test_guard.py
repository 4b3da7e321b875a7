"""The out-of-distribution guard: real scans with correct labels raise nothing; every failure it
names is raised by a real or constructed input that has it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medseg.inference.guard import (
    ADULT_MAX_ML,
    TrainingEnvelope,
    guard_warnings,
    label_warnings,
    scan_warnings,
    summarize_scan,
)
from medseg.labels import DEFAULT_ORGANS
from medseg.volume import Volume

V = {name: DEFAULT_ORGANS.value_of(name) for name in DEFAULT_ORGANS.names}


def _ct(shape=(60, 50, 40), spacing=(3.0, 3.0, 3.0), fill=-1000):
    return Volume(np.full(shape, fill, np.int16), np.diag([*spacing, 1.0]), modality="CT")


def _body(shape=(80, 60, 40), spacing=(3.0, 3.0, 3.0)):
    """An elliptic trunk of soft tissue (40 HU) with a dense spine (700 HU), 192 x 144 mm."""
    ct = _ct(shape, spacing)
    i, j = np.ogrid[: shape[0], : shape[1]]
    trunk = ((i - shape[0] / 2) / (shape[0] * 0.4)) ** 2 + ((j - shape[1] / 2) / (shape[1] * 0.4)) ** 2 <= 1
    array = ct.array.copy()
    array[trunk] = 40
    array[shape[0] // 2 - 2: shape[0] // 2 + 2, 8:12, :] = 700
    return ct.with_array(array)


def _labels(volume, array):
    return volume.with_array(np.asarray(array, np.uint8), modality="SEG", label_set=DEFAULT_ORGANS)


def test_a_blank_volume_is_named_and_its_labels_not_judged_as_anatomy():
    blank = _ct()
    drawn = np.zeros(blank.shape, np.uint8)
    drawn[10:30, 10:30, 10:30] = V["liver"]
    warnings = guard_warnings(blank, _labels(blank, drawn), None)
    assert len(warnings) == 1 and "holds no body" in warnings[0] and "not anatomy" in warnings[0]


def test_a_synthetic_trunk_with_plausible_organs_raises_nothing():
    ct = _body()
    drawn = np.zeros(ct.shape, np.uint8)
    # RAS: i grows towards the patient's right, so the liver (right) has the larger i.
    drawn[44:56, 15:30, 10:30] = V["liver"]         # 12 x 15 x 20 voxels of 27 mm^3: 97 mL
    drawn[24:30, 18:26, 12:24] = V["spleen"]
    assert guard_warnings(ct, _labels(ct, drawn), None) == []


@pytest.mark.parametrize("case", ["short", "thick", "narrow", "windowed"])
def test_scan_outside_the_training_envelope(case):
    if case == "short":
        ct, words = _body(shape=(80, 60, 12)), "covers only 36 mm"
    elif case == "thick":
        ct, words = _body(shape=(80, 60, 12), spacing=(3.0, 3.0, 10.0)), "10.0 mm between slices"
    elif case == "narrow":
        ct, words = _body(shape=(30, 25, 40)), "the body is 69 mm wide"
    else:
        body = _body()
        ct, words = body.with_array(np.clip(body.array, -1000, 50)), "nothing denser than 50 HU"
    warnings = scan_warnings(ct, None)
    assert any(words in w for w in warnings), warnings


def test_an_organ_larger_than_adults_have():
    ct = _body(shape=(80, 80, 60))
    drawn = np.zeros(ct.shape, np.uint8)
    drawn[ct.array > 0] = V["kidney_left"]          # the whole trunk as one kidney
    warnings = label_warnings(ct, _labels(ct, drawn), None)
    assert any(f"at most ~{ADULT_MAX_ML['kidney_left']:.0f} mL" in w for w in warnings), warnings


def test_contrast_brighter_than_training_in_the_aorta_and_the_envelope_from_the_spec():
    ct = _body()
    array = ct.array.copy()
    array[28:32, 30:34, :] = 900
    ct = ct.with_array(array)
    drawn = np.zeros(ct.shape, np.uint8)
    drawn[28:32, 30:34, :] = V["aorta"]
    assert any("averages 900 HU" in w for w in label_warnings(ct, _labels(ct, drawn), None))
    envelope = {"training_envelope": {"max_aorta_hu": 1000}}
    model = SimpleNamespace(modality="CT", spec=SimpleNamespace(provenance=envelope))
    assert TrainingEnvelope.of(model).max_aorta_hu == 1000
    assert not any("averages" in w for w in label_warnings(ct, _labels(ct, drawn), model))


def test_fragmented_organs_and_no_organ_found():
    ct = _body()
    nothing = _labels(ct, np.zeros(ct.shape))
    assert any("none of the model's organs" in w for w in label_warnings(ct, nothing, None))
    drawn = np.zeros(ct.shape, np.uint8)
    drawn[34:46, 15:30, 10:30] = V["liver"]
    removed = {"liver": int(150_000 / 27)}  # 150 mL of liver islands removed by the clean-up (input voxels)
    warnings = label_warnings(ct, _labels(ct, drawn), None, removed_voxels=removed)
    assert any("liver was drawn in several large pieces; 150 mL" in w for w in warnings), warnings


def test_an_organ_in_the_air_around_the_body():
    ct = _body()
    drawn = np.zeros(ct.shape, np.uint8)
    drawn[44:56, 15:30, 10:30] = V["liver"]
    drawn[0:6, 0:6, 0:20] = V["lung_right"]  # 720 voxels of 27 mm^3 = 19 mL in the corner's air
    warnings = label_warnings(ct, _labels(ct, drawn), None)
    assert any("19 mL of lung_right drawn outside the body" in w for w in warnings), warnings


def test_an_mr_model_gets_no_hu_warnings():
    mr = Volume(np.zeros((40, 40, 40), np.float32), np.diag([3.0, 3.0, 3.0, 1.0]), modality="MR")
    assert scan_warnings(mr, SimpleNamespace(modality="MR", spec=None)) == []


def _example_ct(shared_data):
    from medseg.io import load_volume
    from medseg.training.datasets import read_label_names
    from medseg.training.heldout import reference_in_model_classes

    image = load_volume(shared_data / "totalsegmentator" / "example_ct.nii.gz")
    names = read_label_names(shared_data / "train" / "labels_only" / "totalseg_total_classes.json")
    ts = load_volume(shared_data / "totalsegmentator" / "example_seg_fast_force_split.nii.gz")
    ref = reference_in_model_classes(ts, names, DEFAULT_ORGANS)
    return image, ref.with_labels(DEFAULT_ORGANS)


@pytest.mark.shared_data
def test_a_real_ct_with_its_reference_raises_nothing_and_a_flipped_header_is_caught(shared_data):
    image, ref = _example_ct(shared_data)
    assert guard_warnings(image, ref, None) == []
    # The same voxels under a header whose first axis points the other way: right and left swap.
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    shift = np.eye(4)
    shift[0, 3] = image.shape[0] - 1
    flipped_affine = image.affine @ shift @ flip
    wrong = Volume(image.array[::-1].copy(), image.affine, modality="CT")
    wrong_labels = _labels(wrong, ref.array[::-1])
    warnings = guard_warnings(wrong, wrong_labels, None)
    assert any("lies on the patient's left of" in w and "flipped" in w for w in warnings), warnings
    # A flipped array with its flipped header is the same scan: nothing to say.
    same = Volume(image.array[::-1].copy(), flipped_affine, modality="CT")
    assert guard_warnings(same, _labels(same, ref.array[::-1]), None) == []


@pytest.mark.shared_data
def test_real_chest_ct_missed_lungs_and_liver_in_the_chest(shared_data):
    from medseg.io import load_volume
    from medseg.recipes.lung_reference import lung_reference

    image = load_volume(shared_data / "totalsegmentator" / "aorta_report" / "example_ct.nii.gz")
    lungs = lung_reference(image).array
    good = np.zeros(image.shape, np.uint8)
    good[lungs == 1], good[lungs == 2] = V["lung_right"], V["lung_left"]
    assert guard_warnings(image, _labels(image, good), None) == []
    summary = summarize_scan(image)
    assert 3000 < summary.lung_air.sum() * np.prod(summary.spacing_mm) / 1000 < 5000  # the lungs hold ~4 L
    # The v1 failure the issue reports: lungs barely drawn, a "liver" in the chest.
    bad = np.zeros(image.shape, np.uint8)
    ras_k = np.argwhere(lungs > 0)[:, 2]
    top = int(np.percentile(ras_k, 90))  # LPS storage keeps k superior: high k is the upper chest
    bad[100:140, 60:100, top - 20: top] = V["liver"]
    warnings = label_warnings(image, _labels(image, bad), None)
    assert any("lung-like air" in w and "lungs are missed" in w for w in warnings), warnings
    assert any("mL of liver drawn above the slice where the lungs are widest" in w for w in warnings), warnings


def test_segment_and_run_warn_on_a_blank_volume_and_stay_quiet_on_the_phantom(tmp_path):
    """The guard is part of ``segment()``: its lines reach the case's warnings and the CLI."""
    import subprocess
    import sys

    from medseg.io import save_volume
    from medseg.pipeline import run_case

    blank = _ct((96, 96, 40), (1.5, 1.5, 3.0))
    save_volume(blank, tmp_path / "blank.nii.gz")
    case = run_case(tmp_path / "blank.nii.gz", model="default", backend="torch")
    assert any("holds no body" in w for w in case.warnings), case.warnings
    assert any("holds no body" in w for w in case.provenance["warnings"])

    proc = subprocess.run([sys.executable, "-m", "medseg.cli.main", "run", str(tmp_path / "blank.nii.gz"),
                           "-o", str(tmp_path / "case")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "holds no body" in proc.stderr

    phantom = run_case(Path(__file__).resolve().parents[1] / "sample_data" / "phantom" / "ct.nii.gz", backend="torch")
    assert phantom.warnings == []
