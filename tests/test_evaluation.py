"""Evaluation metrics against MONAI's implementations, independent computations and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from medseg import Volume
from medseg.errors import InputError
from medseg.evaluation import class_overlap, evaluate, match_lesions, resample_labels, surface_metrics
from medseg.volume import SourceInfo

SPACING = (0.8, 0.9, 2.5)


def affine(spacing=SPACING):
    return np.diag([*spacing, 1.0])


def blob_maps(seed=0, shape=(40, 36, 16)):
    """Two multi-class maps that overlap imperfectly (classes 1-3; class 4 only in the prediction)."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random((3, *shape)), (0, 3, 3, 1.5))
    ref = np.zeros(shape, np.uint8)
    ref[smooth[0] > 0.51] = 1
    ref[smooth[1] > 0.52] = 2
    ref[10:20, 5:12, 4:9] = 3
    pred = ndimage.shift(ref, (1, -1, 0), order=0)
    pred[smooth[2] > 0.53] = 2
    pred[30:33, 30:33, 2:4] = 4
    return pred, ref


def one_hot(labels, n):
    import torch

    return torch.from_numpy(np.stack([labels == c for c in range(n)])[None].astype(np.float32))


def test_dice_iou_match_monai():
    from monai.metrics import compute_dice, compute_iou

    pred, ref = blob_maps()
    counts = class_overlap(pred, ref, [1, 2, 3, 4, 5])
    monai_dice = compute_dice(one_hot(pred, 6), one_hot(ref, 6), include_background=False).numpy()[0]
    monai_iou = compute_iou(one_hot(pred, 6), one_hot(ref, 6), include_background=False).numpy()[0]
    for c, d, i in zip(counts, monai_dice, monai_iou):
        if c.value in (1, 2, 3):
            assert c.dice == pytest.approx(float(d), rel=1e-6)
            assert c.iou == pytest.approx(float(i), rel=1e-6)
    # Class 4: only predicted (Dice 0; MONAI ignores an empty reference with NaN); class 5: absent.
    assert counts[3].dice == 0.0 and counts[3].pred_voxels == 18 and counts[3].ref_voxels == 0
    assert math.isnan(counts[4].dice) and math.isnan(counts[4].iou)


@pytest.mark.parametrize("label", [1, 2, 3])
def test_surface_metrics_match_monai(label):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    pred, ref = blob_maps(seed=label)
    p, r = one_hot(pred == label, 2), one_hot(ref == label, 2)
    ours = surface_metrics(pred == label, ref == label, SPACING, nsd_tolerance_mm=1.5)
    hd = float(compute_hausdorff_distance(p, r, spacing=SPACING)[0, 0])
    hd95 = float(compute_hausdorff_distance(p, r, percentile=95, spacing=SPACING)[0, 0])
    assd = float(compute_average_surface_distance(p, r, symmetric=True, spacing=SPACING)[0, 0])
    nsd = float(compute_surface_dice(p, r, class_thresholds=[1.5], spacing=SPACING)[0, 0])
    assert ours.hd_mm == pytest.approx(hd, rel=1e-3)
    assert ours.hd95_mm == pytest.approx(hd95, rel=1e-3)
    assert ours.assd_mm == pytest.approx(assd, rel=1e-3)
    assert ours.nsd == pytest.approx(nsd, rel=1e-3)
    assert 0 < ours.hd95_mm <= ours.hd_mm


def independent_surface_distances(a, b, spacing):
    """Edges by 6-connected erosion; distances by scipy's EDT with sampling (no MONAI)."""
    def edges(m):
        return m & ~ndimage.binary_erosion(m)

    ea, eb = edges(a), edges(b)
    a_to_b = ndimage.distance_transform_edt(~eb, sampling=spacing)[ea]
    b_to_a = ndimage.distance_transform_edt(~ea, sampling=spacing)[eb]
    return a_to_b, b_to_a


def test_surface_metrics_match_an_independent_computation_at_the_border():
    pred, ref = blob_maps(seed=4)
    pred[:, :, :3] = 1  # touching the volume's edge: the crop must not move the surface
    a, b = pred == 1, ref == 1
    a_to_b, b_to_a = independent_surface_distances(a, b, SPACING)
    ours = surface_metrics(a, b, SPACING, nsd_tolerance_mm=2.0)
    pooled = np.concatenate([a_to_b, b_to_a])
    assert ours.hd_mm == pytest.approx(max(a_to_b.max(), b_to_a.max()), rel=1e-6)
    assert ours.hd95_mm == pytest.approx(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)), rel=1e-6)
    assert ours.assd_mm == pytest.approx(pooled.mean(), rel=1e-6)
    assert ours.nsd == pytest.approx(np.mean(pooled <= 2.0), rel=1e-9)


def test_surface_known_answer_shifted_box():
    a = np.zeros((20, 20, 10), bool)
    a[4:12, 5:13, 2:7] = True
    b = np.roll(a, 2, axis=0)  # 2 voxels of 0.8 mm along i
    s = surface_metrics(a, b, SPACING, nsd_tolerance_mm=1.6)
    assert s.hd_mm == pytest.approx(1.6, rel=1e-6)
    assert s.nsd == pytest.approx(1.0)
    assert surface_metrics(a, a, SPACING).hd_mm == 0.0
    empty = surface_metrics(a, np.zeros_like(a), SPACING)
    assert math.isnan(empty.hd95_mm) and empty.nsd == 0.0 and empty.note == "empty reference"
    both = surface_metrics(np.zeros_like(a), np.zeros_like(a), SPACING)
    assert math.isnan(both.nsd) and both.note == "absent in both"


def instance_pair():
    ref = np.zeros((40, 40, 20), np.uint16)
    pred = np.zeros_like(ref)
    ref[2:8, 2:8, 2:8] = 1          # matched well
    pred[3:8, 2:8, 2:8] = 5
    ref[15:25, 15:25, 5:15] = 2     # matched well
    pred[16:25, 15:25, 5:15] = 3
    ref[30:33, 30:33, 2:5] = 3      # missed (FN)
    pred[30:38, 2:6, 10:14] = 7     # false positive
    ref[2:6, 30:34, 10:14] = 4      # poorly hit: IoU 0.25 -> not a match at 0.5
    pred[2:4, 30:34, 10:14] = 9
    return pred, ref


def expected_pq(ious_tp, fp, fn):
    tp = len(ious_tp)
    return sum(ious_tp) / (tp + fp / 2 + fn / 2)


def test_detection_known_answer_and_threshold():
    pred, ref = instance_pair()
    d = match_lesions(pred, ref, match_iou=0.5, voxel_volume_ml=0.001)
    iou1, iou2 = 180 / 216, 900 / 1000
    assert (d.n_ref, d.n_pred, d.tp, d.fp, d.fn) == (4, 4, 2, 2, 2)
    assert d.precision == pytest.approx(0.5) and d.recall == pytest.approx(0.5) and d.f1 == pytest.approx(0.5)
    assert d.sq == pytest.approx((iou1 + iou2) / 2) and d.rq == pytest.approx(0.5)
    assert d.pq == pytest.approx(expected_pq([iou1, iou2], 2, 2))
    assert d.mean_tp_dice == pytest.approx((2 * 180 / 396 + 2 * 900 / 1900) / 2)
    outcome = {(m.ref_id, m.pred_id): m.outcome for m in d.matches}
    assert outcome == {(1, 5): "TP", (2, 3): "TP", (3, 0): "FN", (4, 0): "FN", (0, 7): "FP", (0, 9): "FP"}
    first = d.matches[0]
    assert first.ref_volume_ml == pytest.approx(0.216) and first.intersection_ml == pytest.approx(0.18)
    loose = match_lesions(pred, ref, match_iou=0.1)
    assert (loose.tp, loose.fp, loose.fn) == (3, 1, 1)


def test_one_prediction_covering_two_references_matches_one():
    ref = np.zeros((30, 30, 10), np.uint8)
    ref[2:10, 2:10, 2:8] = 1
    ref[10:14, 2:10, 2:8] = 2
    pred = (ref > 0).astype(np.uint8)
    d = match_lesions(pred, ref, match_iou=0.0)
    assert (d.tp, d.fp, d.fn) == (1, 0, 1)
    assert [m.ref_id for m in d.matches if m.outcome == "TP"] == [1]  # the larger IoU wins


def test_pq_matches_monai():
    import torch
    from monai.metrics import compute_panoptic_quality

    pred, ref = instance_pair()
    d = match_lesions(pred, ref)
    for metric, ours in (("pq", d.pq), ("sq", d.sq), ("rq", d.rq)):
        theirs = compute_panoptic_quality(torch.from_numpy(pred.astype(np.int64)),
                                          torch.from_numpy(ref.astype(np.int64)), metric_name=metric)
        assert ours == pytest.approx(float(theirs), rel=1e-3)


def test_no_lesions_anywhere_is_nan_not_a_crash():
    empty = np.zeros((5, 5, 5), np.uint8)
    d = match_lesions(empty, empty)
    assert (d.tp, d.fp, d.fn) == (0, 0, 0) and all(math.isnan(v) for v in (d.f1, d.pq, d.precision))
    one = empty.copy()
    one[1, 1, 1] = 1
    missed = match_lesions(empty, one)
    assert missed.fn == 1 and missed.recall == 0.0 and missed.pq == 0.0 and math.isnan(missed.precision)


def test_evaluate_end_to_end_with_names_and_lesions():
    pred, ref = instance_pair()
    pred_sem = (pred > 0).astype(np.uint8) * 2
    ref_sem = (ref > 0).astype(np.uint8) * 2
    ref_sem[0:2, 0:2, 0:2] = 1
    names = {0: "background", 1: "liver", 2: "tumour"}
    result = evaluate(Volume(pred_sem, affine()), Volume(ref_sem, affine()), labels=names,
                      lesion_label=2, nsd_tolerance_mm=1.0)
    assert [c.name for c in result.classes] == ["liver", "tumour"]
    liver, tumour = result.classes
    assert liver.dice == 0.0 and liver.note == "empty prediction" and math.isnan(liver.hd95_mm)
    assert liver.ref_volume_ml == pytest.approx(8 * np.prod(SPACING) / 1000)
    assert liver.volume_difference_ml == pytest.approx(-liver.ref_volume_ml)
    assert liver.relative_volume_difference == pytest.approx(-1.0)
    expected = class_overlap(pred_sem, ref_sem, [2])[0]
    assert tumour.dice == pytest.approx(expected.dice) and tumour.iou == pytest.approx(expected.iou)
    assert result.mean("dice") == pytest.approx(tumour.dice / 2)
    assert result.detection is not None and result.detection.n_ref == 4
    assert result.by_name("tumour") is tumour and result.by_name("2") is tumour
    # Already-instance maps are matched as they are.
    direct = evaluate(Volume(pred, affine()), Volume(ref, affine()), lesion_instances=True, surface=False)
    assert (direct.detection.tp, direct.detection.fp, direct.detection.fn) == (2, 2, 2)
    assert [c.name for c in direct.classes] == ["lesion"] and math.isnan(direct.classes[0].hd_mm)
    assert direct.classes[0].dice == pytest.approx(tumour.dice)


def test_grid_mismatch_is_an_error_naming_both_files_unless_resampling():
    pred, ref = blob_maps()
    ref_vol = Volume(ref, affine(), source=SourceInfo(path="/cases/ref.nii.gz"))
    # The same prediction stored with i and j flipped (LPS-style): another grid, same world.
    flip = np.array([[-1, 0, 0, ref.shape[0] - 1], [0, -1, 0, ref.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    pred_vol = Volume(pred[::-1, ::-1].copy(), affine() @ flip, source=SourceInfo(path="/cases/pred.nii.gz"))
    with pytest.raises(InputError, match=r"/cases/pred.nii.gz: is not on the grid of /cases/ref.nii.gz.*resample=True"):
        evaluate(pred_vol, ref_vol)
    resampled = evaluate(pred_vol, ref_vol, resample=True, surface=False)
    direct = evaluate(Volume(pred, affine()), ref_vol, surface=False)
    assert [c.dice for c in resampled.classes] == [c.dice for c in direct.classes]
    assert resampled.resampled and "resampled" in resampled.warnings[0]
    # A coarser prediction grid goes through nearest-neighbour interpolation.
    coarse = Volume(ref[::2, ::2], np.diag([1.6, 1.8, 2.5, 1.0]) @ np.array(
        [[1, 0, 0, 0.25], [0, 1, 0, 0.25], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    back = resample_labels(coarse, ref_vol)
    assert back.shape == ref.shape and np.array_equal(back.affine, ref_vol.affine)
    assert class_overlap(back.array, ref, [3])[0].dice > 0.8


def test_bad_label_maps_and_settings():
    ref = np.zeros((6, 6, 6), np.uint8)
    with pytest.raises(InputError, match="non-integer"):
        evaluate(Volume(np.full((6, 6, 6), 0.5, np.float32), np.eye(4)), Volume(ref, np.eye(4)))
    with pytest.raises(InputError, match="match_iou=1.0"):
        evaluate(Volume(ref, np.eye(4)), Volume(ref, np.eye(4)), match_iou=1.0)
    result = evaluate(Volume(ref, np.eye(4)), Volume(ref, np.eye(4)), lesion_label=2)
    assert result.classes == () and "occurs in neither map" in result.warnings[0]
    assert result.detection.n_ref == 0 and math.isnan(result.mean("dice"))
