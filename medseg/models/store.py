"""medseg's own model format: a folder with ``medseg-model.json`` and safetensors weights.

::

    MODEL_DIR/
      medseg-model.json      the ModelSpec (plain data) plus {"weights": {"file", "sha256", "dtype"}}
      weights.safetensors    the state_dict (float32, or float16 to halve the size on disk)
      MODEL_CARD.md ...      anything else (training curves, metrics) is ignored by the loader

Loading never unpickles: weights are safetensors, or a plain ``state_dict`` ``.pt`` read with
``torch.load(weights_only=True)``. The sha256 is checked before the weights are parsed, and
every tensor's shape is checked against the network the spec builds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import ModelError
from medseg.models.spec import ModelSpec

__all__ = ["SPEC_FILE", "LoadedModel", "save_model", "load_model", "read_spec", "sha256_file",
           "is_model_folder", "check_weights"]

SPEC_FILE = "medseg-model.json"
WEIGHTS_FILE = "weights.safetensors"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def is_model_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / SPEC_FILE).is_file()


@dataclass
class LoadedModel:
    """A ready network with its spec. ``network`` is a ``torch.nn.Module`` in eval mode."""

    spec: ModelSpec
    network: Any
    path: str = ""
    weights_sha256: str = ""

    @property
    def labels(self):
        return self.spec.labels


def read_spec(folder: str | os.PathLike) -> tuple[ModelSpec, dict]:
    """Read and validate ``medseg-model.json``; returns the spec and the raw ``weights`` entry."""
    folder = Path(folder)
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise ModelError(folder, f"is not a medseg model folder (no {SPEC_FILE})",
                         "give a folder written by `medseg train`, a MONAI bundle folder, or 'default'")
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
        spec = ModelSpec.from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(spec_path, f"is not a valid model spec ({type(exc).__name__}: {exc})",
                         "fix or regenerate the file") from exc
    weights = data.get("weights") or {}
    if not isinstance(weights, dict) or "file" not in weights:
        raise ModelError(spec_path, "names no weights file", 'add "weights": {"file": ..., "sha256": ...}')
    return spec, weights


def _state_dict_from_file(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(path, f"is not a readable safetensors file ({exc})",
                             "the weights are corrupt; copy the model folder again") from exc
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ModelError(path, f"cannot be loaded as a plain state_dict ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})",
                         "weights must be a state_dict of tensors; pickled code is refused") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ModelError(path, "does not hold a state_dict of tensors", "save net.state_dict() only")
    return state


def load_state_into(network: Any, state: dict, where: str | os.PathLike) -> None:
    """Copy ``state`` into ``network`` after checking every key and shape; float16 is upcast."""
    import torch

    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        key, got, want = wrong[0]
        raise ModelError(where, f"weights do not fit the network: {key} has shape {got}, "
                         f"the spec builds {want} ({len(wrong)} tensor(s) differ)",
                         "the weights belong to another architecture or class count")
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelError(where, f"weights do not fit the network ({detail})",
                         "the weights belong to another architecture")
    cast = {k: v.to(dtype=expected[k].dtype) if torch.is_floating_point(v) else v for k, v in state.items()}
    network.load_state_dict(cast, strict=True)


def check_weights(folder: str | os.PathLike, weights: dict, *, verify_sha256: bool = True) -> tuple[Path, str]:
    """The weights file of a model folder and its sha256, checked against the spec's (no torch)."""
    folder = Path(folder)
    weights_path = folder / str(weights["file"])
    if not weights_path.is_file():
        raise ModelError(weights_path, "is missing", "copy the complete model folder")
    digest = sha256_file(weights_path)
    expected = str(weights.get("sha256", ""))
    if verify_sha256 and expected and digest != expected:
        raise ModelError(weights_path, f"sha256 {digest[:12]}... does not match the spec's {expected[:12]}...",
                         "the weights file is corrupt or was replaced; copy the model folder again")
    return weights_path, digest


def load_model(folder: str | os.PathLike, *, verify_sha256: bool = True) -> LoadedModel:
    """Load a medseg model folder: spec, sha256 check, shape check, weights.

    Raises
    ------
    ModelError
        Missing spec or weights, a checksum mismatch (corrupt download/copy), weights whose
        shapes do not match the spec.
    """
    from medseg.models.networks import build_network

    folder = Path(folder)
    spec, weights = read_spec(folder)
    weights_path, digest = check_weights(folder, weights, verify_sha256=verify_sha256)
    state = _state_dict_from_file(weights_path)
    try:
        network = build_network(spec.network, spec.out_channels)
    except (TypeError, ValueError) as exc:
        raise ModelError(folder / SPEC_FILE, f"network {spec.network.arch} cannot be built ({exc})",
                         "fix network.kwargs in the spec") from exc
    load_state_into(network, state, weights_path)
    network.eval()
    return LoadedModel(spec=spec, network=network, path=str(folder), weights_sha256=digest)


def save_model(spec: ModelSpec, network: Any, folder: str | os.PathLike, *, half: bool = False,
               extra_files: dict[str, str | os.PathLike] | None = None) -> Path:
    """Write ``network``'s weights and ``spec`` as a model folder, atomically.

    The folder is assembled under a temporary name beside ``folder`` and renamed into place;
    an existing folder is replaced only after the new one is complete.

    Parameters
    ----------
    half : bool
        Store floating-point tensors as float16 (halves the size; they are upcast on load).
    extra_files : dict, optional
        ``{name_in_folder: source_path}`` copied in as well (model card, curves, metrics).
    """
    import tempfile

    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.medseg-tmp-", dir=folder.parent))
    try:
        state = {}
        for key, value in network.state_dict().items():
            # clone: DynUNet registers the same conv under two names, and safetensors refuses
            # tensors that share memory
            value = value.detach().to("cpu").contiguous().clone()
            if half and torch.is_floating_point(value):
                value = value.to(torch.float16)
            state[key] = value
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "medseg_model": spec.name})
        payload = spec.to_dict()
        payload["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_file(tmp / WEIGHTS_FILE),
                              "dtype": "float16" if half else "float32"}
        (tmp / SPEC_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        for name, src in (extra_files or {}).items():
            shutil.copy2(src, tmp / name)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.medseg-old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
