"""NIfTI/NRRD/MHA reading and writing: exact round trips on real data, reference readers, bad input."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import InputError
from medseg.io import load_volume, save_volume, scan
from medseg.volume import Volume

REAL_FILES = [
    "totalsegmentator/example_ct_sm.nii.gz",          # int16, RAS, sform only
    "totalsegmentator/example_mr_sm.nii.gz",          # int16, stored LPS
    "totalsegmentator/example_ct.nii.gz",             # int32 CT
    "train/labels_only/totalseg_s0327_label.nii.gz",  # oblique sform (3.55 deg about z)
    "train/labels_only/amos_0013_label.nii.gz",       # qform only, uint16 labels, LAS
    "lesions/ms_lesions_ljubljana/patient26_flair_mni.nii.gz",  # float32
    "lesions/pyradiomics/brain1_image.nrrd",          # NRRD, y flipped
    "lesions/pyradiomics/prostate_phantom_subvolume.nrrd",  # NRRD, x and y flipped, uint16
]


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", REAL_FILES)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_array_and_affine_exactly(shared_data, tmp_path, rel, suffix):
    original = load_volume(shared_data / rel)
    out = save_volume(original, tmp_path / f"copy{suffix}")
    again = load_volume(out)
    assert again.array.dtype == original.array.dtype
    np.testing.assert_array_equal(again.array, original.array)
    if rel.endswith(".nrrd") and suffix.startswith(".nii"):
        # NIfTI stores the affine in float32: NRRD's float64 directions come back rounded (< 1e-5 mm).
        np.testing.assert_allclose(again.affine, original.affine, rtol=0, atol=1e-5)
    else:
        np.testing.assert_array_equal(again.affine, original.affine)


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", [r for r in REAL_FILES if r.endswith(".nii.gz")])
def test_nifti_matches_nibabel_and_simpleitk(shared_data, rel):
    path = shared_data / rel
    vol = load_volume(path)
    img = nib.load(str(path))
    np.testing.assert_array_equal(vol.affine, img.affine)
    np.testing.assert_array_equal(vol.array, np.asanyarray(img.dataobj))
    assert vol.orientation == "".join(nib.aff2axcodes(img.affine))
    ref = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    np.testing.assert_allclose(vol.origin_lps, ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(vol.direction_lps.ravel(), ref.GetDirection(), atol=1e-5)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["brain1_image.nrrd", "prostate_phantom_subvolume.nrrd", "lung1_label.nrrd"])
def test_nrrd_geometry_matches_pynrrd(shared_data, name):
    """pynrrd parses the header independently of ITK: space origin/directions are LPS."""
    import nrrd

    path = shared_data / "lesions" / "pyradiomics" / name
    data, header = nrrd.read(str(path))
    vol = load_volume(path)
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_array_equal(vol.array, data)  # pynrrd returns (i, j, k) like medseg
    directions = np.asarray(header["space directions"], dtype=float)  # row r = axis r in LPS mm
    np.testing.assert_allclose(vol.affine_lps[:3, :3], directions.T, atol=1e-9)
    np.testing.assert_allclose(vol.origin_lps, header["space origin"], atol=1e-9)


@pytest.mark.shared_data
def test_documented_facts_of_real_files(shared_data):
    """Values from shared/data/README.md: spacing, orientation, origin, dtype."""
    mr = load_volume(shared_data / "totalsegmentator/example_mr_sm.nii.gz")
    assert mr.orientation == "LPS" and mr.shape == (117, 91, 20)
    aorta = load_volume(shared_data / "totalsegmentator/aorta_report/example_ct.nii.gz")
    assert aorta.orientation == "LPS" and aorta.shape == (233, 167, 191)
    np.testing.assert_allclose(aorta.origin_lps, [-179.658, -275.158, 540.2], atol=1e-3)
    sm = load_volume(shared_data / "totalsegmentator/example_ct_sm.nii.gz")
    full = load_volume(shared_data / "totalsegmentator/example_ct.nii.gz")
    # The crop keeps the full volume's origin (a known quirk): voxels equal, world 246 mm apart.
    np.testing.assert_array_equal(sm.array, full.array[:, :, 82:112])
    np.testing.assert_allclose(sm.origin, full.origin)
    assert full.array.dtype == np.int32 and sm.array.dtype == np.int16
    amos = load_volume(shared_data / "train/labels_only/amos_0013_label.nii.gz")
    assert amos.orientation == "LAS" and amos.array.dtype == np.uint16
    np.testing.assert_allclose(amos.spacing, [0.781, 0.781, 5.0], atol=1e-3)


def _nifti(tmp_path: Path, array: np.ndarray, name: str = "x.nii.gz", **header) -> Path:
    img = nib.Nifti1Image(array, np.diag([2.0, 2.0, 3.0, 1.0]))
    for key, value in header.items():
        img.header[key] = value
    path = tmp_path / name
    nib.save(img, str(path))
    return path


def test_integer_scaling_stays_integer(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, str(tmp_path / "s.nii"))
    vol = load_volume(tmp_path / "s.nii")
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, raw.astype(np.int32) * 2 - 1024)


def test_fractional_scaling_gives_float32(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.5, 1.25)
    nib.save(img, str(tmp_path / "f.nii"))
    vol = load_volume(tmp_path / "f.nii")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, raw * 0.5 + 1.25)


def test_4d_with_one_volume_is_read_as_3d(tmp_path):
    path = _nifti(tmp_path, np.ones((4, 5, 6, 1), np.int16))
    assert load_volume(path).shape == (4, 5, 6)


# --- bad input: one clear line each ---------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_refused(tmp_path, bad):
    array = np.zeros((4, 4, 4), np.float32)
    array[1, 2, 3] = bad
    path = _nifti(tmp_path, array)
    with pytest.raises(InputError, match=r"contains 1 NaN/Inf voxels"):
        load_volume(path)


def test_4d_is_refused_with_what_to_do(tmp_path):
    path = _nifti(tmp_path, np.zeros((4, 5, 6, 3), np.int16))
    with pytest.raises(InputError) as info:
        load_volume(path)
    message = str(info.value)
    assert str(path) in message and "4D" in message and "split it" in message.lower()


def test_2d_is_refused_unless_allowed(tmp_path):
    path = _nifti(tmp_path, np.zeros((4, 5), np.int16))
    with pytest.raises(InputError, match="single 2D slice"):
        load_volume(path)
    assert load_volume(path, allow_2d=True).shape == (4, 5, 1)


@pytest.mark.shared_data
def test_rgb_picture_in_nifti_is_refused(shared_data):
    """spine_report.nii.gz is a colour figure stored as NIfTI (datatype RGB24)."""
    path = shared_data / "totalsegmentator/spine_report/example_ct_report/spine_report.nii.gz"
    with pytest.raises(InputError, match="non-scalar voxels"):
        load_volume(path)


def test_truncated_nifti(tmp_path):
    path = _nifti(tmp_path, np.random.default_rng(0).integers(0, 1000, (32, 32, 32)).astype(np.int16))
    data = gzip.decompress(path.read_bytes())
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(InputError, match=r"broken\.nii\.gz: .*truncated"):
        load_volume(broken)


def test_garbage_with_nifti_suffix(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="not a readable NIfTI"):
        load_volume(path)


def test_garbage_nrrd(tmp_path):
    path = tmp_path / "garbage.nrrd"
    path.write_bytes(b"NRRD0004\nnonsense\n")
    with pytest.raises(InputError, match="not a readable NRRD/MetaImage"):
        load_volume(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_volume(tmp_path / "nope.nii.gz")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a recognised image"):
        load_volume(text)


def test_unreadable_file(tmp_path):
    path = _nifti(tmp_path, np.zeros((4, 4, 4), np.int16))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            # Running as root: permissions do not stop reads, so the file *is* readable and must load.
            assert load_volume(path).shape == (4, 4, 4)
        else:
            with pytest.raises(InputError, match="permission denied"):
                load_volume(path)
    finally:
        path.chmod(0o644)


# --- writing -----------------------------------------------------------------------------------
def test_refuses_to_overwrite_the_input(tmp_path):
    path = _nifti(tmp_path, np.ones((4, 4, 4), np.int16))
    before = path.read_bytes()
    vol = load_volume(path)
    with pytest.raises(InputError, match="is the input file"):
        save_volume(vol, path)
    with pytest.raises(InputError, match="is the input file"):
        save_volume(vol.with_array(vol.array * 2), tmp_path / "." / "x.nii.gz")
    assert path.read_bytes() == before


def test_refuses_to_write_into_an_input_folder(tmp_path, make_volume):
    folder = tmp_path / "dicom"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"x")
    with pytest.raises(InputError, match="inside the input folder"):
        save_volume(make_volume(), folder / "out.nii.gz", inputs=(folder,))


def test_unknown_output_suffix(tmp_path, make_volume):
    with pytest.raises(InputError, match="unknown output format"):
        save_volume(make_volume(), tmp_path / "out.png")


def test_failed_write_leaves_nothing_behind(tmp_path, make_volume, monkeypatch):
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"previous result")
    import medseg.io._nifti as nifti

    def boom(volume, path):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nifti, "write_nifti", boom)
    with pytest.raises(OSError, match="disk full"):
        save_volume(make_volume(), target)
    assert target.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_written_nifti_has_both_codes_and_mm_units(tmp_path, make_volume):
    vol = make_volume(spacing=(0.5, 0.7, 2.5), axcodes="LPS", origin=(10, 20, 30))
    out = save_volume(vol, tmp_path / "o.nii.gz")
    img = nib.load(str(out))
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), vol.affine, atol=1e-6)
    assert img.header.get_xyzt_units()[0] == "mm"


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.float32, np.float64])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_dtypes_survive_writing(tmp_path, make_volume, dtype, suffix):
    array = (np.arange(60).reshape(3, 4, 5) % 7).astype(dtype)
    vol = make_volume(array)
    again = load_volume(save_volume(vol, tmp_path / f"d{suffix}"))
    np.testing.assert_array_equal(again.array, array)
    if dtype in (np.bool_, np.int64):
        assert again.array.dtype.kind in "iu"  # narrowed to a type viewers understand
    else:
        assert again.array.dtype == dtype


def test_scan_of_a_nifti_file(tmp_path):
    path = _nifti(tmp_path, np.zeros((4, 5, 6), np.int16))
    (info,) = scan(path)
    assert info.shape == (4, 5, 6) and info.spacing_mm == (2.0, 2.0, 3.0) and info.readable
    (flat,) = scan(_nifti(tmp_path, np.zeros((4, 5), np.int16), name="flat.nii"))
    assert not flat.readable and "2D" in flat.problems[0]


def test_volume_from_memory_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q * [0.8, 0.9, 2.5]
    affine[:3, 3] = [-100.25, 50.5, 12.0]
    vol = Volume(rng.integers(-1000, 1000, (7, 8, 9)).astype(np.int16), affine, "CT")
    for suffix in (".nrrd", ".mha"):
        again = load_volume(save_volume(vol, tmp_path / f"m{suffix}"))
        np.testing.assert_array_equal(again.array, vol.array)
        np.testing.assert_allclose(again.affine, vol.affine, rtol=0, atol=1e-12)


def test_written_files_get_normal_permissions(tmp_path, make_volume):
    umask = os.umask(0o022)
    try:
        out = save_volume(make_volume(), tmp_path / "p.nii.gz")
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644
