"""OpenVINO on the CPU (``pip install medseg[openvino]``).

The cache entry is OpenVINO's own format (``model.xml`` + ``model.bin``), converted once from the
ONNX export (ONNX -> OpenVINO ~1 s here; reading the IR back and compiling 0.1-0.2 s).

Two settings matter for exactness:

* ``ov.save_model`` compresses weights to float16 unless told not to (``compress_to_fp16=False``);
* on CPUs with bfloat16 instructions (AVX512-BF16, AMX) OpenVINO **compiles in bfloat16 unless
  ``INFERENCE_PRECISION_HINT`` is f32** (measured here: the default hint reads ``bfloat16``, and
  bf16 agreement fell to 0.994 of voxels on some networks). medseg always sets the hint from the
  precision asked for (f32 unless ``precision="bf16"``) and checks after compiling that it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NAME", "EXTRA", "OpenVinoForward", "version", "supports", "make_files"]

NAME = "openvino"
EXTRA = "openvino"
MODEL_FILE = "model.xml"
_HINTS = {"fp32": "f32", "bf16": "bf16"}


def version() -> str | None:
    """The installed version, or None when OpenVINO cannot be imported."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.get_version()).split("-")[0]


def supports(precision: str) -> bool:
    return precision in _HINTS


def make_files(folder: Path, onnx_file: Path) -> None:
    """Convert the ONNX export to OpenVINO IR in ``folder`` (weights kept in float32)."""
    import openvino as ov

    model = ov.convert_model(str(onnx_file))
    ov.save_model(model, str(folder / MODEL_FILE), compress_to_fp16=False)


class OpenVinoForward:
    """``forward(x) -> logits`` through a compiled OpenVINO model (latency hint: one stream)."""

    backend = NAME

    def __init__(self, model_file: Path, *, threads: int, precision: str = "fp32") -> None:
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "INFERENCE_NUM_THREADS": int(threads),
                  "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(core.read_model(str(model_file)), "CPU", config)
        got = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if precision == "fp32" and "float32" not in got and "f32" not in got:  # exactness is not negotiable
            raise RuntimeError(f"OpenVINO compiled in {got}, not float32")
        self.request = self.compiled.create_infer_request()
        self.precision = precision
        self.threads = int(threads)

    def __call__(self, x):
        import torch

        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        # infer() copies the output out of OpenVINO's buffer (share_outputs=False): the next
        # call reuses that buffer, and the predictor accumulates into what it gets.
        out = self.request.infer({0: array})[self.compiled.output(0)]
        return torch.from_numpy(out)

    def close(self) -> None:
        self.request = self.compiled = None

    def describe(self) -> dict[str, Any]:
        return {"backend": NAME, "precision": self.precision, "threads": self.threads,
                "inference_precision_hint": _HINTS[self.precision]}
