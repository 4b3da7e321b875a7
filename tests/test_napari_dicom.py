"""DICOM SEG and RTSTRUCT in the napari plugin: the reader and the SEG writer, under Xvfb.

* A DICOM SEG opens on the grid of the open CT it references (dcmqi's liver SEG equals the NRRD
  shipped with it, voxel for voxel), overlapping segments as several label layers, or on its own
  grid when its series is not open (said in a notification, placed where it is in the patient).
* A label layer saved as ``.dcm`` is a DICOM SEG of the DICOM series it lies on (with the scan's
  lesions), which opens back to the same voxels; labels of no DICOM series: one notification.
* An RTSTRUCT opens with the CT beside it: image, labels, lesions (equal to what was exported) and
  the contours as shapes on their slices.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_plugin._layers import layer_info

pytestmark = pytest.mark.gui

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"


def _volume(layer):
    return layer_info(layer).geometry.to_volume(layer.data)


def _nrrd(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)


@pytest.mark.shared_data
def test_dicom_seg_opens_on_its_ct_and_on_its_own_grid(make_napari_viewer, shared_data, notes):
    from napari_plugin._geometry import same_world_grid

    root = shared_data / "dicom_seg" / "dcmqi"
    viewer = make_napari_viewer()
    (ct,) = viewer.open(str(root / "ct-3slice"), plugin="medseg")
    (liver,) = viewer.open(str(root / "liver.dcm"), plugin="medseg")
    assert liver.name == "liver Liver" and layer_info(liver).role == "labels"
    assert same_world_grid(layer_info(liver).geometry, layer_info(ct).geometry)
    np.testing.assert_array_equal(_volume(liver), _nrrd(root / "liver_seg.nrrd"))
    assert layer_info(liver).label_set.names == ("background", "Liver")
    # Overlapping segments: one label layer per map, each equal to dcmqi's NRRD.
    maps = viewer.open(str(root / "partial_overlaps.dcm"), plugin="medseg")
    assert len(maps) == 3 and maps[0].name.startswith("partial_overlaps GREEN")
    for layer, nrrd in zip(maps, ("partial_overlaps-1.nrrd", "partial_overlaps-2.nrrd", "partial_overlaps-3.nrrd")):
        np.testing.assert_array_equal(_volume(layer), _nrrd(root / nrrd))
    assert any("overlapping segments were split" in message for _, message in notes)
    # Without its CT: the SEG's own grid, placed where the CT would put it.
    alone = make_napari_viewer()
    (own,) = alone.open(str(root / "liver.dcm"), plugin="medseg")
    assert any("read on the SEG's own grid" in message for _, message in notes)
    truth = _nrrd(root / "liver_seg.nrrd")
    for ijk in np.argwhere(truth)[::5000]:
        world = ct.data_to_world(layer_info(ct).geometry.layer_index(ijk.astype(float)))
        assert own.data[tuple(np.round(own.world_to_data(world)).astype(int))] == 1


def test_labels_saved_as_dicom_seg_reopen_equal_and_need_a_dicom_series(make_napari_viewer, tmp_path, notes):
    from medseg.io._dicom_seg import read_seg
    from napari_plugin._edits import apply_labels_edit
    from napari_plugin._writer_dicom import write_dicom_seg

    viewer = make_napari_viewer()
    viewer.open(str(PHANTOM / "ct_dicom"), plugin="medseg")
    (organs,) = viewer.open(str(PHANTOM / "organs.nii.gz"), plugin="medseg")  # NIfTI labels over the DICOM series
    (lesions,) = viewer.open(str(PHANTOM / "lesions.nii.gz"), plugin="medseg")
    apply_labels_edit(organs, np.nonzero(organs.data == 2), 0)  # a correction: no spleen
    viewer.layers.selection.active = organs
    saved = viewer.layers.save(str(tmp_path / "seg.dcm"), selected=True, plugin="medseg")
    assert saved == [str(tmp_path / "seg.dcm")]
    result = read_seg(tmp_path / "seg.dcm", PHANTOM / "ct_dicom")
    assert result.segments[0].algorithm_type == "MANUAL"  # labels from a file, no model: drawn by a person
    second = make_napari_viewer()
    second.open(str(PHANTOM / "ct_dicom"), plugin="medseg")
    back = second.open(str(tmp_path / "seg.dcm"), plugin="medseg")
    labels_back, lesions_back = back[0], back[-1]
    assert layer_info(lesions_back).role == "lesions"
    np.testing.assert_array_equal(labels_back.data, organs.data)
    assert not np.any(labels_back.data == 2)
    np.testing.assert_array_equal(lesions_back.data, lesions.data)
    # Labels on no DICOM series: one notification, nothing written.
    alone = make_napari_viewer()
    (nifti,) = alone.open(str(PHANTOM / "organs.nii.gz"), plugin="medseg")
    data, meta, _ = nifti.as_layer_data_tuple()
    assert write_dicom_seg(str(tmp_path / "other.dcm"), data, meta, layers=list(alone.layers)) == []
    assert notes[-1][1].startswith("organs: was not made on a DICOM series") and not (tmp_path / "other.dcm").exists()


def test_rtstruct_opens_with_its_ct_labels_lesions_and_contours(make_napari_viewer, tmp_path, notes):
    from medseg.export.rtstruct import write_rtstruct
    from medseg.io import load_volume
    from medseg.labels import DEFAULT_ORGANS

    study = tmp_path / "study"
    shutil.copytree(PHANTOM / "ct_dicom", study)
    ct = load_volume(study)
    organs = load_volume(PHANTOM / "organs.nii.gz").array.astype(np.uint8)
    lesion_ids = load_volume(PHANTOM / "lesions.nii.gz").array.astype(np.uint16)
    labels = organs.copy()
    labels[lesion_ids > 0] = 11
    write_rtstruct(ct.with_array(labels, label_set=DEFAULT_ORGANS.extended(["lesion"])), tmp_path / "rs.dcm", image=ct,
                   lesions=ct.with_array(lesion_ids))
    shutil.move(tmp_path / "rs.dcm", study / "rs.dcm")  # as a planning system exports it: beside its CT
    viewer = make_napari_viewer()
    layers = viewer.open(str(study / "rs.dcm"), plugin="medseg")
    assert [layer.name for layer in layers] == ["rs CT", "rs labels", "rs lesions", "rs contours"]
    image, labels_layer, lesions_layer, contours = layers
    np.testing.assert_array_equal(_volume(labels_layer), labels)
    np.testing.assert_array_equal(_volume(lesions_layer), lesion_ids)
    assert layer_info(labels_layer).label_set.name_of(1) == "liver"
    assert len(contours.data) > 100 and set(contours.features["roi"]) >= {"liver", "spleen"}
    # Every contour lies on one slice of the CT, and its vertices where the CT's voxels are in the patient.
    geometry = layer_info(image).geometry
    for polygon in contours.data[::50]:
        k = geometry.volume_index(polygon)[:, 2]
        assert np.ptp(k) == 0 and float(k[0]).is_integer()
    np.testing.assert_allclose(contours.data_to_world(contours.data[0][0]), image.data_to_world(contours.data[0][0]))
    assert not [m for s, m in notes if "error" in s.lower()]
