"""DICOM folders on generated series: grouping, splitting, sorting, gaps, 4D and non-image objects.

What the real-data tests (``test_io_dicom_ct.py``, ``test_io_dicom_errors.py``,
``test_io_dicom_reference.py``) check on real exports, checked here on series medseg writes from
its phantom and then rearranges as scanners and PACS exports do: several series in one tree,
one SeriesInstanceUID saved under several SeriesNumbers, echoes and magnitude/phase images in
one series, time points at repeated positions, missing and damaged slices, copies, empty UIDs,
a DICOM SEG beside its images. Expected messages and numbers follow from how each input was made.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import TRANSFER_SYNTAXES, assert_matches_dcm2niix, run_dcm2niix, transcode, write_series

from medseg.cli.main import main
from medseg.errors import InputError
from medseg.io import load_volume, scan
from medseg.volume import Volume, affine_from_lps

UIDS = {"study_uid": "1.2.826.0.1.3680043.10.543.1", "frame_of_reference_uid": "1.2.826.0.1.3680043.10.543.2"}


def assert_one_line_error(capsys, *argv: str, contains: list[str]) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith(f"medseg {argv[0]}: error: ")
    for text in contains:
        assert text in lines[0], lines[0]
    return lines[0]


def piece(phantom_ct: Volume, n_k: int, *, spacing=(0.9, 0.9, 1.25), origin=(-40.0, -30.0, -100.0),
          modality: str = "CT", offset_hu: int = 0) -> Volume:
    """``n_k`` axial slices of 48 x 40 phantom voxels on an axis-aligned LPS grid of our choosing."""
    part = phantom_ct.crop((slice(70, 118), slice(60, 100), slice(30, 30 + n_k)))
    return Volume((part.array.astype(np.int32) + offset_hu).astype(np.int16),
                  affine_from_lps(spacing, origin, np.eye(3)), modality)


def merge_into(folder: Path, *series: Path) -> Path:
    """Move the files of several written series into one flat folder (as a PACS export does)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, source in enumerate(series):
        for path in sorted(source.iterdir()):
            path.rename(folder / f"s{n}_{path.name}")
        source.rmdir()
    return folder


def dcm2niix_nifti(folder: Path, out: Path) -> nib.Nifti1Image:
    (path,) = run_dcm2niix(folder, out)
    return nib.load(str(path))


# --- missing, damaged and misplaced slices -------------------------------------------------------------

@pytest.fixture
def ten_slices(phantom_ct, tmp_path) -> tuple[Path, Volume]:
    vol = piece(phantom_ct, 10)
    return write_series(vol, tmp_path / "ten"), vol


def test_missing_slices_refused_then_placed_on_the_grid(ten_slices):
    folder, vol = ten_slices
    files = sorted(folder.iterdir())
    for k in (2, 3, 7):
        files[k].unlink()
    with pytest.raises(InputError) as err:
        load_volume(folder)
    message = str(err.value)
    z = vol.origin_lps[2] + 1.25 * np.arange(10)
    assert "3 missing slice(s) in 2 gap(s)" in message
    assert f"between slice 1 (position {z[1]:.2f} mm) and slice 2 (position {z[4]:.2f} mm)" in message
    assert "3.75 mm where the spacing is 1.25 mm (2 slice(s) missing)" in message and "allow_gaps=True" in message
    read = load_volume(folder, allow_gaps=True)
    assert read.shape == vol.shape
    np.testing.assert_allclose(read.affine, vol.affine, rtol=0, atol=1e-6)
    present = [0, 1, 4, 5, 6, 8, 9]
    np.testing.assert_array_equal(read.array[:, :, present], vol.array[:, :, present])
    lowest = int(vol.array[:, :, present].min())
    assert (read.array[:, :, [2, 3, 7]] == lowest).all()
    assert [bool(u) for u in read.source.sop_instance_uids] == [k in present for k in range(10)]
    assert any("missing slices allowed: 3 slice(s) at k = [2, 3, 7]" in w for w in read.source.warnings)


def test_missing_slices_via_cli(ten_slices, tmp_path, capsys):
    folder, vol = ten_slices
    sorted(folder.iterdir())[5].unlink()
    assert_one_line_error(capsys, "convert", str(folder), str(tmp_path / "o.nii.gz"),
                          contains=["1 missing slice(s)", "slice 4", "slice 5", "--allow-gaps"])
    assert not (tmp_path / "o.nii.gz").exists()
    assert main(["convert", "--allow-gaps", str(folder), str(tmp_path / "o.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "48x40x10" in out and "missing slices allowed" in out
    again = load_volume(tmp_path / "o.nii.gz")
    np.testing.assert_array_equal(again.array[:, :, :5], vol.array[:, :, :5])


def test_slices_off_one_line_are_refused(ten_slices):
    folder, _ = ten_slices
    path = sorted(folder.iterdir())[4]
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 3.0, *ds.ImagePositionPatient[1:]]
    ds.save_as(path)
    with pytest.raises(InputError, match=r"not stacked on one straight line \(one is 3\.000 mm off it\)"):
        load_volume(folder)


def test_damaged_slice_in_the_middle_counts_as_missing(ten_slices):
    folder, vol = ten_slices
    path = sorted(folder.iterdir())[6]
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(InputError, match=rf"1 slice\(s\) cannot be read \(k = 6\).*{path.name}: truncated file"):
        load_volume(folder)
    read = load_volume(folder, allow_gaps=True)
    np.testing.assert_array_equal(read.array[:, :, :6], vol.array[:, :, :6])


def test_a_copied_slice_is_read_once(ten_slices):
    folder, vol = ten_slices
    first = sorted(folder.iterdir())[0]
    shutil.copy(first, folder / "copy_of_first.dcm")
    read = load_volume(folder)
    np.testing.assert_array_equal(read.array, vol.array)
    assert any("copy_of_first.dcm" in w and "a copy" in w for w in read.source.warnings) or \
        any(first.name in w and "a copy" in w for w in read.source.warnings)


# --- several series ------------------------------------------------------------------------------------

def test_several_series_in_a_tree_need_a_choice(phantom_ct, tmp_path, capsys):
    big = piece(phantom_ct, 6)
    small = Volume(big.array[:20, :16, :4], big.affine, "CT")
    write_series(big, tmp_path / "tree" / "ct", series_number=2)
    write_series(small, tmp_path / "tree" / "b" / "deep", series_number=3)
    infos = scan(tmp_path / "tree")
    assert sorted((i.shape, i.n_files) for i in infos) == [((20, 16, 4), 4), ((48, 40, 6), 6)]
    with pytest.raises(InputError, match=r"holds 2 series: \[0\] CT .*x.*; \[1\] CT "):
        load_volume(tmp_path / "tree")
    assert_one_line_error(capsys, "convert", str(tmp_path / "tree"), str(tmp_path / "o.nii.gz"),
                          contains=["holds 2 series", "--series"])
    index = next(i.index for i in infos if i.shape == (20, 16, 4))
    np.testing.assert_array_equal(load_volume(tmp_path / "tree", series=index).array, small.array)
    by_uid = load_volume(tmp_path / "tree", series=next(i.key for i in infos if i.shape == (48, 40, 6)))
    np.testing.assert_array_equal(by_uid.array, big.array)
    with pytest.raises(InputError, match="no series with index 5"):
        load_volume(tmp_path / "tree", series=5)
    with pytest.raises(InputError, match="no series with UID 1.2.3"):
        load_volume(tmp_path / "tree", series="1.2.3")


def test_one_uid_saved_under_several_series_numbers_and_syntaxes(phantom_ct, tmp_path):
    """As dcm_qa_ts: one image saved again under new SeriesNumbers (and transfer syntaxes), one UID."""
    vol = piece(phantom_ct, 5)
    syntaxes = ["explicit_le", "implicit_le", "explicit_be", "rle", "jpeg_ls", "jpeg2000"]
    written = []
    for number, syntax in enumerate(syntaxes, 1):
        plain = write_series(vol, tmp_path / f"plain{number}", series_number=number, uid_seed=f"n{number}",
                             series_uid="1.2.826.0.1.3680043.10.543.9", **UIDS)
        written.append(transcode(plain, tmp_path / f"s{number}", syntax))
        shutil.rmtree(plain)
    folder = merge_into(tmp_path / "in", *written)
    infos = scan(folder)
    assert [i.key.split("#", 1)[1] for i in infos] == [f"series={n}" for n in range(1, 7)]
    assert {i.shape for i in infos} == {(48, 40, 5)} and len({i.key.split("#")[0] for i in infos}) == 1
    with pytest.raises(InputError, match="holds 6 series"):
        load_volume(folder)
    for info, syntax in zip(infos, syntaxes):
        read = load_volume(folder, series=info.key)
        assert read.source.series_number == info.key[-1]
        assert read.source.extra["transfer_syntaxes"] == [TRANSFER_SYNTAXES[syntax]]
        np.testing.assert_array_equal(read.array, vol.array)


def test_echoes_and_magnitude_phase_split_into_volumes(phantom_ct, tmp_path):
    """As a Philips dual-echo export: one series, 2 echoes x (magnitude, phase), 4 volumes."""
    base = piece(phantom_ct, 6, modality="MR", offset_hu=1024)
    parts = []
    for echo, te in ((1, 7.0), (2, 10.0)):
        for kind in ("M", "P"):
            vol = base.with_array((base.array // (1 if kind == "M" else 2) + 100 * echo).astype(np.int16))
            parts.append(((kind, echo), vol, write_series(
                vol, tmp_path / f"{kind}{echo}", modality="MR", series_uid="1.2.826.0.1.3680043.10.543.7",
                uid_seed=f"{kind}{echo}", attributes={"EchoNumbers": echo, "EchoTime": te,
                                                      "ImageType": ["ORIGINAL", "PRIMARY", kind, "ND"]}, **UIDS)))
    folder = merge_into(tmp_path / "in", *(p[2] for p in parts))
    infos = scan(folder)
    assert [i.extra["split"] for i in infos] == [
        {"type": "M", "echo": 1}, {"type": "M", "echo": 2}, {"type": "P", "echo": 1}, {"type": "P", "echo": 2}]
    expected = {key: vol for key, vol, _ in parts}
    for info in infos:
        split = info.extra["split"]
        read = load_volume(folder, info.key)
        np.testing.assert_array_equal(read.array, expected[(split["type"], split["echo"])].array)


def test_a_moved_table_keeps_both_origins(phantom_ct, tmp_path):
    """As dcm_qa_table: the same anatomy in two series, the second 60 mm further along z."""
    vol = piece(phantom_ct, 5)
    moved = Volume(vol.array, affine_from_lps((0.9, 0.9, 1.25), (-40.0, -30.0, -160.0), np.eye(3)), "CT")
    write_series(vol, tmp_path / "root" / "a", series_number=1301)
    write_series(moved, tmp_path / "root" / "b", series_number=2201)
    assert len(scan(tmp_path / "root")) == 2
    a, b = load_volume(tmp_path / "root" / "a"), load_volume(tmp_path / "root" / "b")
    np.testing.assert_allclose(a.origin - b.origin, [0.0, 0.0, 60.0], atol=1e-6)


def test_two_planes_in_one_series_are_split(phantom_ct, tmp_path):
    """A localizer-like series: axial and coronal slices under one UID become two volumes."""
    axial = piece(phantom_ct, 4)
    coronal = axial.reoriented("LSA")  # j towards the head, k towards the front: coronal slices
    write_series(axial, tmp_path / "ax", series_uid="1.2.826.0.1.3680043.10.543.5", uid_seed="ax", **UIDS)
    write_series(coronal, tmp_path / "cor", series_uid="1.2.826.0.1.3680043.10.543.5", uid_seed="cor", **UIDS)
    folder = merge_into(tmp_path / "in", tmp_path / "ax", tmp_path / "cor")
    infos = scan(folder)
    assert [i.extra["split"] for i in infos] == [{"orient": 1}, {"orient": 2}]
    shapes = sorted(i.shape for i in infos)
    assert shapes == sorted([axial.shape, coronal.shape])
    for info in infos:
        read = load_volume(folder, info.key)
        np.testing.assert_array_equal(read.reoriented("LPS").array, axial.array)


# --- 4D ---------------------------------------------------------------------------------------------------

@pytest.fixture
def four_d(phantom_ct, tmp_path) -> tuple[Path, list[Volume]]:
    """Four time points of five slices at the same positions, one UID (values differ per time point)."""
    volumes, written = [], []
    for t in range(4):
        vol = piece(phantom_ct, 5, offset_hu=25 * t)
        volumes.append(vol)
        written.append(write_series(vol, tmp_path / f"t{t}", series_uid="1.2.826.0.1.3680043.10.543.4",
                                    uid_seed=f"t{t}", attributes={"AcquisitionNumber": t + 1,
                                                                  "TemporalPositionIdentifier": t + 1}, **UIDS))
        for path in sorted(written[-1].iterdir()):  # numbered through the series, as scanners do
            ds = pydicom.dcmread(path)
            ds.InstanceNumber = 5 * t + int(ds.InstanceNumber)
            ds.save_as(path)
    return merge_into(tmp_path / "4d", *written), volumes


def test_4d_series_needs_a_volume_choice(four_d, tmp_path, capsys):
    folder, volumes = four_d
    infos = scan(folder)
    assert [i.extra["split"] for i in infos] == [{"vol": v} for v in range(1, 5)]
    assert {i.shape for i in infos} == {(48, 40, 5)} and {i.n_files for i in infos} == {5}
    assert_one_line_error(capsys, "convert", str(folder), str(tmp_path / "o.nii.gz"),
                          contains=["4D series: 4 volumes of 48x40x5", "--series", "#vol=1"])
    assert main(["convert", "--series", "2", str(folder), str(tmp_path / "o.nii.gz")]) == 0
    np.testing.assert_array_equal(load_volume(tmp_path / "o.nii.gz").array, volumes[2].array)
    with pytest.raises(InputError, match="was split into 4 volumes"):
        load_volume(folder, series=infos[0].key.split("#")[0])


def test_4d_time_points_match_dcm2niix(four_d, tmp_path):
    folder, volumes = four_d
    ref = dcm2niix_nifti(folder, tmp_path / "nii")
    assert ref.shape == (48, 40, 5, 4)
    data = ref.get_fdata()
    for t, info in enumerate(scan(folder)):
        read = load_volume(folder, info.key)
        np.testing.assert_array_equal(read.array, volumes[t].array)
        assert_matches_dcm2niix(read, Volume(np.rint(data[..., t]).astype(np.int32), ref.affine))
        assert any(f"volume {t + 1} of 4" in w for w in read.source.warnings)


UNEQUAL = r"slice positions repeat unequally \(5 positions: 1 hold 3, 4 hold 4\); an incomplete time series"


def test_unequal_repeats_are_refused_and_info_says_why(four_d, capsys):
    folder, _ = four_d
    next(p for p in sorted(folder.iterdir()) if p.name.startswith("s3_")).unlink()
    with pytest.raises(InputError, match="cannot be read as a 3D volume"):
        load_volume(folder)
    (info,) = scan(folder)
    assert not info.readable and any(re.search(UNEQUAL, p) for p in info.problems)
    assert main(["info", str(folder)]) == 0
    assert re.search(UNEQUAL, capsys.readouterr().out)


def test_unequal_repeats_error_names_the_incomplete_time_series(four_d):
    folder, _ = four_d
    next(p for p in sorted(folder.iterdir()) if p.name.startswith("s3_")).unlink()
    with pytest.raises(InputError, match=UNEQUAL):
        load_volume(folder)


def test_spacing_comes_from_positions_not_slice_thickness(ten_slices):
    """As example_ct_dicom: 1.25 mm between slice positions, SliceThickness says 3 mm."""
    folder, vol = ten_slices
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SliceThickness = 3.0
        del ds.SpacingBetweenSlices
        ds.save_as(path)
    read = load_volume(folder)
    np.testing.assert_allclose(read.spacing, [0.9, 0.9, 1.25], atol=1e-9)
    np.testing.assert_array_equal(read.array, vol.array)


# --- UIDs, names and non-image objects ---------------------------------------------------------------------

def test_empty_series_uids_are_grouped_by_folder(phantom_ct, tmp_path):
    """As TotalSegmentator's example_ct_dicom: UIDs present but empty in the data set, kept in the file meta."""
    vol = piece(phantom_ct, 4)
    folder = write_series(vol, tmp_path / "anon")
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = ds.StudyInstanceUID = ds.SOPInstanceUID = ""
        ds.save_as(path)
    read = load_volume(folder)
    np.testing.assert_array_equal(read.array, vol.array)
    src = read.source
    assert src.series_uid == "" and src.study_uid == ""
    metas = [pydicom.dcmread(folder / name).file_meta.MediaStorageSOPInstanceUID for name in src.extra["files"]]
    assert list(src.sop_instance_uids) == metas and len(set(metas)) == 4
    assert any("SeriesInstanceUID is empty" in w for w in src.warnings)
    (info,) = scan(folder)
    assert info.key.startswith("noUID:")


@pytest.fixture
def seg_beside_images(generated_ct3, tmp_path) -> tuple[Path, Path]:
    """A DICOM SEG (highdicom) of a liver-like blob on the generated CT, in the CT's folder."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    folder = tmp_path / "study"
    shutil.copytree(generated_ct3, folder)
    sources = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    mask = np.zeros((3, sources[0].Rows, sources[0].Columns), bool)
    mask[:, 10:30, 20:50] = True
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="liver", segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(sources, mask, hd.seg.SegmentationTypeValues.BINARY, [description],
                                  hd.UID(), 100, hd.UID(), 1, "medseg tests", "mask", "1", "0")
    seg.save_as(folder / "seg.dcm")
    return folder, folder / "seg.dcm"


def test_non_image_objects_are_listed_not_read(seg_beside_images, tmp_path):
    folder, seg = seg_beside_images
    infos = scan(seg)
    assert len(infos) == 1 and not infos[0].readable and infos[0].modality == "SEG"
    assert "DICOM SEG" in infos[0].problems[0]
    # Beside its images, the SEG is listed and the image series is still the one read.
    assert sorted(i.modality for i in scan(folder)) == ["CT", "SEG"]
    ct = load_volume(folder)
    assert ct.shape == (80, 64, 3) and ct.modality == "CT"
    # The SEG file itself reads as the label map it holds, on the CT's voxels.
    assert main(["convert", str(seg), str(tmp_path / "mask.nii.gz")]) == 0
    mask = load_volume(tmp_path / "mask.nii.gz")
    assert mask.same_grid(ct)
    expected = np.zeros(ct.shape, bool)
    expected[20:50, 10:30, :] = True  # rows 10:30, columns 20:50 of every frame
    np.testing.assert_array_equal(mask.array > 0, expected)


def test_info_lists_every_series_of_a_generated_study(phantom_ct, tmp_path, capsys):
    vol = piece(phantom_ct, 5)
    for number in (3, 4):
        write_series(vol, tmp_path / "study" / f"series{number}", series_number=number,
                     series_description=f"recon {number}")
    (tmp_path / "study" / "README.txt").write_text("export notes\n")
    assert main(["info", str(tmp_path / "study")]) == 0
    out = capsys.readouterr().out
    assert "recon 3" in out and "recon 4" in out and out.count("48x40x5") == 2
