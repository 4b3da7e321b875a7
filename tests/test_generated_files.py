"""NIfTI, NRRD and MetaImage on generated data: every storage orientation, against the reference readers.

The real-file tests (``test_io_files.py``) prove agreement on files from real tools; these prove
it for every way a 3D array can be stored (48 axis orders and directions) and for the header
variants that matter, on the phantom. Files are written by an independent writer where one
exists (nibabel for NIfTI, pynrrd for NRRD, SimpleITK for MetaImage) and read back by medseg;
medseg's own writer is checked by exact round trips. Each volume is tiny (30 x 24 x 14), so the
whole sweep takes seconds.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ALL_AXCODES, SAMPLE

from medseg.errors import InputError
from medseg.io import load_volume, save_volume
from medseg.volume import Volume, lps_from_affine

SUFFIXES = [".nii.gz", ".nii", ".nrrd", ".mha"]


@pytest.fixture(scope="module")
def body(small_phantom) -> Volume:
    """The small phantom's CT: sizes 30 x 24 x 14, spacing 12 x 14.5 x 21 mm (all exact in float32)."""
    return small_phantom.ct


def _oblique(volume: Volume, degrees_xyz=(3.55, -7.0, 11.0)) -> Volume:
    """The same voxels on a grid rotated about its centre (an oblique acquisition)."""
    from scipy.spatial.transform import Rotation

    rotation = np.eye(4)
    rotation[:3, :3] = Rotation.from_euler("xyz", degrees_xyz, degrees=True).as_matrix()
    return Volume(volume.array, rotation @ volume.affine, volume.modality)


def _assert_same_volume(again: Volume, original: Volume, *, atol: float = 0.0) -> None:
    assert again.array.dtype == original.array.dtype
    np.testing.assert_array_equal(again.array, original.array)
    if atol:
        np.testing.assert_allclose(again.affine, original.affine, rtol=0, atol=atol)
    else:
        np.testing.assert_array_equal(again.affine, original.affine)


def _assert_matches_sitk(vol: Volume, ref: sitk.Image) -> None:
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    np.testing.assert_allclose(vol.origin_lps, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(vol.direction_lps.ravel(), ref.GetDirection(), atol=1e-6)


# --- medseg's writers: exact round trips ---------------------------------------------------------

@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_round_trip_in_every_orientation(body, tmp_path, axcodes, suffix):
    stored = body.reoriented(axcodes)
    assert stored.orientation == axcodes
    again = load_volume(save_volume(stored, tmp_path / f"ct{suffix}"))
    _assert_same_volume(again, stored)
    assert again.orientation == axcodes
    # The same patient, whatever the storage: back in the phantom's LPS order, voxel for voxel.
    _assert_same_volume(again.reoriented("LPS"), body)


HEADER_CASES = {
    # name: (array dtype, stored orientation, oblique?)
    "int16_oblique": (np.int16, "LPS", True),
    "uint16_labels_las": (np.uint16, "LAS", False),
    "uint8_labels_psr": (np.uint8, "PSR", False),
    "int32_ras": (np.int32, "RAS", False),
    "float32_asl": (np.float32, "ASL", False),
    "float64_oblique": (np.float64, "ILP", True),
}


def _header_case(body: Volume, name: str) -> Volume:
    dtype, axcodes, oblique = HEADER_CASES[name]
    vol = body.reoriented(axcodes)
    array = vol.array
    if np.dtype(dtype).kind == "u":
        array = np.clip(array // 100, 0, None)  # label-like values 0..8
    elif np.dtype(dtype).kind == "f":
        array = array * np.float32(0.25) + np.float32(0.125)  # fractional values
    vol = Volume(array.astype(dtype), vol.affine, vol.modality)
    return _oblique(vol) if oblique else vol


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_round_trip_of_dtypes_and_oblique_grids(body, tmp_path, case, suffix):
    vol = _header_case(body, case)
    again = load_volume(save_volume(vol, tmp_path / f"v{suffix}"))
    atol = 0.0
    if HEADER_CASES[case][2]:
        # Rotated directions: NIfTI stores the affine in float32 (back within 1e-4 mm here);
        # NRRD/MHA store spacing and unit directions separately (back within float64 rounding).
        atol = 1e-4 if suffix.startswith(".nii") else 1e-12
    _assert_same_volume(again, vol, atol=atol)


# --- independent writers, read by medseg ---------------------------------------------------------

@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_nifti_from_nibabel_matches_nibabel_and_simpleitk(body, tmp_path, axcodes):
    stored = body.reoriented(axcodes)
    path = tmp_path / "nib.nii.gz"
    nib.save(nib.Nifti1Image(stored.array, stored.affine), str(path))
    vol = load_volume(path)
    img = nib.load(str(path))
    np.testing.assert_array_equal(vol.affine, img.affine)
    np.testing.assert_array_equal(vol.array, np.asanyarray(img.dataobj))
    assert vol.orientation == "".join(nib.aff2axcodes(img.affine)) == axcodes
    _assert_matches_sitk(vol, sitk.ReadImage(str(path)))


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_nrrd_from_pynrrd_matches_its_header(body, tmp_path, axcodes):
    """pynrrd writes the header independently of ITK: space origin/directions are LPS rows per axis."""
    import nrrd

    stored = body.reoriented(axcodes)
    spacing, origin_lps, direction_lps = lps_from_affine(stored.affine)
    path = tmp_path / "p.nrrd"
    nrrd.write(str(path), stored.array, {"space": "left-posterior-superior",
                                         "space directions": (direction_lps * spacing).T,
                                         "space origin": origin_lps})
    vol = load_volume(path)
    _assert_same_volume(vol, stored)
    data, header = nrrd.read(str(path))
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine_lps[:3, :3], np.asarray(header["space directions"], float).T, atol=1e-12)
    np.testing.assert_allclose(vol.origin_lps, header["space origin"], atol=1e-12)
    _assert_matches_sitk(vol, sitk.ReadImage(str(path)))


@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_metaimage_from_simpleitk_matches_it(body, tmp_path, axcodes):
    stored = body.reoriented(axcodes)
    spacing, origin_lps, direction_lps = lps_from_affine(stored.affine)
    image = sitk.GetImageFromArray(stored.array.transpose(2, 1, 0))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(origin_lps.tolist())
    image.SetDirection(direction_lps.ravel().tolist())
    path = tmp_path / "s.mha"
    sitk.WriteImage(image, str(path))
    vol = load_volume(path)
    _assert_same_volume(vol, stored)
    _assert_matches_sitk(vol, sitk.ReadImage(str(path)))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("axcodes", ALL_AXCODES)
def test_info_from_the_header_agrees_with_the_read_volume(body, tmp_path, axcodes, suffix):
    """``medseg info`` reads only the header of a file; it must report what a full read gives."""
    from medseg.io import scan

    path = save_volume(body.reoriented(axcodes), tmp_path / f"ct{suffix}")
    (info,) = scan(path)
    vol = load_volume(path)
    assert info.readable and info.problems == ()
    assert info.shape == vol.shape and info.orientation == vol.orientation == axcodes
    np.testing.assert_allclose(info.spacing_mm, vol.spacing, rtol=0, atol=1e-6)


@pytest.mark.parametrize("form", ["sform_only", "qform_only", "both"])
@pytest.mark.parametrize("axcodes", ["LPS", "RAS", "PIR", "LIP"])
def test_nifti_header_forms_match_nibabel(body, tmp_path, form, axcodes):
    """Which of sform/qform a NIfTI carries: medseg follows nibabel's choice (sform first)."""
    stored = body.reoriented(axcodes)
    img = nib.Nifti1Image(stored.array, None)
    img.header.set_zooms(tuple(stored.spacing))  # pixdim agrees with the affine, as real writers do
    if form in ("sform_only", "both"):
        img.set_sform(stored.affine, code=2)
    if form in ("qform_only", "both"):
        img.set_qform(stored.affine, code=1)
    if form == "sform_only":
        img.set_qform(None, code=0)
    path = tmp_path / "h.nii"
    nib.save(img, str(path))
    again = nib.load(str(path))
    vol = load_volume(path)
    np.testing.assert_allclose(vol.affine, again.affine, rtol=0, atol=1e-5)
    np.testing.assert_allclose(vol.affine, stored.affine, rtol=0, atol=1e-4)
    assert vol.orientation == axcodes
    _assert_matches_sitk(vol, sitk.ReadImage(str(path)))


def test_rgb_nifti_is_refused(tmp_path):
    """The real case is a report figure saved as NIfTI (RGB24); nibabel writes the same kind here."""
    rgb = np.zeros((6, 5, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "figure.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    assert nib.load(str(path)).header.get_data_dtype().names == ("R", "G", "B")
    with pytest.raises(InputError, match="non-scalar voxels"):
        load_volume(path)


# --- the shipped phantom's files ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["ct", "organs", "lesions"])
def test_phantom_nifti_matches_nibabel_and_simpleitk(name):
    path = SAMPLE / f"{name}.nii.gz"
    vol = load_volume(path)
    img = nib.load(str(path))
    np.testing.assert_array_equal(vol.affine, img.affine)
    np.testing.assert_array_equal(vol.array, np.asanyarray(img.dataobj))
    assert vol.array.dtype == img.get_data_dtype()
    _assert_matches_sitk(vol, sitk.ReadImage(str(path)))


def test_documented_facts_of_the_phantom_files():
    """Values from sample_data/phantom/README.md and truth.json: shape, spacing, orientation, origin, dtype."""
    truth = json.loads((SAMPLE / "truth.json").read_text())
    geometry = truth["geometry"]
    ct = load_volume(SAMPLE / "ct.nii.gz")
    assert ct.shape == tuple(geometry["shape"]) == (200, 170, 70) and ct.array.dtype == np.int16
    assert ct.orientation == geometry["orientation"] == "LPS"
    np.testing.assert_array_equal(ct.spacing, geometry["spacing_mm"])
    np.testing.assert_array_equal(ct.origin, geometry["origin_ras_mm"])
    np.testing.assert_array_equal(ct.affine, geometry["affine_ras"])
    assert ct.voxel_volume_ml == pytest.approx(geometry["voxel_volume_ml"])
    organs = load_volume(SAMPLE / "organs.nii.gz")
    lesions = load_volume(SAMPLE / "lesions.nii.gz")
    assert organs.same_grid(ct) and lesions.same_grid(ct)
    assert organs.array.dtype == lesions.array.dtype == np.uint8
    assert organs.label_set is not None and organs.label_set.to_dict() == json.loads(
        (SAMPLE / "organs.json").read_text())
    assert int(lesions.array.max()) == truth["lesion_count"]
    for row in truth["lesions"]:
        assert int((lesions.array == row["id"]).sum()) == row["voxels"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_phantom_labels_and_names_round_trip(tmp_path, suffix):
    """A label map keeps its class names (the labels.json sidecar) through every format."""
    organs = load_volume(SAMPLE / "organs.nii.gz")
    again = load_volume(save_volume(organs, tmp_path / f"organs{suffix}"))
    _assert_same_volume(again, organs)
    assert again.label_set == organs.label_set
