"""RTSTRUCT round trips on real CT series from ../shared/data.

* ``dicom_seg/dcmqi/ct-3slice``: GE CT, uncompressed, 512 x 512 x 3, with dcmqi's liver, spine
  and heart masks (NRRD) on exactly that grid;
* ``totalsegmentator/example_ct_dicom``: Siemens CT, JPEG 2000 lossless, 512 x 512 x 20, whose
  study, series and instance UIDs are empty in the data set, with TotalSegmentator's 31-class
  label map of it (stored with the row axis flipped).

Mask -> RTSTRUCT -> mask must give Dice >= 0.98 per object and volumes within 2 % (objects over
1 mL), vertices on their slices within 1e-3 mm, and no dciodvfy error.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_rtstruct import dciodvfy_errors, dice, vertex_plane_distances

from medseg.export.rtstruct import write_rtstruct
from medseg.io import load_volume
from medseg.io._rtstruct import read_rtstruct
from medseg.labels import LabelSet

pytestmark = pytest.mark.shared_data


def _round_trip(labels, ct, folder, tmp_path, **options):
    path = tmp_path / "rs.dcm"
    exported = write_rtstruct(labels, path, image=ct, **options)
    imported = read_rtstruct(path, folder)
    names = imported.labels.label_set
    ml = ct.voxel_volume_ml
    checked = 0
    for lab in labels.label_set.foreground:
        truth = labels.array == lab.value
        if not truth.any():
            continue
        got = imported.labels.array == names.value_of(lab.name)
        assert dice(got, truth) >= 0.98, lab.name
        if truth.sum() * ml > 1.0:
            assert abs(got.sum() / truth.sum() - 1) <= 0.02, lab.name
        checked += 1
    return path, exported, imported, checked


def test_uncompressed_ge_ct_round_trip(shared_data, tmp_path):
    folder = shared_data / "dicom_seg" / "dcmqi" / "ct-3slice"
    ct = load_volume(folder)
    labels = np.zeros(ct.shape, np.uint8)
    for value, name in ((1, "liver"), (2, "spine"), (3, "heart")):
        mask = load_volume(shared_data / "dicom_seg" / "dcmqi" / f"{name}_seg.nrrd")
        assert mask.same_grid(ct)
        labels[mask.array > 0] = value
    labels = ct.with_array(labels, label_set=LabelSet({0: "background", 1: "liver", 2: "spine", 3: "heart"}))
    path, exported, imported, checked = _round_trip(labels, ct, folder, tmp_path)
    assert checked == 3 and imported.warnings == [] and exported.warnings == []
    # dcmqi's masks (107098, 12439, 41449 voxels) overlap a little; the heart is painted last.
    assert [r["voxels"] for r in exported.rois] == [106576, 12439, 41449]
    assert np.array_equal(imported.labels.array == imported.labels.label_set.value_of("heart"), labels.array == 3)
    assert vertex_plane_distances(path, folder).max() <= 1e-3
    assert dciodvfy_errors(path) == []


@pytest.mark.filterwarnings("ignore:.*FileDataset.is_:DeprecationWarning")  # rt-utils' own pydicom calls
def test_uncompressed_ge_ct_rtstruct_from_rt_utils(shared_data, tmp_path):
    from rt_utils import RTStructBuilder

    folder = shared_data / "dicom_seg" / "dcmqi" / "ct-3slice"
    liver = load_volume(shared_data / "dicom_seg" / "dcmqi" / "liver_seg.nrrd").array > 0
    builder = RTStructBuilder.create_new(str(folder))
    builder.add_roi(mask=liver.transpose(1, 0, 2), name="Liver")
    builder.save(str(tmp_path / "rt_utils.dcm"))
    imported = read_rtstruct(tmp_path / "rt_utils.dcm", folder)
    assert np.array_equal(imported.labels.array == 1, liver)  # "Liver" -> liver, value 1; every voxel back


@pytest.mark.slow
def test_compressed_siemens_ct_round_trip(shared_data, tmp_path):
    folder = shared_data / "totalsegmentator" / "example_ct_dicom"
    ct = load_volume(folder)
    seg = load_volume(shared_data / "totalsegmentator" / "example_seg_dicom.nii.gz")
    seg = seg.reoriented(ct.orientation)  # stored with the row axis flipped; same voxels
    assert seg.same_grid(ct)
    names = json.loads((shared_data / "train" / "labels_only" / "totalseg_total_classes.json").read_text())
    present = [int(v) for v in np.unique(seg.array) if v]
    label_set = LabelSet({0: "background", **{v: names[str(v)] for v in present}})
    labels = ct.with_array(seg.array.astype(np.uint8), label_set=label_set)
    path, exported, imported, checked = _round_trip(labels, ct, folder, tmp_path)
    assert checked == 31
    # The series has no study/series UIDs in its data sets: said, and the images still referenced.
    assert any("no SeriesInstanceUID" in w for w in exported.warnings)
    assert any("no StudyInstanceUID" in w for w in exported.warnings)
    assert vertex_plane_distances(path, folder).max() <= 1e-3
    assert dciodvfy_errors(path) == []
    # Every class comes back voxel for voxel, under its own name.
    for lab in label_set.foreground:
        back = imported.labels.array == imported.labels.label_set.value_of(lab.name)
        assert np.array_equal(back, labels.array == lab.value), lab.name


def test_enhanced_multiframe_ct_references_its_frames(shared_data, tmp_path):
    import pydicom

    path = shared_data / "dicom_compressed" / "pydicom-data" / "eCT_Supplemental.dcm"
    ct = load_volume(path)
    labels = np.zeros(ct.shape, np.uint8)
    labels[100:300, 150:260, :] = 1
    labels[200:220, 180:200, 1] = 0  # a hole on the second frame
    labels = ct.with_array(labels, label_set=LabelSet({0: "background", 1: "liver"}))
    write_rtstruct(labels, tmp_path / "rs.dcm", image=ct)
    frames = [int(c.ContourImageSequence[0].ReferencedFrameNumber)
              for c in pydicom.dcmread(tmp_path / "rs.dcm").ROIContourSequence[0].ContourSequence]
    # Frame 2 is the lower slice (k = 0): one contour; frame 1 (k = 1) has the outline and the hole.
    assert sorted(frames) == [1, 1, 2]
    assert dciodvfy_errors(tmp_path / "rs.dcm") == []
    assert np.array_equal(read_rtstruct(tmp_path / "rs.dcm", path).labels.array, labels.array)
