"""The DICOM reader on generated series: geometry and pixels against SimpleITK (GDCM) and dcm2niix.

The real-data tests (``test_io_dicom_ct.py``, ``test_io_dicom_reference.py``) prove agreement on
files from real scanners. These check what no particular scanner is needed for, on series
medseg writes from its phantom (``medseg.io._dicom_write``) and pydicom/highdicom re-encode:

* every slice orientation a series can have (axial, coronal, sagittal; each axis either way,
  k along or against the slice normal) and oblique planes;
* gantry tilt (slices stacked off their normal), against dcm2niix's tilt correction;
* every transfer syntax pydicom can write here, signed and unsigned, CT and MR;
* 12-bit pixels with garbage above BitsStored and with the sign in bit 11;
* enhanced (multi-frame) CT and MR made from a classic series by highdicom.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import (
    ALL_AXCODES,
    SAMPLE,
    TRANSFER_SYNTAXES,
    assert_matches_dcm2niix,
    assert_native_read_equals_pydicom,
    run_dcm2niix,
    sitk_series,
    transcode,
    write_series,
)

from medseg.io import load_volume
from medseg.volume import Volume


def assert_matches_sitk(vol: Volume, ref: sitk.Image) -> None:
    """Values and LPS geometry equal to SimpleITK's reading of the same files."""
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    np.testing.assert_allclose(vol.origin_lps, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(vol.direction_lps.ravel(), ref.GetDirection(), atol=1e-6)


def dcm2niix_volume(folder: Path, out: Path) -> Volume:
    """dcm2niix's conversion of ``folder`` as a Volume (values as its header scales them)."""
    (path,) = run_dcm2niix(folder, out)
    img = nib.load(str(path))
    return Volume(np.rint(img.get_fdata()).astype(np.int32), img.affine)


def k_flipped(vol: Volume) -> Volume:
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, vol.shape[2] - 1
    return Volume(vol.array[:, :, ::-1], vol.affine @ flip, vol.modality)


# --- every orientation ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def body(small_phantom) -> Volume:
    """The small phantom CT (30 x 24 x 14 voxels of 12 x 14.5 x 21 mm, LPS, HU -1024..882)."""
    return small_phantom.ct


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_series_in_every_orientation_reads_back_exactly(oriented_series, body, axcodes):
    folder = oriented_series(axcodes)
    stored = body.reoriented(axcodes)
    vol = load_volume(folder)
    # k runs along the slice normal (row x column): a series written against it comes back reversed.
    along_normal = np.linalg.det(stored.affine[:3, :3]) > 0
    expected = stored if along_normal else k_flipped(stored)
    np.testing.assert_array_equal(vol.array, expected.array)
    np.testing.assert_allclose(vol.affine, expected.affine, rtol=0, atol=1e-6)
    # The same patient whatever the acquisition plane: back in LPS order it is the phantom.
    np.testing.assert_array_equal(vol.reoriented("LPS").array, body.array)
    # Per-slice UIDs and files follow k, and voxel (0, 0, k) is each file's ImagePositionPatient.
    for k, name in enumerate(vol.source.extra["files"]):
        ds = pydicom.dcmread(folder / name, stop_before_pixels=True)
        assert ds.SOPInstanceUID == vol.source.sop_instance_uids[k]
        np.testing.assert_allclose(vol.affine_lps[:3, :3] @ [0, 0, k] + vol.origin_lps,
                                   [float(v) for v in ds.ImagePositionPatient], atol=1e-6)


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_series_in_every_orientation_matches_simpleitk(oriented_series, axcodes):
    folder = oriented_series(axcodes)
    assert_matches_sitk(load_volume(folder), sitk_series(folder))


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_series_in_every_orientation_matches_dcm2niix(oriented_series, axcodes, tmp_path):
    folder = oriented_series(axcodes)
    assert_matches_dcm2niix(load_volume(folder), dcm2niix_volume(folder, tmp_path))


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_info_from_headers_agrees_with_the_read_volume(oriented_series, axcodes, capsys):
    """``medseg info`` reads headers only; what it reports must be what a full read gives."""
    from medseg.cli.main import main
    from medseg.io import scan

    folder = oriented_series(axcodes)
    vol = load_volume(folder)
    (info,) = scan(folder)
    assert info.readable and info.modality == "CT" and info.problems == ()
    assert info.shape == vol.shape and info.n_files == info.n_slices == vol.shape[2]
    np.testing.assert_allclose(info.spacing_mm, vol.spacing, atol=1e-6)
    assert info.orientation == vol.orientation
    assert main(["info", str(folder)]) == 0
    assert "x".join(str(n) for n in vol.shape) in capsys.readouterr().out


OBLIQUE = [(0, 0, 10), (20, 0, 0), (0, -30, 0), (10, 20, 30), (45, 45, 0), (-5, 60, -80)]


def _oblique_series(generated, body: Volume, degrees) -> tuple[Path, Volume]:
    from scipy.spatial.transform import Rotation

    rotation = np.eye(4)
    rotation[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix()
    vol = Volume(body.array, rotation @ body.affine, "CT")
    name = "oblique_" + "_".join(str(d) for d in degrees)
    return generated(name, lambda p: write_series(vol, p)), vol


@pytest.mark.parametrize("degrees", OBLIQUE, ids=lambda d: "x{}y{}z{}".format(*d))
def test_oblique_series_against_simpleitk_and_dcm2niix(generated, body, degrees, tmp_path):
    folder, written = _oblique_series(generated, body, degrees)
    vol = load_volume(folder)
    np.testing.assert_array_equal(vol.array, written.array)
    np.testing.assert_allclose(vol.affine, written.affine, rtol=0, atol=1e-4)
    assert_matches_sitk(vol, sitk_series(folder))
    assert_matches_dcm2niix(vol, dcm2niix_volume(folder, tmp_path))


# --- gantry tilt ---------------------------------------------------------------------------------

def _tilted_copy(source: Path, folder: Path, degrees: float) -> None:
    """Slices with the image plane tilted about x (gantry tilt) and positions still stacked along z."""
    t = math.radians(degrees)
    folder.mkdir()
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [1, 0, 0, 0, math.cos(t), -math.sin(t)]
        ds.GantryDetectorTilt = degrees
        ds.save_as(folder / path.name)


@pytest.fixture(scope="module")
def axial_body(generated, phantom_ct) -> Path:
    """An axial series of the phantom's abdomen: 120 x 110 x 12 voxels of 2 x 2 x 3 mm.

    Corners hold the scanner padding value -3024 HU, so pixels are stored signed (dcm2niix
    corrects tilt only for signed 16-bit data).
    """
    part = phantom_ct.crop((slice(40, 160), slice(30, 140), slice(30, 42)))
    array = part.array.copy()
    array[:6, :6, :] = array[-6:, -6:, :] = -3024
    return generated("axial_body", lambda p: write_series(part.with_array(array), p))


@pytest.mark.parametrize("degrees", [-20.0, -7.5, 7.5, 15.0, 25.0])
def test_gantry_tilt_keeps_every_voxel_where_dicom_puts_it(axial_body, tmp_path, degrees):
    _tilted_copy(axial_body, tmp_path / "in", degrees)
    vol = load_volume(tmp_path / "in")
    n_i, n_j, _ = vol.shape
    for k, name in enumerate(vol.source.extra["files"]):
        ds = pydicom.dcmread(tmp_path / "in" / name)
        # The DICOM definition: pixel (column c, row r) of a slice lies at
        # ImagePositionPatient + c * column spacing * row direction + r * row spacing * column direction.
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        for i, j in [(0, 0), (n_i - 1, 0), (0, n_j - 1), (n_i - 1, n_j - 1), (n_i // 2, n_j // 3)]:
            expected = ipp + i * col_mm * iop[:3] + j * row_mm * iop[3:]
            np.testing.assert_allclose(vol.affine_lps[:3, :3] @ [i, j, k] + vol.origin_lps, expected, atol=1e-4)
        np.testing.assert_array_equal(vol.array[:, :, k], ds.pixel_array.T.astype(np.int32) - 1024)
    assert vol.source.extra["shear_deg"] == pytest.approx(abs(degrees), abs=1e-3)
    assert any("gantry tilt" in w for w in vol.source.warnings)
    run_dcm2niix(tmp_path / "in", tmp_path / "out")
    (raw,) = [nib.load(str(p)) for p in (tmp_path / "out").glob("*.nii") if "Tilt" not in p.name]
    # dcm2niix's uncorrected image holds the same voxels (rows flipped, its LAS habit).
    np.testing.assert_array_equal(np.asanyarray(raw.dataobj)[:, ::-1, :], vol.array)


# dcm2niix's resliced copy of a *negative* tilt does not agree with the slices' own DICOM
# positions (checked at every corner above), so only positive tilts are compared with it
# (its tilt correction is flagged "new: please validate"; see also rordenlab/dcm2niix#259).
@pytest.mark.parametrize("degrees", [7.5, 15.0, 25.0])
def test_gantry_tilt_matches_dcm2niix_correction(axial_body, tmp_path, degrees):
    from scipy.ndimage import map_coordinates

    _tilted_copy(axial_body, tmp_path / "in", degrees)
    vol = load_volume(tmp_path / "in")
    run_dcm2niix(tmp_path / "in", tmp_path / "out")
    (corrected,) = [nib.load(str(p)) for p in (tmp_path / "out").glob("*Tilt*.nii")]
    # dcm2niix resamples onto an orthogonal grid; sampling medseg's sheared volume at that
    # grid's world positions gives the same HU (up to its integer rounding).
    target = np.asanyarray(corrected.dataobj).astype(np.float64)
    ijk = np.indices(corrected.shape).reshape(3, -1)
    world = corrected.affine[:3, :3] @ ijk + corrected.affine[:3, 3:4]
    ours = vol.world_to_voxel(world.T).T
    ours[2] = np.clip(ours[2], 0, vol.shape[2] - 1)  # k lands on slices (within 1e-4)
    sampled = map_coordinates(vol.array.astype(np.float64), ours, order=1, cval=np.nan, mode="constant")
    inside = np.isfinite(sampled)
    assert inside.mean() > 0.9
    assert np.abs(sampled[inside] - target.ravel()[inside]).max() <= 0.51


# --- transfer syntaxes, signed and unsigned, CT and MR --------------------------------------------

def _kind_volume(phantom_ct: Volume, kind: str) -> Volume:
    """A 70 x 64 x 6 piece of the phantom as CT (stored unsigned or signed) or MR."""
    part = phantom_ct.crop((slice(60, 130), slice(50, 114), slice(30, 36)))
    array = part.array.copy()
    if kind == "ct_signed":
        array[:8, :8, :] = -3024  # scanner padding below the intercept: PixelRepresentation 1
    if kind == "mr":
        return Volume((array.astype(np.int32) + 1024).astype(np.int16), part.affine, "MR")
    return Volume(array, part.affine, "CT")


KINDS = ["ct_unsigned", "ct_signed", "mr"]


@pytest.fixture(scope="module")
def kind_series(generated, phantom_ct):
    def get(kind: str, syntax: str = "explicit_le") -> tuple[Path, Volume]:
        vol = _kind_volume(phantom_ct, kind)
        base = generated(f"{kind}_explicit_le", lambda p: write_series(vol, p))
        if syntax == "explicit_le":
            return base, vol
        return generated(f"{kind}_{syntax}", lambda p: transcode(base, p, syntax)), vol

    return get


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("syntax", list(TRANSFER_SYNTAXES))
def test_every_transfer_syntax_gives_the_same_volume(kind_series, kind, syntax):
    folder, written = kind_series(kind, syntax)
    ds = pydicom.dcmread(next(folder.iterdir()))
    assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[syntax]
    assert ds.PixelRepresentation == (1 if kind == "ct_signed" else 0)
    vol = load_volume(folder)
    assert vol.source.extra["transfer_syntaxes"] == [TRANSFER_SYNTAXES[syntax]]
    assert vol.modality == written.modality and vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, written.array)
    np.testing.assert_allclose(vol.affine, written.affine, rtol=0, atol=1e-6)
    assert_matches_sitk(vol, sitk_series(folder))
    # pydicom's own decoding of each file, rescaled: the same slice k.
    for k, name in enumerate(vol.source.extra["files"]):
        ds = pydicom.dcmread(folder / name)
        stored = ds.pixel_array.astype(np.int32) * int(ds.get("RescaleSlope", 1)) + int(ds.get("RescaleIntercept", 0))
        np.testing.assert_array_equal(vol.array[:, :, k], stored.T)


# dcm2niix refuses Deflated Explicit VR Little Endian ("inflate files with dcmconv"); SimpleITK
# and pydicom check that syntax above.
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("syntax", [s for s in TRANSFER_SYNTAXES if s != "deflated"])
def test_every_transfer_syntax_matches_dcm2niix(kind_series, kind, syntax, tmp_path):
    folder, _ = kind_series(kind, syntax)
    assert_matches_dcm2niix(load_volume(folder), dcm2niix_volume(folder, tmp_path))


# --- 12-bit pixels ---------------------------------------------------------------------------------

def _twelve_bit(source: Path, folder: Path, signed: bool) -> None:
    """Rewrite an MR series as 12-bit stored: garbage above bit 11 (unsigned) or the sign in bit 11."""
    rng = np.random.default_rng(12)
    folder.mkdir()
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        values = ds.pixel_array.astype(np.int32)
        if signed:
            values = np.clip(values - 1024, -2048, 2047)
            words = (values & 0x0FFF).astype(np.uint16)  # two's complement in 12 bits, bits 12-15 zero
        else:
            values = np.clip(values, 0, 4095)
            words = (values | (rng.integers(0, 16, values.shape) << 12)).astype(np.uint16)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
        ds.PixelData = words.tobytes()
        ds.save_as(folder / path.name)


@pytest.fixture(scope="module")
def twelve_bit(generated, kind_series):
    def get(signed: bool) -> tuple[Path, np.ndarray]:
        base, written = kind_series("mr")
        folder = generated(f"mr_12bit_{'signed' if signed else 'garbage'}",
                           lambda p: _twelve_bit(base, p, signed))
        values = written.array.astype(np.int32)
        expected = np.clip(values - 1024, -2048, 2047) if signed else np.clip(values, 0, 4095)
        return folder, expected

    return get


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned_garbage_high_bits", "signed_bit_11"])
def test_12_bit_pixels_are_masked_and_sign_extended(twelve_bit, signed, tmp_path):
    folder, expected = twelve_bit(signed)
    first = sorted(folder.iterdir())[0]
    raw = np.frombuffer(pydicom.dcmread(first).PixelData, dtype="<u2")
    if not signed:
        assert raw.max() > 0x0FFF  # the words really carry bits above BitsStored
    vol = load_volume(folder)
    np.testing.assert_array_equal(vol.array, expected)
    if signed:
        assert vol.array.min() < 0 and raw.max() <= 0x0FFF  # negative values without sign extension
    assert_matches_sitk(vol, sitk_series(folder))
    assert_matches_dcm2niix(vol, dcm2niix_volume(folder, tmp_path))


# --- enhanced (multi-frame) images ----------------------------------------------------------------

def _legacy_enhanced(source: Path, folder: Path, modality: str) -> Path:
    """The classic series as one Legacy Converted Enhanced CT/MR image (highdicom)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    make = {"CT": hd.legacy.LegacyConvertedEnhancedCTImage, "MR": hd.legacy.LegacyConvertedEnhancedMRImage}[modality]
    datasets = [pydicom.dcmread(p) for p in sorted(source.iterdir())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's opinion of the patient name "Anonymous"
        image = make(datasets, series_instance_uid=generate_uid(entropy_srcs=["enhanced", modality]),
                     series_number=9, sop_instance_uid=generate_uid(entropy_srcs=["enhanced sop", modality]),
                     instance_number=1)
    folder.mkdir()
    image.save_as(folder / "enhanced.dcm")
    return folder / "enhanced.dcm"


@pytest.fixture(scope="module")
def enhanced(generated, kind_series):
    def get(kind: str) -> tuple[Path, Volume]:
        base, written = kind_series(kind)
        modality = "MR" if kind == "mr" else "CT"
        folder = generated(f"enhanced_{kind}", lambda p: _legacy_enhanced(base, p, modality))
        return folder / "enhanced.dcm", written

    return get


@pytest.mark.parametrize("kind", KINDS)
def test_enhanced_multiframe_equals_the_classic_series(enhanced, kind, tmp_path):
    path, written = enhanced(kind)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert int(ds.NumberOfFrames) == written.shape[2] and "PerFrameFunctionalGroupsSequence" in ds
    vol = load_volume(path)
    assert vol.modality == written.modality
    np.testing.assert_array_equal(vol.array, written.array)
    np.testing.assert_allclose(vol.affine, written.affine, rtol=0, atol=1e-6)
    assert_matches_dcm2niix(vol, dcm2niix_volume(path.parent, tmp_path))


# --- medseg's direct read of uncompressed pixels ----------------------------------------------------

NATIVE = ["ct_unsigned/explicit_le", "ct_signed/implicit_le", "mr/explicit_be", "ct_signed/explicit_be",
          "mr_12bit_garbage", "mr_12bit_signed", "enhanced_ct", "enhanced_mr_be"]


@pytest.fixture(scope="module")
def native_file(generated, kind_series, twelve_bit, enhanced):
    def get(name: str) -> Path:
        if name.startswith("mr_12bit"):
            folder, _ = twelve_bit(name.endswith("signed"))
        elif name == "enhanced_ct":
            return enhanced("ct_unsigned")[0]
        elif name == "enhanced_mr_be":
            path, _ = enhanced("mr")
            folder = generated("enhanced_mr_be", lambda p: transcode(path.parent, p, "explicit_be"))
        else:
            folder, _ = kind_series(*name.split("/"))
        return sorted(folder.iterdir())[0]

    return get


@pytest.mark.parametrize("name", NATIVE)
def test_uncompressed_pixels_read_from_file_equal_pydicom(native_file, name):
    assert_native_read_equals_pydicom(native_file(name))


# --- the shipped phantom series -----------------------------------------------------------------------

def test_phantom_series_matches_simpleitk_dcm2niix_and_its_nifti(tmp_path):
    folder = SAMPLE / "ct_dicom"
    vol = load_volume(folder)
    assert vol.array.dtype == np.int16 and vol.modality == "CT" and vol.orientation == "LPS"
    assert vol.source.extra["transfer_syntaxes"] == [TRANSFER_SYNTAXES["rle"]]
    assert_matches_sitk(vol, sitk_series(folder))
    assert_matches_dcm2niix(vol, dcm2niix_volume(folder, tmp_path))
    nifti = load_volume(SAMPLE / "ct.nii.gz")
    np.testing.assert_array_equal(vol.array, nifti.array)
    np.testing.assert_allclose(vol.affine, nifti.affine, rtol=0, atol=1e-6)


def test_phantom_series_source_info():
    folder = SAMPLE / "ct_dicom"
    vol = load_volume(folder)
    src = vol.source
    headers = [pydicom.dcmread(folder / name, stop_before_pixels=True) for name in src.extra["files"]]
    assert [h.SOPInstanceUID for h in headers] == list(src.sop_instance_uids)
    z = [float(h.ImagePositionPatient[2]) for h in headers]
    assert z == sorted(z) and z[0] == -403.5 and np.allclose(np.diff(z), 3.0)
    h = headers[0]
    assert (src.series_uid, src.study_uid, src.frame_of_reference_uid) == (
        h.SeriesInstanceUID, h.StudyInstanceUID, h.FrameOfReferenceUID)
    assert src.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2" and src.patient_id == "MEDSEG-PHANTOM-0"
    assert src.manufacturer == "medseg" and src.patient_position == "HFS" and src.series_number == "1"
    assert src.format == "dicom" and Path(src.path) == folder
    assert src.extra["rescale_intercepts"] == [-1024.0]
