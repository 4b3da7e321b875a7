"""The top-level API: lazy (``import medseg`` loads no torch), documented by examples that run,
models loaded once per process, policy (fine-tuning learning rate) in the API, one-way layers."""

from __future__ import annotations

import doctest
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"


def test_import_medseg_is_light_and_the_api_is_lazy():
    code = ("import sys, medseg; heavy = [m for m in ('torch', 'monai', 'matplotlib', 'qtpy') if m in sys.modules]; "
            "f = medseg.load_volume; print(heavy, 'torch' in sys.modules, f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "False", "medseg.io"]
    import medseg

    for name in ("load_volume", "segment", "run_case", "find_instances", "lesion_table", "evaluate", "read_case",
                 "LesionOptions", "LabelSet"):
        assert callable(getattr(medseg, name)), name
    with pytest.raises(AttributeError):
        medseg.not_a_function  # noqa: B018


@pytest.mark.slow
@pytest.mark.parametrize("module", ["medseg", "medseg.labels", "medseg.errors", "medseg.progress", "medseg.volume",
                                    "medseg.io._atomic", "medseg.lesions.instances", "medseg.pipeline"])
def test_docstring_examples_run(module, monkeypatch):
    """numpydoc Examples are doctests: they run here, from the repository root (sample paths)."""
    monkeypatch.chdir(REPO)
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(mod, module) if t.examples]
    assert tests, f"{module} has no examples"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted > 0


def test_a_model_is_loaded_once_per_process(tmp_path):
    import shutil

    from medseg.models import clear_model_cache, default_model_path, resolve_model
    from medseg.models import store

    calls = []
    original = store.load_model

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    clear_model_cache()
    store.load_model = counting
    try:
        first = resolve_model("default")
        assert resolve_model("default") is first and len(calls) == 1
        copy = tmp_path / "copy"
        shutil.copytree(default_model_path(), copy)
        other = resolve_model(copy)
        assert other is not first and resolve_model(str(copy)) is other and len(calls) == 2
        spec = copy / store.SPEC_FILE
        data = json.loads(spec.read_text())
        data["description"] = "changed on disk"
        spec.write_text(json.dumps(data))
        assert resolve_model(copy) is not other and len(calls) == 3  # a changed folder is read again
    finally:
        store.load_model = original


@pytest.mark.slow
def test_fine_tuning_from_python_uses_the_fine_tuning_learning_rate(tmp_path):
    import nibabel as nib

    from medseg.training import TrainConfig, train
    from medseg.training.config import FINETUNE_LEARNING_RATE, LEARNING_RATE, resolve_learning_rate

    assert resolve_learning_rate(TrainConfig(), fine_tuning=True).learning_rate == FINETUNE_LEARNING_RATE == 1e-4
    assert resolve_learning_rate(TrainConfig(), fine_tuning=False).learning_rate == LEARNING_RATE == 1e-3
    assert resolve_learning_rate(TrainConfig(learning_rate=5e-5), fine_tuning=True).learning_rate == 5e-5
    data = tmp_path / "data"
    data.mkdir()
    ct, organs = nib.load(str(PHANTOM / "ct.nii.gz")), nib.load(str(PHANTOM / "organs.nii.gz"))
    box = (slice(40, 160), slice(30, 140), slice(10, 60))
    affine = ct.affine.copy()
    affine[:3, 3] = ct.affine[:3, :3] @ [40, 30, 10] + ct.affine[:3, 3]
    nib.save(nib.Nifti1Image(np.asarray(ct.dataobj)[box], affine), str(data / "p_image.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(organs.dataobj)[box], affine), str(data / "p_label.nii.gz"))
    (data / "labels.json").write_text((PHANTOM / "organs.json").read_text())
    config = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=1, num_samples=1, val_fraction=0.0, device="cpu")
    train(data, tmp_path / "tuned", config=config, initial="default")
    record = json.loads((tmp_path / "tuned" / "training.json").read_text())
    assert record["config"]["learning_rate"] == FINETUNE_LEARNING_RATE
    with pytest.raises(Exception, match="initial and parent name two different models"):
        train(data, tmp_path / "other", config=config, initial="default", parent=str(tmp_path / "tuned"))


def test_layers_point_one_way():
    """The core imports no Qt and no napari; IO and labels import no torch at module level."""
    core = REPO / "medseg"
    for path in core.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(qtpy|PyQt5|PyQt6|PySide2|PySide6|napari|magicgui)\b", text, re.M), path
    for path in list((core / "io").glob("*.py")) + list((core / "case").glob("*.py")) + [core / "labels.py", core / "volume.py",
                                                     core / "errors.py", core / "progress.py"]:
        text = path.read_text()
        assert not re.search(r"^(import|from)\s+(torch|monai)\b", text, re.M), path
    for path in core.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 420, f"{path} is over ~400 lines"
