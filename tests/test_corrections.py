"""The Qt-free corrections core: exact deltas, interpolation, holes, split/merge/delete, review, log.

Hand-made volumes with known geometry (anisotropic spacing, so a pixel-vs-mm mix-up shows) and the
shipped phantom. Every operation: the map is not modified by computing it, applying then reverting
its delta gives the map back bit for bit, and labels it was not asked to touch are untouched.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.corrections import (
    CorrectionLog,
    CorrectionSession,
    Delta,
    ReviewState,
    delete_lesion,
    fill_holes,
    interpolate,
    merge_lesions,
    new_lesion_id,
    read_recovery,
    renumber_lesions,
    signed_distance,
    split_lesion,
    write_recovery,
)
from medseg.errors import InputError
from medseg.labels import LabelSet
from medseg.volume import Volume


def _volume(array, spacing=(1.0, 1.0, 1.0), labels=None):
    return Volume(array, np.diag([*spacing, 1.0]), label_set=labels)


def _round_trip(volume, correction):
    """Apply and revert: bit-identical, and the computation did not touch the map."""
    before = volume.array.copy()
    assert correction.delta.matches(volume.array)
    after = before.copy()
    correction.delta.apply(after)
    assert np.count_nonzero(after != before) == correction.voxels
    correction.delta.revert(after)
    assert np.array_equal(after, before) and after.dtype == before.dtype
    assert np.array_equal(volume.array, before)
    json.dumps(correction.record)  # the log record is plain data
    applied = before.copy()
    correction.delta.apply(applied)
    return applied


def _disc(shape, centre, radius_mm, spacing):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return ((rows - centre[0]) * spacing[0]) ** 2 + ((cols - centre[1]) * spacing[1]) ** 2 <= radius_mm**2


def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


# --- deltas ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint32])
def test_delta_keeps_only_changed_voxels_and_reverts_exactly(dtype):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 4, (9, 8, 7)).astype(dtype)
    mask = rng.random(array.shape) < 0.3
    delta = Delta.between(array, (slice(None),) * 3, mask, 2)
    assert delta.voxels == np.count_nonzero(mask & (array != 2))
    assert delta.new.shape == () and delta.old.dtype == array.dtype
    before = array.copy()
    delta.apply(array)
    assert np.all(array[mask] == 2) and np.array_equal(array[~mask], before[~mask])
    delta.revert(array)
    assert np.array_equal(array, before)
    # Per-voxel new values; the box is shrunk to the voxels that change.
    values = rng.integers(0, 4, int(mask.sum())).astype(dtype)
    delta = Delta.between(array, (slice(2, 7), slice(None), slice(1, 5)), mask[2:7, :, 1:5], values[: mask[2:7, :, 1:5].sum()])
    target = array.copy()
    target[2:7, :, 1:5][mask[2:7, :, 1:5]] = values[: mask[2:7, :, 1:5].sum()]
    delta.apply(array)
    assert np.array_equal(array, target)
    idx = delta.indices()
    assert np.array_equal(array[idx], np.broadcast_to(delta.new, delta.old.shape))
    assert all(s.start >= lo for s, lo in zip(delta.box, (2, 0, 1)))


def test_empty_and_single_voxel_deltas():
    array = np.zeros((3, 3, 3), np.uint8)
    empty = Delta.between(array, (slice(None),) * 3, np.zeros_like(array, bool), 1)
    assert not empty and empty.voxels == 0 and empty.slice_range(2) is None
    empty.apply(array)
    assert not array.any()
    one = Delta.between(array, (slice(None),) * 3, array == 0, 0)
    assert not one  # nothing changes: setting background to background
    mask = np.zeros_like(array, bool)
    mask[1, 2, 0] = True
    single = Delta.between(array, (slice(None),) * 3, mask, 7)
    assert single.box == (slice(1, 2), slice(2, 3), slice(0, 1)) and single.nbytes <= 3
    single.apply(array)
    assert array[1, 2, 0] == 7 and array.sum() == 7


# --- interpolation --------------------------------------------------------------------------------
def test_interpolating_a_cone_in_mm_on_anisotropic_pixels():
    """Discs of 6 mm and 14 mm radius, 8 slices apart, on 0.5 x 1.0 mm pixels: every slice between
    gets the disc of the linearly interpolated radius in mm (a circle in mm, an ellipse in pixels)."""
    spacing = (0.5, 1.0, 2.5)
    shape = (80, 40, 10)
    array = np.zeros(shape, np.uint8)
    centre = (40, 20)
    array[..., 1] = _disc(shape[:2], centre, 6.0, spacing) * 3
    array[..., 9] = _disc(shape[:2], centre, 14.0, spacing) * 3
    volume = _volume(array, spacing, LabelSet({0: "background", 3: "kidney_right"}))
    correction = interpolate(volume, 3, axis=2)
    assert correction.record["slices"] == [2, 8] and correction.record["slices_filled"] == 7
    assert correction.record["label_name"] == "kidney_right" and correction.record["key_slices"] == [1, 9]
    result = _round_trip(volume, correction)
    for k in range(2, 9):
        radius = 6.0 + (14.0 - 6.0) * (k - 1) / 8
        expected = _disc(shape[:2], centre, radius, spacing)
        got = result[..., k] == 3
        assert _dice(got, expected) > 0.97, k
        # Extent in mm is the same along both pixel axes: a circle in mm, not in pixels.
        rows, cols = np.nonzero(got)
        extent = ((rows.max() - rows.min()) * spacing[0], (cols.max() - cols.min()) * spacing[1])
        assert abs(extent[0] - extent[1]) <= 1.0 + 1e-9 and abs(extent[0] / 2 - radius) <= 1.0, (k, extent, radius)
    assert not result[..., 0].any()  # outside the drawn range: nothing


def test_identical_key_slices_give_the_same_shape_on_every_slice_and_keep_other_labels():
    rng = np.random.default_rng(1)
    shape = (30, 30, 12)
    blob = np.zeros(shape[:2], bool)
    blob[5:25, 8:20] = True
    blob[10:15, 20:27] = True
    blob &= rng.random(shape[:2]) < 0.95  # ragged edge, a few holes
    array = np.zeros(shape, np.uint16)
    array[..., 2] = blob
    array[..., 10] = blob
    array[12:18, 0:30, 5] = 4  # another label across the gap
    volume = _volume(array, (1.0, 1.0, 3.0))
    result = _round_trip(volume, interpolate(volume, 1, axis=2))
    for k in range(3, 10):
        expected = blob.copy()
        if k == 5:
            expected[12:18, :] = False
        assert np.array_equal(result[..., k] == 1, expected), k
    assert np.array_equal(result == 4, array == 4)  # the other label: not one voxel changed


def test_interpolation_around_a_slice_and_between_two_only_looks_there():
    shape = (20, 20, 30)
    array = np.zeros(shape, np.uint8)
    for k in (2, 10, 20):
        array[5:15, 5:15, k] = 1
    volume = _volume(array)
    around = interpolate(volume, 1, axis=2, around=10)  # the slice just drawn: both neighbouring gaps
    assert around.record["slices"] == [3, 19] and around.record["key_slices"] == [2, 10, 20]
    inside = interpolate(volume, 1, axis=2, around=14)  # an empty slice: the gap it lies in
    assert inside.record["slices"] == [11, 19]
    between = interpolate(volume, 1, axis=2, between=(2, 10))
    assert between.record["slices"] == [3, 9]
    _round_trip(volume, between)


@pytest.mark.parametrize("drawn", [(), (4,)])
def test_interpolating_with_fewer_than_two_drawn_slices_is_refused(drawn):
    array = np.zeros((10, 10, 8), np.uint8)
    for k in drawn:
        array[2:5, 2:5, k] = 2
    array[7, 7, 1] = 1
    before = array.copy()
    volume = _volume(array, labels=LabelSet({0: "background", 1: "liver", 2: "spleen"}))
    with pytest.raises(InputError) as error:
        interpolate(volume, 2, axis=2)
    message = str(error.value)
    assert message.startswith("interpolate: spleen is drawn on") and "interpolation needs two" in message
    assert "draw it on at least two slices" in message.lower()
    assert np.array_equal(array, before)
    array[2:5, 2:5, 5] = 2
    if drawn:  # drawn on two adjacent slices: nothing to fill is said as such
        with pytest.raises(InputError, match="nothing to fill"):
            interpolate(volume, 2, axis=2)


def test_signed_distance_is_in_mm_and_never_zero():
    mask = np.zeros((7, 7), bool)
    mask[3, 3] = True
    d = signed_distance(mask, (2.0, 0.5))
    assert d[3, 3] < 0 and np.all(d[mask] < 0) and np.all(d[~mask] > 0)
    assert d[3, 5] == pytest.approx(1.0) and d[5, 3] == pytest.approx(4.0)  # 2 pixels of 0.5 mm / 2 mm


# --- holes ---------------------------------------------------------------------------------------
def test_fill_holes_fills_background_holes_only():
    array = np.zeros((12, 12, 3), np.uint8)
    array[2:10, 2:10, 1] = 1
    array[4:6, 4:6, 1] = 0  # a hole
    array[7, 7, 1] = 5  # a hole holding another label
    volume = _volume(array)
    correction = fill_holes(volume, 1, index=1, axis=2)
    result = _round_trip(volume, correction)
    assert correction.voxels == 4 and np.all(result[4:6, 4:6, 1] == 1) and result[7, 7, 1] == 5
    assert correction.record["slices"] == [1, 1]
    with pytest.raises(InputError, match="has no hole on slice k=1"):
        fill_holes(_volume(result), 1, index=1, axis=2)
    with pytest.raises(InputError, match="not on slice k=0"):
        fill_holes(volume, 1, index=0, axis=2)


# --- lesions --------------------------------------------------------------------------------------
def _touching_pair(spacing=(0.8, 0.8, 2.5)):
    """Two balls (radius 7 and 5 mm) whose centres are 11 mm apart: one lesion with a neck."""
    shape = (40, 30, 14)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    a_centre, b_centre = np.array([12.0, 12.0, 17.5]), np.array([23.0, 12.0, 17.5])
    ball_a = np.linalg.norm(grid - a_centre, axis=-1) <= 7.0
    ball_b = np.linalg.norm(grid - b_centre, axis=-1) <= 5.0
    array = np.zeros(shape, np.uint16)
    array[ball_a | ball_b] = 3
    array[2:5, 2:5, 2:4] = 1  # another lesion, far away
    seeds = [tuple(np.round(c / np.asarray(spacing)).astype(int)) for c in (a_centre, b_centre)]
    return _volume(array, spacing), ball_a, ball_b, seeds


def test_split_a_touching_pair_at_its_neck_then_merge_it_back():
    volume, ball_a, ball_b, seeds = _touching_pair()
    before = volume.array.copy()
    split = split_lesion(volume, seeds=seeds)
    assert split.record["lesion"] == 3 and split.record["new_lesion"] == 4 == new_lesion_id(volume)
    result = _round_trip(volume, split)
    part_a, part_b = result == 3, result == 4
    # Each part is its ball, up to the neck's voxels (the watershed line runs through the saddle).
    neck = ball_a & ball_b
    assert np.count_nonzero(part_a ^ (ball_a & ~neck)) <= np.count_nonzero(neck)
    assert np.count_nonzero(part_b ^ (ball_b & ~neck)) <= np.count_nonzero(neck)
    assert np.count_nonzero(part_a) + np.count_nonzero(part_b) == np.count_nonzero(before == 3)
    assert np.array_equal(result == 1, before == 1)
    merged = merge_lesions(_volume(result, volume.spacing), [3, 4])
    assert merged.record["into"] == 3 and merged.voxels == np.count_nonzero(part_b)
    merged.delta.apply(result)
    assert np.array_equal(result, before)


def test_split_refuses_seeds_in_two_lesions_or_the_background():
    volume, _, _, seeds = _touching_pair()
    before = volume.array.copy()
    with pytest.raises(InputError) as error:
        split_lesion(volume, seeds=[seeds[0], (3, 3, 2)])
    assert str(error.value) == ("split: the seeds lie in two different lesions (3 and 1). Put both seeds inside the "
                                "one lesion to split (to join two lesions, merge them)")
    with pytest.raises(InputError, match="lies in the background"):
        split_lesion(volume, seeds=[seeds[0], (39, 29, 13)])
    with pytest.raises(InputError, match="same voxel"):
        split_lesion(volume, seeds=[seeds[0], seeds[0]])
    assert np.array_equal(volume.array, before)


def test_split_along_a_cut_line_through_all_slices():
    volume, _, _, seeds = _touching_pair()
    k = seeds[0][2]
    x_cut = 22  # a line along j at i = 22 (the neck is near i = 19)
    split = split_lesion(volume, cut=[(x_cut, 0, k), (x_cut, 29, k)], axis=2)
    result = _round_trip(volume, split)
    i = np.arange(volume.shape[0])[:, None, None]
    lesion = volume.array == 3
    # The smaller side (the 5 mm ball's, beyond i = 22) gets the new id; the line is on the larger side.
    assert np.array_equal(result == 4, lesion & (i > x_cut)) and np.array_equal(result == 3, lesion & (i <= x_cut))
    with pytest.raises(InputError, match="crosses no lesion"):
        split_lesion(volume, cut=[(39, 0, k), (39, 29, k)], axis=2)
    j_min = int(np.nonzero(lesion)[1].min())  # a line touching the lesion's edge cuts nothing off
    with pytest.raises(InputError, match="all of lesion 3 on one side"):
        split_lesion(volume, cut=[(0, j_min, k), (39, j_min, k)], axis=2)


def test_merge_of_a_single_lesion_is_refused_and_delete_renumber_are_exact():
    volume, *_ = _touching_pair()
    with pytest.raises(InputError) as error:
        merge_lesions(volume, [3])
    assert str(error.value) == "merge: 1 lesion (3) to merge. Select two or more lesions to merge"
    with pytest.raises(InputError, match="not in the map: 9"):
        merge_lesions(volume, [3, 9])
    deleted = delete_lesion(volume, 1)
    result = _round_trip(volume, deleted)
    assert not np.any(result == 1) and np.array_equal(result == 3, volume.array == 3)
    with pytest.raises(InputError, match="there is no lesion 7"):
        delete_lesion(volume, 7)
    renumbered = renumber_lesions(_volume(result))
    assert renumbered.record["ids"] == {"3": 1}
    final = _round_trip(_volume(result), renumbered)
    assert set(np.unique(final)) == {0, 1} and np.array_equal(final == 1, volume.array == 3)
    with pytest.raises(InputError, match="already 1..1"):
        renumber_lesions(_volume(final))


def test_phantom_lesions_split_merge_delete_leave_the_rest_untouched():
    from pathlib import Path

    from medseg.io import load_volume

    sample = Path(__file__).resolve().parents[1] / "sample_data" / "phantom"
    lesions = load_volume(sample / "lesions.nii.gz").with_labels(None)
    before = lesions.array.copy()
    ids = sorted(set(np.unique(before).tolist()) - {0})
    merged = merge_lesions(lesions, ids[:2])
    result = _round_trip(lesions, merged)
    assert np.count_nonzero(result == ids[0]) == np.count_nonzero(before == ids[0]) + np.count_nonzero(before == ids[1])
    untouched = ~np.isin(before, ids[:2])
    assert np.array_equal(result[untouched], before[untouched])
    for lesion_id in ids:
        correction = delete_lesion(lesions, lesion_id)
        assert correction.voxels == np.count_nonzero(before == lesion_id)
        _round_trip(lesions, correction)


# --- review and log -------------------------------------------------------------------------------
def test_review_coverage_and_next_unreviewed():
    review = ReviewState((10, 10, 300))
    for k in range(143):
        review.mark_slice(2, k)
    assert review.coverage(2) == (143, 300) and review.describe(2) == "143/300 slices (k) reviewed"
    assert review.next_unreviewed_slice(2, 10) == 143 and review.next_unreviewed_slice(2, 150, -1) == 149
    review.mark_lesion(2)
    assert review.describe(2, [0, 1, 2, 3]) == "143/300 slices (k) reviewed, 1/3 lesions"
    assert review.next_unreviewed_lesion([1, 2, 3], current=1) == 3 and review.next_unreviewed_lesion([2]) is None
    data = review.to_dict([0, 1, 2, 3])
    assert data["slices_reviewed"] == {"k": [[0, 142]]} and data["coverage"]["k"]["reviewed"] == 143
    assert data["coverage"]["lesions"] == {"reviewed": 1, "lesions": 3}
    again = ReviewState.from_dict(json.loads(json.dumps(data)))
    assert again.slices == review.slices and again.lesions == {2} and again.shape == (10, 10, 300)


def test_log_records_undo_and_redo_and_knows_what_is_in_effect():
    log = CorrectionLog()
    a = log.add({"operation": "interpolate", "voxels_changed": 10}, map_name="labels")
    b = log.add({"operation": "delete", "voxels_changed": 5}, map_name="lesions")
    assert log.undo(map_name="lesions") == b and [r["seq"] for r in log.active()] == [a]
    assert log.redo(map_name="lesions") == b
    log.undo(map_name="lesions")
    c = log.add({"operation": "paint", "voxels_changed": 3}, map_name="labels")
    assert log.redo(map_name="labels") is None  # a new operation drops the redo branch
    assert [r["seq"] for r in log.active()] == [a, c]
    summary = log.summary()
    assert summary == {"operations": 2, "by_operation": {"interpolate": 1, "paint": 1}, "undone": 1,
                       "voxels_changed_by_operations": {"labels": 13}}
    assert [r["seq"] for r in CorrectionLog(log.to_list()).active()] == [a, c]


# --- a session without napari, and its recovery file ----------------------------------------------
def test_session_applies_undoes_and_recovers_exactly(tmp_path):
    volume, _, _, seeds = _touching_pair()
    organs = _volume(np.zeros(volume.shape, np.uint8), volume.spacing, LabelSet({0: "background", 2: "liver"}))
    organs.array[5:30, 5:25, 3] = 2
    organs.array[5:30, 5:25, 9] = 2
    start = {"labels": organs.array.copy(), "lesions": volume.array.copy()}
    session = CorrectionSession({"labels": organs, "lesions": volume}, based_on={"source": "memory"},
                                recovery_file=tmp_path / "case.recovery.npz", every_operations=2)
    session.apply(interpolate(organs, 2, axis=2), "labels")
    assert not session.autosave_due()
    session.apply(split_lesion(volume, seeds=seeds), "lesions")
    assert session.autosave_due()
    edited = {"labels": organs.array.copy(), "lesions": volume.array.copy()}
    session.review.mark_slice(2, 4)
    session.write_recovery()
    assert not session.autosave_due()
    session.undo()
    session.undo()
    assert np.array_equal(organs.array, start["labels"]) and np.array_equal(volume.array, start["lesions"])
    assert session.redo() == 1  # the last undone: the interpolation
    recovery = read_recovery(tmp_path / "case.recovery.npz")
    assert recovery.fits(volume.affine, volume.shape) and not recovery.fits(volume.affine, (1, 2, 3))
    assert recovery.label_names == {"0": "background", "2": "liver"} and recovery.describe().startswith("2 operations")
    # A fresh session on the original maps takes over the recovered corrections exactly.
    fresh = CorrectionSession({"labels": _volume(start["labels"].copy(), volume.spacing),
                               "lesions": _volume(start["lesions"].copy(), volume.spacing)})
    deltas = fresh.restore(recovery)
    for name, delta in deltas.items():
        delta.apply(fresh.maps[name].array)
        assert np.array_equal(fresh.maps[name].array, edited[name])
    assert fresh.review.is_reviewed(2, 4) and len(fresh.log.active()) == 2
    provenance = session.provenance()
    json.dumps(provenance)
    assert [r["operation"] for r in provenance["operations"]] == ["interpolate", "split", "undo", "undo", "redo"]
    write_recovery(tmp_path / "x.recovery.npz", {"labels": organs.array}, affine=organs.affine)
    (tmp_path / "bad.recovery.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot be read as a recovery file"):
        read_recovery(tmp_path / "bad.recovery.npz")
    session.saved()
    assert not (tmp_path / "case.recovery.npz").exists()
