"""Evaluation on label maps: per-class metrics against MONAI, lesion detection against MONAI and a
greedy matching written here (panoptica: benchmarks/check_pq_panoptica.py).

Real maps from ../shared/data (TotalSegmentator's two models, the Ljubljana MS lesions), and the
shipped phantom's organs and lesions with known perturbations.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA_KINDS, SAMPLE
from scipy import ndimage

from medseg.errors import InputError
from medseg.evaluation import evaluate, match_lesions
from medseg.evaluation.surface import joint_crop
from medseg.io import load_volume
from medseg.lesions import find_instances

TS = "totalsegmentator"


def one_hot(array, values):
    import torch

    return torch.from_numpy(np.stack([array == v for v in values])[None].astype(np.float32))


def check_against_monai(pred, ref, result, surface_values) -> None:
    """Every class's Dice against a direct count, ten against MONAI's Dice, and HD95/NSD (3 mm) of
    ``surface_values`` against MONAI's."""
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    values = [c.value for c in result.classes]
    for c in result.classes:  # every class against a direct count
        p, r = pred.array == c.value, ref.array == c.value
        assert c.dice == pytest.approx(2 * np.count_nonzero(p & r) / (p.sum() + r.sum()), rel=1e-12)
    some = values[:10]  # MONAI's one-hot Dice is slow with 42 channels: ten classes are enough
    dice = compute_dice(one_hot(pred.array, [0, *some]), one_hot(ref.array, [0, *some]),
                        include_background=False).numpy()[0]
    for c, d in zip(result.classes[:10], dice):
        assert c.dice == pytest.approx(float(d), rel=1e-6)
    spacing = [float(s) for s in ref.spacing]
    for name_value in surface_values:
        c = next(c for c in result.classes if c.value == name_value)
        p, r = one_hot(pred.array, [0, name_value]), one_hot(ref.array, [0, name_value])
        hd95 = float(compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)[0, 0])
        nsd = float(compute_surface_dice(p, r, class_thresholds=[3.0], spacing=spacing)[0, 0])
        assert c.hd95_mm == pytest.approx(hd95, rel=1e-3)
        assert c.nsd == pytest.approx(nsd, rel=1e-3)


@pytest.mark.shared_data
def test_totalsegmentator_fast_against_full_model_matches_monai(shared_data):
    pred = load_volume(shared_data / TS / "example_seg_fast.nii.gz")
    ref = load_volume(shared_data / TS / "example_seg.nii.gz")
    result = evaluate(pred, ref, nsd_tolerance_mm=3.0)
    values = [c.value for c in result.classes]
    assert len(values) == 41 and 13 in values  # id 13 only in the full model's map
    check_against_monai(pred, ref, result, (1, 5, 7, 52))  # spleen, liver, pancreas, aorta
    id13 = next(c for c in result.classes if c.value == 13)
    assert id13.dice == 0.0 and id13.note == "empty prediction"
    liver = next(c for c in result.classes if c.value == 5)
    assert liver.ref_volume_ml == pytest.approx(np.count_nonzero(ref.array == 5) * 0.027)
    assert liver.dice > 0.95


def perturbed_organs(organs):
    """The phantom's organs as a model might get them: liver eroded, spleen dilated, right kidney
    shifted 2 voxels, pancreas missed, a stray aorta island."""
    array = organs.array.copy()
    liver, spleen = array == 1, array == 2
    array[liver & ~ndimage.binary_erosion(liver)] = 0
    array[ndimage.binary_dilation(spleen) & (array == 0)] = 2
    kidney = array == 3
    array[kidney] = 0
    array[np.roll(kidney, 2, axis=0) & (array == 0)] = 3
    array[array == 6] = 0
    array[20:24, 20:24, 5:8] = 7
    return organs.with_array(array)


@pytest.mark.slow
def test_phantom_organs_with_known_errors_match_monai():
    ref = load_volume(SAMPLE / "organs.nii.gz")
    pred = perturbed_organs(ref)
    result = evaluate(pred, ref, nsd_tolerance_mm=3.0)
    assert [c.value for c in result.classes] == list(range(1, 11))
    assert [c.name for c in result.classes] == list(ref.label_set.names[1:])  # names travel with the map
    check_against_monai(pred, ref, result, (1, 2, 3, 7))  # liver, spleen, kidney_right, aorta
    by_name = {c.name: c for c in result.classes}
    assert by_name["pancreas"].dice == 0.0 and by_name["pancreas"].note == "empty prediction"
    assert by_name["lung_left"].dice == 1.0 and by_name["lung_left"].hd95_mm == 0.0
    assert 0.8 < by_name["liver"].dice < 1.0 and by_name["liver"].ref_volume_ml == pytest.approx(1152.552)
    # The stray island is far from the aorta: the maximum distance sees it, the 95th percentile does not.
    assert by_name["aorta"].hd_mm > 100 and by_name["aorta"].hd95_mm < 3


@pytest.mark.shared_data
def test_dicom_label_map_stored_flipped_needs_resample(shared_data):
    seg = load_volume(shared_data / TS / "example_seg_dicom.nii.gz")  # LAS
    lps = seg.reoriented("LPS")  # the DICOM grid: same voxels, j flipped
    with pytest.raises(InputError, match="resample=True"):
        evaluate(lps, seg, surface=False)
    result = evaluate(lps, seg, surface=False, resample=True)
    assert all(c.dice == 1.0 for c in result.classes) and len(result.classes) == 31


def test_phantom_label_map_stored_flipped_needs_resample():
    organs = load_volume(SAMPLE / "organs.nii.gz")  # LPS, as the DICOM series it was drawn on
    las = organs.reoriented("LAS")  # the same voxels with j flipped, as dcm2niix stores them
    with pytest.raises(InputError, match="resample=True"):
        evaluate(las, organs, surface=False)
    result = evaluate(las, organs, surface=False, resample=True)
    assert all(c.dice == 1.0 for c in result.classes) and len(result.classes) == 10


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


@pytest.fixture(scope="module", params=DATA_KINDS)
def lesion_pair(request, shared_data):
    """A reference lesion instance map and a prediction with eroded/dilated/shifted lesions, some
    missed, two false positives. Real: the 19 consensus MS lesions of patient 26 (three missed).
    Phantom: its 6 lesions (exact truth; lesion 4 missed; 2 and 3 touch, so the prediction joins them)."""
    if request.param == "real":
        ref_map = load_volume(shared_data / "lesions/ms_lesions_ljubljana/patient26_lesions_mni.nii.gz")
        ref = find_instances(ref_map).labels.array
        missed, n_ref = (4, 12, 17), 19
        false_positives = [(slice(20, 24), slice(100, 104), slice(80, 83)),
                           (slice(150, 152), slice(60, 63), slice(100, 102))]
    else:
        ref_map = load_volume(SAMPLE / "lesions.nii.gz")
        ref = ref_map.array
        missed, n_ref = (4,), 6
        false_positives = [(slice(5, 9), slice(5, 9), slice(10, 13)), (slice(190, 192), slice(160, 163), slice(60, 62))]
    pred_mask = np.zeros(ref.shape, bool)
    for lesion in range(1, ref.max() + 1):
        mask = ref == lesion
        if lesion in missed:
            continue
        if lesion % 3 == 0:
            mask = ndimage.binary_dilation(mask)
        elif lesion % 3 == 1 and mask.sum() > 50:
            mask = ndimage.binary_erosion(mask)
        else:
            mask = np.roll(mask, 1, axis=lesion % 3)
        pred_mask |= mask
    for box in false_positives:
        pred_mask[box] = True
    pred = find_instances(ref_map.with_array(pred_mask.astype(np.uint8))).labels.array
    return pred, ref, ref_map, n_ref


@pytest.mark.parametrize("threshold", [0.5, 0.1])
def test_lesion_detection_against_independent_matching(lesion_pair, threshold):
    pred, ref, _, n_ref = lesion_pair
    d = match_lesions(pred, ref, match_iou=threshold)
    matched = greedy_matches(pred, ref, threshold)
    if threshold >= 0.5:
        assert d.tp == len(matched)
        assert d.sq == pytest.approx(np.mean(matched), rel=1e-12)
    else:  # below 0.5 a lesion can have several candidates; Hungarian keeps at least the greedy count
        assert d.tp >= len(matched)
    assert d.n_ref == n_ref and d.n_pred == int(pred.max())
    assert (d.fp, d.fn) == (d.n_pred - d.tp, n_ref - d.tp)
    assert d.f1 == pytest.approx(2 * d.tp / (2 * d.tp + d.fp + d.fn))


@pytest.mark.slow
def test_lesion_pq_matches_monai(lesion_pair):
    import torch
    from monai.metrics import compute_panoptic_quality

    pred, ref, _, _ = lesion_pair
    d = match_lesions(pred, ref)
    # The reference implementations loop over the whole array per lesion; PQ does not depend on
    # empty margins, so they get the joint bounding box (MS: 66 x 109 x 59 instead of 182 x 218 x 182).
    box = joint_crop(pred > 0, ref > 0)
    pred, ref = pred[box], ref[box]
    for metric, ours in (("pq", d.pq), ("sq", d.sq), ("rq", d.rq)):
        theirs = float(compute_panoptic_quality(torch.from_numpy(pred.astype(np.int64)),
                                                torch.from_numpy(ref.astype(np.int64)), metric_name=metric))
        assert ours == pytest.approx(theirs, rel=1e-3)


def test_evaluate_with_lesion_label(lesion_pair):
    pred, ref, ref_map, _ = lesion_pair
    result = evaluate(ref_map.with_array((pred > 0).astype(np.uint8)), ref_map.with_array((ref > 0).astype(np.uint8)),
                      labels={1: "ms_lesion"}, lesion_label=1, nsd_tolerance_mm=1.0)
    # From a semantic map, lesions are its connected components (touching lesions are one).
    components = find_instances(ref_map.with_array((ref > 0).astype(np.uint8))).labels.array
    direct = match_lesions(pred, components)
    d = result.detection
    assert (d.tp, d.fp, d.fn, d.pq) == (direct.tp, direct.fp, direct.fn, direct.pq)
    (lesion,) = result.classes
    assert 0.5 < lesion.dice < 0.95 and lesion.hd95_mm > 0 and 0 < lesion.nsd < 1
