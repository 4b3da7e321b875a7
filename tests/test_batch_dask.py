"""``medseg batch`` on Dask distributed: a real LocalCluster on loopback gives the in-process run's
outputs voxel for voxel while a worker is killed mid-case, and an existing cluster is used as is.

The cohort: a phantom as NIfTI and as a DICOM series, a real CT, a real CT series too thin for the
shipped model's window, and a truncated file. The shipped default model, since these tests are
about real outputs.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from medseg.batch.run import run_batch
from medseg.case import read_case

pytest.importorskip("distributed")

GOOD = ("p3_ct", "p3_series", "real_ct_sm")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, shared_data) -> Path:
    from medseg.phantom import make_phantom
    from medseg.phantom._write import write_phantom

    root = tmp_path_factory.mktemp("cohort") / "scans"
    with warnings.catch_warnings():  # a small phantom lacks some structures: NaN centroids in its truth
        warnings.simplefilter("ignore", RuntimeWarning)
        phantom = make_phantom(seed=3, shape=(100, 85, 48), spacing_mm=(3.0, 3.0, 3.0))
    files = write_phantom(phantom, tmp_path_factory.mktemp("phantom"))
    (root / "p3").mkdir(parents=True)
    shutil.copy(files.folder / "ct.nii.gz", root / "p3" / "ct.nii.gz")
    shutil.copytree(files.folder / "ct_dicom", root / "p3_series")
    shutil.copy(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz", root / "real_ct_sm.nii.gz")
    shutil.copytree(shared_data / "totalsegmentator" / "example_ct_dicom", root / "real_thin_series")
    (root / "zz_truncated.nii.gz").write_bytes((root / "p3" / "ct.nii.gz").read_bytes()[:6000])
    return root


@pytest.fixture(scope="module")
def in_process(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("in_process") / "out"
    # One torch thread, as each worker has: inference backends may sum in another order with
    # another thread count, which can flip an argmax between two near-equal classes.
    result = run_batch(cohort, out, device="cpu", threads=1)
    assert result.exit_code == 1
    assert {c.case_id: c.status for c in result.cases} == {**dict.fromkeys(GOOD, "done"),
                                                          "real_thin_series": "failed", "zz_truncated": "failed"}
    return out


def _open_attempts(manifest: Path) -> list[tuple]:
    try:
        with sqlite3.connect(manifest, timeout=5) as db:
            return db.execute("SELECT case_id, worker, pid FROM attempts WHERE outcome IS NULL AND pid > 0").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


@pytest.mark.slow
@pytest.mark.shared_data
def test_local_cluster_equals_in_process_and_survives_a_killed_worker(cohort, in_process, tmp_path):
    out = tmp_path / "dask"
    env = {**os.environ, "MEDSEG_TEST_HOLD": "inference", "MEDSEG_TEST_HOLD_SECONDS": "3"}  # slow cases: time to kill
    proc = subprocess.Popen([sys.executable, "-m", "medseg.cli.main", "batch", str(cohort), str(out), "--workers", "2",
                             "--threads-per-worker", "1", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killed = None
    try:
        deadline = time.monotonic() + 240
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            running = [a for a in _open_attempts(out / "batch.sqlite") if a[0] in GOOD and a[1].startswith("tcp://")]
            if running:
                killed = running[0]
                os.kill(killed[2], signal.SIGKILL)  # the worker process, in the middle of its case
            time.sleep(0.1)
        stdout, stderr = proc.communicate(timeout=420)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, stderr
    assert proc.returncode == 1, stderr
    assert "dask LocalCluster: 2 worker processes x 1 torch thread(s)" in stderr
    # The bad ones are reported with their reasons; the rest finished.
    failed = {line.split(": ", 1)[0].strip(): line for line in stdout.split("failed:\n", 1)[1].splitlines()
              if line.startswith("  ") and ": " in line}
    assert set(failed) == {"real_thin_series", "zz_truncated"}
    assert "is too small for the model" in failed["real_thin_series"] and "truncated" in failed["zz_truncated"]
    assert "1 attempt(s) lost and retried" in stdout
    # The manifest records the lost attempt and the retry.
    with sqlite3.connect(out / "batch.sqlite") as db:
        attempts = db.execute("SELECT outcome, worker, pid, error FROM attempts WHERE case_id=? ORDER BY id",
                              (killed[0],)).fetchall()
        status, retries = db.execute("SELECT status, retries FROM cases WHERE case_id=?", (killed[0],)).fetchone()
    assert [a[0] for a in attempts] == ["lost", "done"] and (status, retries) == ("done", 1)
    assert attempts[0][2] == killed[2] and attempts[1][2] != killed[2]
    assert f"worker {killed[1]} died during the case" in attempts[0][3]
    # Voxel for voxel what the in-process run wrote: labels and lesion instances.
    for case_id in GOOD:
        ours, reference = read_case(out / case_id, verify=True), read_case(in_process / case_id)
        assert np.array_equal(ours.labels.array, reference.labels.array), case_id
        assert np.array_equal(ours.labels.affine, reference.labels.affine)
        assert np.array_equal(ours.lesions.array, reference.lesions.array), case_id
        assert ours.provenance["input"]["sha256"] == reference.provenance["input"]["sha256"]
    assert len((out / "cohort.csv").read_text().splitlines()) == 6


@pytest.mark.slow
@pytest.mark.shared_data
def test_an_existing_cluster_is_used_and_its_dashboard_printed(cohort, in_process, tmp_path, capsys):
    import torch
    from distributed import LocalCluster

    from medseg.cli.main import main

    threads = torch.get_num_threads()
    # Workers in this process (no spawn: quick); the batch cannot tell them from remote ones.
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        try:
            code = main(["batch", str(cohort), str(tmp_path / "out"), "--scheduler", cluster.scheduler_address,
                         "--pattern", "real_ct_sm*", "--device", "cpu", "--threads-per-worker", "1"])
        finally:
            torch.set_num_threads(threads)  # the worker plugin set this process's threads
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"dask scheduler {cluster.scheduler_address}: 1 workers now; dashboard " in captured.err
    assert np.array_equal(read_case(tmp_path / "out" / "real_ct_sm").labels.array,
                          read_case(in_process / "real_ct_sm").labels.array)


def test_the_slurm_set_up_in_the_docs_gives_one_case_per_gpu_job():
    """docs/batch.md's SLURMCluster: 8 cores and a GPU per job, Dask running one case at a time."""
    dask_jobqueue = pytest.importorskip("dask_jobqueue")

    docs = (Path(__file__).resolve().parents[1] / "docs" / "batch.md").read_text()
    snippet = docs.split("cluster = SLURMCluster(", 1)[1].split("\n)\n", 1)[0]
    assert 'job_cpu=8, memory="32GB"' in snippet and 'worker_extra_args=["--resources", "GPU=1"]' in snippet
    with dask_jobqueue.SLURMCluster(queue="gpu", account="myproject", walltime="04:00:00", cores=1, processes=1,
                                    job_cpu=8, memory="32GB", job_extra_directives=["--gres=gpu:1"],
                                    worker_extra_args=["--resources", "GPU=1"],
                                    job_script_prologue=["source /opt/medseg/.venv/bin/activate"],
                                    local_directory="$TMPDIR",
                                    scheduler_options={"dashboard_address": ":0"}) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH --cpus-per-task=8", "#SBATCH --gres=gpu:1", "#SBATCH -t 04:00:00", "--nthreads 1",
                 "--resources GPU=1", "source /opt/medseg/.venv/bin/activate"):
        assert line in script
        assert line in docs
