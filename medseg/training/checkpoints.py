"""Training checkpoints that survive a kill at any moment: the last and the best epoch.

::

    MODEL_DIR/checkpoints/
      last.json                 {"epoch": 7, "folder": "epoch-0007"}   (replaced atomically)
      epoch-0007/
        weights.safetensors     the network's state_dict
        training_state.pt       optimizer, LR schedule, AMP scaler, epoch, step, RNG states,
                                metric history: plain tensors/numbers, torch.load(weights_only=True)
      best.json                 {"epoch": 5, "folder": "best-0005", "metric": 0.81}
      best-0005/weights.safetensors

A checkpoint folder is complete before the pointer file names it, and the pointer is replaced
with one atomic rename, so a kill leaves either the previous checkpoint or the new one, never a
half-written one. Older folders are deleted only after the pointer has moved.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import InputError, option
from medseg.io import write_text_atomic

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "save_best", "best_weights_path",
           "rng_state", "restore_rng_state", "CHECKPOINT_DIR"]

CHECKPOINT_DIR = "checkpoints"
_WEIGHTS = "weights.safetensors"
_STATE = "training_state.pt"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    epoch: int
    model_state: dict[str, torch.Tensor]
    state: dict[str, Any]
    folder: Path


def rng_state() -> dict[str, Any]:
    """Every global random state as tensors and plain numbers (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": [int(v) for v in py_state],
                   "gauss": None if gauss is None else float(gauss)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_folder(root: Path, name: str, model_state: dict[str, torch.Tensor],
                  state: dict[str, Any] | None) -> Path:
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.medseg-tmp-", dir=root))
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
        save_file(tensors, str(tmp / _WEIGHTS))
        if state is not None:
            torch.save(state, tmp / _STATE)
        for path in tmp.iterdir():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _prune(root: Path, prefix: str, keep: str) -> None:
    for path in root.glob(f"{prefix}*"):
        if path.is_dir() and path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(model_dir: str | os.PathLike, epoch: int, model_state: dict[str, torch.Tensor],
                    state: dict[str, Any]) -> Path:
    """Write the checkpoint of a finished ``epoch`` and make it the one resumed from."""
    root = Path(model_dir) / CHECKPOINT_DIR
    name = f"epoch-{epoch:04d}"
    folder = _write_folder(root, name, model_state, {**state, "epoch": int(epoch)})
    write_text_atomic(root / "last.json", json.dumps({"epoch": int(epoch), "folder": name}) + "\n")
    _prune(root, "epoch-", keep=name)
    return folder


def save_best(model_dir: str | os.PathLike, epoch: int, model_state: dict[str, torch.Tensor],
              metric: float) -> Path:
    """Keep ``model_state`` as the best so far (``metric``: higher is better)."""
    root = Path(model_dir) / CHECKPOINT_DIR
    name = f"best-{epoch:04d}"
    folder = _write_folder(root, name, model_state, None)
    write_text_atomic(root / "best.json",
                      json.dumps({"epoch": int(epoch), "folder": name, "metric": float(metric)}) + "\n")
    _prune(root, "best-", keep=name)
    return folder


def _pointer(root: Path, name: str) -> dict | None:
    path = root / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"is damaged ({exc})", "delete the checkpoints folder to start over") from exc


def best_weights_path(model_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """``(weights file, best.json content)`` of the best checkpoint, or None."""
    root = Path(model_dir) / CHECKPOINT_DIR
    pointer = _pointer(root, "best.json")
    if pointer is None:
        return None
    return root / pointer["folder"] / _WEIGHTS, pointer


def load_checkpoint(model_dir: str | os.PathLike) -> Checkpoint | None:
    """The last complete checkpoint under ``model_dir``, or None if training never finished an epoch."""
    from safetensors.torch import load_file

    root = Path(model_dir) / CHECKPOINT_DIR
    pointer = _pointer(root, "last.json")
    if pointer is None:
        return None
    folder = root / str(pointer["folder"])
    try:
        model_state = load_file(str(folder / _WEIGHTS), device="cpu")
        state = torch.load(folder / _STATE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, EOFError, RuntimeError... for bad files
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise InputError(folder, f"checkpoint cannot be read safely ({type(exc).__name__}: {first})",
                         f"it holds something other than tensors and numbers, or is damaged; pass "
                         f"{option('restart', True)} or delete the checkpoints folder to start over") from exc
    return Checkpoint(epoch=int(state["epoch"]), model_state=model_state, state=state, folder=folder)
