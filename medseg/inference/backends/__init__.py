"""CPU inference back-ends: the network's forward pass in PyTorch, OpenVINO or ONNX Runtime.

Sliding windows, blending, TTA and the restore to the input grid are the same whichever runs the
network; only ``forward(windows) -> logits`` changes (:mod:`medseg.inference.predictor`).

>>> from medseg.inference import segment                                    # doctest: +SKIP
>>> result = segment(volume, "default", backend="auto")                     # doctest: +SKIP
>>> result.provenance["backend"]["used"], result.provenance["backend"]["how"]  # doctest: +SKIP
('openvino', 'measured fastest on this machine (2026-12-04 22:10; cached)')

``backend``:

``"torch"``
    PyTorch eager (contiguous or channels-last, whichever is faster on the first windows).
``"openvino"``, ``"onnxruntime"``
    The network exported once to ONNX (opset 18, dynamic batch) and run by that runtime, in
    float32 unless ``precision="bf16"`` (OpenVINO only). Optional packages:
    ``pip install 'medseg[openvino]'`` / ``'medseg[onnx]'``.
``"auto"`` (default)
    On the CPU, every installed back-end that agrees with torch is timed on the first real
    windows and the fastest is used, and remembered for this model on this machine; an export
    that fails leaves one note and the others (at worst torch) run. CUDA devices keep torch.
    Networks in memory without a weights file and trusted bundles keep torch.

Exact by construction: before a back-end is used for a model it must agree with torch on a real
window (:mod:`~medseg.inference.backends.agreement`); the verdict is cached with the export
(:mod:`~medseg.inference.backends.cache`, ``medseg cache info|clear``).
"""

from medseg.inference.backends.agreement import MIN_ARGMAX_AGREEMENT, Agreement, compare
from medseg.inference.backends.cache import CACHE_ENV, BackendCache, cache_root
from medseg.inference.backends.selection import BACKENDS, EXPORTED, Candidate, Selection, machine_id, select

__all__ = [
    "BACKENDS",
    "CACHE_ENV",
    "EXPORTED",
    "MIN_ARGMAX_AGREEMENT",
    "Agreement",
    "BackendCache",
    "Candidate",
    "Selection",
    "available_backends",
    "cache_root",
    "compare",
    "machine_id",
    "select",
]


def available_backends() -> dict[str, str | None]:
    """Back-end name -> installed version (None when it cannot be imported)."""
    from medseg.inference.backends.exports import package_version

    return {"torch": package_version("torch"), **{name: module.version() for name, module in EXPORTED.items()}}
