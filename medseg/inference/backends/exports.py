"""Which networks can be exported, what identifies an export, and getting one (from the cache or
made now).

A network is exported when its identity is known without running it: a model loaded from a file
(medseg model folder or a MONAI bundle in safe mode) is its weights' sha256 plus its network spec.
A network in memory (e.g. right after training) is identified by the sha256 of its state and its
class; ``auto`` leaves those in torch (nothing on disk says they will be used again), an explicit
back-end exports them. Trusted bundles run their own code and keep torch.
"""

from __future__ import annotations

import hashlib
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from medseg.errors import ModelError
from medseg.inference.backends.cache import BackendCache, Entry, recipe_key
from medseg.inference.backends.onnx_export import OPSET, ExportFailed, export_onnx

__all__ = ["ExportFailed", "export_entry", "identity", "not_exportable", "torch_network"]


def package_version(name: str) -> str | None:
    """Installed version from the package metadata (no import), or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def not_exportable(model: Any, *, explicit: bool) -> str:
    """Why ``model`` keeps torch ('' when it can be exported)."""
    if model.source == "monai-bundle-trusted":
        return "a trusted MONAI bundle runs its own code, which stays in torch"
    if model.spec is None:
        return "its network is not described by a spec"
    if not model.weights_sha256 and not explicit:
        return "a network in memory (no weights file) runs in torch unless a back-end is asked for"
    return ""


def torch_network(model: Any) -> Any:
    """The model's torch module, built from its folder on first need when it was resolved without
    one (``network is None``: a cached export made building it unnecessary)."""
    if model.network is not None:
        return model.network
    ensure = getattr(model, "ensure_network", None)
    if ensure is not None:  # SegmentationModel builds it from its folder (and checks the weights)
        return ensure()
    raise ModelError(model.path or model.name, "has no network in memory and none can be built from a folder",
                     "give a model folder or a loaded model")


def identity(model: Any) -> dict[str, Any]:
    """What makes an export this network: weights sha256 + network spec (+ class for networks in
    memory, whose spec need not describe them)."""
    spec = model.spec
    out: dict[str, Any] = {"out_channels": len(model.labels)}
    if spec is not None:
        out["network"] = {"arch": spec.network.arch, "kwargs": spec.network.kwargs,
                          "in_channels": spec.network.in_channels}
    if model.weights_sha256:
        out["weights_sha256"] = model.weights_sha256
    else:
        net = torch_network(model)
        out["state_sha256"] = _state_sha256(net)
        out["class"] = f"{type(net).__module__}.{type(net).__qualname__}"
    return out


def _state_sha256(network: Any) -> str:
    import torch

    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        value = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{value.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())  # raw bytes: any dtype, bf16 included
    return digest.hexdigest()


def recipe(model: Any, backend: Any, roi: tuple[int, int, int]) -> dict[str, Any]:
    """The key fields of ``model``'s export for ``backend`` (a back-end module) at window ``roi``."""
    return {"identity": identity(model), "roi": list(roi), "backend": backend.NAME,
            "backend_version": backend.version(), "torch": package_version("torch"), "opset": OPSET}


def export_entry(cache: BackendCache, backend: Any, model: Any, roi: tuple[int, int, int],
                 *, onnx_backend: Any = None) -> tuple[Entry, bool]:
    """The cache entry of ``model`` for ``backend`` at window ``roi``: loaded, or exported now.

    Returns
    -------
    (entry, made_now)

    Raises
    ------
    ExportFailed
        The export failed now, or failed before with the same versions (recorded, not retried).
    """
    fields = recipe(model, backend, roi)
    key = recipe_key(fields)
    entry = cache.load(backend.NAME, key)
    if entry is not None:
        return entry, False
    failed = cache.failure(backend.NAME, key)
    if failed is not None:
        raise ExportFailed(f"{failed.get('reason', 'failed')}; as recorded {failed.get('when', '')}, "
                           "`medseg cache clear` retries")
    network = torch_network(model)
    in_channels = model.spec.network.in_channels if model.spec is not None else 1

    def make(folder: Path) -> dict[str, Any]:
        began = time.perf_counter()
        if backend.NAME == "onnxruntime":
            export_onnx(network, roi, in_channels, folder / backend.MODEL_FILE)
        else:
            source = None
            if onnx_backend is not None and onnx_backend.version() is not None:
                # Reuse (or make) ONNX Runtime's entry: one export serves both; if it failed, so
                # would ours, for the same reason.
                onnx_entry, _ = export_entry(cache, onnx_backend, model, roi)
                source = onnx_entry.file(onnx_backend.MODEL_FILE)
            if source is None:
                source = folder / "export.onnx"
                export_onnx(network, roi, in_channels, source)
            try:
                backend.make_files(folder, source)
            except Exception as exc:  # converters raise their own types; one line says why
                raise ExportFailed(f"conversion to {backend.NAME} failed: {type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())[:240]}") from exc
            finally:
                if source.parent == folder:
                    source.unlink(missing_ok=True)
        return {"export_seconds": round(time.perf_counter() - began, 3)}

    try:
        entry = cache.build(backend.NAME, key, {**fields, "model_name": model.name}, make)
        return entry, entry.made
    except ExportFailed as exc:
        cache.save_failure(backend.NAME, key, {"reason": str(exc), "model_name": model.name,
                                               "when": time.strftime("%Y-%m-%d %H:%M"), "recipe": fields})
        raise
