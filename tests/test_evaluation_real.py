"""Evaluation on real label maps: per-class metrics against MONAI, lesion detection against MONAI
and a greedy matching written here (panoptica: benchmarks/check_pq_panoptica.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.io import load_volume
from medseg.evaluation import evaluate, match_lesions
from medseg.evaluation.surface import joint_crop
from medseg.lesions import find_instances

pytestmark = pytest.mark.shared_data

TS = "totalsegmentator"


def one_hot(array, values):
    import torch

    return torch.from_numpy(np.stack([array == v for v in values])[None].astype(np.float32))


def test_totalsegmentator_fast_against_full_model_matches_monai(shared_data):
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    pred = load_volume(shared_data / TS / "example_seg_fast.nii.gz")
    ref = load_volume(shared_data / TS / "example_seg.nii.gz")
    result = evaluate(pred, ref, nsd_tolerance_mm=3.0)
    values = [c.value for c in result.classes]
    assert len(values) == 41 and 13 in values  # id 13 only in the full model's map
    for c in result.classes:  # every class against a direct count
        p, r = pred.array == c.value, ref.array == c.value
        assert c.dice == pytest.approx(2 * np.count_nonzero(p & r) / (p.sum() + r.sum()), rel=1e-12)
    some = values[:10]  # MONAI's one-hot Dice is slow with 42 channels: ten classes are enough
    dice = compute_dice(one_hot(pred.array, [0, *some]), one_hot(ref.array, [0, *some]),
                        include_background=False).numpy()[0]
    for c, d in zip(result.classes[:10], dice):
        assert c.dice == pytest.approx(float(d), rel=1e-6)
    id13 = next(c for c in result.classes if c.value == 13)
    assert id13.dice == 0.0 and id13.note == "empty prediction"
    spacing = [float(s) for s in ref.spacing]
    for name_value in (1, 5, 7, 52):  # spleen, liver, pancreas, aorta
        c = next(c for c in result.classes if c.value == name_value)
        p, r = one_hot(pred.array, [0, name_value]), one_hot(ref.array, [0, name_value])
        hd95 = float(compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)[0, 0])
        nsd = float(compute_surface_dice(p, r, class_thresholds=[3.0], spacing=spacing)[0, 0])
        assert c.hd95_mm == pytest.approx(hd95, rel=1e-3)
        assert c.nsd == pytest.approx(nsd, rel=1e-3)
    liver = next(c for c in result.classes if c.value == 5)
    assert liver.ref_volume_ml == pytest.approx(np.count_nonzero(ref.array == 5) * 0.027)
    assert liver.dice > 0.95


def test_dicom_label_map_stored_flipped_needs_resample(shared_data):
    from medseg.errors import InputError

    seg = load_volume(shared_data / TS / "example_seg_dicom.nii.gz")  # LAS
    lps = seg.reoriented("LPS")  # the DICOM grid: same voxels, j flipped
    with pytest.raises(InputError, match="resample=True"):
        evaluate(lps, seg, surface=False)
    result = evaluate(lps, seg, surface=False, resample=True)
    assert all(c.dice == 1.0 for c in result.classes) and len(result.classes) == 31


def greedy_matches(pred, ref, threshold):
    """Independent matching: pairs with IoU > threshold (>= 0.5: at most one partner each)."""
    pairs = []
    for p in np.unique(pred[pred > 0]):
        pm = pred == p
        for r in np.unique(ref[pm & (ref > 0)]):
            rm = ref == r
            iou = np.count_nonzero(pm & rm) / np.count_nonzero(pm | rm)
            if iou > threshold:
                pairs.append((iou, int(p), int(r)))
    used_p, used_r, matched = set(), set(), []
    for iou, p, r in sorted(pairs, reverse=True):
        if p not in used_p and r not in used_r:
            used_p.add(p), used_r.add(r), matched.append(iou)
    return matched


@pytest.fixture(scope="module")
def ms_pair(shared_data):
    """Reference: the 19 consensus MS lesions. Prediction: eroded/dilated/shifted lesions, three
    missed, two false positives."""
    ref_map = load_volume(shared_data / "lesions/ms_lesions_ljubljana/patient26_lesions_mni.nii.gz")
    ref = find_instances(ref_map).labels.array
    pred_mask = np.zeros(ref.shape, bool)
    for lesion in range(1, ref.max() + 1):
        mask = ref == lesion
        if lesion in (4, 12, 17):
            continue  # missed
        if lesion % 3 == 0:
            mask = ndimage.binary_dilation(mask)
        elif lesion % 3 == 1 and mask.sum() > 50:
            mask = ndimage.binary_erosion(mask)
        else:
            mask = np.roll(mask, 1, axis=lesion % 3)
        pred_mask |= mask
    pred_mask[20:24, 100:104, 80:83] = True
    pred_mask[150:152, 60:63, 100:102] = True
    pred = find_instances(ref_map.with_array(pred_mask.astype(np.uint8))).labels.array
    return pred, ref, ref_map


@pytest.mark.parametrize("threshold", [0.5, 0.1])
def test_ms_lesion_detection_against_independent_matching(ms_pair, threshold):
    pred, ref, _ = ms_pair
    d = match_lesions(pred, ref, match_iou=threshold)
    matched = greedy_matches(pred, ref, threshold)
    if threshold >= 0.5:
        assert d.tp == len(matched)
        assert d.sq == pytest.approx(np.mean(matched), rel=1e-12)
    else:  # below 0.5 a lesion can have several candidates; Hungarian keeps at least the greedy count
        assert d.tp >= len(matched)
    assert d.n_ref == 19 and d.n_pred == int(pred.max())
    assert (d.fp, d.fn) == (d.n_pred - d.tp, 19 - d.tp)
    assert d.f1 == pytest.approx(2 * d.tp / (2 * d.tp + d.fp + d.fn))


def test_ms_pq_matches_monai(ms_pair):
    import torch
    from monai.metrics import compute_panoptic_quality

    pred, ref, _ = ms_pair
    d = match_lesions(pred, ref)
    # The reference implementations loop over the whole array per lesion; PQ does not depend on
    # empty margins, so they get the joint bounding box (66 x 109 x 59 instead of 182 x 218 x 182).
    box = joint_crop(pred > 0, ref > 0)
    pred, ref = pred[box], ref[box]
    for metric, ours in (("pq", d.pq), ("sq", d.sq), ("rq", d.rq)):
        theirs = float(compute_panoptic_quality(torch.from_numpy(pred.astype(np.int64)),
                                                torch.from_numpy(ref.astype(np.int64)), metric_name=metric))
        assert ours == pytest.approx(theirs, rel=1e-3)


def test_ms_evaluate_with_lesion_label(ms_pair):
    pred, ref, ref_map = ms_pair
    result = evaluate(ref_map.with_array((pred > 0).astype(np.uint8)), ref_map.with_array((ref > 0).astype(np.uint8)),
                      labels={1: "ms_lesion"}, lesion_label=1, nsd_tolerance_mm=1.0)
    direct = match_lesions(pred, ref)
    d = result.detection
    assert (d.tp, d.fp, d.fn, d.pq) == (direct.tp, direct.fp, direct.fn, direct.pq)
    (lesion,) = result.classes
    assert 0.5 < lesion.dice < 0.95 and lesion.hd95_mm > 0 and 0 < lesion.nsd < 1
