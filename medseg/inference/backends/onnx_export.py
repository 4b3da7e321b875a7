"""torch -> ONNX export of a segmentation network (the input of both CPU back-ends).

One export per network and window size: opset :data:`OPSET`, float32, the batch axis dynamic
(so one file serves 1-4 windows per pass), the spatial axes fixed to the window (MONAI's UNet
takes shape-dependent branches while tracing, which a fixed window keeps exact; the agreement
check would catch anything else).

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it needs no extra package
(the ``torch.export`` exporter needs onnxscript), exports MONAI's UNet, SegResNet, DynUNet and
SwinUNETR here in 0.5-5 s, and is what the measurements in docs/backends.md used. Its warnings
(deprecation, tracer notes on Python booleans, instance norm exported with ``train=True``, which
is how MONAI's instance norm computes anyway) are silenced: they are about the exporter, not the
result, and the agreement check judges the result.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["OPSET", "ExportFailed", "export_onnx"]

OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class ExportFailed(Exception):
    """The network could not be exported (or converted); ``str()`` says why in one line."""


def export_onnx(network: Any, roi_size: Sequence[int], in_channels: int, path: Path) -> None:
    """Write ``network`` (a torch module in eval mode, on the CPU) to ``path`` as ONNX.

    Raises
    ------
    ExportFailed
        Whatever the exporter raised, as one line.
    """
    import torch

    example = torch.zeros((2, int(in_channels), *(int(r) for r in roi_size)), dtype=torch.float32)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    quiet = io.StringIO()
    try:
        with warnings.catch_warnings(), _quiet_logging(), contextlib.redirect_stdout(quiet), \
                torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(network, (example,), str(path), opset_version=OPSET, dynamo=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                              do_constant_folding=True)
    except Exception as exc:  # the exporter raises anything (RuntimeError, its own error types, ...)
        raise ExportFailed(_one_line(exc)) from exc
    if not path.is_file() or path.stat().st_size == 0:
        raise ExportFailed("the exporter wrote no file")


@contextlib.contextmanager
def _quiet_logging():
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:240]}" if text else type(exc).__name__
