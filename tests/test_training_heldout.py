"""Held-out scoring helpers: TotalSegmentator references in the model's classes, largest components."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLE

from medseg.labels import DEFAULT_ORGANS
from medseg.training.heldout import keep_largest_components, markdown_table, reference_in_model_classes
from medseg.volume import Volume


@pytest.mark.shared_data
def test_totalsegmentator_reference_is_merged_into_default_classes(shared_data):
    from medseg.io import load_volume
    from medseg.training.datasets import read_label_names

    names = read_label_names(shared_data / "train" / "labels_only" / "totalseg_total_classes.json")
    ts = load_volume(shared_data / "totalsegmentator" / "example_seg_fast_force_split.nii.gz")
    merged = reference_in_model_classes(ts, names, DEFAULT_ORGANS)
    raw = np.asarray(ts.array)
    counts = np.bincount(merged.array.ravel(), minlength=11)
    assert counts[DEFAULT_ORGANS.value_of("liver")] == (raw == 5).sum() == 41692
    assert counts[DEFAULT_ORGANS.value_of("lung_right")] == np.isin(raw, [12, 13, 14]).sum()
    assert counts[DEFAULT_ORGANS.value_of("lung_left")] == np.isin(raw, [10, 11]).sum()
    bones = [v for v, n in names.items() if n.startswith(("vertebrae", "rib_", "hip_", "femur", "sacrum"))]
    assert counts[DEFAULT_ORGANS.value_of("bone")] == np.isin(raw, bones).sum()
    assert counts[0] == (~np.isin(raw, [1, 2, 3, 5, 6, 7, 10, 11, 12, 13, 14, 52, 23, 24] + bones)).sum()
    assert merged.same_grid(ts)


def test_totalsegmentator_style_phantom_map_is_merged_back_into_its_organs():
    """The phantom's organs relabelled as TotalSegmentator (v2 ids and names) would label them:
    lungs as lobes, bone as vertebrae and ribs, plus structures the default classes do not have.
    Merging must give the phantom's own organ map back, voxel for voxel."""
    from medseg.io import load_volume

    organs = load_volume(SAMPLE / "organs.nii.gz")
    o = organs.array
    k = np.indices(o.shape)[2]
    ts = np.zeros(o.shape, np.uint8)
    for value, ts_id in {1: 5, 2: 1, 3: 2, 4: 3, 5: 6, 6: 7, 7: 52}.items():
        ts[o == value] = ts_id
    ts[(o == 8) & (k >= 62)], ts[(o == 8) & (k < 62)] = 12, 14   # right upper / lower lobe
    ts[(o == 9) & (k >= 62)], ts[(o == 9) & (k < 62)] = 10, 11   # left upper / lower lobe
    ts[(o == 10) & (k >= 40)], ts[(o == 10) & (k < 40) & (k >= 20)] = 31, 30  # L1, T12
    ts[(o == 10) & (k < 20)] = 101  # a rib
    background = np.argwhere(o == 0)
    ts[tuple(background[:500].T)] = 117  # costal cartilages: not a default class
    ts[tuple(background[-300:].T)] = 23  # right adrenal gland: not a default class
    names = {0: "background", 1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach",
             7: "pancreas", 10: "lung_upper_lobe_left", 11: "lung_lower_lobe_left", 12: "lung_upper_lobe_right",
             14: "lung_lower_lobe_right", 23: "adrenal_gland_right", 30: "vertebrae_T12", 31: "vertebrae_L1",
             52: "aorta", 101: "rib_left_9", 117: "costal_cartilages"}
    merged = reference_in_model_classes(organs.with_array(ts), names, DEFAULT_ORGANS)
    assert merged.same_grid(organs)
    np.testing.assert_array_equal(merged.array, o)  # phantom values are DEFAULT_ORGANS values


def test_keep_largest_components_drops_islands_but_not_skipped_classes():
    array = np.zeros((20, 20, 20), np.uint8)
    array[2:8, 2:8, 2:8] = 1
    array[15:17, 15:17, 15:17] = 1  # an island of the same class
    array[10:12, 2:4, 2:4] = 10
    array[2:4, 15:17, 2:4] = 10  # bone pieces stay
    vol = Volume(array, np.eye(4))
    cleaned = keep_largest_components(vol, skip=(10,)).array
    assert (cleaned == 1).sum() == 216 and (cleaned == 10).sum() == 16
    assert cleaned[16, 16, 16] == 0


def test_markdown_table_marks_absent_and_false_positive_classes():
    from medseg.labels import LabelSet

    labels = LabelSet({0: "background", 1: "liver", 2: "spleen", 3: "lesion"})
    nan = float("nan")
    summary = {"cases": {"a": {"classes": {"liver": {"dice": 0.9, "hd95_mm": 4.0, "ref_ml": 10.0, "pred_ml": 11.0},
                                          "spleen": {"dice": 0.0, "hd95_mm": nan, "ref_ml": 0.0, "pred_ml": 2.0}},
                               "mean_dice_present": 0.9, "segment_seconds": 1.25}}}
    table = markdown_table(summary, labels)
    assert "| liver | 0.900 / 4.0 |" in table and "| spleen | absent (FP) |" in table
    assert "| lesion | not scored |" in table and "**0.900**" in table
