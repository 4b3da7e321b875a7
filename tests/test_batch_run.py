"""``medseg batch`` in one process: every case run once, resume, a bad case never stops the rest,
SIGKILL at the worst moments, and one clear line for every bad start (exit 2, nothing written).

A small untrained UNet keeps these quick; the outputs of the shipped model are compared with a
Dask cluster's in ``test_batch_dask.py``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.case import read_case, sha256_of, write_case
from medseg.cli.main import main
from medseg.labels import LabelSet
from medseg.models.networks import build_network, default_network
from medseg.models.spec import ModelSpec, Preprocessing
from medseg.models.store import save_model
from medseg.volume import Volume

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec("batch-tiny", default_network("unet", size="tiny"),
                     LabelSet({0: "background", 1: "liver", 2: "spleen"}),
                     Preprocessing(spacing_mm=(4.0, 4.0, 4.0), roi_size=(32, 32, 32), overlap=0.25))
    return save_model(spec, build_network(spec.network, 3), tmp_path_factory.mktemp("model") / "batch-tiny")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, shared_data) -> Path:
    """Small phantoms as NIfTI and as a DICOM series, a real CT, and a truncated file."""
    from medseg.phantom import make_phantom
    from medseg.phantom._write import write_phantom

    root = tmp_path_factory.mktemp("cohort") / "scans"
    work = tmp_path_factory.mktemp("phantoms")
    for seed in (1, 2):
        with warnings.catch_warnings():  # a phantom this small lacks some structures: NaN centroids in its truth
            warnings.simplefilter("ignore", RuntimeWarning)
            phantom = make_phantom(seed=seed, shape=(64, 56, 40), spacing_mm=(3.0, 3.0, 3.0))
        files = write_phantom(phantom, work / f"s{seed}")
        (root / f"p{seed}").mkdir(parents=True)
        shutil.copy(files.folder / "ct.nii.gz", root / f"p{seed}" / "ct.nii.gz")
        if seed == 2:
            shutil.copytree(files.folder / "ct_dicom", root / "p2_series")
    shutil.copy(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz", root / "real_ct_sm.nii.gz")
    (root / "zz_truncated.nii.gz").write_bytes((root / "p1" / "ct.nii.gz").read_bytes()[:4000])
    return root


def _batch(*args: str, capsys=None) -> tuple[int, str, str]:
    code = main(["batch", *args])
    out = capsys.readouterr() if capsys is not None else None
    return code, (out.out if out else ""), (out.err if out else "")


def _rows(output: Path) -> dict[str, dict]:
    with sqlite3.connect(output / "batch.sqlite") as db:
        db.row_factory = sqlite3.Row
        return {r["case_id"]: dict(r) for r in db.execute("SELECT * FROM cases")}


def _attempts(output: Path) -> list[dict]:
    with sqlite3.connect(output / "batch.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM attempts ORDER BY id")]


def _stamps(folder: Path) -> dict[str, tuple[int, str]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, sha256_of(p))
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_case_runs_once_and_the_bad_one_is_reported(cohort, model_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = _batch(str(cohort), str(out), "--model", str(model_folder), "--device", "cpu",
                                  "--threads", "2", capsys=capsys)
    assert code == 1, stderr
    assert "failed:\n  zz_truncated: " in stdout and "truncated" in stdout.split("zz_truncated: ")[1].splitlines()[0]
    assert "5 cases found (1 dicom, 4 nifti); 0 already done, 0 kept, 5 to run" in stderr
    rows = _rows(out)
    assert {k: r["status"] for k, r in rows.items()} == {"p1_ct": "done", "p2_ct": "done", "p2_series": "done",
                                                         "real_ct_sm": "done", "zz_truncated": "failed"}
    for case_id in ("p1_ct", "p2_series", "real_ct_sm"):
        case = read_case(out / case_id, verify=True)
        source = case.image  # the input, as the provenance names it
        assert case.labels.same_grid(source), case_id
        # The manifest's input hash is the reader's hash of the bytes it segmented.
        assert rows[case_id]["input_sha256"] == case.provenance["input"]["sha256"]
        assert json.loads((out / case_id / "exports" / "batch.json").read_text())["options_hash"] == rows[case_id][
            "options_hash"]
        assert rows[case_id]["peak_rss_mb"] > 100 and json.loads(rows[case_id]["timings_json"])["network"] > 0
    real = nib.load(str(out / "real_ct_sm" / "labels.nii.gz"))
    reference = nib.load(str(cohort / "real_ct_sm.nii.gz"))
    assert real.shape == reference.shape and np.array_equal(real.affine, reference.affine)
    # The phantom as NIfTI and as DICOM is the same scan: the same labels voxel for voxel.
    assert np.array_equal(read_case(out / "p2_ct").labels.array, read_case(out / "p2_series").labels.array)
    table = (out / "cohort.csv").read_text().splitlines()
    assert len(table) == 6 and table[0].startswith("case_id,status,input,series,liver_ml")
    assert "zz_truncated,failed" in table[-1]


def test_resume_skips_complete_cases_and_redoes_what_changed(cohort, model_folder, tmp_path, capsys):
    out = tmp_path / "out"
    base = [str(cohort), str(out), "--model", str(model_folder), "--device", "cpu", "--pattern", "p2/*",
            "--pattern", "real_*"]
    assert _batch(*base, capsys=capsys)[0] == 0
    before = {case_id: _stamps(out / case_id) for case_id in _rows(out)}
    code, stdout, _ = _batch(*base, "--overlap", "0.25", capsys=capsys)  # the model's own overlap: same options
    assert code == 0 and "skipped         2" in stdout
    assert {case_id: _stamps(out / case_id) for case_id in before} == before
    (cohort / "p2" / "ct.nii.gz").touch()  # touched, same bytes: still done (content hash, not mtime)
    assert "skipped         2" in _batch(*base, capsys=capsys)[1]
    code, stdout, _ = _batch(*base, "--overlap", "0.5", "--json", capsys=capsys)
    summary = json.loads(stdout)
    assert code == 0 and summary["counts"]["done"] == 2 and summary["counts"]["skipped"] == 0
    assert {c["reason"] for c in summary["cases"]} == {"options changed"}
    assert _stamps(out / "p2_ct") != before["p2_ct"]
    code, stdout, _ = _batch(*base, "--overlap", "0.5", "--restart", "--json", capsys=capsys)
    assert json.loads(stdout)["counts"]["done"] == 2
    attempts = _attempts(out)
    assert sum(a["case_id"] == "p2_ct" and a["outcome"] == "done" for a in attempts) == 3
    # A person corrects one case: batches keep it, even on --restart, and report its new volumes.
    proposal = read_case(out / "real_ct_sm")
    corrected = np.zeros(proposal.labels.shape, np.uint8)
    corrected[10:20, 10:20, 5:15] = 1  # 1000 voxels of liver
    edited = Volume(corrected, proposal.labels.affine, "SEG").with_labels(proposal.label_set)  # as an editor saves it
    write_case(out / "real_ct_sm", labels=edited, provenance={}, kind="correction")
    code, stdout, _ = _batch(*base, "--overlap", "0.5", "--restart", "--json", capsys=capsys)
    summary = json.loads(stdout)
    assert code == 0 and summary["counts"]["kept"] == 1 and summary["counts"]["done"] == 1
    assert read_case(out / "real_ct_sm").kind == "correction"
    row = next(r for r in (out / "cohort.csv").read_text().splitlines() if r.startswith("real_ct_sm,kept,"))
    header = (out / "cohort.csv").read_text().splitlines()[0].split(",")
    assert float(row.split(",")[header.index("liver_ml")]) == pytest.approx(1000 * proposal.labels.voxel_volume_ml)


def test_fail_fast_stops_at_the_first_failure(cohort, model_folder, tmp_path, capsys):
    listing = tmp_path / "cases.csv"
    listing.write_text(f"input,case_id\n{cohort / 'zz_truncated.nii.gz'},a_bad\n{cohort / 'p1' / 'ct.nii.gz'},b_good\n")
    out = tmp_path / "out"
    code, stdout, _ = _batch(str(listing), str(out), "--model", str(model_folder), "--device", "cpu", "--fail-fast",
                             "--json", capsys=capsys)
    summary = json.loads(stdout)
    assert code == 1 and summary["stopped_early"]
    assert {c["case_id"]: c["status"] for c in summary["cases"]} == {"a_bad": "failed", "b_good": "pending"}
    assert not (out / "b_good").exists() and _rows(out)["b_good"]["status"] == "pending"


# --- bad starts: exit 2, one line, nothing written -------------------------------------------
def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_no_cases_and_output_inside_input(model_folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing to see\n")
    code, _, stderr = _batch(str(empty), str(tmp_path / "out"), "--model", str(model_folder), capsys=capsys)
    assert code == 2 and _one_line(stderr).startswith(f"medseg batch: error: {empty}: holds no cases (no NIfTI/NRRD")
    inside = empty / "results"
    code, _, stderr = _batch(str(empty), str(inside), capsys=capsys)
    assert code == 2 and f"{inside}: lies inside the input folder" in _one_line(stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not inside.exists()  # nothing written
    code, _, stderr = _batch(str(empty), str(tmp_path / "out"), "--model", str(tmp_path / "no_model"), capsys=capsys)
    assert code == 2 and "--model" in _one_line(stderr) and not (tmp_path / "out").exists()


def _cli(*args: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> list[str]:
    return [*prefix, sys.executable, "-m", "medseg.cli.main", "batch", *args]


def test_read_only_output_is_refused(cohort, model_folder, tmp_path):
    out = tmp_path / "readonly"
    out.mkdir()
    if os.geteuid() == 0:  # root writes whatever the mode: a real read-only mount instead
        prefix = ("unshare", "-m", "sh", "-c", f'mount --bind -o ro "{out}" "{out}" && exec "$0" "$@"')
        probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
        if probe.returncode != 0:
            pytest.skip(f"cannot make a read-only mount here: {probe.stderr.decode().strip()}")
    else:
        out.chmod(0o555)
        prefix = ()
    done = subprocess.run(_cli(str(cohort), str(out), "--model", str(model_folder), prefix=prefix), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert line.startswith(f"medseg batch: error: {out}: is not writable (") and "write to" in line
    assert list(out.iterdir()) == []


def test_unreachable_scheduler_is_a_clear_error_within_10_s(cohort, tmp_path, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t0 = time.perf_counter()
    code, _, stderr = _batch(str(cohort), str(tmp_path / "out"), "--scheduler", f"tcp://127.0.0.1:{port}",
                             capsys=capsys)
    assert time.perf_counter() - t0 < 10
    assert code == 2 and _one_line(stderr).startswith(f"medseg batch: error: --scheduler tcp://127.0.0.1:{port}: "
                                                      "no Dask scheduler answered")
    code, _, stderr = _batch(str(cohort), str(tmp_path / "out"), "--scheduler", "my-cluster", capsys=capsys)
    assert code == 2 and _one_line(stderr).endswith("--scheduler my-cluster: is not a scheduler address. Give one "
                                                    "like tcp://10.0.0.5:8786 (printed by `dask scheduler` or your "
                                                    "cluster)")
    assert not (tmp_path / "out" / "batch.sqlite").exists()


class _Proc:
    """A batch subprocess whose stderr lines are read as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **env})
        self.lines: queue.Queue = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, count: int = 1, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        seen = 0
        while seen < count:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no {text!r} after {timeout} s: {''.join(self.err)}") from None
            seen += text in line

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


def test_two_batches_on_one_output_the_second_refuses(cohort, model_folder, tmp_path, capsys):
    out = tmp_path / "out"
    first = _Proc(_cli(str(cohort), str(out), "--model", str(model_folder), "--device", "cpu"),
                  {"MEDSEG_TEST_HOLD": "batch-record", "MEDSEG_TEST_HOLD_SECONDS": "60"})
    try:
        deadline = time.monotonic() + 60
        while f'"pid": {first.proc.pid}' not in _text(out / "batch.lock") and time.monotonic() < deadline:
            time.sleep(0.05)  # the lock is taken before anything else is done
        code, _, stderr = _batch(str(cohort), str(out), "--model", str(model_folder), capsys=capsys)
        assert code == 2
        assert _one_line(stderr).startswith(f"medseg batch: error: {out}: is in use by another medseg batch "
                                            f"(process {first.proc.pid} on {socket.gethostname()}, started ")
    finally:
        first.proc.send_signal(signal.SIGTERM)  # as `timeout` or SLURM would stop it
        first.proc.wait(timeout=60)
    assert first.proc.returncode == 143
    assert "terminated (SIGTERM); every case recorded done is complete, nothing partial was left" in "".join(first.err)
    assert not [p.name for p in out.iterdir() if "medseg-tmp" in p.name]


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.mark.slow
def test_sigkill_at_the_worst_moments_then_resume(cohort, model_folder, tmp_path):
    """Killed after a case is written but before it is recorded, then while a case is being put
    in place; the third run finishes: every case done exactly once, earlier ones untouched."""
    out = tmp_path / "out"
    args = _cli(str(cohort), str(out), "--model", str(model_folder), "--device", "cpu", "--exclude", "zz_*")
    first = _Proc(args, {"MEDSEG_TEST_HOLD": "batch-record", "MEDSEG_TEST_HOLD_SECONDS": "2"})
    first.wait_for("medseg-hold: batch-record", count=3)  # cases 1-2 recorded, case 3 written, not recorded
    first.kill()
    written = ["p1_ct", "p2_ct", "p2_series"]
    assert [r["status"] for r in map(_rows(out).get, written)] == ["done", "done", "running"]
    stamps = {case_id: _stamps(out / case_id) for case_id in written}

    second = _Proc(args, {"MEDSEG_TEST_HOLD": "publish", "MEDSEG_TEST_HOLD_SECONDS": "60"})
    second.wait_for("medseg-hold: publish")  # case 4 complete beside its final name, not yet in place
    second.kill()
    assert not (out / "real_ct_sm").exists() and any(".real_ct_sm.medseg-tmp-" in p.name for p in out.iterdir())

    probe = ("import sys; from medseg.cli.main import main; code = main(sys.argv[1:]); "
             "print('dask imported:', 'distributed' in sys.modules); sys.exit(code)")
    third = subprocess.run([sys.executable, "-c", probe, *args[3:]], capture_output=True, text=True, timeout=300,
                           check=False)
    assert third.returncode == 0, third.stderr
    assert "dask imported: False" in third.stdout  # in-process runs never import Dask
    assert "3 already done, 0 kept, 1 to run" in third.stderr
    assert not [p.name for p in out.iterdir() if "medseg-tmp" in p.name or "medseg-old" in p.name]
    rows = _rows(out)
    assert {k: r["status"] for k, r in rows.items()} == dict.fromkeys(["p1_ct", "p2_ct", "p2_series", "real_ct_sm"],
                                                                      "done")
    for case_id in rows:
        read_case(out / case_id, verify=True)
    assert {case_id: _stamps(out / case_id) for case_id in written} == stamps
    done = {}
    for attempt in _attempts(out):
        done[attempt["case_id"]] = done.get(attempt["case_id"], 0) + (attempt["outcome"] == "done")
    assert done == dict.fromkeys(rows, 1)
    assert [a["outcome"] for a in _attempts(out) if a["case_id"] == "p2_series"] == ["done"]  # recorded late
    assert [a["outcome"] for a in _attempts(out) if a["case_id"] == "real_ct_sm"] == ["interrupted", "done"]


def test_a_swallowed_sigterm_still_stops_the_batch_and_ends_test_holds(monkeypatch):
    """SIGTERM during ``import openvino`` is dropped by its extension's initialisation (seen: the
    batch then ran on); the handler's flag makes the next batch event raise, and ends holds."""
    from medseg.batch.run import BatchEvent
    from medseg.cli._signals import REQUESTED, Terminated, on_sigterm
    from medseg.cli.batch import _Display
    from medseg.progress import hold_for_tests

    display = _Display(quiet=True)
    display(BatchEvent("started", "a", "a: started", {}))  # no request: nothing happens
    try:
        with pytest.raises(Terminated):
            on_sigterm(signal.SIGTERM, None)  # the exception a library may swallow
        with pytest.raises(Terminated):
            display(BatchEvent("started", "b", "b: started", {}))
        monkeypatch.setenv("MEDSEG_TEST_HOLD", "batch-record")
        monkeypatch.setenv("MEDSEG_TEST_HOLD_SECONDS", "600")
        started = time.monotonic()
        hold_for_tests("batch-record")
        assert time.monotonic() - started < 5.0
    finally:
        REQUESTED.clear()
