"""CPU back-ends (``medseg.inference.backends``): same labels as torch, choice, fallbacks, absence.

The shipped default model (real trained weights, 11 classes) on the synthetic phantom and on a
real CT, run by torch, OpenVINO, ONNX Runtime and ``auto``; every label map must agree with
torch's in >= 99.9 % of voxels (the issue's bar; measured here: 99.99996-100 %). Both volumes are
cropped to their abdomen (8 and 4 windows of the default model; ``auto`` measures from 8) to keep
the file quick. Exports go to a cache folder of this module, never the user's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import MedsegError, ModelError
from medseg.inference import segment
from medseg.inference.backends import BACKENDS, BackendCache, available_backends, compare, select
from medseg.io import load_volume
from medseg.labels import LabelSet
from medseg.models import SegmentationModel, resolve_model
from medseg.models.spec import ModelSpec, NetworkSpec, Preprocessing

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom" / "ct.nii.gz"
EXPORTED = ("openvino", "onnxruntime")
#: The phantom's abdomen (liver, spleen, kidneys, stomach, lesions): 8 windows of the default model,
#: the fewest with which ``auto`` exports and measures (``MIN_WINDOWS_TO_MEASURE``).
ABDOMEN = (slice(40, 160), slice(30, 140), slice(0, 70))


def tiny_model(name: str = "tiny") -> SegmentationModel:
    """A 2-level UNet in memory (random weights), with a known weights identity."""
    from medseg.models.networks import build_network

    torch.manual_seed(0)
    spec = ModelSpec(name, NetworkSpec("unet", {"channels": [4, 8], "strides": [2]}),
                     LabelSet({0: "background", 1: "a"}), Preprocessing(spacing_mm=(8.0, 8.0, 8.0), roi_size=(16,) * 3))
    return SegmentationModel.from_network(spec, build_network(spec.network, 2), weights_sha256="a" * 64)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backend-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDSEG_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def default_model():
    return resolve_model("default")


@pytest.fixture(scope="module")
def phantom_runs(cache_dir, default_model):
    """The phantom segmented by torch, each exported back-end and auto (run twice: measured, then cached)."""
    volume = load_volume(PHANTOM).crop(ABDOMEN)
    runs = {"torch": segment(volume, default_model, device="cpu", backend="torch")}
    for backend in (*EXPORTED, "auto", "auto-cached"):
        runs[backend] = segment(volume, default_model, device="cpu", backend=backend.split("-")[0])
    return runs


def agreement(a, b) -> float:
    return float(np.mean(a.labels.array == b.labels.array))


def test_backends_are_offered_and_installed_here():
    assert BACKENDS == ("auto", "torch", "openvino", "onnxruntime")
    versions = available_backends()
    assert versions["openvino"] and versions["onnxruntime"], "the dev extra installs both back-ends"


@pytest.mark.slow
def test_each_backend_gives_torchs_labels_on_the_phantom(phantom_runs):
    reference = phantom_runs["torch"]
    assert len(reference.present()) >= 6, "a vacuous comparison: the default model finds the phantom's organs"
    for backend in (*EXPORTED, "auto", "auto-cached"):
        run = phantom_runs[backend]
        assert agreement(run, reference) >= 0.999, backend
        assert run.labels.same_grid(reference.labels) and not run.provenance["notes"]
        if backend in EXPORTED:
            assert run.provenance["backend"]["used"] == backend
    for backend in EXPORTED:  # the check ran on a real window, and passed with margin
        verdict = phantom_runs[backend].provenance["backend"]["agreement"][backend][0]
        assert verdict["passed"] and verdict["argmax_agreement"] >= 0.999
        assert verdict["max_abs_logit_diff"] <= verdict["tolerance"]


@pytest.mark.slow
def test_openvino_runs_one_window_at_a_time_and_torch_in_batches(phantom_runs):
    """OpenVINO is as fast or faster one window per call and holds far less (engine comment)."""
    assert phantom_runs["openvino"].provenance["sw_batch_size"] == 1
    assert phantom_runs["torch"].provenance["sw_batch_size"] > 1
    assert phantom_runs["onnxruntime"].provenance["sw_batch_size"] > 1


@pytest.mark.slow
def test_auto_measures_once_then_reuses_its_choice(phantom_runs):
    first, second = phantom_runs["auto"].provenance["backend"], phantom_runs["auto-cached"].provenance["backend"]
    assert first["how"].startswith("measured fastest") and "cached" not in first["how"]
    assert set(first["seconds_per_window"]) == {"torch", "torch:channels_last", *EXPORTED}
    fastest = min(first["seconds_per_window"], key=first["seconds_per_window"].get)
    assert first["variant"] == fastest == second["variant"]
    assert "cached" in second["how"] and second["calibration_seconds"] == 0.0
    # The second run checked nothing again and exported nothing.
    assert all(e["cached"] for exports in second["exports"].values() for e in exports)
    assert "agreement_checked" not in phantom_runs["auto-cached"].provenance["predictor"]


@pytest.mark.slow
@pytest.mark.shared_data
def test_each_backend_gives_torchs_labels_on_a_real_ct(shared_data, cache_dir, default_model):
    volume = load_volume(shared_data / "totalsegmentator" / "example_ct.nii.gz")
    volume = volume.crop((slice(25, 92), slice(15, 82), slice(40, 100)))  # upper abdomen, 4 windows
    reference = segment(volume, default_model, device="cpu", backend="torch")
    assert len(reference.present()) >= 5
    for backend in EXPORTED:
        run = segment(volume, default_model, device="cpu", backend=backend)
        assert run.provenance["backend"]["used"] == backend
        assert agreement(run, reference) >= 0.999, backend
        assert np.array_equal(run.labels.affine, volume.affine)


class FourierSmooth(torch.nn.Module):
    """Logits from a low-pass filter in Fourier space: exact in torch, but the ONNX exporter has
    no FFT operator, so every export of it fails (a real exporter failure, not a mock)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Conv3d(1, 3, 1)
        with torch.no_grad():
            self.head.weight[:, 0, 0, 0, 0] = torch.tensor([-4.0, 0.0, 4.0])
            self.head.bias[:] = torch.tensor([1.0, 0.0, -1.0])

    def forward(self, x):
        spectrum = torch.fft.rfftn(x, dim=(2, 3, 4))
        smooth = torch.fft.irfftn(spectrum * 0.5, s=x.shape[2:], dim=(2, 3, 4))
        return self.head(smooth)


@pytest.fixture(scope="module")
def unexportable(cache_dir):
    spec = ModelSpec("fourier", NetworkSpec("unet", {"channels": [4, 8], "strides": [2]}),
                     LabelSet({0: "background", 1: "soft", 2: "dense"}),
                     Preprocessing(spacing_mm=(6.0, 6.0, 6.0), roi_size=(32, 32, 32)))
    # A known weights identity, as a model read from a file has: auto then tries to export it.
    return SegmentationModel.from_network(spec, FourierSmooth().eval(), weights_sha256="f" * 64)


def test_a_model_whose_export_fails_falls_back_to_torch_with_one_notice(unexportable):
    volume = load_volume(PHANTOM)
    reference = segment(volume, unexportable, device="cpu", backend="torch")
    for attempt in ("exports and fails", "failure recorded, not retried"):
        run = segment(volume, unexportable, device="cpu", backend="auto")
        notes = run.provenance["notes"]
        assert len(notes) == 1, (attempt, notes)
        assert "openvino and onnxruntime not used for the model fourier: export failed" in notes[0]
        assert "fft" in notes[0].lower()
        assert run.provenance["backend"]["used"] == "torch"
        np.testing.assert_array_equal(run.labels.array, reference.labels.array)
    assert "recorded" in notes[0] and run.timings["backend"] < 1.0  # the second time, no export
    with pytest.raises(ModelError, match=r"fourier.*cannot be exported for onnxruntime.*backend=torch"):
        segment(volume, unexportable, device="cpu", backend="onnxruntime")


def test_everything_works_without_the_optional_backends(monkeypatch, cache_dir):
    for module in ("openvino", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # `import openvino` now fails as if absent
    assert available_backends() == {**available_backends(), "openvino": None, "onnxruntime": None}
    model = tiny_model()
    volume = load_volume(PHANTOM)
    run = segment(volume, model, device="cpu")  # auto by default
    assert run.provenance["backend"]["used"] == "torch"
    assert run.provenance["backend"]["how"] == "no CPU back-end installed (pip install 'medseg[openvino]')"
    assert not run.provenance["notes"]
    for backend, extra in (("openvino", "openvino"), ("onnxruntime", "onnx")):
        with pytest.raises(MedsegError, match=rf"backend={backend}: {backend} is not installed\. "
                                              rf"Pip install 'medseg\[{extra}\]', or use backend=auto"):
            segment(volume, model, device="cpu", backend=backend)


def test_which_models_keep_torch_and_option_errors(default_model, cache_dir):
    cpu = torch.device("cpu")
    # (a window size measured nowhere yet: a choice measured before would be used at any size)
    small = select([default_model], backend="auto", device=cpu, precision="fp32", roi=(48,) * 3, where="m", windows=4)
    assert small.active.backend == "torch" and small.how.startswith("4 window(s): too few to pay for exporting")
    small.close()
    with pytest.raises(MedsegError, match="backend=tensorrt: is not a back-end"):
        select([default_model], backend="tensorrt", device=cpu, precision="fp32", roi=(64,) * 3, where="m")
    with pytest.raises(MedsegError, match="precision=bf16: onnxruntime runs float32 only"):
        select([default_model], backend="onnxruntime", device=cpu, precision="bf16", roi=(64,) * 3, where="m")
    with pytest.raises(MedsegError, match="backend=openvino: runs on the CPU, but the device is cuda"):
        select([default_model], backend="openvino", device=torch.device("cuda"), precision="fp16", roi=(64,) * 3,
               where="m")
    gpu = select([default_model], backend="auto", device=torch.device("cuda"), precision="fp16", roi=(64,) * 3,
                 where="m")
    assert gpu.active.backend == "torch" and gpu.how == "CUDA keeps torch"
    in_memory = SegmentationModel.from_network(default_model.spec, default_model.network)  # no weights file
    auto = select([in_memory], backend="auto", device=cpu, precision="fp32", roi=(64,) * 3, where="m")
    assert auto.active.backend == "torch" and "in memory" in auto.how
    trusted = SegmentationModel.from_network(default_model.spec, default_model.network, weights_sha256="b" * 64,
                                             source="monai-bundle-trusted")
    with pytest.raises(ModelError, match="cannot run with openvino: a trusted MONAI bundle runs its own code"):
        select([trusted], backend="openvino", device=cpu, precision="fp32", roi=(64,) * 3, where="m")
    for s in (gpu, auto):
        s.close()


def test_agreement_thresholds_on_known_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 10, (1, 4, 20, 20, 20)).astype(np.float32)
    same = compare(logits, logits + 1e-3)
    assert same.passed and same.argmax_agreement == 1.0 and same.tolerance == pytest.approx(1e-3 * np.abs(logits).max())
    flipped = logits.copy()
    flipped[0, :, :2] = flipped[0, ::-1, :2]  # 10 % of voxels get another label
    refused = compare(logits, flipped)
    assert not refused.passed and refused.argmax_agreement < 0.999 and "labels agree" in refused.reason
    drift = compare(logits, logits * 1.01)  # same labels, logits off by 1 %
    assert not drift.passed and drift.argmax_agreement == 1.0 and "logits differ" in drift.reason
    assert compare(logits, logits * 1.01, "bf16").passed
    assert not compare(logits, np.full_like(logits, np.nan)).passed


def test_a_cache_folder_that_cannot_be_written_still_works(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("MEDSEG_CACHE_DIR", str(blocker / "cache"))
    cache = BackendCache()
    assert not cache.writable()
    volume = load_volume(PHANTOM)
    model = tiny_model("tiny-unwritable")
    reference = segment(volume, model, device="cpu", backend="torch")
    run = segment(volume, model, device="cpu", backend="onnxruntime")
    assert agreement(run, reference) >= 0.999
    exports = run.provenance["backend"]["exports"]["onnxruntime"]
    assert exports[0]["persistent"] is False and not run.provenance["notes"]
    assert not (blocker / "cache").exists()
