"""Recipe v2 of the default model and its held-out evaluation: references, fields of view, parent, reports."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medseg.labels import DEFAULT_ORGANS, LabelSet
from medseg.recipes.heldout import CORE_ORGANS, false_lesion_components, liver_above_lungs_ml
from medseg.recipes.report import markdown_report
from medseg.volume import Volume


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.shared_data
def test_lung_reference_agrees_with_expert_lungs(shared_data):
    """s0003's lungs were annotated and reviewed by experts (TotalSegmentator data set)."""
    from medseg.io import load_volume
    from medseg.recipes.lung_reference import lung_reference
    from medseg.training.datasets import read_label_names
    from medseg.training.heldout import reference_in_model_classes

    image = load_volume(shared_data / "train" / "images" / "totalseg_s0003_ct.nii.gz")
    names = read_label_names(shared_data / "train" / "labels_only" / "totalseg_total_classes.json")
    label = load_volume(shared_data / "train" / "labels_only" / "totalseg_s0003_label.nii.gz")
    truth = reference_in_model_classes(label, names, DEFAULT_ORGANS).array
    ours = lung_reference(image)
    assert ours.same_grid(image)
    assert _dice(ours.array == 1, truth == DEFAULT_ORGANS.value_of("lung_right")) >= 0.93
    assert _dice(ours.array == 2, truth == DEFAULT_ORGANS.value_of("lung_left")) >= 0.95


@pytest.mark.shared_data
def test_cta_reference_pastes_the_aorta_crop_and_finds_both_lungs(shared_data):
    from medseg.recipes.cases import heldout_cases

    case = next(c for c in heldout_cases(shared_data) if c.name == "aorta_cta")
    image, reference, scored, lesion = case.load(DEFAULT_ORGANS)
    assert reference.same_grid(image) and lesion is None
    assert set(scored.values()) == {"aorta", "lung_right", "lung_left"}
    ml = image.voxel_volume_ml
    # The aorta mask of TotalSegmentator's aorta model: 72 810 voxels on its crop (shared/data README).
    assert (reference.array == DEFAULT_ORGANS.value_of("aorta")).sum() == 72810
    right = (reference.array == DEFAULT_ORGANS.value_of("lung_right")).sum() * ml
    left = (reference.array == DEFAULT_ORGANS.value_of("lung_left")).sum() * ml
    assert 1500 < left < right < 3500  # the right lung is the larger one (three lobes)


@pytest.mark.shared_data
def test_fields_of_view_are_cut_where_the_anatomy_is(shared_data):
    from medseg.io import load_volume
    from medseg.recipes.fields_of_view import plan_fields_of_view
    from medseg.training.datasets import read_label_names

    root = shared_data / "train" / "labels_only"
    names = read_label_names(root / "totalseg_total_classes.json")
    label = root / "totalseg_s0004_label.nii.gz"  # head to pelvis
    array = np.asarray(load_volume(label).reoriented("RAS").array)
    plan = plan_fields_of_view(array, names, 1.5, seed=3)
    assert plan == plan_fields_of_view(array, names, 1.5, seed=3)  # reproducible
    by = {fov.name: fov for fov in plan}
    assert set(by) == {"chest", "abdomen", "pelvis", "thorax_abdomen", "slab"}
    lung_ids = [v for v, n in names.items() if n.startswith("lung_")]
    hip_ids = [v for v, n in names.items() if n.startswith("hip_")]
    assert np.isin(array[:, :, by["chest"].start:by["chest"].stop], lung_ids).any()
    assert np.isin(array[:, :, by["pelvis"].start:by["pelvis"].stop], hip_ids).any() and by["pelvis"].start == 0
    assert 40 <= (by["slab"].stop - by["slab"].start) * 1.5 <= 151


def test_fields_of_view_are_written_once_as_ras_crops(tmp_path):
    from medseg.io import load_volume, save_volume
    from medseg.recipes.fields_of_view import plan_fields_of_view, write_fields_of_view

    # A small trunk stored LPS: kidneys k 10-19, liver k 20-39, lungs k 40-89 (3 mm slices).
    names = {0: "background", 1: "lung_upper_lobe_left", 2: "liver", 3: "kidney_left", 4: "hip_left"}
    array = np.zeros((10, 10, 100), np.uint8)
    array[:, :, 40:90], array[:, :, 20:40], array[:, :, 10:20], array[:, :, 0:8] = 1, 2, 3, 4
    lps = np.diag([-3.0, -3.0, 3.0, 1.0])
    path = tmp_path / "map.nii.gz"
    save_volume(Volume(array, lps, modality="SEG"), path)
    written = write_fields_of_view(path, names, tmp_path / "fov", prefix="map", seed=5)
    plan = plan_fields_of_view(array, names, 3.0, seed=5)
    assert [name for name, _ in written] == [f"map_{fov.name}" for fov in plan]
    first = {p: p.stat().st_mtime_ns for _, p in written}
    chest = load_volume(dict(written)["map_chest"])
    fov = next(f for f in plan if f.name == "chest")
    assert chest.orientation == "RAS" and chest.shape[2] == fov.stop - fov.start
    assert (chest.array == 1).any() and not (chest.array == 4).any()
    write_fields_of_view(path, names, tmp_path / "fov", prefix="map", seed=5)
    assert {p: p.stat().st_mtime_ns for _, p in written} == first  # reused, not rewritten


def _git_has_v1() -> bool:
    from medseg.recipes.default_v2 import V1_COMMIT

    try:
        subprocess.run(["git", "cat-file", "-e", f"{V1_COMMIT}:medseg/models/default/weights.safetensors"],
                       check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def test_parent_is_v1_without_its_lesion_channel_and_a_snapshot_is_a_model(tmp_path):
    from medseg.models import resolve_model, store
    from medseg.recipes.default_v2 import recipe_config, snapshot, v1_parent

    import medseg.models

    spec, _ = store.read_spec(Path(medseg.models.__file__).parent / "default")
    assert spec.version == "1.0.0" or _git_has_v1(), "v1 is neither shipped nor in this checkout's git history"
    parent = v1_parent(tmp_path)
    loaded = store.load_model(parent)
    assert loaded.spec.labels == DEFAULT_ORGANS and "lesion" not in loaded.spec.labels.names
    last = [v for k, v in loaded.network.state_dict().items() if v.ndim >= 1][-1]
    assert last.shape[0] == len(DEFAULT_ORGANS)
    assert v1_parent(tmp_path) == parent  # written once
    config = recipe_config()
    assert config.spacing_mm == (3.0, 3.0, 3.0) and config.roi_size == (64, 64, 64)  # v1's speed
    assert loaded.spec.preprocessing.roi_size == (64, 64, 64)
    # A run stopped after some epoch still gives a model: a fake run folder with the parent's weights.
    run = tmp_path / "run"
    (run / "checkpoints" / "epoch-0003").mkdir(parents=True)
    shutil.copy(parent / store.WEIGHTS_FILE, run / "checkpoints" / "epoch-0003" / "weights.safetensors")
    (run / "checkpoints" / "last.json").write_text(json.dumps({"epoch": 3, "folder": "epoch-0003"}))
    (run / "training.json").write_text(json.dumps({"spec": loaded.spec.to_dict(), "cases": {"train": ["x"]},
                                                   "config": config.to_dict()}))
    assert snapshot(run, tmp_path / "snap") == 3
    model = resolve_model(tmp_path / "snap", cache=False)
    assert model.labels == DEFAULT_ORGANS and model.provenance["selected_epoch"] == 3


def test_false_lesion_components_count_only_big_ones_away_from_truth():
    array = np.zeros((30, 30, 30), np.uint8)
    array[2:7, 2:7, 2:7] = 11       # 125 mm^3 at 1 mm: counts, touches the truth
    array[20:26, 20:26, 20:26] = 11  # 216 mm^3: false
    array[12, 12, 12] = 11           # a speck: too small to count
    labels = Volume(array, np.eye(4), modality="SEG")
    truth = np.zeros(array.shape, bool)
    truth[5:9, 5:9, 5:9] = True
    assert false_lesion_components(labels, 11, truth) == {"false": 1, "touching_truth": 1, "truth_components": 1}
    assert false_lesion_components(labels, 11, None)["false"] == 2
    assert false_lesion_components(labels, None, None)["false"] == 0


def test_liver_above_the_widest_lung_slice():
    array = np.zeros((20, 20, 40), np.uint8)
    array[2:10, 2:18, 10:30], array[10:18, 2:18, 10:30] = 8, 9
    array[0:10, 0:20, 20], array[10:20, 0:20, 20] = 8, 9  # the widest slice: k = 20
    array[5:10, 5:10, 30:32] = 1     # 50 voxels of liver above it (2 mm voxels: 0.4 mL)
    array[5:10, 5:10, 5:8] = 1       # liver below: fine
    labels = Volume(array, np.diag([2.0, 2.0, 2.0, 1.0]), modality="SEG")
    ml, widest = liver_above_lungs_ml(labels, 1, [8, 9])
    assert widest == 20 and ml == pytest.approx(0.4)


def test_markdown_report_scores_only_labelled_classes():
    labels = LabelSet({0: "background", 1: "liver", 8: "lung_right"})
    nan = float("nan")
    summary = {"cases": {"scan": {
        "classes": {"lung_right": {"dice": 0.9512, "hd95_mm": 3.0, "nsd_2mm": 0.8, "ref_ml": 2000.0,
                                   "pred_ml": 1900.0}},
        "predicted_ml": {"liver": 12.0, "lung_right": 1900.0}, "mean_dice_core": 0.9512, "core_organs_scored": 1,
        "mean_dice_all": 0.9512, "lesions": {"false": 0, "touching_truth": 0, "truth_components": 0},
        "warnings": [], "segment_seconds": 1.0}}, "core_instances": 1, "mean_dice_core_all_instances": 0.9512}
    text = markdown_report(summary, labels)
    assert "| liver | (12 mL) |" in text and "| lung_right | 0.951 / 3.0 / 0.80 |" in text
    assert "**0.951**" in text and nan != nan and "lung_right" in CORE_ORGANS
