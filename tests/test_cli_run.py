"""``medseg run`` and the commands that wrap ``run_case``: one case, names that travel, reads once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.case import read_case
from medseg.cli.main import main
from medseg.io import load_volume

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory):
    """``medseg run`` on the phantom's DICOM series with the shipped default model, counting reads."""
    import medseg.io._dicom as dicom_reader

    calls = []
    original = dicom_reader.read_dicom

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    out = tmp_path_factory.mktemp("run") / "case"
    mp = pytest.MonkeyPatch()
    mp.setattr(dicom_reader, "read_dicom", counting)
    try:
        code = main(["run", str(PHANTOM / "ct_dicom"), "-o", str(out), "--split", "1", "--quiet"])
    finally:
        mp.undo()
    assert code == 0
    return out, calls


def test_run_writes_one_complete_case_reading_the_series_once(phantom_case):
    out, reads = phantom_case
    assert len(reads) == 1  # segmentation, lesion HU and the montage share one read
    case = read_case(out, verify=True)
    ct = load_volume(PHANTOM / "ct_dicom")
    assert case.labels.same_grid(ct) and case.labels.label_set.name_of(1) == "liver"
    assert case.label_set.lesion_values() == (11,)
    rows = case.lesion_rows
    assert rows and rows[0]["organ"] == "liver" and all(r["volume_ml"] >= 0.1 for r in rows)  # >= 100 mm^3
    assert {r["organ"] for r in rows} <= set(case.label_set.names) | {""}
    lesions = case.lesions
    assert lesions.same_grid(ct) and int(lesions.array.max()) == len(rows)
    assert np.array_equal(lesions.array != 0, np.isin(lesions.array, [r["id"] for r in rows]))
    prov = case.provenance
    assert prov["input"]["series_uid"] == ct.source.series_uid and len(prov["input"]["sha256"]) == 64
    assert prov["model"]["name"] and len(prov["model"]["weights_sha256"]) == 64
    assert prov["settings"]["lesions"]["split_h_mm"] == 1.0 and prov["settings"]["lesions"]["label"] == 11
    assert set(prov["timings_s"]) >= {"read", "load_model", "model_space", "network", "restore", "cleanup",
                                      "lesions"}
    assert {"lesions/lesion_sizes.png", "lesions/lesion_montage.png", "lesions/lesions.csv"} <= set(
        case.manifest["files"])


def test_lesions_finds_the_lesion_class_by_name(phantom_case, tmp_path, capsys):
    out, _ = phantom_case
    code, stdout, _ = run(capsys, "lesions", out / "labels.nii.gz", "--image", PHANTOM / "ct_dicom",
                          "--min-volume", 100, "--no-plots", "-o", tmp_path / "les")
    assert code == 0, stdout
    assert f"organ names from {out / 'labels.json'}" in stdout
    assert "lesion(s) in label 11 of" in stdout
    rows = list(csv.DictReader((tmp_path / "les" / "lesions.csv").open()))
    assert rows and {r["organ"] for r in rows} <= {"liver", "spleen", "kidney_right", "kidney_left", "stomach",
                                                     "pancreas", "aorta", "lung_right", "lung_left", "bone", ""}


def test_evaluate_matches_classes_by_name(tmp_path, capsys):
    """Two maps name the same organs under other values: scored by name, not by value."""
    truth = load_volume(PHANTOM / "organs.nii.gz")
    assert truth.label_set is not None  # organs.json beside it
    # The same voxels, liver and spleen swapped in value and a name table that says so.
    swapped = truth.array.copy()
    swapped[truth.array == 1], swapped[truth.array == 2] = 2, 1
    nib.save(nib.Nifti1Image(swapped, truth.affine), tmp_path / "pred.nii.gz")
    names = {str(v): n for v, n in truth.label_set.to_dict().items()}
    names["1"], names["2"] = "spleen", "liver"
    (tmp_path / "pred.json").write_text(json.dumps(names))
    code, stdout, _ = run(capsys, "evaluate", tmp_path / "pred.nii.gz", PHANTOM / "organs.nii.gz", "--no-surface",
                          "--no-plots", "-o", tmp_path / "ev")
    assert code == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    dice = {c["name"]: c["dice"] for c in report["classes"]}
    assert dice["liver"] == 1.0 and dice["spleen"] == 1.0 and min(dice.values()) == 1.0
    # A class only the prediction names (a model's lesion class against organ-only truth) is scored
    # as absent from the reference, unless only the reference's classes are asked for.
    names["11"] = "lesion"
    (tmp_path / "pred.json").write_text(json.dumps(names))
    run(capsys, "evaluate", tmp_path / "pred.nii.gz", PHANTOM / "organs.nii.gz", "--no-surface", "--no-plots",
        "-o", tmp_path / "ev_all")
    assert "lesion" in [c["name"] for c in json.loads((tmp_path / "ev_all" / "report.json").read_text())["classes"]]
    code, stdout, _ = run(capsys, "evaluate", tmp_path / "pred.nii.gz", PHANTOM / "organs.nii.gz", "--no-surface",
                          "--no-plots", "--reference-classes", "-o", tmp_path / "ev_ref")
    scored = [c["name"] for c in json.loads((tmp_path / "ev_ref" / "report.json").read_text())["classes"]]
    assert code == 0 and "lesion" not in scored and len(scored) == 10
    assert "named only in" in stdout and "lesion" in stdout
    # Without the names the values are compared: liver and spleen then do not overlap at all.
    (tmp_path / "pred.json").unlink()
    run(capsys, "evaluate", tmp_path / "pred.nii.gz", PHANTOM / "organs.nii.gz", "--no-surface", "--no-plots",
        "-o", tmp_path / "ev2")
    report = json.loads((tmp_path / "ev2" / "report.json").read_text())
    assert {c["name"]: c["dice"] for c in report["classes"]}["liver"] == 0.0


def test_earlier_outputs_do_not_survive_a_new_run(tmp_path, capsys):
    """`lesions --no-plots` after a run with plots leaves no plots of the previous patient."""
    labels = PHANTOM / "lesions.nii.gz"
    code, _, _ = run(capsys, "lesions", labels, "--as-instances", "--image", PHANTOM / "ct.nii.gz", "-o", tmp_path / "o")
    assert code == 0 and (tmp_path / "o" / "lesion_montage.png").exists()
    code, _, _ = run(capsys, "lesions", labels, "--as-instances", "--no-plots", "-o", tmp_path / "o")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["lesions.csv", "lesions.ctbl", "lesions.itksnap.txt",
                                                                   "lesions.json", "lesions.nii.gz"]
    (tmp_path / "o" / "mine.txt").write_text("x")
    code, _, err = run(capsys, "lesions", labels, "--as-instances", "--no-plots", "-o", tmp_path / "o")
    assert code == 2 and "holds other files (mine.txt)" in err and (tmp_path / "o" / "mine.txt").exists()


def test_api_errors_name_api_options_and_the_cli_renders_flags(tmp_path, capsys):
    import medseg
    from medseg.errors import MedsegError

    ct = load_volume(PHANTOM / "ct.nii.gz")
    with pytest.raises(MedsegError) as caught:
        medseg.segment(ct, "default", roi_size=(0, 0, 0))
    assert "roi_size=0 0 0" in str(caught.value) and "--roi-size" not in str(caught.value)
    assert caught.value.options == ("roi_size",)
    code, _, err = run(capsys, "segment", PHANTOM / "ct.nii.gz", "-o", tmp_path / "x", "--roi-size", 0, 0, 0)
    assert code == 2 and err.startswith("medseg segment: error: --roi-size 0 0 0: is not a window size")
    assert "roi_size" not in err and not (tmp_path / "x").exists()


def test_a_model_without_lesion_class_gives_a_case_without_lesions(tmp_path):
    import torch

    from medseg.labels import LabelSet
    from medseg.models.networks import build_network, default_network
    from medseg.models.spec import ModelSpec, Preprocessing
    from medseg.models.store import save_model
    from medseg.pipeline import LesionOptions, run_case

    torch.manual_seed(0)
    spec = ModelSpec("organs-only", default_network("unet", size="tiny"), LabelSet({0: "background", 1: "liver"}),
                     Preprocessing(spacing_mm=(4.0, 4.0, 4.0), roi_size=(32, 32, 32), overlap=0.25))
    model = save_model(spec, build_network(spec.network, 2), tmp_path / "m")
    result = run_case(PHANTOM / "ct.nii.gz", model=str(model), output=tmp_path / "case")
    assert result.lesions is None and "has no lesion class" in result.provenance["notes"][0]
    assert read_case(tmp_path / "case").lesions is None
    with pytest.raises(Exception, match="lesion_label=tumour: is not a class of the model organs-only"):
        run_case(PHANTOM / "ct.nii.gz", model=str(model), lesions=LesionOptions(label="tumour"))


def test_cancel_reaches_every_stage_and_nothing_is_written(tmp_path):
    """A cancel set while a stage runs stops the run there; no case folder appears."""
    from medseg.errors import CancelledError
    from medseg.pipeline import run_case
    from medseg.progress import CancelToken

    seen = []
    for stage in ("read", "load model", "preprocess", "inference", "lesions"):
        token = CancelToken()

        def progress(done, total, message, stage=stage, token=token):
            seen.append(message.split(":")[0])
            if message.startswith(stage):
                token.cancel()

        with pytest.raises(CancelledError):
            run_case(PHANTOM / "ct.nii.gz", output=tmp_path / stage, progress=progress, cancel=token)
        assert not (tmp_path / stage).exists()
    assert {"read", "load model", "preprocess", "inference", "lesions"} <= set(seen)
