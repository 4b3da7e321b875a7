"""Batch pieces that need no model: case discovery and ids, input hashes, the manifest and its
lock, resume decisions on real case folders, the cohort report."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest

from medseg.batch.discover import CaseInput, discover_cases, safe_case_id
from medseg.batch.fingerprint import hash_inputs, input_files_sha256
from medseg.batch.manifest import Manifest, OutputLock
from medseg.batch.report import write_cohort_report
from medseg.batch.resume import decide
from medseg.case import input_sha256, write_case
from medseg.errors import InputError
from medseg.io import load_volume, save_volume
from medseg.io._dicom_write import write_dicom_series
from medseg.labels import LabelSet
from medseg.volume import Volume

PHANTOM = __import__("pathlib").Path(__file__).resolve().parents[1] / "sample_data" / "phantom"


@pytest.fixture(scope="module")
def small_ct() -> Volume:
    rng = np.random.default_rng(0)
    affine = np.diag([-3.0, -3.0, 3.0, 1.0])
    return Volume(rng.integers(-1000, 400, (12, 10, 8)).astype(np.int16), affine, "CT")


@pytest.fixture()
def tree(tmp_path, small_ct):
    """A cohort as people keep them: subject folders, NIfTI beside DICOM, label maps, junk."""
    root = tmp_path / "cohort"
    save_volume(small_ct, root / "subj 01" / "ct.nii.gz")
    save_volume(small_ct.with_array(small_ct.array + 1), root / "subj_02" / "CT.nii.gz")
    labels = small_ct.with_array((small_ct.array > 0).astype(np.uint8), label_set=LabelSet({0: "background",
                                                                                           1: "liver"}))
    save_volume(labels, root / "subj_02" / "organs.nii.gz")  # with organs.json beside it: a label map
    write_dicom_series(small_ct, root / "subj_03" / "dicom", series_number=3, uid_seed="a")
    write_dicom_series(small_ct.with_array(small_ct.array[:, :, ::-1].copy()), root / "subj_04",
                       series_number=2, uid_seed="b")
    for number, seed in ((5, "c"), (7, "d")):  # two series in one folder
        write_dicom_series(small_ct, root / "subj_05" / f"tmp{number}", series_number=number, uid_seed=seed)
        for file in (root / "subj_05" / f"tmp{number}").iterdir():
            file.rename(root / "subj_05" / f"s{number}_{file.name}")
        (root / "subj_05" / f"tmp{number}").rmdir()
    (root / "notes.txt").write_text("not an image\n")
    (root / ".hidden.nii.gz").write_bytes(b"x")
    old_case = root / "old_results"
    write_case(old_case, labels=labels, provenance={})  # a case folder is a result, not an input
    return root


def test_cases_ids_and_what_is_skipped(tree):
    found = discover_cases(tree)
    ids = [c.case_id for c in found.cases]
    assert ids == ["subj_01_ct", "subj_02_CT", "subj_03_dicom", "subj_04", "subj_05_s5", "subj_05_s7"]
    by_id = {c.case_id: c for c in found.cases}
    assert by_id["subj_01_ct"].kind == "nifti" and by_id["subj_01_ct"].source_key == "subj 01/ct.nii.gz"
    assert by_id["subj_03_dicom"].kind == "dicom" and by_id["subj_03_dicom"].series is None
    assert len(by_id["subj_03_dicom"].files) == 8
    # Two series in one folder: each is read by its UID and named by its series number.
    s5, s7 = by_id["subj_05_s5"], by_id["subj_05_s7"]
    assert s5.path == s7.path == str(tree / "subj_05") and s5.series != s7.series
    assert {load_volume(s5.path, s5.series).source.series_number,
            load_volume(s7.path, s7.series).source.series_number} == {"5", "7"}
    skipped = dict(found.skipped)
    assert skipped["subj_02/organs.nii.gz"] == "label maps with a label table beside them"
    assert skipped["old_results"] == "medseg case folders (results, not inputs)"
    assert not any("hidden" in path or "notes" in path for path in skipped)


def test_ids_are_stable_safe_and_unique(tree):
    first = discover_cases(tree)
    assert [c.case_id for c in discover_cases(tree).cases] == [c.case_id for c in first.cases]
    assert safe_case_id("../a b/ç:d.nii") == "a_b_c_d.nii" and safe_case_id("...") == "case"
    # Names that differ only by case, or by characters a folder name cannot hold, collide:
    # each gets a hash of its own path, never of the order it was found in.
    shutil.copy(tree / "subj_02" / "CT.nii.gz", tree / "subj_02" / "ct.nii.gz")
    shutil.copy(tree / "subj 01" / "ct.nii.gz", tree / "subj_01_ct.nii.gz")
    again = discover_cases(tree)
    ids = [c.case_id for c in again.cases]
    assert len({i.lower() for i in ids}) == len(ids)
    assert {i for i in ids if i.startswith(("subj_02_CT-", "subj_02_ct-"))} and all(
        len(i.split("-")[-1]) == 8 for i in ids if "-" in i)
    # An id an earlier run gave keeps its name, whatever arrives later.
    known = {c.source_key: c.case_id for c in first.cases}
    kept = {c.source_key: c.case_id for c in discover_cases(tree, known_ids=known).cases}
    assert all(kept[key] == case_id for key, case_id in known.items())


def test_patterns_lists_and_missing_inputs(tree, tmp_path):
    only = discover_cases(tree, patterns=["*.nii.gz"], exclude=["subj_02/*"])
    assert [c.case_id for c in only.cases] == ["subj_01_ct"]
    listing = tmp_path / "cases.csv"
    listing.write_text("input,case_id\n"
                       f"{tree / 'subj 01' / 'ct.nii.gz'},first\n"
                       "cohort/subj_04,second\n"
                       "cohort/nowhere.nii.gz,\n")
    found = discover_cases(listing)
    by_id = {c.case_id: c for c in found.cases}
    assert set(by_id) == {"first", "second", "nowhere"}
    assert by_id["second"].kind == "dicom" and by_id["nowhere"].problem == "does not exist"
    text = tmp_path / "cases.txt"
    text.write_text("# one per line\ncohort/subj_05\n")
    assert [c.case_id for c in discover_cases(text).cases] == ["subj_05_s5", "subj_05_s7"]
    with pytest.raises(InputError, match="no column named input"):
        (tmp_path / "bad.csv").write_text("file\nx.nii\n")
        discover_cases(tmp_path / "bad.csv")


def test_input_hash_is_what_the_reader_hashes(tree, tmp_path):
    found = discover_cases(tree)
    by_id = {c.case_id: c for c in found.cases}
    for case_id in ("subj_01_ct", "subj_04", "subj_05_s7"):
        case = by_id[case_id]
        assert input_files_sha256(case.files) == input_sha256(load_volume(case.path, case.series))
    # The real phantom series too (70 RLE slices, files named in slice order or not).
    series = tmp_path / "phantom"
    shutil.copytree(PHANTOM / "ct_dicom", series)
    for i, file in enumerate(sorted(series.iterdir())):
        file.rename(series / f"{(i * 37) % 70:03d}_{file.name}")  # names no longer in slice order
    case = discover_cases(series).cases[0]
    assert input_files_sha256(case.files) == input_sha256(load_volume(series))
    # Hashes are reused while the files are unchanged, and recomputed when one changes.
    calls = []
    hashes = hash_inputs([case], cached=lambda sig: calls.append(sig) or None)
    again = hash_inputs([case], cached=lambda sig: hashes[case.case_id][1] if sig == hashes[case.case_id][0] else None)
    assert again == hashes and len(calls) == 1
    with open(case.files[0], "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x01")
    changed = hash_inputs([case], cached=lambda sig: hashes[case.case_id][1] if sig == hashes[case.case_id][0] else None)
    assert changed[case.case_id][1] != hashes[case.case_id][1]


def test_manifest_is_wal_and_marks_a_dead_run_interrupted(tmp_path):
    manifest = Manifest(tmp_path)
    run = manifest.start_run(command="c", executor="in-process", model={"name": "m"}, options={}, options_hash="h",
                             n_cases=2)
    manifest.update_case("a", status="pending", source_key="a.nii", timings_json={"network": 1.5})
    assert manifest.attempt_started("a", run, worker="w", host="h", pid=1, started_utc="2026-01-01T00:00:00Z") == 1
    manifest.close()  # the process dies here
    with sqlite3.connect(tmp_path / "batch.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT status FROM cases").fetchone()[0] == "running"
    again = Manifest(tmp_path)
    run2 = again.start_run(command="c", executor="in-process", model={}, options={}, options_hash="h", n_cases=2)
    assert again.case("a")["status"] == "interrupted" and json.loads(again.case("a")["timings_json"]) == {
        "network": 1.5}
    assert [a["outcome"] for a in again.attempts("a")] == ["interrupted"]
    assert again.attempt_started("a", run2, worker="w", host="h", pid=2, started_utc="2026-01-01T00:01:00Z") == 1
    again.attempt_ended("a", run2, outcome="lost", error="worker died")
    assert again.attempt_started("a", run2, worker="w2", host="h", pid=3, started_utc="2026-01-01T00:02:00Z") == 2
    assert again.case("a")["retries"] == 1
    assert again.known_ids() == {"a.nii": "a"}


def test_second_lock_on_one_output_is_refused_with_the_holder(tmp_path):
    with OutputLock(tmp_path, command="medseg batch in out"):
        with pytest.raises(InputError) as err:
            OutputLock(tmp_path)
        import os
        import socket

        assert f"is in use by another medseg batch (process {os.getpid()} on {socket.gethostname()}" in str(err.value)
    OutputLock(tmp_path).release()  # free again once released


def _expected(sha: str, options: str = "o1") -> dict:
    return {"input_sha256": sha, "model_key": {"name": "m", "version": "1", "weights_sha256": "w"},
            "options_hash": options}


def _case_with_record(folder, small_ct, sha: str, *, kind: str = "proposal") -> None:
    labels = small_ct.with_array((small_ct.array > 0).astype(np.uint8), label_set=LabelSet({0: "background",
                                                                                           1: "liver"}))
    record = {"input_sha256": sha, "model": {"name": "m", "version": "1", "weights_sha256": "w"},
              "options_hash": "o1"}
    write_case(folder, labels=labels, provenance={}, kind=kind,
               exports={"batch.json": lambda path: path.write_text(json.dumps(record))})


def test_resume_decisions_trust_only_complete_matching_case_folders(tmp_path, small_ct):
    from medseg.case import sha256_of

    case = CaseInput("c1", "/in/c1.nii.gz", None, "nifti", "c1.nii.gz", ("/in/c1.nii.gz",))
    assert decide(case, _expected("s"), None, tmp_path).reason == "new"
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "labels.nii.gz").write_bytes(b"half")
    assert decide(case, _expected("s"), None, tmp_path).reason == "no complete case folder"
    shutil.rmtree(tmp_path / "c1")
    _case_with_record(tmp_path / "c1", small_ct, "s")
    row = {"status": "done", "case_json_sha256": sha256_of(tmp_path / "c1" / "case.json")}
    assert (decide(case, _expected("s"), row, tmp_path).action, decide(case, _expected("s"), row, tmp_path).reason) == (
        "skip", "done earlier")
    assert decide(case, _expected("s"), None, tmp_path).reason.startswith("complete case folder found")
    assert decide(case, _expected("changed"), row, tmp_path).reason == "input changed"
    assert decide(case, _expected("s", "o2"), row, tmp_path).reason == "options changed"
    assert decide(case, _expected("s"), row, tmp_path, restart=True).reason == "restart"
    # Damaged after it was written: the bytes no longer match case.json.
    labels = tmp_path / "c1" / "labels.nii.gz"
    data = bytearray(labels.read_bytes())
    data[-5] ^= 0xFF
    labels.write_bytes(bytes(data))
    assert decide(case, _expected("s"), None, tmp_path).reason.startswith("case folder damaged")
    # A person's correction is kept, even on --restart.
    _case_with_record(tmp_path / "c1", small_ct, "s", kind="correction")
    kept = decide(case, _expected("s"), None, tmp_path, restart=True)
    assert (kept.action, kept.status) == ("skip", "kept") and "corrected by a person" in kept.reason


def test_cohort_report_rows_and_plots(tmp_path):
    rows = [
        {"case_id": "a", "status": "done", "input_path": "/in/a.nii.gz", "attempts": 1, "peak_rss_mb": 812.5,
         "summary_json": json.dumps({"organ_volumes_ml": {"liver": 1500.0, "spleen": 210.5}, "n_lesions": 2,
                                     "lesion_burden_ml": 12.25, "n_recist_measurable": 1}),
         "timings_json": json.dumps({"read": 0.5, "network": 3.0, "total": 4.0})},
        {"case_id": "b", "status": "done", "input_path": "/in/b", "attempts": 2, "retries": 1,
         "summary_json": json.dumps({"organ_volumes_ml": {"liver": 1320.0, "kidney_left": 150.0}, "n_lesions": 0,
                                     "lesion_burden_ml": 0.0, "n_recist_measurable": 0}),
         "timings_json": json.dumps({"read": 0.25, "network": 2.0, "total": 2.5})},
        {"case_id": "c", "status": "failed", "input_path": "/in/c.nii.gz", "error": "c.nii.gz: truncated"},
    ]
    paths = write_cohort_report(tmp_path, rows, class_order=["liver", "spleen", "kidney_right", "kidney_left"])
    import csv

    table = list(csv.DictReader(paths["csv"].read_text().splitlines()))
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert header[:7] == ["case_id", "status", "input", "series", "liver_ml", "spleen_ml", "kidney_left_ml"]
    assert [r["case_id"] for r in table] == ["a", "b", "c"]
    assert table[0]["liver_ml"] == "1500" and table[0]["lesion_burden_ml"] == "12.25" and table[0]["time_total_s"] == "4"
    assert table[1]["spleen_ml"] == "" and table[1]["retries"] == "1"
    assert table[2]["error"] == "c.nii.gz: truncated" and table[2]["liver_ml"] == ""
    for name in ("organ_volumes", "lesion_burden", "case_times"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
