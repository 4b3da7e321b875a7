"""A killed ``medseg run`` leaves the earlier complete case or the new complete case, never a mix.

Each test starts the real command in a subprocess, waits until it reaches a named point
(``MEDSEG_TEST_HOLD``: mid-inference, with the case half written in its temporary folder, with
the case complete but not yet swapped in, and just after the swap), sends SIGKILL, SIGTERM or
SIGINT, and checks what is on disk, what the command said, and that the next run leaves no
temporary files behind. The model is a tiny network so each run takes about a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.case import CASE_FILE, read_case, sha256_of

REPO = Path(__file__).resolve().parents[1]
PHANTOM_NII = REPO / "sample_data" / "phantom" / "ct.nii.gz"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from medseg.labels import LabelSet
    from medseg.models.networks import build_network, default_network
    from medseg.models.spec import ModelSpec, Preprocessing
    from medseg.models.store import save_model

    torch.manual_seed(0)
    spec = ModelSpec("kill-tiny", default_network("unet", size="tiny"),
                     LabelSet({0: "background", 1: "liver", 2: "spleen"}),  # no lesion class: runs stay fast
                     Preprocessing(spacing_mm=(4.0, 4.0, 4.0), roi_size=(32, 32, 32), overlap=0.25))
    return save_model(spec, build_network(spec.network, 3), tmp_path_factory.mktemp("model") / "kill-tiny")


def _start(args, hold: str | None, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "MEDSEG_TEST_HOLD_SECONDS": "60", "OMP_NUM_THREADS": "1"}
    env.pop("MEDSEG_TEST_HOLD", None)
    if hold:
        env["MEDSEG_TEST_HOLD"] = hold
    return subprocess.Popen([sys.executable, "-m", "medseg.cli.main", *map(str, args)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_hold(proc: subprocess.Popen, point: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if f"medseg-hold: {point}" in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"the command ended (rc {proc.returncode}) before reaching {point}: "
                                 f"{proc.stdout.read()} {proc.stderr.read()}")
    proc.kill()
    raise AssertionError(f"{point} not reached within {timeout} s")


def _run(args, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MEDSEG_TEST_HOLD", None)
    return subprocess.run([sys.executable, "-m", "medseg.cli.main", *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def _snapshot(case: Path) -> dict[str, str]:
    return {p.relative_to(case).as_posix(): sha256_of(p) for p in sorted(case.rglob("*")) if p.is_file()}


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".medseg-" in p.name)


SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


def _earlier_case(out: Path, model: Path) -> dict[str, str]:
    """An earlier complete case with outputs the next run will not write (uncertainty)."""
    from medseg.pipeline import run_case

    run_case(PHANTOM_NII, model=str(model), output=out, uncertainty=True, device="cpu")
    return _snapshot(out)


@pytest.mark.parametrize("point", ["inference", "case-write"])
@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM", "SIGINT"])
@pytest.mark.parametrize("earlier", [False, True], ids=["empty", "earlier-case"])
def test_killed_run_leaves_the_earlier_case_or_nothing(tiny_model, tmp_path, point, signame, earlier):
    out = tmp_path / "case"
    args = ["run", PHANTOM_NII, "-o", out, "--model", tiny_model, "--quiet"]
    before = _earlier_case(out, tiny_model) if earlier else None
    proc = _start(args, point, tmp_path)
    _wait_for_hold(proc, point)
    proc.send_signal(SIGNALS[signame])
    _, stderr = proc.communicate(timeout=60)
    if signame == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == (143 if signame == "SIGTERM" else 130)
        last = stderr.strip().splitlines()[-1]
        assert last.endswith("no partial output was left (earlier results are unchanged)"), stderr
        assert _temporaries(tmp_path) == []  # cleaned up at once on SIGINT and SIGTERM
    if earlier:
        assert _snapshot(out) == before  # the earlier case, byte for byte
        read_case(out, verify=True)
    else:
        assert not out.exists()
    if signame == "SIGKILL":
        _next_run_cleans_up(args, out, tmp_path)


def _next_run_cleans_up(args, out: Path, tmp_path: Path) -> None:
    """The next run finishes the job and leaves nothing of the killed one behind."""
    again = _run(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert _temporaries(tmp_path) == [] and not [p for p in out.rglob("*") if ".medseg-" in p.name]
    case = read_case(out, verify=True)
    assert case.file("uncertainty") is None  # nothing of the earlier run survives beside the new one
    assert sorted(case.manifest["files"]) == sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != CASE_FILE)


def test_sigkill_when_the_new_case_is_complete_but_not_swapped_in(tiny_model, tmp_path):
    out = tmp_path / "case"
    args = ["run", PHANTOM_NII, "-o", out, "--model", tiny_model, "--quiet"]
    before = _earlier_case(out, tiny_model)
    proc = _start(args, "publish", tmp_path)
    _wait_for_hold(proc, "publish")
    proc.kill()
    proc.wait()
    assert _snapshot(out) == before
    _next_run_cleans_up(args, out, tmp_path)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_interrupt_after_the_swap_says_the_new_case_is_complete(tiny_model, tmp_path, signame):
    out = tmp_path / "case"
    proc = _start(["run", PHANTOM_NII, "-o", out, "--model", tiny_model, "--quiet"], "published", tmp_path)
    _wait_for_hold(proc, "published")
    proc.send_signal(SIGNALS[signame])
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode in (130, 143)
    assert f"after writing {out} (complete)" in stderr
    case = read_case(out, verify=True)
    assert case.labels.label_set.names == ("background", "liver", "spleen")
    assert _temporaries(tmp_path) == []


def test_sigkill_leftovers_are_removed_but_a_live_writers_are_not(tiny_model, tmp_path):
    """Temporaries carry the writer's pid: a dead writer's are removed by the next write into the
    folder, a running writer's are left alone."""
    out = tmp_path / "case"
    args = ["run", PHANTOM_NII, "-o", out, "--model", tiny_model, "--quiet"]
    dead = _start(args, "case-write", tmp_path)
    _wait_for_hold(dead, "case-write")
    dead.kill()
    dead.wait()
    leftover = _temporaries(tmp_path)
    assert len(leftover) == 1 and f"medseg-tmp-{dead.pid}-" in leftover[0]
    alive = _start(args, "case-write", tmp_path)  # a second writer, still running
    _wait_for_hold(alive, "case-write")
    assert _temporaries(tmp_path) == [name for name in _temporaries(tmp_path) if f"-{alive.pid}-" in name]
    alive.kill()
    alive.wait()
    assert _run(args, tmp_path).returncode == 0
    assert _temporaries(tmp_path) == []
    assert json.loads((out / CASE_FILE).read_text())["kind"] == "proposal"
    assert np.array_equal(read_case(out).labels.array.shape, (200, 170, 70))
