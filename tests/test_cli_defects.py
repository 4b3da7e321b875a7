"""What a hostile but realistic user found: each ends as one clear line, nothing lost.

Ordinary user and OS errors (no permission, a full disk, a symlink loop, a broken NIfTI header,
a bad option value, an unsafe checkpoint) end as ``medseg CMD: error: ...`` on one line with a
non-zero exit, never ``internal error``; library log lines do not leak; ``--debug`` still gives
the traceback.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main

REPO = Path(__file__).resolve().parents[1]
PHANTOM = REPO / "sample_data" / "phantom"


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"medseg {command}: error: ") and "internal error" not in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from medseg.labels import LabelSet
    from medseg.models.networks import build_network, default_network
    from medseg.models.spec import ModelSpec, Preprocessing
    from medseg.models.store import save_model

    torch.manual_seed(0)
    spec = ModelSpec("defects-tiny", default_network("unet", size="tiny"),
                     LabelSet({0: "background", 1: "liver", 2: "spleen"}),
                     Preprocessing(spacing_mm=(4.0, 4.0, 4.0), roi_size=(32, 32, 32), overlap=0.25))
    return save_model(spec, build_network(spec.network, 3), tmp_path_factory.mktemp("m") / "tiny")


def _nifti(path: Path, affine, *, pixdim=None, qform=None) -> Path:
    # Noise, so that a .nii.gz stays large and cutting its end cuts voxels, not the header.
    array = np.random.default_rng(0).integers(-1000, 1000, (40, 40, 20)).astype(np.int16)
    img = nib.Nifti1Image(array, None)
    img.header.set_sform(affine, code=1)
    if qform is not None:
        img.header.set_qform(qform, code=1)
    if pixdim is not None:
        img.header["pixdim"][1:4] = pixdim
    nib.save(img, str(path))
    return path


def test_output_folder_that_cannot_be_created(tmp_path, capsys, tiny_model):
    code, _, err = run(capsys, "segment", PHANTOM / "ct.nii.gz", "-o", "/proc/medseg-results", "--model", tiny_model)
    assert code == 1
    assert one_line_error(err, "segment").startswith("medseg segment: error: /proc/medseg-results: cannot be created")


def test_no_permission_and_full_disk_are_one_line_and_keep_the_earlier_case(tmp_path, capsys, tiny_model,
                                                                            monkeypatch):
    """Root ignores file permissions, so the OS answer is simulated where it arises."""
    import medseg.io._nifti as nifti

    out = tmp_path / "case"
    assert run(capsys, "segment", PHANTOM / "ct.nii.gz", "-o", out, "--model", tiny_model)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    real_write = nifti.write_nifti

    def full_disk(volume, path):
        real_write(volume, path)
        with open(path, "ab") as handle:
            handle.write(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(nifti, "write_nifti", full_disk)
    code, _, err = run(capsys, "segment", PHANTOM / "ct.nii.gz", "-o", out, "--model", tiny_model, "--uncertainty")
    line = one_line_error(err, "segment")
    assert code == 1 and "No space left on device. Free some disk space or write elsewhere" in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if ".medseg-" in p.name] == []

    def no_permission(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr("tempfile.mkdtemp", no_permission)
    code, _, err = run(capsys, "segment", PHANTOM / "ct.nii.gz", "-o", out, "--model", tiny_model)
    line = one_line_error(err, "segment")
    assert code == 1 and f"{out}: cannot be created (Permission denied). Check the permissions" in line
    monkeypatch.undo()
    code, _, err = run(capsys, "--debug", "segment", PHANTOM / "ct.nii.gz", "-o", "/proc/x", "--model", tiny_model)
    assert code == 1 and "Traceback (most recent call last)" in err


def test_symlink_loops_in_input_and_output(tmp_path, capsys, tiny_model):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    code, _, err = run(capsys, "info", tmp_path / "a")
    assert code == 2 and "a: is a symbolic link that points back to itself" in one_line_error(err, "info")
    code, _, err = run(capsys, "run", PHANTOM / "ct.nii.gz", "-o", tmp_path / "a" / "out", "--model", tiny_model)
    assert code == 2 and "goes through a symbolic link that points back to itself" in one_line_error(err, "run")


@pytest.mark.parametrize("affine, expected", [
    (np.diag([np.nan, 1.0, 1.0, 1.0]), "NaN or infinite"),
    (np.array([[1.0, 1.0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]), "axes are parallel"),
    (np.diag([1e-6, 1e-6, 1e-6, 1.0]), "spacing 1e-06, 1e-06, 1e-06 mm is not plausible"),
], ids=["nan", "singular", "micrometre"])
def test_broken_nifti_geometry_is_one_line(tmp_path, capsys, affine, expected):
    path = _nifti(tmp_path / "broken.nii.gz", affine)
    for command in (("convert", path, tmp_path / "o.nii.gz"), ("info", path)):
        code, out, err = run(capsys, *command)
        if command[0] == "info":
            assert code == 0 and "problem: unusable geometry: " in out and expected in out
        else:
            line = one_line_error(err, "convert")
            assert code == 2 and f"{path}: has unusable geometry in its header: " in line and expected in line


def test_nibabel_log_lines_do_not_leak(tmp_path, capsys):
    """pixdim 0 makes nibabel log "pixdim[1,2,3] should be non-zero"; medseg says what matters."""
    path = tmp_path / "zero.nii"
    img = nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4))
    img.header["pixdim"][1:4] = 0
    img.header["sform_code"] = 0
    img.header["qform_code"] = 0
    nib.save(img, str(path))
    code, _, err = run(capsys, "convert", path, tmp_path / "o.nii.gz")
    assert "pixdim" not in err and (code == 0 or len(err.strip().splitlines()) == 1)


def test_info_flags_truncated_files_and_disagreeing_forms(tmp_path, capsys):
    good = _nifti(tmp_path / "ct.nii.gz", np.diag([0.8, 0.8, 2.5, 1.0]))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[:-300])
    raw = tmp_path / "raw.nii"
    nib.save(nib.load(str(good)), str(raw))
    raw_cut = tmp_path / "raw_cut.nii"
    raw_cut.write_bytes(raw.read_bytes()[:-100])
    for path in (cut, raw_cut):
        code, out, _ = run(capsys, "info", path)
        assert code == 0 and "problem: truncated" in out, out
        code, _, err = run(capsys, "convert", path, tmp_path / f"o_{path.stem}.nii.gz")
        assert code == 2 and "truncated" in one_line_error(err, "convert")
    code, out, _ = run(capsys, "info", raw)
    assert "problem" not in out
    shifted = np.diag([0.8, 0.8, 2.5, 1.0])
    shifted[:3, 3] = [0.0, 12.0, 0.0]
    both = _nifti(tmp_path / "forms.nii.gz", np.diag([0.8, 0.8, 2.5, 1.0]), qform=shifted)
    code, out, _ = run(capsys, "info", both)
    assert code == 0 and "note: sform and qform disagree by up to 12.0 mm" in out


def test_bad_option_values_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path), "-o", str(tmp_path / "m"), "--spacing", "nan"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "spacing must be one or three positive numbers in mm, got 'nan'" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "segment", PHANTOM / "ct.nii.gz", "-o", tmp_path / "s", "--threads", 0)
    assert code == 2 and "--threads 0: is not a thread count" in one_line_error(err, "segment")
    with pytest.raises(SystemExit) as exit_info:
        main(["segment"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and "(see medseg segment --help)" in err


def test_a_checkpoint_that_cannot_be_unpickled_safely(tmp_path, capsys):
    """A resumable run whose checkpoint holds pickled objects (not tensors) is refused in one line."""
    import torch

    from medseg.training.checkpoints import CHECKPOINT_DIR, load_checkpoint

    folder = tmp_path / "model" / CHECKPOINT_DIR
    (folder / "epoch-0001").mkdir(parents=True)
    (folder / "last.json").write_text(json.dumps({"folder": "epoch-0001", "epoch": 1}))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(folder / "epoch-0001" / "weights.safetensors"))
    torch.save({"epoch": 1, "evil": Path("/etc/passwd")}, folder / "epoch-0001" / "training_state.pt")
    with pytest.raises(Exception) as caught:
        load_checkpoint(tmp_path / "model")
    message = str(caught.value)
    assert "checkpoint cannot be read safely" in message and "restart=True" in message
    assert len(message.splitlines()) == 1


def test_a_bundle_given_by_a_relative_path_finds_its_weights(tmp_path, monkeypatch):
    """``@bundle_root + '/models/model.pt'`` with a relative bundle folder joined it twice."""
    import torch

    from medseg.models import resolve_model
    from medseg.models.networks import build_network
    from medseg.models.spec import NetworkSpec

    bundle = tmp_path / "bundles" / "tiny_bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    network = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
               "channels": [4, 8], "strides": [2], "num_res_units": 0}
    config = {
        "bundle_root": ".", "image_key": "image", "network_def": network,
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "@image_key"},
            {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
            {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [4.0, 4.0, 4.0], "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": -57, "a_max": 164, "b_min": 0,
             "b_max": 1, "clip": True}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 1,
                    "overlap": 0.25},
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                             "load_dict": {"model": "@network_def"}},
    }
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    kwargs = {k: v for k, v in network.items() if k not in ("_target_", "spatial_dims", "in_channels", "out_channels")}
    net = build_network(NetworkSpec("unet", kwargs), 2)
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    monkeypatch.chdir(tmp_path)
    model = resolve_model(os.path.join("bundles", "tiny_bundle"), cache=False)
    assert model.source == "monai-bundle" and Path(model.path) == bundle.resolve()
    assert model.labels.names == ("background", "class_1")
