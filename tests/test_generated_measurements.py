"""Measurements do not depend on how a volume is stored.

The same patient stored in any of the 48 axis orders and directions (a DICOM series is LPS,
dcm2niix writes LAS, a resampler may write RAS or PIR) must give the same lesion table and the
same evaluation scores: every number is defined in world millimetres. Checked on regions of the
shipped phantom (its lesions, split where two touch, with the CT's HU; its organs against a
copy with known errors), against the LPS original.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ALL_AXCODES, SAMPLE
from scipy import ndimage

from medseg.evaluation import evaluate
from medseg.io import load_volume
from medseg.lesions import find_instances, lesion_table

#: Fields of a lesion row that are world quantities (mm, mL, HU): storage must not change them.
WORLD_FIELDS = ["voxel_count", "volume_ml", "axial_long_axis_mm", "max_3d_diameter_mm", "centroid_ras_mm",
                "centroid_lps_mm", "surface_area_mm2", "mesh_volume_ml", "sphericity", "intensity_mean",
                "intensity_std", "intensity_min", "intensity_max"]


@pytest.fixture(scope="module")
def lesion_region():
    """Every phantom lesion (109 x 47 x 31 voxels around them) as a mask, and the CT there."""
    box = (slice(44, 153), slice(50, 97), slice(36, 67))
    lesions = load_volume(SAMPLE / "lesions.nii.gz").crop(box)
    mask = lesions.with_array((lesions.array > 0).astype(np.uint8), label_set=None)
    return mask, load_volume(SAMPLE / "ct.nii.gz").crop(box)


@pytest.fixture(scope="module")
def lps_table(lesion_region):
    mask, ct = lesion_region
    return lesion_table(find_instances(mask, split_h_mm=1.0), image=ct)


def _table(lesion_region, axcodes: str):
    mask, ct = lesion_region
    return lesion_table(find_instances(mask.reoriented(axcodes), split_h_mm=1.0), image=ct.reoriented(axcodes))


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_lesion_table_does_not_depend_on_storage(lesion_region, lps_table, axcodes):
    table = _table(lesion_region, axcodes)
    assert len(table) == len(lps_table) == 6  # the touching pair is split in every storage
    # Axial diameters are measured across the axis that runs head to foot, whichever array axis it is.
    assert axcodes[table.slice_axis] in "SI"
    for ours, lps in zip(table.rows, lps_table.rows):
        for name in WORLD_FIELDS:
            np.testing.assert_allclose(getattr(ours, name), getattr(lps, name), rtol=1e-9, atol=1e-9, err_msg=name)
        # The same axial slice, wherever it lies in the array.
        assert ours.long_axis_ras_mm[0][2] == pytest.approx(lps.long_axis_ras_mm[0][2], abs=1e-9)


def test_axial_short_axis_does_not_depend_on_storage(lesion_region, lps_table):
    differ = []
    for axcodes in ALL_AXCODES:
        for ours, lps in zip(_table(lesion_region, axcodes).rows, lps_table.rows):
            if abs(ours.axial_short_axis_mm - lps.axial_short_axis_mm) > 1e-9:
                differ.append((axcodes, ours.id, round(ours.axial_short_axis_mm - lps.axial_short_axis_mm, 3)))
    assert differ == []


@pytest.fixture(scope="module")
def organ_pair():
    """The phantom's organs (105 x 46 x 40 voxels: kidneys, spleen, aorta) and a copy with known
    errors: spleen dilated, right kidney shifted 2 voxels, an aorta island 30 mm from the aorta."""
    organs = load_volume(SAMPLE / "organs.nii.gz")
    array = organs.array.copy()
    spleen, kidney = array == 2, array == 3
    array[ndimage.binary_dilation(spleen) & (array == 0)] = 2
    array[kidney] = 0
    array[np.roll(kidney, 2, axis=0) & (array == 0)] = 3
    array[130:133, 62:65, 16:18] = 7  # background there
    box = (slice(45, 150), slice(60, 106), slice(14, 54))
    return organs.with_array(array).crop(box), organs.crop(box)


SCORED = {2: "spleen", 3: "kidney_right", 7: "aorta"}


@pytest.fixture(scope="module")
def lps_scores(organ_pair):
    pred, ref = organ_pair
    return evaluate(pred, ref, labels=SCORED, nsd_tolerance_mm=3.0)


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_evaluation_does_not_depend_on_storage(organ_pair, lps_scores, axcodes):
    pred, ref = organ_pair
    result = evaluate(pred.reoriented(axcodes), ref.reoriented(axcodes), labels=SCORED, nsd_tolerance_mm=3.0)
    assert [c.name for c in result.classes] == list(SCORED.values())
    for ours, lps in zip(result.classes, lps_scores.classes):
        assert (ours.pred_voxels, ours.ref_voxels) == (lps.pred_voxels, lps.ref_voxels)
        for name in ("dice", "hd_mm", "hd95_mm", "assd_mm", "nsd", "pred_volume_ml", "ref_volume_ml"):
            assert getattr(ours, name) == pytest.approx(getattr(lps, name), rel=1e-9, abs=1e-9), name
    # The scores are not trivial: a shifted kidney, a stray island far from the aorta.
    assert 0.8 < lps_scores.classes[1].dice < 0.9 and lps_scores.classes[2].hd_mm > 20
