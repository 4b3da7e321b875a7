"""The case folder: written as one unit, read back whole, versions kept, nothing foreign replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from medseg import Volume
from medseg.case import CASE_FILE, FILES, is_case, read_case, write_case
from medseg.errors import InputError
from medseg.labels import LabelSet

NAMES = LabelSet({0: "background", 1: "liver", 2: "spleen", 7: "lesion"})


def _labels(seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    array = np.zeros((20, 18, 12), np.uint8)
    array[2:12, 2:12, 2:10] = 1
    array[13:18, 3:9, 2:8] = 2
    array[4:7, 4:7, 4:7] = 7
    array[rng.integers(0, 20), rng.integers(0, 18), 0] = 2
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [10.0, 20.0, -30.0]
    return Volume(array, affine, "SEG", label_set=NAMES)


def _lesion_table(labels: Volume):
    from medseg.lesions import find_instances, lesion_table

    found = find_instances(labels, label=7)
    return found, lesion_table(found, organs=labels)


def test_round_trip_keeps_voxels_geometry_names_lesions_and_provenance(tmp_path):
    labels = _labels()
    found, table = _lesion_table(labels)
    image = labels.with_array(np.full(labels.shape, 40, np.int16), modality="CT")
    write_case(tmp_path / "case", labels=labels, provenance={"note": "unit test", "input": {"path": "x"}},
               lesions=found, lesion_table=table, image=image, plots=False)
    case = read_case(tmp_path / "case", verify=True)
    assert case.version == 1 and case.kind == "proposal" and case.history == []
    assert np.array_equal(case.labels.array, labels.array)
    np.testing.assert_allclose(case.labels.affine, labels.affine, atol=1e-6)  # NIfTI stores float32
    assert case.labels.label_set == NAMES and case.label_set.lesion_values() == (7,)
    assert np.array_equal(case.lesions.array != 0, labels.array == 7) and case.lesions.label_set is None
    assert [row["organ"] for row in case.lesion_rows] == ["liver"]
    assert case.lesion_rows[0]["voxel_count"] == 27
    assert case.provenance["schema"] == "medseg.provenance" and case.provenance["note"] == "unit test"
    assert case.provenance["kind"] == "proposal"
    assert np.array_equal(case.image.array, image.array)
    assert set(case.manifest["files"]) == {"labels.nii.gz", "labels.json", "provenance.json", "image.nii.gz",
                                          "labels.ctbl", "labels.itksnap.txt",  # names and colours for Slicer, ITK-SNAP
                                          "lesions/lesions.nii.gz", "lesions/lesions.csv", "lesions/lesions.json",
                                          "lesions/lesions.ctbl", "lesions/lesions.itksnap.txt"}
    assert json.loads((tmp_path / "case" / "labels.json").read_text())["7"] == "lesion"


def test_a_correction_is_a_new_version_and_the_proposal_is_kept(tmp_path):
    out = tmp_path / "case"
    proposal = _labels()
    write_case(out, labels=proposal, provenance={"model": {"name": "m"}})
    corrected = proposal.with_array(np.where(proposal.array == 2, 0, proposal.array), label_set=NAMES)
    write_case(out, labels=corrected, kind="correction",
               provenance={"correction": {"corrected_by": "AB", "reviewed_slices": {"axis": "k", "indices": [3]}}})
    write_case(out, labels=corrected.with_array(corrected.array * 0, label_set=NAMES), kind="correction",
               provenance={"correction": {"corrected_by": "CD"}})
    case = read_case(out, verify=True)
    assert case.version == 3 and case.kind == "correction"
    assert [(h["version"], h["kind"]) for h in case.history] == [(1, "proposal"), (2, "correction")]
    first = read_case(out / "history" / "v1", verify=True)
    assert np.array_equal(first.labels.array, proposal.array) and first.provenance["model"]["name"] == "m"
    second = read_case(out / "history" / "v2")
    assert second.provenance["correction"]["corrected_by"] == "AB"
    assert not case.labels.array.any()
    # history files are hard links of the versions they keep, not copies
    assert os.stat(out / "history" / "v1" / FILES["labels"]).st_nlink >= 1


def test_a_new_model_run_does_not_replace_corrections_unless_asked(tmp_path):
    out = tmp_path / "case"
    write_case(out, labels=_labels(), provenance={})
    write_case(out, labels=_labels(1), kind="correction", provenance={})
    before = (out / CASE_FILE).read_bytes()
    with pytest.raises(InputError, match="corrected by a person.*would replace those corrections"):
        write_case(out, labels=_labels(2), provenance={})
    assert (out / CASE_FILE).read_bytes() == before
    write_case(out, labels=_labels(2), provenance={}, allow_replacing_corrections=True)
    assert read_case(out).kind == "proposal"


def test_foreign_files_are_never_replaced(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "thesis.docx").write_text("years of work")
    with pytest.raises(InputError, match=r"holds other files \(thesis.docx\)"):
        write_case(out, labels=_labels(), provenance={})
    assert (out / "thesis.docx").read_text() == "years of work" and not is_case(out)
    case = tmp_path / "case"
    write_case(case, labels=_labels(), provenance={})
    (case / "my_notes.txt").write_text("notes")
    with pytest.raises(InputError, match="not part of its case.*my_notes.txt"):
        write_case(case, labels=_labels(1), provenance={})
    assert (case / "my_notes.txt").exists()


def test_a_folder_left_by_older_medseg_segment_is_replaced(tmp_path):
    out = tmp_path / "seg"
    out.mkdir()
    for name in ("labels.nii.gz", "labels.json", "provenance.json", "uncertainty.nii.gz"):
        (out / name).write_text("old")
    write_case(out, labels=_labels(), provenance={})
    assert not (out / "uncertainty.nii.gz").exists() and is_case(out)


def test_damaged_or_incomplete_cases_are_refused(tmp_path):
    out = tmp_path / "case"
    write_case(out, labels=_labels(), provenance={})
    (out / "labels.json").write_text('{"0": "background", "1": "liver", "2": "spleen", "7": "tumour!"}')
    with pytest.raises(InputError, match="labels.json: has .* bytes, case.json says"):
        read_case(out)
    write_case(tmp_path / "b", labels=_labels(), provenance={})
    data = bytearray((tmp_path / "b" / "labels.nii.gz").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "b" / "labels.nii.gz").write_bytes(bytes(data))
    read_case(tmp_path / "b")  # same size: only the checksum tells
    with pytest.raises(InputError, match="differs from the checksum in case.json"):
        read_case(tmp_path / "b", verify=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "labels.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="has labels but no case.json.*write did not finish"):
        read_case(tmp_path / "c")


def test_a_case_assembled_by_hand_reads_without_manifest(tmp_path):
    """The corrected-case layout docs/training.md describes (no case.json) is still readable."""
    from medseg.io import save_volume

    folder = tmp_path / "hand"
    folder.mkdir()
    labels = _labels()
    save_volume(labels, folder / "labels.nii.gz")  # writes labels.json beside it
    save_volume(labels.with_array(np.zeros(labels.shape, np.int16), modality="CT", label_set=None),
                folder / "image.nii.gz")
    with pytest.raises(InputError, match="no case.json"):
        read_case(folder)
    case = read_case(folder, require_manifest=False)
    assert case.label_set == NAMES and case.image_path == folder / "image.nii.gz"


def test_labels_without_names_or_off_grid_are_refused(tmp_path):
    labels = _labels()
    with pytest.raises(InputError, match="have no class names"):
        write_case(tmp_path / "a", labels=labels.with_labels(None), provenance={})
    other = Volume(np.zeros((5, 5, 5), np.int16), np.eye(4))
    with pytest.raises(InputError, match="image: is on another grid"):
        write_case(tmp_path / "a", labels=labels, image=other, provenance={})
    assert not (tmp_path / "a").exists()


def test_case_module_imports_no_torch():
    code = ("import sys, medseg.case, medseg.labels, medseg.io; "
            "print(sorted(m for m in ('torch', 'monai', 'qtpy', 'PyQt6', 'PySide6') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_montage_shows_the_image_even_when_it_is_not_stored(tmp_path):
    """``background=`` gives the plots the CT without storing it; plots come out of their thread
    into the manifest like every other file."""
    import matplotlib.image as mpimg

    labels = _labels()
    found, table = _lesion_table(labels)
    ramp = np.add.outer(np.add.outer(np.arange(20) * 40, np.arange(18) * 13), np.arange(12)).astype(np.int16)
    ct = labels.with_array(ramp - 400, modality="CT")
    for name, kwargs in (("bare", {}), ("ct", {"background": ct})):
        write_case(tmp_path / name, labels=labels, provenance={}, lesions=found, lesion_table=table, plots=True,
                   **kwargs)
    bare, drawn = (mpimg.imread(tmp_path / n / "lesions" / "lesion_montage.png") for n in ("bare", "ct"))
    # Without an image the tile is a grey lesion on black; with the CT its ramp fills the tile.
    black = {n: float((img[..., :3].max(axis=2) < 0.02).mean()) for n, img in (("bare", bare), ("ct", drawn))}
    assert black["ct"] < 0.5 * black["bare"], black
    case = read_case(tmp_path / "ct", verify=True)
    assert {"lesions/lesion_montage.png", "lesions/lesion_sizes.png"} <= set(case.manifest["files"])
    assert "image.nii.gz" not in case.manifest["files"]


def test_a_failing_plot_publishes_nothing(tmp_path, monkeypatch):
    import medseg.report

    def broken(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(medseg.report, "plot_lesion_montage", broken)
    labels = _labels()
    found, table = _lesion_table(labels)
    with pytest.raises(RuntimeError, match="plot failed"):
        write_case(tmp_path / "case", labels=labels, provenance={}, lesions=found, lesion_table=table, plots=True)
    assert not (tmp_path / "case").exists() or not any((tmp_path / "case").iterdir())
    assert [p.name for p in tmp_path.iterdir() if p.name != "case"] == []
