"""Classic CT series against SimpleITK, compressed transfer syntaxes, gaps and gantry tilt.

Real data: ``totalsegmentator/example_ct_dicom`` (JPEG 2000, empty UIDs), ``dicom_seg``'s CT
slices, ``dicom_compressed``. Modified copies (tilt, shuffled names) are made in ``tmp_path``.
Tests whose check does not depend on a particular scanner also run on the shipped phantom series
and on a generated copy of the three-slice layout (``generated_ct3``); the generated counterparts
of the others are in ``test_generated_dicom.py`` and ``test_generated_dicom_series.py``.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import SAMPLE, assert_native_read_equals_pydicom, sitk_series

from medseg.errors import CancelledError, InputError
from medseg.io import load_volume, scan
from medseg.progress import CancelToken

EXAMPLE_CT = "totalsegmentator/example_ct_dicom"
CT3 = "dicom_seg/dcmqi/ct-3slice"
CT2_GAP = "dicom_seg/highdicom/referenced_CT2_from_pydicom"
COMPRESSED = "dicom_compressed"


def sitk_array(image: sitk.Image) -> np.ndarray:
    """SimpleITK's (z, y, x) array in medseg's (i, j, k) order."""
    array = sitk.GetArrayFromImage(image)
    return array.transpose(2, 1, 0) if array.ndim == 3 else array.T[..., None]


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.shared_data), "generated"])
def ct3_folder(request, shared_data, generated_ct3) -> Path:
    """Three CT slices 1 mm apart: the real GE ``ct-3slice`` or its generated counterpart (read only)."""
    return shared_data / CT3 if request.param == "real" else generated_ct3


@pytest.fixture
def classic_series(request, shared_data, generated_ct3) -> Path:
    kind, where = request.param
    if kind == "real":
        return shared_data / where
    return generated_ct3 if kind == "generated" else SAMPLE / where


@pytest.mark.parametrize("classic_series", [
    pytest.param(("real", EXAMPLE_CT), marks=pytest.mark.shared_data, id="example_ct_dicom"),
    pytest.param(("real", CT3), marks=pytest.mark.shared_data, id="ct-3slice"),
    pytest.param(("generated", "ct3"), id="generated_ct3"),
    pytest.param(("phantom", "ct_dicom"), id="phantom_rle"),
], indirect=True)
def test_classic_ct_matches_simpleitk_exactly(classic_series):
    vol = load_volume(classic_series)
    ref = sitk_series(classic_series)
    assert vol.array.dtype == np.int16  # HU stored x1 - 1024 stays int16
    np.testing.assert_array_equal(vol.array, sitk_array(ref))
    np.testing.assert_allclose(vol.origin_lps, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(vol.direction_lps.ravel(), ref.GetDirection(), atol=1e-6)
    assert vol.modality == "CT" and vol.orientation == "LPS"


@pytest.mark.shared_data
def test_example_ct_spacing_from_positions_and_empty_uids(shared_data):
    folder = shared_data / EXAMPLE_CT
    vol = load_volume(folder)
    assert vol.shape == (512, 512, 20)
    first = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    assert float(first.SliceThickness) == 3.0
    np.testing.assert_allclose(vol.spacing, [0.9765625, 0.9765625, 2.0])  # from IPP, not 3 mm
    assert (int(vol.array.min()), int(vol.array.max())) == (-1024, 1839)
    # SeriesInstanceUID/SOPInstanceUID are present but empty: kept as read, SOP UIDs from file meta.
    src = vol.source
    assert src.series_uid == "" and src.study_uid == ""
    assert len(set(src.sop_instance_uids)) == 20 and all(src.sop_instance_uids)
    z = []
    for k, name in enumerate(src.extra["files"]):
        ds = pydicom.dcmread(folder / name, stop_before_pixels=True)
        assert ds.file_meta.MediaStorageSOPInstanceUID == src.sop_instance_uids[k]
        z.append(float(ds.ImagePositionPatient[2]))
        np.testing.assert_allclose(vol.voxel_to_world([0, 0, k]) * [-1, -1, 1], ds.ImagePositionPatient, atol=1e-4)
    assert z == sorted(z)
    assert any("SeriesInstanceUID is empty" in w for w in src.warnings)
    info = scan(folder)
    assert len(info) == 1 and info[0].key.startswith("noUID:")


@pytest.mark.shared_data
def test_source_info_for_dicom_seg(shared_data):
    folder = shared_data / CT3
    vol = load_volume(folder)
    src = vol.source
    headers = [pydicom.dcmread(folder / name, stop_before_pixels=True) for name in src.extra["files"]]
    assert [h.SOPInstanceUID for h in headers] == list(src.sop_instance_uids)
    assert [float(h.ImagePositionPatient[2]) for h in headers] == pytest.approx([-128.69, -127.69, -126.69])
    h = headers[0]
    assert (src.series_uid, src.study_uid, src.frame_of_reference_uid) == (
        h.SeriesInstanceUID, h.StudyInstanceUID, h.FrameOfReferenceUID)
    assert src.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert src.patient_id == h.PatientID and src.manufacturer == "GE MEDICAL SYSTEMS"
    assert src.patient_position == h.PatientPosition and src.series_number == str(h.SeriesNumber)
    assert src.format == "dicom" and Path(src.path) == folder
    assert src.extra["rescale_intercepts"] == [-1024.0]


def test_order_ignores_file_names_and_instance_numbers(ct3_folder, tmp_path):
    original = load_volume(ct3_folder)
    names = sorted(ct3_folder.iterdir())
    numbers = [7, 1, 4]
    random.Random(3).shuffle(numbers)
    for path, fake, number in zip(names, ["z.dcm", "a.dcm", "m.dcm"], numbers):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = number
        ds.save_as(tmp_path / fake)
    again = load_volume(tmp_path)
    np.testing.assert_array_equal(again.array, original.array)
    np.testing.assert_array_equal(again.affine, original.affine)


@pytest.mark.shared_data
def test_missing_slices_refused_then_placed_on_the_grid(shared_data):
    folder = shared_data / CT2_GAP
    with pytest.raises(InputError) as err:
        load_volume(folder)
    message = str(err.value)
    assert "161 missing slice(s)" in message and "202.50 mm" in message
    assert "between slice 0 (position -99.48 mm) and slice 1 (position 103.02 mm)" in message
    assert "allow_gaps=True" in message
    vol = load_volume(folder, allow_gaps=True)
    assert vol.shape == (16, 16, 165)
    np.testing.assert_allclose(vol.spacing, [0.488281, 0.488281, 1.25], atol=1e-5)
    present = [0, 162, 163, 164]
    for k, name in zip(present, sorted(folder.iterdir())):
        ds = pydicom.dcmread(name)
        np.testing.assert_array_equal(vol.array[:, :, k], ds.pixel_array.T.astype(np.int32) - 1024)
        np.testing.assert_allclose(vol.voxel_to_world([0, 0, k]) * [-1, -1, 1], ds.ImagePositionPatient, atol=1e-3)
    lowest = min(int(vol.array[:, :, k].min()) for k in present)
    assert (vol.array[:, :, 1:162] == lowest).all()
    assert vol.source.sop_instance_uids[1] == "" and all(vol.source.sop_instance_uids[k] for k in present)
    assert any("missing slices allowed" in w for w in vol.source.warnings)


def _tilted_copy(shared_data: Path, folder: Path, degrees: float, n_slices: int) -> None:
    """Real CT slices with the image plane tilted about x and InstanceNumber along the normal."""
    t = math.radians(degrees)
    headers = sorted((pydicom.dcmread(p) for p in (shared_data / EXAMPLE_CT).iterdir()),
                     key=lambda ds: float(ds.ImagePositionPatient[2]))[:n_slices]
    folder.mkdir()
    for number, ds in enumerate(headers, 1):
        ds.decompress()
        ds.ImageOrientationPatient = [1, 0, 0, 0, math.cos(t), -math.sin(t)]
        ds.GantryDetectorTilt = degrees
        ds.InstanceNumber = number
        ds.save_as(folder / f"{number:03d}.dcm")


@pytest.mark.shared_data
def test_gantry_tilt_keeps_voxels_and_matches_dcm2niix_correction(shared_data, tmp_path):
    from scipy.ndimage import map_coordinates

    _tilted_copy(shared_data, tmp_path / "in", 15.0, 8)
    vol = load_volume(tmp_path / "in")
    # Exact geometry: voxel (0, 0, k) is every slice's ImagePositionPatient; nothing resampled.
    for k in range(8):
        ds = pydicom.dcmread(tmp_path / "in" / f"{k + 1:03d}.dcm")
        np.testing.assert_allclose(vol.voxel_to_world([0, 0, k]) * [-1, -1, 1], ds.ImagePositionPatient, atol=1e-4)
        np.testing.assert_array_equal(vol.array[:, :, k], ds.pixel_array.T.astype(np.int32) - 1024)
    assert vol.source.extra["shear_deg"] == pytest.approx(15.0, abs=1e-3)
    assert any("gantry tilt" in w for w in vol.source.warnings)

    dcm2niix = Path(sys.executable).with_name("dcm2niix")
    (tmp_path / "out").mkdir()
    subprocess.run([str(dcm2niix), "-f", "ct", "-z", "n", "-o", str(tmp_path / "out"), str(tmp_path / "in")],
                   check=True, capture_output=True)
    raw = nib.load(str(tmp_path / "out" / "ct.nii"))
    # dcm2niix's uncorrected image holds the same voxels (rows flipped, its LAS habit).
    np.testing.assert_array_equal(np.asanyarray(raw.dataobj)[:, ::-1, :], vol.array)
    # dcm2niix's tilt-corrected image is resampled onto an orthogonal grid; sampling medseg's
    # sheared volume at that grid's world positions gives the same HU (up to its int rounding).
    corrected = nib.load(str(tmp_path / "out" / "ct_Tilt_1.nii"))
    target = np.asanyarray(corrected.dataobj).astype(np.float64)
    ijk = np.indices(corrected.shape).reshape(3, -1)
    world = corrected.affine[:3, :3] @ ijk + corrected.affine[:3, 3:4]
    ours = vol.world_to_voxel(world.T).T
    ours[2] = np.clip(ours[2], 0, vol.shape[2] - 1)  # k lands on slices (within 1e-4)
    sampled = map_coordinates(vol.array.astype(np.float64), ours, order=1, cval=np.nan, mode="constant")
    inside = np.isfinite(sampled)
    assert inside.mean() > 0.95
    assert np.abs(sampled[inside] - target.ravel()[inside]).max() <= 0.51


# --- compressed transfer syntaxes -------------------------------------------------------------

MR_SMALL = ["MR_small_implicit", "MR_small_bigendian", "MR_small_RLE", "MR_small_jpeg_ls_lossless",
            "MR_small_jp2klossless"]
EMRI = ["emri_small_big_endian", "emri_small_RLE", "emri_small_jpeg_ls_lossless", "emri_small_jpeg_2k_lossless"]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", MR_SMALL)
def test_mr_small_family_equals_uncompressed(shared_data, name):
    base = load_volume(shared_data / COMPRESSED / "pydicom" / "MR_small.dcm", allow_2d=True)
    vol = load_volume(shared_data / COMPRESSED / "pydicom" / f"{name}.dcm", allow_2d=True)
    assert vol.array.dtype == base.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, base.array)
    np.testing.assert_array_equal(vol.affine, base.affine)
    assert (int(vol.array.min()), int(vol.array.max())) == (127, 2145)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", EMRI)
def test_enhanced_mr_family_equals_uncompressed(shared_data, name):
    base = load_volume(shared_data / COMPRESSED / "pydicom-data" / "emri_small.dcm")
    vol = load_volume(shared_data / COMPRESSED / "pydicom-data" / f"{name}.dcm")
    assert vol.shape == (64, 64, 10)
    np.testing.assert_array_equal(vol.array, base.array)
    # No functional groups at all in these files: placed on a plain grid, and said so.
    assert any("position in the patient is unknown" in w for w in vol.source.warnings)
    frames = pydicom.dcmread(shared_data / COMPRESSED / "pydicom-data" / "emri_small.dcm").pixel_array
    np.testing.assert_array_equal(vol.array, frames.transpose(2, 1, 0))


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", ["pydicom-data/MR2_J2KR.dcm", "pydicom-data/693_J2KR.dcm",
                                 "pydicom/J2K_pixelrep_mismatch.dcm", "pydicom/693_J2KI.dcm",
                                 "pydicom/CT_small.dcm"])
def test_single_compressed_slices_match_simpleitk(shared_data, rel):
    path = shared_data / COMPRESSED / rel
    with pytest.raises(InputError, match="allow_2d=True"):
        load_volume(path)
    vol = load_volume(path, allow_2d=True)
    ref = sitk.ReadImage(str(path))
    expected = sitk_array(ref)
    if vol.array.dtype == np.float32:  # MR2: RescaleSlope 3.774114; SimpleITK computes in float64
        expected = expected.astype(np.float32)
    np.testing.assert_array_equal(vol.array, expected)
    np.testing.assert_allclose(vol.origin_lps, ref.GetOrigin(), atol=1e-4)


@pytest.mark.shared_data
def test_lossy_and_deflated_files_decode(shared_data):
    deflated = load_volume(shared_data / COMPRESSED / "pydicom" / "image_dfl.dcm", allow_2d=True)
    plain = pydicom.dcmread(shared_data / COMPRESSED / "pydicom" / "image_dfl.dcm").pixel_array
    np.testing.assert_array_equal(deflated.array[:, :, 0], plain.T)
    # 12-bit lossy JPEG: libjpeg (pylibjpeg) and GDCM round the inverse DCT differently by at most 1.
    path = shared_data / COMPRESSED / "pydicom" / "JPGExtended.dcm"
    lossy = load_volume(path, allow_2d=True)
    assert np.abs(lossy.array.astype(np.int32) - sitk_array(sitk.ReadImage(str(path)))).max() <= 1
    assert (int(lossy.array.min()), int(lossy.array.max())) == (0, 264)


@pytest.mark.shared_data
def test_enhanced_ct_functional_group_rescale(shared_data):
    path = shared_data / COMPRESSED / "pydicom-data" / "eCT_Supplemental.dcm"
    vol = load_volume(path)
    assert vol.shape == (512, 512, 2) and vol.array.dtype == np.int16
    assert (int(vol.array.min()), int(vol.array.max())) == (-1024, 172)
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array
    ipp = [np.array(f.PlanePositionSequence[0].ImagePositionPatient, float)
           for f in ds.PerFrameFunctionalGroupsSequence]
    # Orientation (-1,0,0 / 0,1,0): the normal points to -z, so k follows decreasing z.
    order = np.argsort([-p[2] for p in ipp])
    for k, frame_index in enumerate(order):
        np.testing.assert_array_equal(vol.array[:, :, k], frames[frame_index].T.astype(np.int32) - 1024)
        np.testing.assert_allclose(vol.affine_lps[:3, :3] @ [0, 0, k] + vol.origin_lps, ipp[frame_index], atol=1e-4)


def test_progress_and_cancel(ct3_folder):
    calls = []
    load_volume(ct3_folder, progress=lambda done, total, message: calls.append((done, total, message)))
    assert ("reading DICOM pixels" in calls[-1][2]) and calls[-1][0] == calls[-1][1] == 3
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        load_volume(ct3_folder, cancel=token)


@pytest.mark.shared_data
def test_copied_tree_with_two_series(shared_data, tmp_path):
    shutil.copytree(shared_data / CT3, tmp_path / "study" / "a")
    shutil.copytree(shared_data / "dicom_seg" / "dcmqi" / "24x38x3" / "image", tmp_path / "study" / "b" / "deep")
    infos = scan(tmp_path / "study")
    assert [(i.shape, i.n_files) for i in infos] == [((512, 512, 3), 3), ((24, 38, 3), 3)]
    small = load_volume(tmp_path / "study", series=infos[1].key)
    assert small.shape == (24, 38, 3)


def test_header_cache_is_reused_and_invalidated(ct3_folder, tmp_path, monkeypatch):
    from medseg.io import _dicom_scan

    shutil.copytree(ct3_folder, tmp_path / "ct")
    reads = []
    real = _dicom_scan._read_header
    monkeypatch.setattr(_dicom_scan, "_read_header", lambda path: reads.append(path) or real(path))
    first = load_volume(tmp_path / "ct")
    assert len(reads) == 3
    again = load_volume(tmp_path / "ct")  # same files: headers are not parsed again
    assert len(reads) == 3
    np.testing.assert_array_equal(again.array, first.array)
    # Any change to a file is seen: move one slice 0.3 mm and the series is no longer uniform.
    name = first.source.extra["files"][1]
    ds = pydicom.dcmread(tmp_path / "ct" / name)
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.3]
    ds.save_as(tmp_path / "ct" / name)
    with pytest.raises(InputError, match="non-uniform"):
        load_volume(tmp_path / "ct")
    assert len(reads) == 6


NATIVE = ["dicom_with_reference/dcm_qa_12bit/In/12bitUnsigned.dcm",        # garbage above bit 11
          "dicom_with_reference/dcm_qa_12bit/In/12bitSigned_0x0F0F.dcm",   # sign bit is bit 11
          "dicom_compressed/pydicom/MR_small_bigendian.dcm",
          "dicom_compressed/pydicom/MR_small_implicit.dcm",
          "dicom_compressed/pydicom-data/emri_small_big_endian.dcm",       # multi-frame, big endian
          "dicom_compressed/pydicom-data/eCT_Supplemental.dcm",
          "dicom_seg/dcmqi/ct-3slice/01.dcm"]


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", NATIVE)
def test_uncompressed_pixels_read_from_file_equal_pydicom(shared_data, rel):
    """medseg reads uncompressed pixel data from its file offset; it must equal pydicom's decoding."""
    assert_native_read_equals_pydicom(shared_data / rel)
