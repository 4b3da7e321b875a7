"""DICOM SEG on real scanner data from ../shared/data.

* Import: the SEGs that dcmqi and highdicom ship (BINARY, overlapping, FRACTIONAL, LABELMAP)
  come back on their source series' grid with the voxel counts of the NRRD label maps shipped
  with them (read by SimpleITK) or of highdicom's own reading.
* Export: TotalSegmentator's JPEG 2000 CT series with its label map, and uncompressed series
  (GE CT, Philips MR), round trip exactly, also with the source files shuffled on disk; dcmqi's
  segimage2itkimage reads our SEG to the same voxels and geometry; dciodvfy finds no error.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import InputError
from medseg.export.dicom_seg import export_seg
from medseg.io import load_volume, save_volume
from medseg.io._dicom_seg import read_seg, read_series_header
from medseg.labels import LabelSet

pytestmark = pytest.mark.shared_data
BIN = Path(sys.executable).parent


def _nrrd(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0), image  # (z, y, x) -> (i, j, k)


def _counts(array: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(array, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts) if v}


def _tool(name: str) -> Path:
    # The dev extra installs dcmqi: a missing tool is a broken environment, not an absence.
    assert (BIN / name).exists(), f"{name} is not installed: pip install -e .[dev]"
    return BIN / name


# --- import: the real SEGs ---------------------------------------------------------------------
def test_dcmqi_liver_equals_its_nrrd_on_the_ct_grid(shared_data):
    root = shared_data / "dicom_seg" / "dcmqi"
    result = read_seg(root / "liver.dcm", root / "ct-3slice")
    truth, image = _nrrd(root / "liver_seg.nrrd")
    np.testing.assert_array_equal(result.labels.array, truth)
    assert _counts(result.labels.array) == {1: 107098}
    assert result.labels.label_set.names == ("background", "Liver")
    assert result.segments[0].type[2] == "Liver"
    np.testing.assert_allclose(result.labels.origin_lps, image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(result.labels.spacing, image.GetSpacing(), atol=1e-5)


def test_dcmqi_overlapping_segments_refused_then_split_like_the_nrrds(shared_data):
    root = shared_data / "dicom_seg" / "dcmqi"
    with pytest.raises(InputError, match=r"segments 1 'GREEN' and 2 'ORANGE' overlap.*split_overlapping"):
        read_seg(root / "partial_overlaps.dcm", root / "ct-3slice")
    result = read_seg(root / "partial_overlaps.dcm", root / "ct-3slice", split_overlapping=True)
    assert [s.voxels for s in result.segments] == [9602, 11888, 10743, 6693, 4713]
    for volume, nrrd in zip(result.maps, ("partial_overlaps-1.nrrd", "partial_overlaps-2.nrrd",
                                          "partial_overlaps-3.nrrd")):
        np.testing.assert_array_equal(volume.array, _nrrd(root / nrrd)[0])
    assert result.maps[0].label_set.names == ("background", "GREEN", "LIGHT_BLUE", "DARK_BLUE")


@pytest.mark.parametrize("name, nrrd", [("sparse-labelmap-noppv.dcm", "sparse_labelmap_noppv_seg.nrrd"),
                                        ("sparse-labelmap-ppv5.dcm", "sparse_labelmap_ppv5_seg.nrrd")])
def test_labelmap_iod_on_its_three_slice_grid(shared_data, name, nrrd):
    """The LABELMAP SEGs reference 2 of 3 images; padding value 5 is background, not a segment."""
    root = shared_data / "dicom_seg" / "dcmqi"
    result = read_seg(root / name, root / "24x38x3" / "image")
    truth, _ = _nrrd(root / nrrd)
    assert result.segmentation_type == "LABELMAP" and result.labels.shape == truth.shape == (24, 38, 3)
    assert _counts(result.labels.array) == {1: 630} and int((truth == 1).sum()) == 630
    np.testing.assert_array_equal(result.labels.array == 1, truth == 1)


@pytest.mark.parametrize("name, source", [
    ("seg_image_ct_binary.dcm", "referenced_CT2_from_pydicom"),
    ("seg_image_ct_binary_overlap.dcm", "referenced_CT2_from_pydicom"),
    ("seg_image_ct_binary_fractional.dcm", "referenced_CT2_from_pydicom"),
    ("seg_image_ct_true_fractional.dcm", "referenced_CT2_from_pydicom"),
    ("seg_image_ct_binary_single_frame.dcm", "ct_image.dcm"),
])
def test_highdicom_examples_match_highdicom_by_source_instance(shared_data, name, source):
    """The CT2 series has a 202 mm gap (read with allow_gaps): each slice keeps its own place."""
    root = shared_data / "dicom_seg" / "highdicom"
    seg = hd.seg.segread(root / name)
    grid = load_volume(root / source, allow_gaps=True, allow_2d=True)
    uids = [u for u in grid.source.sop_instance_uids if u]
    theirs = seg.get_pixels_by_source_instance(uids, ignore_spatial_locations=True,
                                               assert_missing_frames_are_empty=True)
    split = "overlap" in name
    if split:
        with pytest.raises(InputError, match="overlap"):
            read_seg(root / name, root / source, allow_gaps=True)
    result = read_seg(root / name, root / source, allow_gaps=True, split_overlapping=split)
    assert [s.voxels for s in result.segments] == [int((theirs[..., i] >= 0.5).sum())
                                                   for i in range(theirs.shape[-1])]
    ks = [k for k, u in enumerate(grid.source.sop_instance_uids) if u]
    for n, volume in enumerate(result.maps):
        np.testing.assert_array_equal(volume.array[:, :, ks] > 0, (theirs[..., n] >= 0.5).transpose(2, 1, 0))
        assert volume.same_grid(grid)
    if "true_fractional" in name:
        assert any("FRACTIONAL" in w for w in result.warnings)


def test_a_seg_of_another_series_is_refused(shared_data):
    root = shared_data / "dicom_seg" / "dcmqi"
    with pytest.raises(InputError, match=r"liver.dcm: references series .* not the series in .*24x38x3"):
        read_seg(root / "liver.dcm", root / "24x38x3" / "image")


# --- export: real series, both ways ----------------------------------------------------------
@pytest.fixture(scope="module")
def ts_labels(shared_data):
    """TotalSegmentator's label map of its JPEG 2000 series, named with the 117 'total' classes."""
    root = shared_data / "totalsegmentator"
    labels = load_volume(root / "example_seg_dicom.nii.gz")
    names = json.loads((shared_data / "train" / "labels_only" / "totalseg_total_classes.json").read_text())
    return labels.with_labels(LabelSet({int(v): names[str(int(v))] for v in np.unique(labels.array)}))


@pytest.fixture(scope="module")
def shuffled_ts(shared_data, tmp_path_factory):
    """The same 20 files under new names in a scrambled order."""
    folder = tmp_path_factory.mktemp("shuffled")
    files = sorted((shared_data / "totalsegmentator" / "example_ct_dicom").iterdir())
    names = [f"im{i:03d}" for i in range(len(files))]
    random.Random(3).shuffle(names)
    for file, name in zip(files, names):
        shutil.copy(file, folder / name)
    return folder


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_jpeg2000_totalsegmentator_round_trip_also_shuffled(shared_data, ts_labels, shuffled_ts, tmp_path, kind):
    source = shared_data / "totalsegmentator" / "example_ct_dicom"
    ct_grid = read_series_header(source)  # load_volume's grid, without decoding the JPEG 2000 pixels
    expected = ts_labels.reoriented(ct_grid.orientation)  # stored LAS, the series is LPS: same voxels
    assert expected.same_grid(ct_grid)
    exports = [export_seg(ts_labels, folder, tmp_path / f"{i}.dcm", segmentation_type=kind,
                          algorithm="TotalSegmentator:2.4") for i, folder in enumerate((source, shuffled_ts))]
    for export, folder in zip(exports, (shuffled_ts, source)):  # written from one copy, read with the other
        back = read_seg(export.path, folder)
        assert back.labels.same_grid(ct_grid)
        np.testing.assert_array_equal(back.labels.array, expected.array)
        assert back.labels.label_set == ts_labels.label_set
    assert any("no SeriesInstanceUID" in w for w in exports[0].warnings)
    segments = {s.label: s for s in back.segments}
    assert segments["liver"].type == ("10200004", "SCT", "Liver")
    assert segments["humerus_left"].modifier == ("7771000", "SCT", "Left")
    assert segments["rib_right_7"].type == ("24915002", "SCT", "Seventh rib")
    assert segments["liver"].algorithm_name == "TotalSegmentator" and segments["liver"].algorithm_type == "AUTOMATIC"


def test_dcmqi_reads_the_jpeg2000_export_like_medseg_nifti(shared_data, ts_labels, tmp_path):
    source = shared_data / "totalsegmentator" / "example_ct_dicom"
    export = export_seg(ts_labels, source, tmp_path / "seg.dcm")
    ours = read_seg(export.path, source).labels
    save_volume(ours, tmp_path / "ours.nii.gz")
    run = subprocess.run([_tool("segimage2itkimage"), "--inputDICOM", str(export.path), "--outputDirectory",
                          str(tmp_path), "-t", "nifti", "--mergeSegments"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = nib.load(tmp_path / "1.nii.gz")
    reference = nib.load(tmp_path / "ours.nii.gz")
    # dcmqi writes the slab its frames cover: same axes and spacing, origin on one of our voxels.
    np.testing.assert_allclose(theirs.affine[:3, :3], reference.affine[:3, :3], atol=1e-4)
    offset = np.linalg.solve(reference.affine[:3, :3], theirs.affine[:3, 3] - reference.affine[:3, 3])
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-3)
    box = tuple(slice(round(o), round(o) + n) for o, n in zip(offset, theirs.shape))
    number_of = {s.value: s.number for s in export.segments}
    lut = np.zeros(max(number_of) + 1, np.int16)
    lut[list(number_of)] = list(number_of.values())
    np.testing.assert_array_equal(np.asarray(theirs.dataobj), lut[np.asarray(reference.dataobj)][box])


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_dciodvfy_no_errors_on_the_real_jpeg2000_series(shared_data, ts_labels, tmp_path, kind):
    export = export_seg(ts_labels, shared_data / "totalsegmentator" / "example_ct_dicom", tmp_path / "v.dcm",
                        segmentation_type=kind, compression="none")
    run = subprocess.run([_tool("dciodvfy"), str(export.path)], capture_output=True, text=True, timeout=120, check=False)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert "Segmentation" in run.stdout + run.stderr and errors == []


def test_uncompressed_ge_ct_round_trip_with_dcmqi_labels(shared_data, tmp_path):
    """dcmqi's liver+spine label map on its own uncompressed 3-slice CT."""
    root = shared_data / "dicom_seg" / "dcmqi"
    grid = load_volume(root / "ct-3slice")
    array, _ = _nrrd(root / "liver_spine_seg.nrrd")
    labels = grid.with_array(array.astype(np.uint8), label_set=LabelSet({0: "background", 1: "liver", 2: "spine"}))
    export = export_seg(labels, root / "ct-3slice", tmp_path / "seg.dcm", segmentation_type="LABELMAP")
    back = read_seg(export.path, root / "ct-3slice")
    np.testing.assert_array_equal(back.labels.array, array)
    assert back.labels.label_set == labels.label_set


def test_uncompressed_philips_mr_needs_its_series_and_round_trips(shared_data, tmp_path):
    """One folder, four volumes (magnitude/phase x 2 echoes) under one UID: choose with series."""
    folder = shared_data / "dicom_with_reference" / "dcm_qa_table_philips" / "In" / "Ph" / "1301_Dual-echo_iso"
    image = load_volume(folder, series=0)
    labels = image.with_array(np.digitize(image.array, np.percentile(image.array, [60, 85, 97])).astype(np.uint8),
                              label_set=LabelSet({0: "background", 1: "muscle", 2: "fat", 3: "bone"}))
    with pytest.raises(InputError, match="series"):
        export_seg(labels, folder, tmp_path / "seg.dcm")
    export = export_seg(labels, folder, tmp_path / "seg.dcm", series=0)
    back = read_seg(export.path, folder, series=0)
    np.testing.assert_array_equal(back.labels.array, labels.array)
    with pytest.raises(InputError, match="references"):
        read_seg(export.path, folder, series=2)


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_enhanced_multiframe_source_pairs_frames_by_position(shared_data, tmp_path, kind):
    """One Enhanced CT file whose frames are stored in reverse slice order (frame 2 is k = 0)."""
    source = shared_data / "dicom_compressed" / "pydicom-data" / "eCT_Supplemental.dcm"
    grid = read_series_header(source)
    assert grid.source.extra["frame_numbers"] == [2, 1]
    array = np.zeros(grid.shape, np.uint8)
    array[100:200, 150:300, :] = 1
    array[300:320, 300:350, 1] = 2
    labels = grid.with_array(array, label_set=LabelSet({0: "background", 1: "liver", 2: "spleen"}))
    back = read_seg(export_seg(labels, source, tmp_path / "s.dcm", segmentation_type=kind).path, source)
    np.testing.assert_array_equal(back.labels.array, array)
    single = read_seg(tmp_path / "s.dcm")  # its own grid: the same two slices
    assert single.labels.same_grid(grid)
