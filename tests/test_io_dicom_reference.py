"""Every series of ``dicom_with_reference/`` against dcm2niix's reference NIfTI (geometry and values).

Both sides are brought to RAS axis order with ``Volume.reoriented("RAS")`` (no resampling)
before the affines (within 1e-3 mm) and voxel values are compared. Where dcm2niix follows a
vendor convention (Philips "FP" scaling, phase in radians), the test checks medseg's convention
(stored x RescaleSlope + RescaleIntercept, from pydicom) and the exact relation to the Ref.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.errors import InputError
from medseg.io import load_volume, scan
from medseg.volume import Volume

pytestmark = pytest.mark.shared_data

REF = "dicom_with_reference"


def ref_volume(path: Path, t: int | None = None, *, scaled: bool = True) -> Volume:
    """A dcm2niix reference as a Volume (time point ``t`` of a 4D file), values as dcm2niix means them."""
    img = nib.load(str(path))
    data = img.get_fdata(dtype=np.float64) if scaled else np.asanyarray(img.dataobj.get_unscaled())
    if t is not None:
        data = data[..., t]
    return Volume(np.asarray(data), img.affine)


def same_grid_ras(ours: Volume, ref: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Assert equal geometry in RAS axis order; return both arrays in that order."""
    a, b = ours.reoriented("RAS"), ref.reoriented("RAS")
    assert a.shape == b.shape
    np.testing.assert_allclose(a.affine, b.affine, rtol=0, atol=1e-3)
    return a.array, b.array


# --- dcm_qa_ts: one mosaic EPI in 9 transfer syntaxes ------------------------------------------

@pytest.mark.parametrize("number", range(1, 10))
def test_ts_every_transfer_syntax_matches_reference(shared_data, number):
    ours = load_volume(shared_data / REF / "dcm_qa_ts" / "In" / f"{number}.dcm")
    assert ours.shape == (64, 64, 35) and ours.array.dtype == np.int16
    ours_ras, ref_ras = same_grid_ras(ours, ref_volume(shared_data / REF / "dcm_qa_ts" / "Ref" / "1.nii"))
    np.testing.assert_array_equal(ours_ras, ref_ras)
    assert int(ours.array.max()) == 2362
    assert ours.source.extra["layout"] == "mosaic"


def test_ts_folder_is_nine_volumes_not_one_stack(shared_data):
    infos = scan(shared_data / REF / "dcm_qa_ts" / "In")
    # One SeriesInstanceUID, nine SeriesNumbers at one position: nine volumes, not 384x384x9.
    assert [i.key.split("#", 1)[1] for i in infos] == [f"series={n}" for n in range(1, 10)]
    assert {i.shape for i in infos} == {(64, 64, 35)}
    assert all(i.readable for i in infos)
    assert len({i.key.split("#")[0] for i in infos}) == 1
    with pytest.raises(InputError, match="holds 9 series"):
        load_volume(shared_data / REF / "dcm_qa_ts" / "In")
    third = load_volume(shared_data / REF / "dcm_qa_ts" / "In", series=infos[2].key)
    assert third.source.series_number == "3"
    assert third.source.extra["transfer_syntaxes"] == ["1.2.840.10008.1.2.2"]  # big endian


# --- dcm_qa_12bit: garbage in the unused high bits, signed 12-bit ------------------------------

@pytest.mark.parametrize("name,ref,low,high", [
    ("12bitUnsigned.dcm", "2.nii", 0, 2908),
    ("12bitUnsigned_0x0F0F.dcm", "3.nii", 0, 4095),
    ("12bitSigned_0x0F0F.dcm", "4.nii", -2048, 2047),
])
def test_12bit_masked_and_sign_extended(shared_data, name, ref, low, high):
    path = shared_data / REF / "dcm_qa_12bit" / "In" / name
    ours = load_volume(path)
    ours_ras, ref_ras = same_grid_ras(ours, ref_volume(shared_data / REF / "dcm_qa_12bit" / "Ref" / ref))
    np.testing.assert_array_equal(ours_ras, ref_ras)
    assert (int(ours.array.min()), int(ours.array.max())) == (low, high)
    if name == "12bitUnsigned.dcm":
        # The raw 16-bit words really carry bits above BitsStored: a reader that does not mask
        # would see values up to 0x111B.
        raw = np.frombuffer(pydicom.dcmread(path).PixelData, dtype="<u2")
        assert raw.max() > 0x0FFF
    if "Signed" in name:
        assert (ours.array == -241).any() and (ours.array == -1).any()


# --- dcm_qa_nih: Siemens mosaics (2 volumes each) and a GE 4D series in one tree ----------------

SIEMENS = [("mr_0003", "EPI_PE=AP_3.nii"), ("mr_0004", "EPI_PE=PA_4.nii"),
           ("mr_0005", "EPI_PE=RL_5.nii"), ("mr_0006", "EPI_PE=LR_6.nii")]


@pytest.mark.parametrize("folder,ref", SIEMENS)
def test_nih_siemens_mosaic_time_points(shared_data, folder, ref):
    where = shared_data / REF / "dcm_qa_nih" / "In" / "20180918Si" / folder
    infos = scan(where)
    assert [i.extra["split"] for i in infos] == [{"vol": 1}, {"vol": 2}]
    for t, info in enumerate(infos):
        ours = load_volume(where, info.key)
        assert ours.shape == (72, 72, 5)
        ours_ras, ref_ras = same_grid_ras(ours, ref_volume(shared_data / REF / "dcm_qa_nih" / "Ref" / ref, t))
        np.testing.assert_array_equal(ours_ras, ref_ras)
    # The export's README-Series.txt is skipped, and said so.
    assert any("non-DICOM" in w and "README-Series.txt" in w for w in ours.source.warnings)


def test_nih_ge_4d_series_splits_into_ten_volumes(shared_data):
    where = shared_data / REF / "dcm_qa_nih" / "In" / "20180918GE"
    infos = scan(where)
    assert [i.extra["split"] for i in infos] == [{"vol": v} for v in range(1, 11)]
    assert {i.shape for i in infos} == {(64, 64, 15)} and {i.n_files for i in infos} == {15}
    assert infos[0].spacing_mm == (3.75, 3.75, 5.0)  # 5 mm from positions, not SliceThickness 3 mm
    with pytest.raises(InputError, match=r"4D series: 10 volumes of 64x64x15"):
        load_volume(where)
    ref_path = shared_data / REF / "dcm_qa_nih" / "Ref" / "DCM2NIIX_regression_test_4.nii"
    for t in (0, 4, 9):
        ours = load_volume(where, t)
        ours_ras, ref_ras = same_grid_ras(ours, ref_volume(ref_path, t))
        np.testing.assert_array_equal(ours_ras, ref_ras)


def test_nih_tree_lists_every_series(shared_data):
    infos = scan(shared_data / REF / "dcm_qa_nih" / "In")
    assert len(infos) == 10 + 4 * 2
    assert sorted({i.description for i in infos}) == [
        "Axial EPI-FMRI (Interleaved I to S)", "EPI PE=AP", "EPI PE=LR", "EPI PE=PA", "EPI PE=RL"]


# --- dcm_qa_enh: enhanced multi-frame MR ------------------------------------------------------

def test_enhanced_siemens_xa10_four_time_points(shared_data):
    where = shared_data / REF / "dcm_qa_enh" / "In" / "Siemens" / "XA10"
    infos = scan(where)
    assert [i.extra["split"] for i in infos] == [{"vol": v} for v in range(1, 5)]
    ref_path = shared_data / REF / "dcm_qa_enh" / "Ref" / "Siemens_REST1_w_SMS_PF7-8_6.nii"
    for t, info in enumerate(infos):
        ours = load_volume(where, info.index)
        assert ours.shape == (64, 64, 6)
        ours_ras, ref_ras = same_grid_ras(ours, ref_volume(ref_path, t))
        np.testing.assert_array_equal(ours_ras, ref_ras)
        assert ours.source.extra["frame_numbers"] == [1, 2, 3, 4, 5, 6] or \
            sorted(ours.source.extra["frame_numbers"]) == [1, 2, 3, 4, 5, 6]


def _philips_frame_scaling(path: Path) -> dict[str, tuple[float, float, float]]:
    """(RescaleSlope, RescaleIntercept, private ScaleSlope) per frame type, from pydicom."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    found = {}
    for frame in ds.PerFrameFunctionalGroupsSequence:
        kind = frame.MRImageFrameTypeSequence[0].FrameType[3]
        pvt = frame.PixelValueTransformationSequence[0]
        private = frame[0x2005, 0x140F].value[0]
        found[kind] = (float(pvt.RescaleSlope), float(pvt.RescaleIntercept), float(private[0x2005, 0x100E].value))
    return found


def test_enhanced_philips_magnitude_and_field_map(shared_data):
    path = shared_data / REF / "dcm_qa_enh" / "In" / "Philips" / "IM_0027_fMAP.dcm"
    infos = scan(path)
    assert sorted(i.extra["split"]["type"] for i in infos) == ["FIELD_MAP", "M"]
    assert {i.shape for i in infos} == {(64, 64, 32)}
    scaling = _philips_frame_scaling(path)
    stored = pydicom.dcmread(path).pixel_array  # (64 frames, rows, columns)
    refs = shared_data / REF / "dcm_qa_enh" / "Ref"
    for info in infos:
        ours = load_volume(path, info.key)
        kind = info.extra["split"]["type"]
        rs, ri, ss = scaling[kind]
        # medseg's values are the standard ones: stored x RescaleSlope + RescaleIntercept.
        frames = sorted(set(ours.source.extra["frame_numbers"]))
        assert len(frames) == 32
        expected = np.sort((stored[np.array(frames) - 1].astype(np.float64) * rs + ri).ravel())
        np.testing.assert_allclose(np.sort(ours.array.ravel().astype(np.float64)), expected, rtol=1e-6, atol=1e-4)
        if kind == "M":
            ref = ref_volume(refs / "Philips_WIP_B0_NS_801_e1.nii")
            ours_ras, ref_ras = same_grid_ras(ours, ref)
            # dcm2niix writes Philips "FP" values, stored / ScaleSlope: a constant 1/(RS*SS) apart.
            nonzero = ours_ras != 0
            np.testing.assert_allclose(ref_ras[nonzero] / ours_ras[nonzero], 1.0 / (rs * ss), rtol=1e-5)
            np.testing.assert_array_equal(ref_ras == 0, ~nonzero)
        else:
            ref_path = refs / "Philips_WIP_B0_NS_801_e2_fieldmaphz.nii"
            ours_ras, ref_ras = same_grid_ras(ours, ref_volume(ref_path))
            _, raw_ras = same_grid_ras(ours, ref_volume(ref_path, scaled=False))
            # The field map in Hz: the Ref holds the same stored integers; dcm2niix's slope is
            # rounded (0.2442017 vs RescaleSlope 0.24420024), so its Hz differ by < 0.01.
            np.testing.assert_allclose(ours_ras, raw_ras * rs + ri, rtol=0, atol=1e-4)
            np.testing.assert_allclose(ours_ras, ref_ras, rtol=0, atol=0.01)
            assert -496 < ours.array.min() < -495 and 497 < ours.array.max() < 498


# --- dcm_qa_table_philips: two series, 2 echoes x magnitude/phase each, table moved ------------

@pytest.mark.parametrize("series", ["1301_Dual-echo_iso", "2201_Dual-echo_FH-60_table_moved"])
def test_philips_echo_and_phase_split(shared_data, series):
    where = shared_data / REF / "dcm_qa_table_philips" / "In" / "Ph" / series
    infos = scan(where)
    assert [i.extra["split"] for i in infos] == [
        {"type": "M", "echo": 1}, {"type": "M", "echo": 2}, {"type": "P", "echo": 1}, {"type": "P", "echo": 2}]
    assert {i.shape for i in infos} == {(96, 96, 30)}  # not SimpleITK's 96x96x120 at 0.975 mm
    for info in infos:
        ours = load_volume(where, info.key)
        split = info.extra["split"]
        name = f"Ph_727468159_{series}_e{split['echo']}" + ("_ph" if split["type"] == "P" else "")
        ref_path = shared_data / REF / "dcm_qa_table_philips" / "Ref" / f"{name}.nii"
        ours_ras, ref_ras = same_grid_ras(ours, ref_volume(ref_path))
        _, raw_ras = same_grid_ras(ours, ref_volume(ref_path, scaled=False))
        rs = ours.source.extra["rescale_slopes"]
        ri = ours.source.extra["rescale_intercepts"]
        assert len(rs) == 1 and len(ri) == 1
        first = pydicom.dcmread(where / ours.source.extra["files"][0], stop_before_pixels=True)
        assert (rs[0], ri[0]) == (float(first.RescaleSlope), float(first.RescaleIntercept))
        # The Ref holds the stored integers; medseg's values are stored x RS + RI.
        np.testing.assert_allclose(ours_ras, raw_ras * rs[0] + ri[0], rtol=1e-6, atol=1e-3)
        if split["type"] == "M":
            (ss,) = ours.source.extra["philips_scale_slope"]
            assert ri[0] == 0.0 and ss == pytest.approx(float(first[0x2005, 0x100E].value))
            nonzero = ours_ras != 0
            np.testing.assert_allclose(ref_ras[nonzero] / ours_ras[nonzero], 1.0 / (rs[0] * ss), rtol=1e-5)
        else:
            # dcm2niix maps Philips phase to radians (-pi..pi); medseg keeps the DICOM values
            # (-3142..3140). The two are one linear map apart, fitted here exactly.
            a, b = np.polyfit(ours_ras.ravel(), ref_ras.ravel(), 1)
            np.testing.assert_allclose(ref_ras, a * ours_ras + b, rtol=0, atol=1e-5)
            assert 0.00099 < a < 0.00101
            assert ours.array.min() >= -3142 and ours.array.max() <= 3142


def test_philips_table_shift_is_kept(shared_data):
    root = shared_data / REF / "dcm_qa_table_philips" / "In" / "Ph"
    infos = scan(root)
    assert len(infos) == 8
    a = load_volume(root / "1301_Dual-echo_iso", 0)
    b = load_volume(root / "2201_Dual-echo_FH-60_table_moved", 0)
    np.testing.assert_allclose(a.origin - b.origin, [0.0, 0.0, 60.0], atol=1e-6)


def test_mosaic_tiles_stored_against_the_normal_are_reordered(shared_data, monkeypatch):
    """A CSA SliceNormalVector opposite to row x column means tile 0 is the *last* slice along
    the normal: k must still increase along the normal, so the tiles come in reverse order."""
    import warnings

    from medseg.io import _dicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM code experimental on import
        from nibabel.nicom import csareader

    path = shared_data / REF / "dcm_qa_ts" / "In" / "1.dcm"
    normal = load_volume(path)
    real = csareader.get_slice_normal
    monkeypatch.setattr(csareader, "get_slice_normal", lambda csa: [-v for v in real(csa)])
    _dicom._CACHE.clear()
    flipped = load_volume(path)
    _dicom._CACHE.clear()
    np.testing.assert_array_equal(flipped.array, normal.array[:, :, ::-1])
    lps = flipped.affine_lps
    cross = np.cross(lps[:3, 0], lps[:3, 1])
    assert np.dot(cross, lps[:3, 2]) > 0  # k still runs along row x column
    # Tile 0 stays where the CSA header puts it; it is now the last slice along the normal.
    np.testing.assert_allclose(flipped.voxel_to_world([0, 0, 34]), normal.voxel_to_world([0, 0, 0]), atol=1e-6)
