"""``medseg lesions`` and ``medseg evaluate`` end to end on the synthetic phantom (exact truth)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"


@pytest.fixture(scope="module")
def truth():
    if not (PHANTOM / "truth.json").is_file():
        pytest.fail(f"the phantom sample is missing: {PHANTOM} (python -m medseg.phantom sample_data --replace)")
    return json.loads((PHANTOM / "truth.json").read_text())


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def match_by_centroid(rows, truth_lesions):
    """Pairs (row, truth lesion) by nearest centroid in RAS mm."""
    pairs = []
    for lesion in truth_lesions:
        row = min(rows, key=lambda r: np.linalg.norm(np.array([float(r[f"centroid_{a}_ras_mm"]) for a in "xyz"])
                                                     - lesion["centroid_ras_mm"]))
        pairs.append((row, lesion))
    return pairs


def test_lesions_cli_splits_the_touching_pair_and_matches_truth(tmp_path, capsys, truth):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "lesions", PHANTOM / "lesions.nii.gz", "--image", PHANTOM / "ct.nii.gz",
                          "--modality", "CT", "--organs", PHANTOM / "organs.nii.gz", "--organ-names",
                          PHANTOM / "organs.json", "--any-nonzero", "--split", "1", "-o", out)
    assert code == 0
    assert stdout.startswith("6 lesion(s) in non-zero voxels of") and "1 touching group(s) split" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["lesion_montage.png", "lesion_sizes.png", "lesions.csv",
                                                     "lesions.ctbl", "lesions.itksnap.txt", "lesions.json",
                                                     "lesions.nii.gz"]
    # The instance map lies on the input grid.
    written, source = nib.load(out / "lesions.nii.gz"), nib.load(PHANTOM / "lesions.nii.gz")
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    ids = np.asarray(written.dataobj)
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == set(range(7))
    assert np.array_equal(ids > 0, np.asarray(source.dataobj) > 0)  # no voxel lost or added
    rows = list(csv.DictReader((out / "lesions.csv").open()))
    assert len(rows) == 6
    touching = {2, 3}
    voxel_diagonal = np.linalg.norm(truth["geometry"]["spacing_mm"])
    for row, lesion in match_by_centroid(rows, truth["lesions"]):
        assert row["organ"] == lesion["organ"]
        if lesion["id"] in touching:  # split by the watershed: close to, not exactly, the truth
            assert int(row["voxel_count"]) == pytest.approx(lesion["voxels"], rel=0.15)
            continue
        assert int(row["voxel_count"]) == lesion["voxels"]
        assert float(row["volume_ml"]) == pytest.approx(lesion["volume_ml"], rel=1e-6)
        np.testing.assert_allclose([float(row[f"centroid_{a}_lps_mm"]) for a in "xyz"], lesion["centroid_lps_mm"],
                                   atol=2e-3)
        assert float(row["intensity_mean"]) == pytest.approx(lesion["mean_hu"], abs=0.051)
        # Truth diameters join voxel centres; ours join boundary midpoints (half a voxel further out).
        assert lesion["longest_diameter_mm"] <= float(row["max_3d_diameter_mm"]) <= \
            lesion["longest_diameter_mm"] + voxel_diagonal
        assert lesion["longest_axial_diameter_mm"] <= float(row["axial_long_axis_mm"]) <= \
            lesion["longest_axial_diameter_mm"] + 2 * np.sqrt(2)
    pair = [r for r, lesion in match_by_centroid(rows, truth["lesions"]) if lesion["id"] in touching]
    assert sum(int(r["voxel_count"]) for r in pair) == 424 + 171
    document = json.loads((out / "lesions.json").read_text())
    assert document["units"]["intensity"] == "HU" and document["settings"]["split_h_mm"] == 1.0
    assert document["command"] == ""  # only filled when run as the `medseg` program


def test_lesions_cli_keeps_ids_of_an_instance_map(tmp_path, capsys, truth):
    code, stdout, _ = run(capsys, "lesions", PHANTOM / "lesions.nii.gz", "--as-instances", "--no-plots",
                          "-o", tmp_path)
    assert code == 0 and "(ids kept)" in stdout
    rows = list(csv.DictReader((tmp_path / "lesions.csv").open()))
    assert [(int(r["id"]), int(r["voxel_count"])) for r in rows] == [(t["id"], t["voxels"]) for t in truth["lesions"]]
    assert not (tmp_path / "lesion_montage.png").exists()


def test_lesions_cli_semantic_map_uses_itself_for_organs(tmp_path, capsys):
    organs = nib.load(PHANTOM / "organs.nii.gz")
    lesions = np.asarray(nib.load(PHANTOM / "lesions.nii.gz").dataobj)
    semantic = np.asarray(organs.dataobj).copy()
    semantic[lesions > 0] = 11  # a tumour class that replaces the organ label
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(semantic, organs.affine), path)
    code, stdout, _ = run(capsys, "lesions", path, "--lesion-label", 11, "--organ-names", PHANTOM / "organs.json",
                          "--no-plots", "-o", tmp_path / "out")
    assert code == 0 and stdout.startswith("5 lesion(s) in label 11 of")
    rows = list(csv.DictReader((tmp_path / "out" / "lesions.csv").open()))
    assert sorted(r["organ"] for r in rows) == ["liver"] * 4 + ["spleen"]
    assert {r["organ_source"] for r in rows} == {"border"}


def test_lesions_cli_takes_organ_names_from_segments_labels_json(tmp_path, capsys):
    """``medseg segment`` writes labels.nii.gz + labels.json; lesions names organs from the JSON, and
    a JSON beside the map that is not a name table (dcm2niix's BIDS sidecar) is ignored."""
    organs = nib.load(PHANTOM / "organs.nii.gz")
    lesions = np.asarray(nib.load(PHANTOM / "lesions.nii.gz").dataobj)
    semantic = np.asarray(organs.dataobj).copy()
    semantic[lesions > 0] = 11
    nib.save(nib.Nifti1Image(semantic, organs.affine), tmp_path / "labels.nii.gz")
    names = {"0": "background", "1": "liver", "2": "spleen", "11": "lesion"}
    (tmp_path / "labels.json").write_text(json.dumps(names))
    code, stdout, _ = run(capsys, "lesions", tmp_path / "labels.nii.gz", "--lesion-label", 11, "--organs",
                          tmp_path / "labels.nii.gz", "--no-plots", "-o", tmp_path / "out")
    assert code == 0 and f"organ names from {tmp_path / 'labels.json'}" in stdout
    rows = list(csv.DictReader((tmp_path / "out" / "lesions.csv").open()))
    assert sorted(r["organ"] for r in rows) == ["liver"] * 4 + ["spleen"]
    (tmp_path / "labels.json").write_text(json.dumps({"Modality": "CT", "SeriesDescription": "x"}))
    code, stdout, _ = run(capsys, "lesions", tmp_path / "labels.nii.gz", "--lesion-label", 11, "--no-plots",
                          "-o", tmp_path / "out2")
    assert code == 0 and "organ names" not in stdout
    rows = list(csv.DictReader((tmp_path / "out2" / "lesions.csv").open()))
    assert sorted(r["organ"] for r in rows) == ["1"] * 4 + ["2"]


def test_lesions_cli_errors_are_one_line(tmp_path, capsys):
    lesions = PHANTOM / "lesions.nii.gz"
    code, _, err = run(capsys, "lesions", lesions, "-o", tmp_path)
    assert code == 2 and "holds several labels (1, 2, 3, 4, 5, 6)" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "lesions", lesions, "--lesion-label", 9, "-o", tmp_path)
    assert code == 2 and "has no voxels with lesion label 9" in err
    code, _, _ = run(capsys, "lesions", lesions, "--lesion-label", 9, "--allow-absent-label", "--no-plots",
                     "-o", tmp_path / "absent")
    assert code == 0 and (tmp_path / "absent" / "lesions.csv").read_text().count("\n") == 1
    other = tmp_path / "other_ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((200, 170, 71), np.int16), nib.load(lesions).affine), other)
    code, _, err = run(capsys, "lesions", lesions, "--as-instances", "--image", other, "-o", tmp_path)
    assert code == 2 and f"{other}: is not on the grid of {lesions}" in err and "200x170x71" in err
    code, _, err = run(capsys, "lesions", lesions, "--as-instances", "-o", PHANTOM)
    assert code == 2 and "would destroy the input" in err


def test_evaluate_cli(tmp_path, capsys):
    split = tmp_path / "split"
    assert run(capsys, "lesions", PHANTOM / "lesions.nii.gz", "--any-nonzero", "--split", 1, "--no-plots",
               "-o", split)[0] == 0
    out = tmp_path / "eval"
    code, stdout, _ = run(capsys, "evaluate", split / "lesions.nii.gz", PHANTOM / "lesions.nii.gz", "--instances",
                          "-o", out)
    assert code == 0 and "TP 6, FP 0, FN 0" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["class_metrics.png", "classes.csv", "lesion_matches.csv",
                                                     "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["lesions"]["tp"] == 6 and report["classes"][0]["dice"] == 1.0
    code, stdout, _ = run(capsys, "evaluate", PHANTOM / "organs.nii.gz", PHANTOM / "organs.nii.gz",
                          "--labels", PHANTOM / "organs.json", "--no-surface", "--no-plots", "-o", tmp_path / "o")
    assert code == 0 and "liver" in stdout and "1.000" in stdout
    assert len(list(csv.DictReader((tmp_path / "o" / "classes.csv").open()))) == 10


def test_evaluate_cli_grid_mismatch(tmp_path, capsys):
    organs = nib.load(PHANTOM / "organs.nii.gz")
    coarse = tmp_path / "coarse.nii.gz"
    data = np.asarray(organs.dataobj)[::2, ::2]
    nib.save(nib.Nifti1Image(data, organs.affine @ np.diag([2, 2, 1, 1])), coarse)
    code, _, err = run(capsys, "evaluate", coarse, PHANTOM / "organs.nii.gz", "-o", tmp_path)
    assert code == 2 and f"{coarse}: is not on the grid of {PHANTOM / 'organs.nii.gz'}" in err and "--resample" in err
    code, stdout, _ = run(capsys, "evaluate", coarse, PHANTOM / "organs.nii.gz", "--resample", "--labels", "liver=1",
                          "--no-plots", "-o", tmp_path / "r")
    assert code == 0 and "resampled onto the grid" in stdout
    liver = next(csv.DictReader((tmp_path / "r" / "classes.csv").open()))
    assert float(liver["dice"]) > 0.9


def test_help_does_not_import_torch():
    code = ("import sys; from medseg.cli.main import build_parser; build_parser(); "
            "assert 'torch' not in sys.modules and 'monai' not in sys.modules and 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
