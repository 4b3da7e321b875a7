"""Finding and reading a MONAI bundle's weights without unpickling code.

The weights file is the ``load_path`` of the config's ``CheckpointLoader`` (resolved as data,
e.g. ``"$@bundle_root + '/models/' + @modelname"``), else ``models/model.pt``. It is read with
``torch.load(weights_only=True)``; MONAI's ``{"model": state_dict}`` wrapping and DataParallel's
``module.`` prefixes are undone; every tensor's shape is checked against the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.errors import ModelError
from medseg.models.bundle_config import TRUST_HINT

__all__ = ["checkpoint_loader_id", "load_weights_into", "weights_path"]


def checkpoint_loader_id(source: Any) -> str | None:
    """Config id of the first ``CheckpointLoader`` (top level or in a handlers list)."""
    config = source.config if hasattr(source, "config") else {}
    for key, item in config.items():
        candidates = [(key, item)]
        if isinstance(item, list):
            candidates = [(f"{key}#{i}", v) for i, v in enumerate(item)]
        for cid, value in candidates:
            if isinstance(value, dict) and str(value.get("_target_", "")).split(".")[-1] == "CheckpointLoader":
                return cid
    return None


def weights_path(source: Any, root: Path, config_file: Path, *, trust: bool) -> Path:
    """The bundle's weights file; raises ModelError when it is missing or not allowed."""
    candidates: list[Path] = []
    loader = checkpoint_loader_id(source)
    if loader is not None and source.has(f"{loader}#load_path"):
        try:
            candidates.append(Path(str(source.value(f"{loader}#load_path"))))
        except ModelError:
            pass  # a load_path only code could compute: fall back to the conventional names below
    candidates += [root / "models" / "model.pt", root / "models" / "model.ts"]
    for path in candidates:
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            continue
        if not trust:
            if not path.resolve().is_relative_to(root.resolve()):
                raise ModelError(path, "is outside the bundle folder", TRUST_HINT)
            if path.suffix == ".ts":
                raise ModelError(path, "is TorchScript, a program rather than weights",
                                 "add the state_dict as models/model.pt, or " + TRUST_HINT)
        return path
    listing = root / "large_files.yml"
    listing = listing if listing.is_file() else root / "large_files.yaml"
    hint = (f"download them into {root / 'models'} ({listing.name} lists the files and their URLs)"
            if listing.is_file() else f"put the weights into {root / 'models'}")
    raise ModelError(candidates[0], "is missing: the bundle has no weights", hint)


def _read_state_dict(path: Path, key: str = "model") -> dict:
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise ModelError(path, f"cannot be loaded as plain weights ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})",
                         "the file is damaged, or holds pickled objects rather than a state_dict") from exc
    if isinstance(state, dict) and isinstance(state.get(key), dict):
        state = state[key]  # MONAI CheckpointLoader's load_dict key
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        raise ModelError(path, "does not hold a state_dict of tensors", "save net.state_dict() only")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights_into(network: Any, path: Path, source: Any) -> str:
    """Read ``path`` and copy it into ``network`` (shapes checked); returns the file's sha256."""
    from medseg.models.store import load_state_into, sha256_file

    key = "model"
    loader = checkpoint_loader_id(source)
    if loader is not None and isinstance(source.raw(loader).get("load_dict"), dict):
        key = next(iter(source.raw(loader)["load_dict"]), "model")
    load_state_into(network, _read_state_dict(path, key), path)
    network.eval()
    return sha256_file(path)
