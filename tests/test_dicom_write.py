"""write_dicom_series: geometry, pixels and attributes checked with independent readers.

SimpleITK (GDCM), pydicom and dcm2niix read what the writer wrote; medseg's own reader
(``load_volume``) must give the same volume back.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import ALL_AXCODES

from medseg.errors import CancelledError, InputError
from medseg.io import load_volume
from medseg.io._dicom_write import write_dicom_series
from medseg.progress import CancelToken
from medseg.volume import SourceInfo, Volume, affine_from_lps

DCM2NIIX = Path(sys.executable).with_name("dcm2niix")


def _rotation(degrees_xyz) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", degrees_xyz, degrees=True).as_matrix()


def _volume(shape=(7, 5, 4), spacing=(0.7, 0.9, 2.5), origin_lps=(10.5, -20.25, 33.0),
            direction=None, lo=-1024, hi=2000, seed=0, dtype=np.int16, modality="CT") -> Volume:
    """A volume with random integer values and distinct, non-square, oblique geometry."""
    rng = np.random.default_rng(seed)
    array = rng.integers(lo, hi, shape).astype(dtype)
    direction = _rotation((10, 20, 30)) if direction is None else direction
    return Volume(array, affine_from_lps(spacing, origin_lps, direction), modality)


def _sitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _sitk_array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (i, j, k)


def test_simpleitk_reads_the_values_and_lps_geometry(tmp_path):
    vol = _volume()
    write_dicom_series(vol, tmp_path / "s", uid_seed=1)
    image = _sitk(tmp_path / "s")
    np.testing.assert_array_equal(_sitk_array(image), vol.array)
    np.testing.assert_allclose(image.GetOrigin(), vol.origin_lps, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), vol.spacing, atol=1e-4)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), vol.direction_lps, atol=1e-6)
    # Every voxel centre lands where the affine says (corners checked through SimpleITK).
    for ijk in [(0, 0, 0), (6, 4, 3), (6, 0, 2)]:
        point = image.TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk))
        np.testing.assert_allclose(point, vol.affine_lps[:3, :3] @ ijk + vol.origin_lps, atol=1e-4)


def test_pixel_matrix_spacing_order_and_positions(tmp_path):
    vol = _volume()
    files = write_dicom_series(vol, tmp_path / "s", uid_seed=1)
    assert [f.name for f in files] == [f"ct_{k + 1:04d}.dcm" for k in range(4)]
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert ds.InstanceNumber == k + 1
        assert (ds.Rows, ds.Columns) == (5, 7)  # rows run along j, columns along i
        assert [float(v) for v in ds.PixelSpacing] == [0.9, 0.7]  # row spacing (along j) first
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient],
                                   np.concatenate([vol.direction_lps[:, 0], vol.direction_lps[:, 1]]), atol=1e-12)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient],
                                   vol.affine_lps[:3, :3] @ [0, 0, k] + vol.origin_lps, atol=1e-9)
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, vol.array[:, :, k].T)
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == 2.5


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_header_geometry_in_every_orientation(oriented_series, small_phantom, axcodes):
    """Every storage order of the phantom (axial, coronal, sagittal; k along or against the slice
    normal): each file's plane, position, spacing and pixel matrix, read with pydicom alone."""
    vol = small_phantom.ct.reoriented(axcodes)
    files = sorted(oriented_series(axcodes).iterdir())
    assert len(files) == vol.shape[2]
    direction = vol.direction_lps
    normal = np.cross(direction[:, 0], direction[:, 1])
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert ds.InstanceNumber == k + 1 and (ds.Rows, ds.Columns) == (vol.shape[1], vol.shape[0])
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient],
                                   np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-12)
        position = vol.affine_lps[:3, :3] @ [0, 0, k] + vol.origin_lps
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], position, atol=1e-9)
        assert float(ds.SliceLocation) == pytest.approx(position @ normal, abs=1e-9)
        assert [float(v) for v in ds.PixelSpacing] == [vol.spacing[1], vol.spacing[0]]
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == vol.spacing[2]
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, vol.array[:, :, k].T)


def test_stored_values_need_the_rescale(tmp_path):
    vol = _volume(lo=-1000, hi=1500)
    files = write_dicom_series(vol, tmp_path / "s", uid_seed=1)
    ds = pydicom.dcmread(files[0])
    assert (ds.PixelRepresentation, ds.BitsAllocated, float(ds.RescaleIntercept), float(ds.RescaleSlope)) \
        == (0, 16, -1024.0, 1.0)
    assert ds.pixel_array.dtype == np.uint16
    np.testing.assert_array_equal(ds.pixel_array.astype(np.int32) - 1024, vol.array[:, :, 0].T)


def test_values_below_the_intercept_are_stored_signed(tmp_path):
    vol = _volume(lo=-3024, hi=3000)  # scanner padding value below -1024
    files = write_dicom_series(vol, tmp_path / "s", uid_seed=1)
    ds = pydicom.dcmread(files[0])
    assert ds.PixelRepresentation == 1 and ds.pixel_array.dtype == np.int16
    np.testing.assert_array_equal(_sitk_array(_sitk(tmp_path / "s")), vol.array)


def test_type_1_and_2_attributes_of_the_ct_image_iod(tmp_path):
    files = write_dicom_series(_volume(), tmp_path / "s", uid_seed=1, patient_id="P1",
                               patient_name="Doe^Jane", series_number=7, series_description="test")
    ds = pydicom.dcmread(files[0])
    type1 = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
             "FrameOfReferenceUID", "ImageType", "ImageOrientationPatient", "ImagePositionPatient",
             "PixelSpacing", "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
             "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleIntercept",
             "RescaleSlope", "PixelData"]
    type2 = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
             "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "PatientPosition",
             "PositionReferenceIndicator", "Manufacturer", "InstanceNumber", "SliceThickness", "KVP",
             "AcquisitionNumber"]
    for keyword in type1:
        assert keyword in ds and ds[keyword].value not in (None, "", []), keyword
    for keyword in type2:
        assert keyword in ds, keyword
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert (str(ds.PatientName), ds.PatientID, ds.SeriesNumber, ds.SeriesDescription) == ("Doe^Jane", "P1", 7, "test")
    assert ds.PatientPosition == "HFS" and ds.PhotometricInterpretation == "MONOCHROME2"


def test_uids_follow_the_seed(tmp_path):
    vol = _volume()
    first = [pydicom.dcmread(f) for f in write_dicom_series(vol, tmp_path / "a", uid_seed="x")]
    again = [pydicom.dcmread(f) for f in write_dicom_series(vol, tmp_path / "b", uid_seed="x")]
    other = [pydicom.dcmread(f) for f in write_dicom_series(vol, tmp_path / "c", uid_seed="y")]
    fresh = [pydicom.dcmread(f) for f in write_dicom_series(vol, tmp_path / "d")]
    uids = lambda series: [(d.StudyInstanceUID, d.SeriesInstanceUID, d.FrameOfReferenceUID, d.SOPInstanceUID)  # noqa: E731
                           for d in series]
    assert uids(first) == uids(again)
    assert len({d.SOPInstanceUID for d in first}) == 4 and len({d.SeriesInstanceUID for d in first}) == 1
    assert not set(sum(uids(first), ())) & set(sum(uids(other), ()))
    assert not set(sum(uids(first), ())) & set(sum(uids(fresh), ()))
    for d in first + fresh:
        assert pydicom.uid.UID(d.SOPInstanceUID).is_valid


def test_same_inputs_give_the_same_bytes(tmp_path):
    vol = _volume()
    when = datetime.datetime(2001, 2, 3, 4, 5, 6)
    a = write_dicom_series(vol, tmp_path / "a", uid_seed=3, study_datetime=when)
    b = write_dicom_series(vol, tmp_path / "b", uid_seed=3, study_datetime=when)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    ds = pydicom.dcmread(a[0])
    assert (ds.StudyDate, ds.StudyTime, ds.ContentDate) == ("20010203", "040506", "20010203")


def test_float_volume_with_integral_values_is_accepted(tmp_path):
    vol = _volume(dtype=np.float32)
    write_dicom_series(vol, tmp_path / "s", uid_seed=1)
    np.testing.assert_array_equal(_sitk_array(_sitk(tmp_path / "s")), vol.array)


@pytest.mark.parametrize("value, message", [(12.5, "non-integral HU"), (np.nan, "NaN"), (70000.0, "beyond")])
def test_values_dicom_cannot_hold_are_refused(tmp_path, value, message):
    vol = _volume(dtype=np.float32)
    vol.array[3, 2, 1] = value
    with pytest.raises(InputError, match=message) as err:
        write_dicom_series(vol, tmp_path / "s")
    if message == "non-integral HU":
        assert "(3, 2, 1)" in str(err.value)
    assert not (tmp_path / "s").exists() and list(tmp_path.iterdir()) == []


def test_non_orthonormal_directions_are_refused(tmp_path):
    sheared = np.eye(3)
    sheared[0, 2] = 0.2  # slices shifted sideways: a gantry tilt
    vol = _volume(direction=sheared / np.linalg.norm(sheared, axis=0))
    with pytest.raises(InputError, match="non-orthonormal"):
        write_dicom_series(vol, tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


def test_k_against_the_slice_normal_keeps_world_geometry(tmp_path):
    """Slices stacked opposite to row x column: readers sort them the other way round."""
    flip = np.diag([1.0, 1.0, -1.0])  # k towards the feet: left-handed, still orthonormal
    vol = _volume(direction=flip, spacing=(0.8, 0.8, 3.0), origin_lps=(-100.0, -120.0, 50.0))
    write_dicom_series(vol, tmp_path / "s", uid_seed=1)
    back = load_volume(tmp_path / "s")
    np.testing.assert_array_equal(back.array, vol.array[:, :, ::-1])
    assert back.reoriented("RAS").same_grid(vol.reoriented("RAS"), atol_mm=1e-4)
    np.testing.assert_array_equal(back.reoriented("RAS").array, vol.reoriented("RAS").array)


def test_medseg_reader_gives_the_volume_back(tmp_path):
    vol = _volume(shape=(9, 6, 5))
    files = write_dicom_series(vol, tmp_path / "s", uid_seed=1, series_description="round trip")
    back = load_volume(tmp_path / "s")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    assert back.modality == "CT" and back.source.series_description == "round trip"
    assert back.source.sop_instance_uids == tuple(pydicom.dcmread(f).SOPInstanceUID for f in files)


def test_mr_series(tmp_path):
    vol = _volume(lo=0, hi=4000, modality="MR")
    files = write_dicom_series(vol, tmp_path / "s", uid_seed=1)
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
    assert "RescaleIntercept" not in ds and files[0].name == "mr_0001.dcm"
    for keyword in ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "EchoTime"):
        assert keyword in ds
    np.testing.assert_array_equal(_sitk_array(_sitk(tmp_path / "s")), vol.array)
    back = load_volume(tmp_path / "s")
    assert back.modality == "MR"
    np.testing.assert_array_equal(back.array, vol.array)


def test_rle_lossless(tmp_path):
    vol = _volume(shape=(32, 24, 3))
    files = write_dicom_series(vol, tmp_path / "s", uid_seed=1, compression="rle")
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    np.testing.assert_array_equal(_sitk_array(_sitk(tmp_path / "s")), vol.array)
    np.testing.assert_array_equal(load_volume(tmp_path / "s").array, vol.array)
    with pytest.raises(InputError, match="compression 'jpeg'"):
        write_dicom_series(vol, tmp_path / "t", compression="jpeg")


@pytest.mark.skipif(not DCM2NIIX.exists(), reason="dcm2niix is installed with the dev extra")
def test_dcm2niix_converts_it_to_the_same_image(tmp_path):
    vol = _volume(shape=(16, 12, 6), direction=_rotation((0, 0, 0)), spacing=(0.75, 0.75, 2.0),
                  origin_lps=(-6.0, -4.5, -80.0))
    write_dicom_series(vol, tmp_path / "s", uid_seed=1)
    out = tmp_path / "nii"
    out.mkdir()
    subprocess.run([str(DCM2NIIX), "-z", "n", "-f", "ref", "-o", str(out), str(tmp_path / "s")],
                   check=True, capture_output=True)
    ref = nib.load(str(out / "ref.nii"))
    theirs = Volume(np.rint(ref.get_fdata()).astype(np.int16), ref.affine).reoriented("RAS")
    ours = vol.reoriented("RAS")
    np.testing.assert_array_equal(theirs.array, ours.array)
    np.testing.assert_allclose(theirs.affine, ours.affine, atol=1e-3)


def test_existing_folder_is_refused_unless_replaced(tmp_path):
    target = tmp_path / "s"
    write_dicom_series(_volume(seed=1), target, uid_seed=1)
    with pytest.raises(InputError, match="not empty"):
        write_dicom_series(_volume(seed=2), target, uid_seed=2)
    (target / "notes.txt").write_text("kept?")
    new = _volume(seed=2)
    files = write_dicom_series(new, target, uid_seed=2, replace=True)
    assert sorted(p.name for p in target.iterdir()) == [f.name for f in files]  # the old folder is gone
    np.testing.assert_array_equal(_sitk_array(_sitk(target)), new.array)
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary folders left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dicom_series(new, empty, uid_seed=3)
    assert len(list(empty.iterdir())) == 4


def test_never_writes_over_its_own_input(tmp_path):
    source = tmp_path / "input"
    write_dicom_series(_volume(), source, uid_seed=1)
    vol = load_volume(source)
    with pytest.raises(InputError, match="own input"):
        write_dicom_series(vol, source, replace=True)
    with pytest.raises(InputError, match="own input"):
        write_dicom_series(vol, tmp_path, replace=True)  # the folder that holds the input
    with pytest.raises(InputError, match="inside the input folder"):
        write_dicom_series(vol, source / "derived")
    np.testing.assert_array_equal(load_volume(source).array, vol.array)


def test_cancel_leaves_nothing_behind(tmp_path):
    token = CancelToken()
    seen = []

    def progress(done, total, message):
        seen.append(done)
        if done == 2:
            token.cancel()

    with pytest.raises(CancelledError):
        write_dicom_series(_volume(), tmp_path / "s", progress=progress, cancel=token)
    assert seen == [1, 2] and list(tmp_path.iterdir()) == []


def test_unicode_names_and_extra_attributes(tmp_path):
    vol = _volume()
    vol = Volume(vol.array, vol.affine, "CT", SourceInfo(series_description="Abdomen venös"))
    files = write_dicom_series(vol, tmp_path / "s", patient_name="Müller^Jürgen",
                               attributes={"BodyPartExamined": "ABDOMEN", "KVP": 120})
    ds = pydicom.dcmread(files[0])
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert (str(ds.PatientName), ds.SeriesDescription) == ("Müller^Jürgen", "Abdomen venös")
    assert ds.BodyPartExamined == "ABDOMEN" and float(ds.KVP) == 120.0
    with pytest.raises(InputError, match="not a DICOM attribute"):
        write_dicom_series(vol, tmp_path / "t", attributes={"BodyPart": "ABDOMEN"})


def test_modalities_other_than_ct_and_mr_are_refused(tmp_path):
    with pytest.raises(InputError, match="modality 'PT'"):
        write_dicom_series(_volume(), tmp_path / "s", modality="PT")
