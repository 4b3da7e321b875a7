"""ONNX Runtime on the CPU (``pip install medseg[onnx]``).

The ONNX file itself is the cache entry. Float32 only (the CPU execution provider has no
bfloat16 convolutions); threads as torch's (``--threads``), one inter-op thread, all graph
optimisations, no memory arena.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NAME", "EXTRA", "OnnxRuntimeForward", "version", "supports", "make_files"]

NAME = "onnxruntime"
EXTRA = "onnx"
MODEL_FILE = "model.onnx"


def version() -> str | None:
    """The installed version, or None when ONNX Runtime cannot be imported."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def supports(precision: str) -> bool:
    return precision == "fp32"


def make_files(folder: Path, onnx_file: Path) -> None:
    """An ONNX Runtime entry is the exported file (written straight into ``folder``)."""
    if onnx_file.parent != folder:
        import shutil

        shutil.copyfile(onnx_file, folder / MODEL_FILE)


class OnnxRuntimeForward:
    """``forward(x) -> logits`` through an ``onnxruntime.InferenceSession``."""

    backend = NAME

    def __init__(self, model_file: Path, *, threads: int, precision: str = "fp32") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are about the graph, not the result
        # No memory arena: it keeps the largest activations of a batch allocated for the session's
        # life (measured: 14-class UNet, 4 windows of 96^3: 1.31 GB above the model without the
        # arena's 0.78 GB), and medseg's peak memory must stay at torch's.
        options.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.precision = precision
        self.threads = int(threads)

    def __call__(self, x):
        import torch

        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        out = self.session.run([self.output_name], {self.input_name: array})[0]
        return torch.from_numpy(out)  # a fresh array per call: safe to accumulate into

    def close(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        return {"backend": NAME, "precision": self.precision, "threads": self.threads}
