"""``medseg.lesions._rows.measure_lesion``: one lesion's row from a box equals the whole-map table's.

The lesion table widget re-measures only the lesions an edit touched; these tests hold that row to
the one :func:`medseg.lesions.lesion_table` gives on the whole volume, on the phantom (CT, organs)
and on real MR lesions, after edits too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.io import load_volume
from medseg.lesions import find_instances, instances_from_map, lesion_table
from medseg.lesions._rows import lesion_box, measure_lesion

PHANTOM = Path(__file__).resolve().parents[1] / "sample_data" / "phantom"


def _same(a, b) -> None:
    for key, value in a.as_dict().items():
        other = b.as_dict()[key]
        if isinstance(value, (float, tuple, list)) or isinstance(other, float):
            np.testing.assert_allclose(np.asarray(value, float), np.asarray(other, float), atol=1e-9, err_msg=key)
        else:
            assert value == other, key


@pytest.fixture(scope="module")
def phantom():
    ct = load_volume(PHANTOM / "ct.nii.gz")
    return (ct.with_array(ct.array, modality="CT"), load_volume(PHANTOM / "organs.nii.gz"),
            load_volume(PHANTOM / "lesions.nii.gz"))


def test_every_phantom_lesion_row_equals_the_whole_table(phantom):
    ct, organs, lesions = phantom
    table = lesion_table(lesions, image=ct, organs=organs)
    assert len(table) == 6
    for row in table.rows:
        box = lesion_box(lesions.array, row.id)
        assert box == tuple(slice(a, b) for a, b in zip(row.bbox_start_ijk, row.bbox_stop_ijk))
        _same(measure_lesion(lesions, row.id, within=box, image=ct, organs=organs), row)
    assert measure_lesion(lesions, 99, image=ct, organs=organs) is None


def test_after_edits_the_boxed_row_equals_a_fresh_table(phantom):
    ct, organs, lesions = phantom
    ids = lesions.array.copy()
    before = lesion_table(lesions.with_array(ids), image=ct, organs=organs).row(2)
    # Grow lesion 2 by a block beside it, and cut lesion 3 in half.
    start = np.array(before.bbox_stop_ijk)
    edit = tuple(slice(int(s), int(s) + 3) for s in start)
    ids[edit] = 2
    box3 = lesion_box(ids, 3)
    ids[box3[0].start:(box3[0].start + box3[0].stop) // 2, box3[1], box3[2]][
        ids[box3[0].start:(box3[0].start + box3[0].stop) // 2, box3[1], box3[2]] == 3] = 0
    edited = lesions.with_array(ids)
    fresh = lesion_table(edited, image=ct, organs=organs)
    old_box = tuple(slice(a, b) for a, b in zip(before.bbox_start_ijk, before.bbox_stop_ijk))
    within = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(old_box, edit))
    _same(measure_lesion(edited, 2, within=within, image=ct, organs=organs), fresh.row(2))
    _same(measure_lesion(edited, 3, within=box3, image=ct, organs=organs), fresh.row(3))
    assert fresh.row(2).voxel_count == before.voxel_count + 27 - int(np.count_nonzero(lesions.array[edit] == 2))


@pytest.mark.shared_data
def test_real_ms_lesions_rows_equal_the_whole_table(shared_data):
    root = shared_data / "lesions" / "ms_lesions_ljubljana"
    mask = load_volume(root / "patient26_lesions_mni.nii.gz")
    flair = load_volume(root / "patient26_flair_mni.nii.gz")
    instances = find_instances(mask, any_nonzero=True)
    table = lesion_table(instances, image=flair)
    assert len(table) == 19  # 26-connected components of the real mask
    rows = sorted(table.rows, key=lambda r: r.voxel_count)
    for row in (rows[0], rows[len(rows) // 2], rows[-1]):
        _same(measure_lesion(instances.labels, row.id, image=flair), row)
    mapped = instances_from_map(instances.labels)
    assert len(mapped) == len(table)
