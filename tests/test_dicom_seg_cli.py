"""``medseg export-seg`` and ``medseg import-seg``: round trip through files, a case, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.case import read_case
from medseg.cli.main import main
from medseg.io import load_volume, save_volume

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"
CT = str(PHANTOM / "ct_dicom")


@pytest.fixture(scope="module")
def seg_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "phantom.dcm"
    code = main(["export-seg", str(PHANTOM / "organs.nii.gz"), "--dicom", CT, "--lesions",
                 str(PHANTOM / "lesions.nii.gz"), "-o", str(out), "--algorithm", "phantom generator:1"])
    assert code == 0
    return out


def test_export_prints_segments_and_import_writes_maps_names_and_viewer_tables(seg_file, tmp_path, capsys):
    capsys.readouterr()
    assert main(["import-seg", str(seg_file), "--dicom", CT, "-o", str(tmp_path / "labels.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "read BINARY SEG" in out and "16 segments (10 classes, 6 lesions) on 200x170x70 voxels, LPS" in out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["labels.ctbl", "labels.itksnap.txt", "labels.json", "labels.nii.gz", "labels_lesions.ctbl",
                     "labels_lesions.itksnap.txt", "labels_lesions.nii.gz"]
    labels = load_volume(tmp_path / "labels.nii.gz")
    truth = load_volume(PHANTOM / "organs.nii.gz")
    np.testing.assert_array_equal(labels.array, truth.array)
    assert labels.label_set == truth.label_set and labels.same_grid(truth)
    np.testing.assert_array_equal(load_volume(tmp_path / "labels_lesions.nii.gz").array,
                                  load_volume(PHANTOM / "lesions.nii.gz").array)
    assert "6 liver" not in (tmp_path / "labels.ctbl").read_text() and "1 liver " in (tmp_path / "labels.ctbl").read_text()


def test_import_into_a_case_and_export_that_case(seg_file, tmp_path, capsys):
    assert main(["import-seg", str(seg_file), "--dicom", CT, "-o", str(tmp_path / "case")]) == 0
    case = read_case(tmp_path / "case", verify=True)
    assert case.kind == "import" and case.lesions is not None
    assert [s["label"] for s in case.provenance["segments"]][:2] == ["liver", "spleen"]
    assert main(["export-seg", str(tmp_path / "case"), "--dicom", CT, "-o", str(tmp_path / "again.dcm"),
                 "--labelmap"]) == 2  # lesions lie on organs: LABELMAP is refused ...
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LABELMAP SEG holds one segment per voxel" in err[0]
    assert main(["export-seg", str(tmp_path / "case"), "--dicom", CT, "-o", str(tmp_path / "again.dcm")]) == 0
    assert "BINARY SEG, 16 segments" in capsys.readouterr().out  # ... BINARY holds the overlap


def test_export_reads_model_provenance_beside_the_labels(tmp_path, capsys):
    """What `medseg segment` wrote: labels.nii.gz + labels.json + provenance.json naming the model."""
    save_volume(load_volume(PHANTOM / "organs.nii.gz"), tmp_path / "labels.nii.gz")
    (tmp_path / "provenance.json").write_text(json.dumps({"model": {"name": "default", "version": "3b"}}))
    assert main(["export-seg", str(tmp_path / "labels.nii.gz"), "--dicom", CT, "-o", str(tmp_path / "s.dcm")]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out and "Kidney (left) [SCT 64033007]" in out


@pytest.mark.parametrize("args, message", [
    (["export-seg", "{labels_shifted}", "--dicom", CT, "-o", "{out}"], "is not on the grid of the source series"),
    (["export-seg", "{empty}", "--dicom", CT, "-o", "{out}"], "a SEG without segments is not written"),
    (["export-seg", str(PHANTOM / "organs.nii.gz"), "-o", "{out}"], "Give the source series with --dicom"),
    (["import-seg", "{seg}", "--dicom", CT, "--series", "3", "-o", "{out}.nii.gz"], "has no series with index 3"),
    (["import-seg", str(PHANTOM / "organs.nii.gz"), "-o", "{out}.nii.gz"], "is not a DICOM Segmentation object"),
])
def test_bad_input_is_one_line_and_exit_2(seg_file, tmp_path, capsys, args, message):
    truth = load_volume(PHANTOM / "organs.nii.gz")
    save_volume(truth.crop((slice(0, 199), slice(None), slice(None))), tmp_path / "shifted.nii.gz")
    save_volume(truth.with_array(np.zeros_like(truth.array)), tmp_path / "empty.nii.gz")
    values = {"labels_shifted": tmp_path / "shifted.nii.gz", "empty": tmp_path / "empty.nii.gz",
              "out": tmp_path / "out.dcm", "seg": seg_file}
    capsys.readouterr()
    assert main([a.format(**values) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith(f"medseg {args[0]}: error: ")
    assert not (tmp_path / "out.dcm").exists()


@pytest.mark.slow
def test_run_writes_the_seg_inside_the_case(tmp_path, capsys):
    """``medseg run --dicom-seg`` (the default model on the phantom's series) puts exports/seg.dcm in
    the case's one atomic write; it reads back onto the series as the case's labels and lesions."""
    from medseg.io._dicom_seg import read_seg

    series = PHANTOM / "ct_dicom"
    assert main(["run", str(series), "-o", str(tmp_path / "case"), "--dicom-seg", "--quiet"]) == 0
    case = read_case(tmp_path / "case", verify=True)
    assert "exports/seg.dcm" in case.manifest["files"]
    back = read_seg(tmp_path / "case" / "exports" / "seg.dcm", series)
    assert np.array_equal(back.labels.array, case.labels.array)
    assert back.labels.label_set.names == case.label_set.names
    assert np.array_equal(back.lesions.array, case.lesions.array)
    code = main(["run", str(PHANTOM / "ct.nii.gz"), "-o", str(tmp_path / "x"), "--dicom-seg"])
    assert code == 2 and "is not DICOM" in capsys.readouterr().err
