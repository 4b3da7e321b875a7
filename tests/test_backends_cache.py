"""The cache of exported networks: damaged entries rebuilt, concurrent builders, verdicts kept,
``medseg cache info|clear``.

A tiny 2-level UNet saved as a real model folder (exports in about a second); volumes are the
synthetic phantom. Every test has its own cache folder (``MEDSEG_CACHE_DIR``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import ModelError
from medseg.inference import segment
from medseg.inference.backends import BackendCache, onnxruntime_backend
from medseg.inference.backends.cache import recipe_key
from medseg.io import load_volume
from medseg.labels import LabelSet
from medseg.models import resolve_model
from medseg.models.networks import build_network
from medseg.models.spec import ModelSpec, NetworkSpec, Preprocessing
from medseg.models.store import save_model

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom" / "ct.nii.gz"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec("tiny-cache", NetworkSpec("unet", {"channels": [4, 8], "strides": [2]}),
                     LabelSet({0: "background", 1: "a", 2: "b"}),
                     Preprocessing(spacing_mm=(8.0, 8.0, 8.0), roi_size=(16, 16, 16)))
    return save_model(spec, build_network(spec.network, 3), tmp_path_factory.mktemp("models") / "tiny-cache")


@pytest.fixture(scope="module")
def volume():
    return load_volume(PHANTOM)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MEDSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "backends"


def entries(cache_dir: Path, backend: str) -> list[Path]:
    return sorted(p for p in cache_dir.glob(f"{backend}-*") if p.is_dir())


def test_a_damaged_entry_is_detected_by_its_hash_and_rebuilt(cache_dir, model_folder, volume):
    model = resolve_model(model_folder)
    first = segment(volume, model, device="cpu", backend="onnxruntime")
    (entry,) = entries(cache_dir, "onnxruntime")
    onnx_file = entry / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the weights: same size, same name
    onnx_file.write_bytes(bytes(data))
    again = segment(volume, model, device="cpu", backend="onnxruntime")
    assert again.provenance["notes"] == [f"damaged cache entries were rebuilt: {entry.name}: model.onnx does not "
                                         "match its sha256 (damaged)"]
    assert again.provenance["backend"]["exports"]["onnxruntime"][0]["cached"] is False
    np.testing.assert_array_equal(again.labels.array, first.labels.array)
    assert BackendCache().load("onnxruntime", entry.name.split("-", 1)[1]) is not None  # intact again
    (entry / "entry.json").write_text("{ truncated")
    third = segment(volume, model, device="cpu", backend="onnxruntime")
    assert "entry.json is missing or unreadable" in third.provenance["notes"][0]
    np.testing.assert_array_equal(third.labels.array, first.labels.array)


CHILD = r"""
import json, os, sys, time
from pathlib import Path
from medseg.inference import segment
from medseg.io import load_volume
from medseg.models import resolve_model
volume, model = load_volume(sys.argv[2]), resolve_model(sys.argv[1])
barrier = Path(sys.argv[3])
(barrier / str(os.getpid())).touch()  # ready; wait until both are
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.01)
result = segment(volume, model, device="cpu", backend="openvino")
print(json.dumps({"exports": result.provenance["backend"]["exports"], "sum": int(result.labels.array.sum())}))
"""


@pytest.mark.slow
def test_two_processes_filling_the_cache_at_once_both_succeed(cache_dir, model_folder):
    # Both start segmenting at the same instant (a barrier of files); whoever builds first pauses
    # 2 s just before publishing each entry (MEDSEG_TEST_HOLD), so the other certainly arrives
    # while the entry is being made.
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MEDSEG_TEST_HOLD="cache-entry",
               MEDSEG_TEST_HOLD_SECONDS="2")
    barrier = cache_dir.parent.parent / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(model_folder), str(PHANTOM), str(barrier)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["sum"] == results[1]["sum"]
    made = [not r["exports"]["openvino"][0]["cached"] for r in results]
    assert sorted(made) == [False, True], "one process exported, the other waited and used its export"
    assert len(entries(cache_dir, "openvino")) == 1 and len(entries(cache_dir, "onnxruntime")) == 1
    leftovers = [p.name for p in cache_dir.iterdir() if ".medseg-tmp-" in p.name]
    assert not leftovers
    for backend in ("openvino", "onnxruntime"):
        (entry,) = entries(cache_dir, backend)
        assert BackendCache().load(backend, entry.name.split("-", 1)[1]) is not None


def test_a_builder_that_loses_the_race_keeps_the_winners_entry(cache_dir):
    cache = BackendCache()

    def make(folder: Path) -> dict:
        (folder / "model.onnx").write_bytes(b"exported")
        return {}

    first = cache.build("onnxruntime", "k" * 24, {"r": 1}, make)
    # A second builder that did not see the lock (a file system without locks): its rename fails
    # because the entry exists, and it uses the existing one.
    second = cache._build_into(cache.folder, "onnxruntime", "k" * 24, {"r": 1}, make, persistent=True)
    assert second.path == first.path and (first.path / "model.onnx").read_bytes() == b"exported"
    assert [p.name for p in cache.folder.iterdir() if p.name.startswith(".") and p.name != ".locks"] == []


def test_a_cached_refusal_is_kept_and_said(cache_dir, model_folder, volume):
    model = resolve_model(model_folder)
    segment(volume, model, device="cpu", backend="onnxruntime")
    (entry,) = entries(cache_dir, "onnxruntime")
    verdict_file = entry / "verdict-fp32.json"
    verdict = json.loads(verdict_file.read_text())
    assert verdict["passed"] and verdict["window_memory_bytes"] > 0
    verdict.update(passed=False, argmax_agreement=0.97, reason="its labels agree with torch's in 97% of a window's voxels")
    verdict_file.write_text(json.dumps(verdict))
    with pytest.raises(ModelError, match=r"onnxruntime is refused for the model tiny-cache: its labels agree .* 97%.*"
                                         r"medseg cache clear. checks again\)\. Use backend=torch or backend=auto"):
        segment(volume, model, device="cpu", backend="onnxruntime")
    auto = segment(volume, model, device="cpu", backend="auto")
    assert auto.provenance["backend"]["used"] in ("openvino", "torch")
    assert [n for n in auto.provenance["notes"] if n.startswith("onnxruntime not used")]


def test_a_backend_that_disagrees_on_the_first_window_is_refused(cache_dir, model_folder, volume, monkeypatch):
    model = resolve_model(model_folder)
    real_call = onnxruntime_backend.OnnxRuntimeForward.__call__
    # An export that is subtly wrong (logits 5 % off): same labels mostly, but not the same network.
    monkeypatch.setattr(onnxruntime_backend.OnnxRuntimeForward, "__call__", lambda self, x: real_call(self, x) * 1.05)
    with pytest.raises(ModelError, match="onnxruntime is refused for the model tiny-cache: its logits differ"):
        segment(volume, model, device="cpu", backend="onnxruntime")
    (entry,) = entries(cache_dir, "onnxruntime")
    assert json.loads((entry / "verdict-fp32.json").read_text())["passed"] is False


def test_cache_info_and_clear_on_the_command_line(cache_dir, model_folder, volume):
    segment(volume, resolve_model(model_folder), device="cpu", backend="openvino")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    probe = ("import sys; from medseg.cli.main import main; code = main(sys.argv[1:]); "
             "print('heavy imports:', sorted(m for m in ('torch', 'monai', 'openvino', 'onnxruntime') if m in sys.modules))")

    def medseg(*args):
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    text = medseg("cache", "info")
    assert f"cache: {cache_dir} (writable), 2 exported network(s)" in text
    assert "openvino     tiny-cache" in text and "onnxruntime  tiny-cache" in text
    assert "window 16x16x16" in text and "fp32 agrees" in text and "heavy imports: []" in text
    info = json.loads(medseg("cache", "info", "--json").split("heavy imports")[0])
    assert {row["backend"] for row in info["entries"]} == {"openvino", "onnxruntime"}
    assert all(row["verdicts"]["fp32"]["passed"] for row in info["entries"] if row["backend"] == "openvino")
    assert medseg("cache", "clear").startswith(f"removed 2 exported network(s)")
    assert "0 exported network(s)" in medseg("cache", "info")
    assert not cache_dir.exists()


def test_keys_change_with_what_makes_an_export():
    base = {"identity": {"weights_sha256": "a" * 64}, "roi": [64, 64, 64], "backend": "openvino",
            "backend_version": "2026.4.1", "torch": "2.13.0", "opset": 18}
    keys = {recipe_key(base)}
    for field, value in (("roi", [96, 96, 96]), ("backend_version", "2026.5.0"), ("torch", "2.14.0"),
                         ("identity", {"weights_sha256": "b" * 64})):
        keys.add(recipe_key({**base, field: value}))
    assert len(keys) == 5 and recipe_key(dict(reversed(list(base.items())))) == recipe_key(base)


def test_openvino_is_compiled_in_float32_unless_bf16_is_asked(cache_dir, model_folder, volume):
    import openvino as ov

    from medseg.inference.backends.openvino_backend import OpenVinoForward

    segment(volume, resolve_model(model_folder), device="cpu", backend="openvino")
    (entry,) = entries(cache_dir, "openvino")
    f32 = OpenVinoForward(entry / "model.xml", threads=1, precision="fp32")
    assert str(f32.compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32", "float32")
    default = ov.Core().compile_model(str(entry / "model.xml"), "CPU")
    cpu_has_bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path("/proc/cpuinfo").read_text()
    if cpu_has_bf16:  # the pitfall medseg avoids: OpenVINO's own default on such CPUs is bfloat16
        assert "bfloat16" in str(default.get_property("INFERENCE_PRECISION_HINT"))
        bf16 = OpenVinoForward(entry / "model.xml", threads=1, precision="bf16")
        assert "bfloat16" in str(bf16.compiled.get_property("INFERENCE_PRECISION_HINT"))


def test_a_remembered_choice_that_now_disagrees_gives_way_to_torch(cache_dir, model_folder, volume, monkeypatch):
    model = resolve_model(model_folder)
    reference = segment(volume, model, device="cpu", backend="torch")
    segment(volume, model, device="cpu", backend="auto")  # measures and remembers a choice
    (decision_file,) = cache_dir.glob("decisions/*.json")
    decision = json.loads(decision_file.read_text())
    decision["chosen"] = "onnxruntime"  # as if ONNX Runtime had won here
    decision_file.write_text(json.dumps(decision))
    for verdict in cache_dir.glob("onnxruntime-*/verdict-*.json"):
        verdict.unlink()  # ... and its verdict were lost: it is checked again on the first window
    real_call = onnxruntime_backend.OnnxRuntimeForward.__call__
    monkeypatch.setattr(onnxruntime_backend.OnnxRuntimeForward, "__call__", lambda self, x: real_call(self, x) * 1.05)
    run = segment(volume, model, device="cpu", backend="auto")
    assert run.provenance["backend"]["used"] == "torch" and run.provenance["backend"]["how"].startswith("torch: onnxruntime")
    (note,) = run.provenance["notes"]
    assert note.startswith("onnxruntime not used for the model tiny-cache: its logits differ from torch's")
    np.testing.assert_array_equal(run.labels.array, reference.labels.array)


def test_least_recently_used_exports_go_when_the_cache_is_full(cache_dir, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE_MAX_MB", "2.5")
    cache = BackendCache()

    def make(folder: Path) -> dict:
        (folder / "model.onnx").write_bytes(os.urandom(2**20))  # 1 MB each
        return {}

    first = cache.build("onnxruntime", "a" * 24, {}, make)
    second = cache.build("onnxruntime", "b" * 24, {}, make)
    os.utime(first.path, (1, 1))
    os.utime(second.path, (2, 2))
    assert cache.load("onnxruntime", "a" * 24) is not None  # used again: now the most recent
    cache.build("onnxruntime", "c" * 24, {}, make)  # 3 MB > 2.5 MB: the least recently used goes
    assert [p.name.split("-")[1][0] for p in entries(cache_dir, "onnxruntime")] == ["a", "c"]
