"""``medseg export-rtstruct`` / ``import-rtstruct``, the ROI alias table, and training data from
CT series with RTSTRUCTs (medseg.training.rtstruct_cases)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from medseg.case import read_case, write_case
from medseg.cli.main import main
from medseg.errors import InputError
from medseg.export.roi_aliases import load_aliases
from medseg.io import load_volume
from medseg.labels import DEFAULT_ORGANS

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"
CT_DICOM = PHANTOM / "ct_dicom"


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory):
    """The phantom's truth as a case folder made from its DICOM series."""
    ct = load_volume(CT_DICOM)
    organs = load_volume(PHANTOM / "organs.nii.gz").array.astype(np.uint8)
    lesions = load_volume(PHANTOM / "lesions.nii.gz").array.astype(np.uint16)
    labels = organs.copy()
    labels[lesions > 0] = 11
    folder = tmp_path_factory.mktemp("cases") / "phantom"
    write_case(folder, labels=ct.with_array(labels, label_set=DEFAULT_ORGANS.extended(["lesion"])),
               lesions=ct.with_array(lesions), plots=False,
               provenance={"source_image": str(CT_DICOM.resolve()), "input": {"series_uid": ct.source.series_uid}})
    return folder


def test_cli_export_then_import_gives_the_case_back(phantom_case, tmp_path, capsys):
    rs = tmp_path / "rs.dcm"
    assert main(["export-rtstruct", str(phantom_case), "-o", str(rs), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {rs}: 16 ROIs (10 organs, 6 lesions)" in out
    assert "liver" in out and "1152.55 mL" in out
    case_out = tmp_path / "imported"
    assert main(["import-rtstruct", str(rs), "--dicom", str(CT_DICOM), "-o", str(case_out), "--quiet",
                 "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "imported 16 of 16 ROIs onto 200x170x70 LPS (10 organ ROIs, 6 lesions)" in out
    original, back = read_case(phantom_case), read_case(case_out)
    assert back.kind == "import"
    assert np.array_equal(back.labels.array, original.labels.array)
    assert np.array_equal(back.lesions.array, original.lesions.array)
    assert back.label_set == original.label_set
    assert [row["volume_ml"] for row in back.lesion_rows] == pytest.approx([21.312, 5.088, 2.052, 0.54, 1.104, 3.3])
    rtstruct = back.provenance["rtstruct"]
    assert rtstruct["path"] == str(rs.resolve()) and len(rtstruct["rois"]) == 16
    assert back.provenance["input"]["series_uid"] == load_volume(CT_DICOM).source.series_uid
    assert back.image is not None and back.image.same_grid(back.labels)  # source_image is the DICOM folder


def test_cli_errors_are_one_line(phantom_case, tmp_path, capsys):
    code = main(["import-rtstruct", str(CT_DICOM / "ct_0001.dcm"), "--dicom", str(CT_DICOM), "-o", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("medseg import-rtstruct: error: ") and "is a CT object, not an RT Structure Set" in err
    code = main(["export-rtstruct", str(phantom_case), "-o", str(tmp_path / "rs.dcm"), "--smoothing-mm", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--smoothing-mm 1.0: is not usable. Give --max-deviation-mm > 0 (mm)" in err
    code = main(["export-rtstruct", str(phantom_case), "-o", str(tmp_path / "rs.dcm"), "--dicom",
                 str(PHANTOM / "ct.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and "was not read from DICOM" in err and "(--dicom)" in err
    assert not (tmp_path / "rs.dcm").exists()


def test_alias_table_maps_clinical_names():
    table = load_aliases()
    assert table.role("Lung L", "ORGAN").class_name == "lung_left"
    assert table.role("RT KIDNEY").class_name == "kidney_right" or table.class_name("Kidney_R") == "kidney_right"
    assert table.class_name("Kidney_R") == "kidney_right" and table.class_name("Heart") == "heart"
    assert table.class_name("Parotid_L") == "parotid_left" and table.class_name("Left Parotid") == "parotid_left"
    assert table.class_name("vertebrae_T12") == "vertebrae_T12"
    for name, kind in (("GTV-1", ""), ("GTVp", "ORGAN"), ("Tumour 2", ""), ("Primary", "GTV"), ("lesion_4", "")):
        assert table.role(name, kind).role == "lesion", name
    for name, kind in (("PTV_60", ""), ("CTV", "CTV"), ("BODY", "EXTERNAL"), ("External", ""), ("SpinalCord_PRV5", ""),
                       ("Couch", "SUPPORT")):
        assert table.role(name, kind).role == "planning", name
    assert table.role("Heart", "AVOIDANCE").role == "organ"  # the alias table knows it as anatomy
    assert table.interpreted_type("liver") == "ORGAN" and table.interpreted_type("lesion") == "GTV"
    assert table.interpreted_type("body") == "EXTERNAL" and table.interpreted_type("spinal_cord_prv") == "AVOIDANCE"


def test_user_alias_file_adds_names_and_types(tmp_path):
    path = tmp_path / "aliases.json"
    path.write_text(json.dumps({"aliases": {"liver": ["Leber"]}, "types": {"spinal_cord": "AVOIDANCE"},
                                "lesion_patterns": ["^ln_\\d+$"]}))
    table = load_aliases(path)
    assert table.class_name("LEBER") == "liver" and table.class_name("Lung_L") == "lung_left"
    assert table.interpreted_type("spinal_cord") == "AVOIDANCE"
    assert table.role("LN_3").role == "lesion"
    path.write_text(json.dumps({"alias": {}}))
    with pytest.raises(InputError, match="has unknown keys"):
        load_aliases(path)
    path.write_text("{")
    with pytest.raises(InputError, match="cannot be read as JSON"):
        load_aliases(path)


def _patient(root: Path, name: str, seed: int, ct, labels: np.ndarray, lesions: np.ndarray) -> None:
    from medseg.export.rtstruct import write_rtstruct
    from medseg.io._dicom_write import write_dicom_series

    write_dicom_series(ct, root / name / "ct", uid_seed=seed)
    series = load_volume(root / name / "ct")
    labels = series.with_array(labels, label_set=DEFAULT_ORGANS.extended(["lesion"]))
    write_rtstruct(labels, root / name / "rs" / "rs.dcm", image=series, lesions=series.with_array(lesions))


@pytest.mark.slow  # importing medseg.training imports torch and MONAI
def test_training_finds_ct_series_with_rtstructs(tmp_path, monkeypatch):
    from medseg.training import rtstruct_cases
    from medseg.training.rtstruct_cases import find_rtstructs, rtstruct_training_cases

    ct = load_volume(CT_DICOM)
    organs = load_volume(PHANTOM / "organs.nii.gz").array.astype(np.uint8)
    lesions = load_volume(PHANTOM / "lesions.nii.gz").array.astype(np.uint16)
    box = (slice(20, 180), slice(20, 150), slice(44, 56))  # 12 slices through four lesions
    small = ct.crop(box)
    labels = organs[box].copy()
    labels[lesions[box] > 0] = 11
    data = tmp_path / "data"
    _patient(data, "p1", 1, small, labels, lesions[box])
    _patient(data, "p2", 2, small, np.where(labels == 1, 0, labels).astype(np.uint8), np.zeros_like(lesions[box]))
    (data / "notes.txt").write_text("not DICOM")
    assert [p.relative_to(data).as_posix() for p in find_rtstructs(data)] == ["p1/rs/rs.dcm", "p2/rs/rs.dcm"]

    cache = tmp_path / "cache"
    found = rtstruct_training_cases(data, cache=cache)
    assert found.layout == "rtstruct" and [c.name for c in found.cases] == ["p1_rs_rs", "p2_rs_rs"]
    first, second = found.cases
    assert Path(first.image) == (data / "p1" / "ct").resolve()  # the series folder itself: nothing copied
    assert first.label_names[1] == "liver" and first.label_names[11] == "lesion" and 1 not in second.label_names
    image, label = load_volume(first.image), load_volume(first.label)
    assert image.same_grid(label) and np.array_equal(label.array, labels)
    assert not any(p.name.startswith(".") for p in data.rglob("*"))  # nothing written inside DATA

    def refuse(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr("medseg.io._rtstruct.read_rtstruct", refuse)
    again = rtstruct_training_cases(data, cache=cache)
    assert [c.label for c in again.cases] == [c.label for c in found.cases]
    assert rtstruct_cases.rtstruct_training_cases(tmp_path / "cache") is None  # no RTSTRUCT: other layouts apply
    monkeypatch.setenv("MEDSEG_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert rtstruct_cases.default_cache_dir() == tmp_path / "elsewhere" / "rtstruct"
    assert os.path.isdir(cache)


@pytest.mark.slow
def test_run_writes_the_rtstruct_inside_the_case(tmp_path):
    """``medseg run --rtstruct`` puts exports/rtstruct.dcm in the same atomic write; it reads back
    onto the series as the case's own labels (the default model on the phantom's DICOM series)."""
    from medseg.case import read_case
    from medseg.cli.main import main
    from medseg.io._rtstruct import read_rtstruct

    assert main(["run", str(CT_DICOM), "-o", str(tmp_path / "case"), "--no-lesions", "--rtstruct", "--quiet"]) == 0
    case = read_case(tmp_path / "case", verify=True)
    assert "exports/rtstruct.dcm" in case.manifest["files"]
    back = read_rtstruct(tmp_path / "case" / "exports" / "rtstruct.dcm", CT_DICOM)
    organs = {lab.name: lab.value for lab in case.label_set.foreground}
    for lab in back.labels.label_set.foreground:
        mine = case.labels.array == organs[lab.name]
        theirs = back.labels.array == lab.value
        assert 2 * np.count_nonzero(mine & theirs) / (mine.sum() + theirs.sum()) >= 0.98, lab.name
