"""Checkpoints: complete or absent after a crash, loadable with weights_only, RNG restored exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.training import checkpoints as ckpt


def _state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {"w": torch.randn(3, 4), "b": torch.zeros(3)}


def test_last_and_best_checkpoints_round_trip_with_weights_only(tmp_path):
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "history": [{"epoch": 1, "train_loss": 0.5, "val_mean_dice": None}],
             "rng": ckpt.rng_state(), "best_metric": None}
    ckpt.save_checkpoint(tmp_path, 1, model.state_dict(), state)
    ckpt.save_checkpoint(tmp_path, 2, model.state_dict(), state)
    ckpt.save_best(tmp_path, 2, model.state_dict(), 0.75)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["best-0002", "best.json", "epoch-0002", "last.json"]
    raw = torch.load(root / "epoch-0002" / "training_state.pt", weights_only=True)  # no pickled code
    assert raw["epoch"] == 2 and raw["history"][0]["train_loss"] == 0.5
    loaded = ckpt.load_checkpoint(tmp_path)
    assert loaded.epoch == 2
    assert torch.equal(loaded.model_state["weight"], model.state_dict()["weight"])
    restored = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters(), lr=1e-3)
    restored.load_state_dict(loaded.state["optimizer"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    weights, pointer = ckpt.best_weights_path(tmp_path)
    assert weights.is_file() and pointer == {"epoch": 2, "folder": "best-0002", "metric": 0.75}


def test_a_half_written_checkpoint_is_never_seen(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, 1, _state(1), {"history": []})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed while writing epoch 2's state

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 2, _state(2), {"history": []})
    monkeypatch.undo()
    loaded = ckpt.load_checkpoint(tmp_path)
    assert loaded.epoch == 1 and torch.equal(loaded.model_state["w"], _state(1)["w"])
    assert not any(p.name.startswith(".epoch-0002") for p in (tmp_path / "checkpoints").iterdir())


def test_rng_state_restores_every_generator():
    state = ckpt.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    ckpt.restore_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_no_checkpoint_and_damaged_pointer(tmp_path):
    assert ckpt.load_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.json").write_text("{not json")
    with pytest.raises(InputError, match="last.json: is damaged"):
        ckpt.load_checkpoint(tmp_path)
