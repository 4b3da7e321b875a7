"""Bad DICOM input: each case gives one clear InputError line (file/folder, what, what to do),
and the CLI prints exactly that line on stderr with a non-zero exit and no traceback.

Broken inputs are made in ``tmp_path`` from three CT slices 1 mm apart: the real
``dicom_seg/dcmqi/ct-3slice`` (GE, 512 x 512) and a generated series of the same layout from the
phantom (``generated_ct3``); every test on them runs on both. Grouping, gaps and 4D on generated
series: ``test_generated_dicom_series.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.cli.main import main
from medseg.errors import InputError
from medseg.io import load_volume, scan

CT3 = "dicom_seg/dcmqi/ct-3slice"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(capsys, *argv: str, contains: list[str]) -> str:
    code, _, err = run_cli(capsys, *argv)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith(f"medseg {argv[0]}: error: ")
    for text in contains:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.shared_data), "generated"])
def ct3(request, shared_data, generated_ct3, tmp_path) -> Path:
    """A copy of three CT slices 1 mm apart, 01.dcm..03.dcm: the real GE ones or the phantom's."""
    folder = tmp_path / "ct3"
    shutil.copytree(shared_data / CT3 if request.param == "real" else generated_ct3, folder)
    return folder


def slice_shape(path: Path) -> tuple[int, int]:
    """(columns, rows) of a slice, as pydicom reads them: medseg's (i, j) size."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return int(ds.Columns), int(ds.Rows)


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty folder"):
        load_volume(tmp_path / "empty")
    assert_one_line_error(capsys, "convert", str(tmp_path / "empty"), str(tmp_path / "o.nii.gz"),
                          contains=[str(tmp_path / "empty"), "is an empty folder", "DICOM files"])
    assert not (tmp_path / "o.nii.gz").exists()


def test_folder_without_dicom(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.txt").write_text("not an image\n")
    (folder / "meta.json").write_text("{}\n")
    with pytest.raises(InputError, match=r"holds no DICOM files \(2 file\(s\) looked at"):
        scan(folder)
    assert_one_line_error(capsys, "info", str(folder), contains=[str(folder), "no DICOM files"])


def test_corrupt_and_non_image_files_are_skipped_and_reported(ct3, capsys):
    original = load_volume(ct3)
    whole = (ct3 / "01.dcm").read_bytes()
    (ct3 / "cut_header.dcm").write_bytes(whole[:1000])       # cut inside the header
    (ct3 / "garbage.dcm").write_bytes(whole[:132] + os.urandom(400))  # DICM preamble, then noise
    (ct3 / "README.txt").write_text("series notes\n")
    (ct3 / "sub").mkdir()
    (ct3 / "sub" / "table.csv").write_text("a,b\n1,2\n")
    vol = load_volume(ct3)
    np.testing.assert_array_equal(vol.array, original.array)
    warnings = " | ".join(vol.source.warnings)
    assert "cut_header.dcm: truncated or damaged DICOM header" in warnings
    assert "garbage.dcm" in warnings
    assert "skipped 2 non-DICOM file(s)" in warnings
    info = scan(ct3)
    assert len(info) == 1 and info[0].readable
    assert any("cut_header.dcm" in p for p in info[0].problems)
    code, out, _ = run_cli(capsys, "info", str(ct3))
    assert code == 0 and "cut_header.dcm" in out


def test_truncated_slice_counts_as_missing(ct3, capsys):
    whole = (ct3 / "02.dcm").read_bytes()
    (ct3 / "02.dcm").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError) as err:
        load_volume(ct3)
    assert "1 slice(s) cannot be read (k = 1)" in str(err.value)
    assert "02.dcm: truncated file (pixel data has" in str(err.value)
    line = assert_one_line_error(capsys, "convert", str(ct3), str(ct3.parent / "o.nii.gz"),
                                 contains=["02.dcm", "--allow-gaps"])
    assert str(ct3) in line
    vol = load_volume(ct3, allow_gaps=True)
    assert vol.shape == (*slice_shape(ct3 / "01.dcm"), 3)
    first = vol.source.extra["files"][0]
    assert first != "02.dcm" and vol.source.extra["files"][1] == ""
    good = pydicom.dcmread(ct3 / first).pixel_array.T.astype(np.int32) - 1024
    np.testing.assert_array_equal(vol.array[:, :, 0], good)
    assert (vol.array[:, :, 1] == vol.array[:, :, [0, 2]].min()).all()


@pytest.mark.shared_data
def test_missing_slices_via_cli(shared_data, tmp_path, capsys):
    folder = shared_data / "dicom_seg" / "highdicom" / "referenced_CT2_from_pydicom"
    assert_one_line_error(capsys, "convert", str(folder), str(tmp_path / "o.nii.gz"),
                          contains=["161 missing slice(s)", "position -99.48 mm", "slice 0", "slice 1",
                                    "--allow-gaps"])
    code, out, _ = run_cli(capsys, "convert", "--allow-gaps", str(folder), str(tmp_path / "o.nii.gz"))
    assert code == 0 and "16x16x165" in out and "missing slices allowed" in out
    assert load_volume(tmp_path / "o.nii.gz").shape == (16, 16, 165)


def test_non_uniform_spacing(ct3, capsys):
    ds = pydicom.dcmread(ct3 / "02.dcm")
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                               float(ds.ImagePositionPatient[2]) + 0.3]
    ds.save_as(ct3 / "02.dcm")
    with pytest.raises(InputError, match=r"non-uniform slice spacing: 0\.70 to 1\.30 mm"):
        load_volume(ct3, allow_gaps=True)  # not a gap: no override reads it
    assert not scan(ct3)[0].readable
    assert_one_line_error(capsys, "convert", str(ct3), str(ct3.parent / "o.nii.gz"),
                          contains=["non-uniform slice spacing", "medseg info"])


@pytest.mark.shared_data
def test_several_series_need_a_choice(shared_data, tmp_path, capsys):
    shutil.copytree(shared_data / CT3, tmp_path / "tree" / "ct")
    shutil.copytree(shared_data / "dicom_seg" / "dcmqi" / "24x38x3" / "image", tmp_path / "tree" / "small")
    with pytest.raises(InputError, match=r"holds 2 series: \[0\] CT .*512x512x3.*; \[1\] CT .*24x38x3"):
        load_volume(tmp_path / "tree")
    assert_one_line_error(capsys, "convert", str(tmp_path / "tree"), str(tmp_path / "o.nii.gz"),
                          contains=["holds 2 series", "--series"])
    assert load_volume(tmp_path / "tree", series=1).shape == (24, 38, 3)
    with pytest.raises(InputError, match="no series with index 5"):
        load_volume(tmp_path / "tree", series=5)
    with pytest.raises(InputError, match="no series with UID 1.2.3"):
        load_volume(tmp_path / "tree", series="1.2.3")


def test_single_slice_needs_allow_2d(ct3, capsys):
    one = ct3 / "01.dcm"
    with pytest.raises(InputError, match="single 2D slice"):
        load_volume(one)
    assert_one_line_error(capsys, "convert", str(one), str(ct3.parent / "o.nii.gz"),
                          contains=[str(one), "single 2D slice", "--allow-2d"])
    vol = load_volume(one, allow_2d=True)
    assert vol.shape == (*slice_shape(one), 1)
    assert vol.spacing[2] == pytest.approx(float(pydicom.dcmread(one, stop_before_pixels=True).SliceThickness))


@pytest.mark.shared_data
def test_4d_series_needs_a_volume_choice(shared_data, tmp_path, capsys):
    folder = shared_data / "dicom_with_reference" / "dcm_qa_nih" / "In" / "20180918GE" / "mr_0004"
    assert_one_line_error(capsys, "convert", str(folder), str(tmp_path / "o.nii.gz"),
                          contains=["4D series: 10 volumes of 64x64x15", "--series", "#vol=1"])
    code, _, _ = run_cli(capsys, "convert", "--series", "3", str(folder), str(tmp_path / "o.nii.gz"))
    assert code == 0
    uid = scan(folder)[0].key.split("#")[0]
    with pytest.raises(InputError, match="was split into 10 volumes"):
        load_volume(folder, series=uid)


def test_unreadable_file(ct3, capsys):
    target = ct3 / "02.dcm"
    target.chmod(0)
    try:
        if os.geteuid() == 0:
            # root reads files whatever their mode: the series is complete and must read as such.
            vol = load_volume(ct3)
            assert vol.shape == (*slice_shape(target), 3)
            assert not any("permission" in w for w in vol.source.warnings)
        else:
            with pytest.raises(InputError) as err:
                load_volume(ct3)
            assert "02.dcm: cannot be read (permission denied)" in str(err.value)
            assert_one_line_error(capsys, "convert", str(ct3), str(ct3.parent / "o.nii.gz"),
                                  contains=["permission denied"])
            with pytest.raises(InputError, match="permission denied"):
                load_volume(target, allow_2d=True)
    finally:
        target.chmod(0o644)


def test_unreadable_file_reported_when_open_fails(ct3, monkeypatch):
    """The permission path without relying on the user: ``open`` itself refuses one file."""
    import builtins

    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if str(file).endswith("02.dcm"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    infos = scan(ct3)
    # Two readable slices 2 mm apart are a complete-looking series; the skipped file is reported.
    assert any("02.dcm: cannot be read (permission denied)" in p for p in infos[0].problems)
    vol = load_volume(ct3)
    assert any("permission denied" in w for w in vol.source.warnings)


@pytest.mark.shared_data
def test_non_image_objects_are_listed_not_read(shared_data, tmp_path, capsys):
    seg = shared_data / "dicom_seg" / "dcmqi" / "liver.dcm"
    infos = scan(seg)
    assert len(infos) == 1 and not infos[0].readable and infos[0].modality == "SEG"
    assert "DICOM SEG" in infos[0].problems[0]
    # Not an image series, but read as what it is: the label map (README: 107 098 liver voxels).
    assert main(["convert", str(seg), str(tmp_path / "liver.nii.gz")]) == 0
    labels = load_volume(tmp_path / "liver.nii.gz")
    assert labels.shape == (512, 512, 3) and int(np.count_nonzero(labels.array)) == 107098


def test_single_bad_files(ct3, tmp_path, capsys):
    text = tmp_path / "notes.dcm"
    text.write_text("not DICOM at all\n")
    assert_one_line_error(capsys, "convert", str(text), str(tmp_path / "o.nii.gz"),
                          contains=[str(text), "is not a DICOM file"])
    cut = tmp_path / "cut.dcm"
    cut.write_bytes((ct3 / "01.dcm").read_bytes()[:700])
    with pytest.raises(InputError, match="truncated or damaged DICOM header"):
        load_volume(cut)
    assert_one_line_error(capsys, "info", str(cut), contains=[str(cut), "truncated or damaged"])
