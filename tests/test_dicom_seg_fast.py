"""DICOM SEG export and import without highdicom's per-frame work, checked against highdicom itself.

medseg encodes a SEG's per-frame functional groups and pixels directly (``medseg.export._seg_frames``)
and reads them directly (``medseg.io._dicom_seg_frames``); highdicom builds and reads everything
else. These tests run both ways on the same input and require the same result: byte for byte for
the per-frame functional groups and the pixel data (every other element equal but for the values
that are new on every export: UIDs, dates), the same maps, segments and counts on import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

import medseg.export._seg_build as seg_build
import medseg.io._dicom_seg_frames as seg_frames
from medseg.export.dicom_seg import export_seg
from medseg.io import load_volume
from medseg.io._dicom_seg import read_seg
from medseg.io._dicom_write import write_dicom_series
from medseg.labels import DEFAULT_ORGANS, LabelSet

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"
CT = PHANTOM / "ct_dicom"
#: Values highdicom makes new on every call (and in the file meta the SOP instance UID and its length).
VOLATILE = {"SOPInstanceUID", "MediaStorageSOPInstanceUID", "FileMetaInformationGroupLength", "DimensionOrganizationUID", "ContentDate",
            "ContentTime", "ContributionDateTime", "InstanceCreationDate", "InstanceCreationTime",
            "SeriesDate", "SeriesTime"}


@pytest.fixture(scope="module")
def phantom():
    organs = load_volume(PHANTOM / "organs.nii.gz")
    lesions = load_volume(PHANTOM / "lesions.nii.gz")
    array = np.asfortranarray(organs.array.copy())
    array[lesions.array > 0] = 11
    labels = organs.with_array(array, label_set=DEFAULT_ORGANS.extended(["lesion"]))
    return organs, lesions, labels


@pytest.fixture(scope="module")
def small_series(tmp_path_factory):
    """A 13x11x6 CT series: frames of 143 pixels (not a multiple of 8) and 300 segments (16-bit)."""
    from medseg.volume import Volume

    affine = np.array([[-0.8, 0, 0, 40.0], [0, -0.8, 0, 30.0], [0, 0, 2.5, -10.0], [0, 0, 0, 1]])
    ct = Volume(np.zeros((13, 11, 6), np.int16), affine, "CT")
    folder = tmp_path_factory.mktemp("small") / "ct"
    write_dicom_series(ct, folder, uid_seed="small series")
    grid = load_volume(folder)
    values = (np.arange(grid.array.size).reshape(grid.shape, order="F") % 301).astype(np.uint16)
    values[:, :, 0] = 0  # an empty first slice: left out of the frames and the position index
    values[5, 5, 3] = 0
    labels = grid.with_array(values, label_set=LabelSet({0: "background", **{v: f"class {v}" for v in range(1, 301)}}))
    return folder, labels


def _strip(dataset):
    for element in list(dataset):
        if element.keyword in VOLATILE:
            del dataset[element.tag]
        elif element.VR == "SQ":
            for item in element.value:
                _strip(item)
    return dataset


def _both(monkeypatch, tmp_path, labels, source, **options):
    """The same export through medseg's frame encoder and through highdicom alone."""
    fast = export_seg(labels, source, tmp_path / "fast.dcm", compression="none", **options)
    with monkeypatch.context() as patch:
        patch.setattr(seg_build, "_slice_datasets", lambda src: None)  # no fast path: highdicom builds it all
        reference = export_seg(labels, source, tmp_path / "highdicom.dcm", compression="none", **options)
    return pydicom.dcmread(fast.path), pydicom.dcmread(reference.path)


def _assert_identical(fast, reference):
    assert fast.get_item(0x52009230).value == reference.get_item(0x52009230).value  # encoded bytes
    size = -(-int(fast.NumberOfFrames) * int(fast.Rows) * int(fast.Columns) * int(fast.BitsAllocated) // 8)
    assert fast.PixelData[:size] == reference.PixelData[:size]
    # An odd length is padded with a NULL byte (PS3.5 7.1.1); highdicom 0.28 pads with "0" (0x30).
    assert fast.PixelData[size:] == (b"\0" if size % 2 else b"")
    assert int(fast.NumberOfFrames) == int(reference.NumberOfFrames)
    for dataset in (fast, reference):
        del dataset[0x52009230], dataset.PixelData
    assert _strip(fast) == _strip(reference)
    assert _strip(fast.file_meta) == _strip(reference.file_meta)


@pytest.mark.parametrize("case", ["binary", "labelmap", "overlap", "rle", "one segment"])
def test_export_is_highdicom_byte_for_byte(phantom, monkeypatch, tmp_path, case):
    organs, lesions, labels = phantom
    options = {"lesions": lesions, "algorithm": "test:1"}
    if case in ("labelmap", "rle"):
        options["segmentation_type"] = "LABELMAP"
    if case == "overlap":  # lesions drawn over the organs: overlapping segments, the lesions as voxel indices
        labels = organs
    if case == "one segment":
        labels, options = organs.with_array((organs.array == 1).astype(np.uint8),
                                            label_set=LabelSet({0: "background", 1: "liver"})), {}
    if case == "rle":
        options["compression"] = "rle"
        fast = export_seg(labels, CT, tmp_path / "fast.dcm", **options)
        with monkeypatch.context() as patch:
            patch.setattr(seg_build, "_slice_datasets", lambda src: None)
            reference = export_seg(labels, CT, tmp_path / "highdicom.dcm", **options)
        fast, reference = pydicom.dcmread(fast.path), pydicom.dcmread(reference.path)
    else:
        fast, reference = _both(monkeypatch, tmp_path, labels, CT, **options)
    assert (fast.SegmentsOverlap == "YES") == (case == "overlap")
    _assert_identical(fast, reference)


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_export_of_odd_frames_and_16_bit_labels_is_highdicom_byte_for_byte(small_series, monkeypatch, tmp_path, kind):
    folder, labels = small_series
    fast, reference = _both(monkeypatch, tmp_path, labels, folder, segmentation_type=kind)
    assert int(fast.BitsAllocated) == (1 if kind == "BINARY" else 16)
    _assert_identical(fast, reference)


def _imports(monkeypatch, path, source, **options):
    assert seg_frames.read_frames(path) is not None  # the direct reader takes this SEG
    fast = read_seg(path, source, **options)
    with monkeypatch.context() as patch:
        patch.setattr(seg_frames, "read_frames", lambda path: None)  # highdicom reads it
        reference = read_seg(path, source, **options)
    return fast, reference


def _assert_same_import(fast, reference):
    assert len(fast.maps) == len(reference.maps)
    for ours, theirs in zip(fast.maps, reference.maps):
        np.testing.assert_array_equal(ours.array, theirs.array)
        assert ours.label_set == theirs.label_set and ours.same_grid(theirs)
    if reference.lesions is None:
        assert fast.lesions is None
    else:
        np.testing.assert_array_equal(fast.lesions.array, reference.lesions.array)
    assert fast.segments == reference.segments  # labels, codes, tracking, voxel counts
    assert (fast.segmentation_type, fast.referenced_series_uids) == \
        (reference.segmentation_type, reference.referenced_series_uids)


@pytest.mark.parametrize("kind, compression", [("BINARY", "deflate"), ("BINARY", "none"), ("LABELMAP", "deflate")])
def test_import_reads_what_highdicom_reads(phantom, monkeypatch, tmp_path, kind, compression):
    _, lesions, labels = phantom
    export = export_seg(labels, CT, tmp_path / "s.dcm", lesions=lesions, segmentation_type=kind,
                        compression=compression)
    fast, reference = _imports(monkeypatch, export.path, CT)
    _assert_same_import(fast, reference)
    np.testing.assert_array_equal(fast.labels.array, labels.array)
    np.testing.assert_array_equal(fast.lesions.array, lesions.array)


def test_import_of_overlapping_segments_splits_like_highdicom(phantom, monkeypatch, tmp_path):
    organs, lesions, _ = phantom
    export = export_seg(organs, CT, tmp_path / "o.dcm", lesions=lesions)
    fast, reference = _imports(monkeypatch, export.path, CT)
    _assert_same_import(fast, reference)
    np.testing.assert_array_equal(fast.labels.array, organs.array)


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_import_of_odd_frames_and_16_bit_labels(small_series, monkeypatch, tmp_path, kind):
    folder, labels = small_series
    export = export_seg(labels, folder, tmp_path / "s.dcm", segmentation_type=kind)
    fast, reference = _imports(monkeypatch, export.path, folder)
    _assert_same_import(fast, reference)
    np.testing.assert_array_equal(fast.labels.array, labels.array)


@pytest.mark.shared_data
@pytest.mark.parametrize("name, source, options", [
    ("dcmqi/liver.dcm", "dcmqi/ct-3slice", {}),
    ("dcmqi/partial_overlaps.dcm", "dcmqi/ct-3slice", {"split_overlapping": True}),
    ("dcmqi/sparse-labelmap-noppv.dcm", "dcmqi/24x38x3/image", {}),
    ("dcmqi/sparse-labelmap-ppv5.dcm", "dcmqi/24x38x3/image", {}),
    ("highdicom/seg_image_ct_binary.dcm", "highdicom/referenced_CT2_from_pydicom", {"allow_gaps": True}),
    ("highdicom/seg_image_ct_binary_overlap.dcm", "highdicom/referenced_CT2_from_pydicom",
     {"allow_gaps": True, "split_overlapping": True}),
    ("highdicom/seg_image_ct_binary_single_frame.dcm", "highdicom/ct_image.dcm", {}),
])
def test_real_segs_read_directly_as_highdicom_reads_them(shared_data, monkeypatch, name, source, options):
    """dcmqi's (explicit VR, undefined lengths) and highdicom's (implicit VR) SEGs, gaps, overlaps."""
    root = shared_data / "dicom_seg"
    fast, reference = _imports(monkeypatch, root / name, root / source, **options)
    _assert_same_import(fast, reference)


@pytest.mark.shared_data
def test_fractional_segs_are_left_to_highdicom(shared_data):
    assert seg_frames.read_frames(shared_data / "dicom_seg" / "highdicom" / "seg_image_ct_true_fractional.dcm") is None


def test_a_seg_built_without_a_file_holds_its_frames(phantom, tmp_path):
    """``export_seg(..., path=None)``: the data set is the whole SEG; pydicom saves it, medseg reads it."""
    _, lesions, labels = phantom
    built = export_seg(labels, CT, None, lesions=lesions)
    dataset = built.dataset
    assert built.path is None and len(dataset.PerFrameFunctionalGroupsSequence) == int(dataset.NumberOfFrames)
    dataset.save_as(tmp_path / "saved.dcm", enforce_file_format=True)
    back = read_seg(tmp_path / "saved.dcm", CT)
    np.testing.assert_array_equal(back.labels.array, labels.array)
    np.testing.assert_array_equal(back.lesions.array, lesions.array)


@pytest.mark.parametrize("compression, keep", [("none", 0.6), ("none", 0.999), ("deflate", 0.5)])
def test_a_cut_short_seg_is_one_clear_error(phantom, tmp_path, compression, keep):
    from medseg.errors import InputError

    _, lesions, labels = phantom
    export = export_seg(labels, CT, tmp_path / "whole.dcm", lesions=lesions, compression=compression)
    data = export.path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(InputError, match=r"cut.dcm: cannot be read as a DICOM SEG"):
        read_seg(tmp_path / "cut.dcm", CT)
