"""The PyTorch forward: the network as MONAI built it, eager, on any device.

Also the reference the other back-ends are checked against, and the only back-end on CUDA (a
TensorRT forward would sit beside this one for GPUs; it is not built). Two things are measured
here because only torch can: the activation memory of a window (forward hooks) and the memory
layout (contiguous or channels-last), which the predictor times on real windows.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["ActivationMeter", "TorchForward", "TorchNetwork"]


class ActivationMeter:
    """Adds up the bytes of every leaf module's tensor output during the forward passes it sees.

    An upper bound of the activation memory a window needs (inference frees most of them on the
    way); the predictor sizes its batches from it.
    """

    def __init__(self, networks) -> None:
        self.total = 0
        self._handles = [m.register_forward_hook(self._hook) for net in networks for m in net.modules()
                         if next(m.children(), None) is None and hasattr(m, "register_forward_hook")]

    def _hook(self, module, inputs, output) -> None:
        for tensor in output if isinstance(output, (list, tuple)) else (output,):
            if hasattr(tensor, "element_size"):
                self.total += tensor.numel() * tensor.element_size()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


class TorchNetwork:
    """One ``torch.nn.Module`` for its device, shared by the forwards of both memory layouts.

    Moved to the device on first use, so choosing a back-end never touches a GPU.
    """

    def __init__(self, network: Any, device) -> None:
        self.module = network
        self.device = device
        self.channels_last = False
        self._placed = False

    def use_layout(self, channels_last: bool) -> None:
        import torch

        if not self._placed:
            self.module.to(self.device).eval()
            self._placed = True
        if channels_last != self.channels_last:
            self.module.to(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
            self.channels_last = channels_last

    def release(self) -> None:
        """Default layout, back on the CPU: the model outlives this call (napari, batch) and GPU
        memory is returned."""
        if self._placed:
            self.use_layout(False)
            self.module.to("cpu")
            self._placed = False


class TorchForward:
    """``forward(x) -> logits`` with PyTorch: (B, C_in, X, Y, Z) float32 -> (B, C, X, Y, Z) float32.

    Parameters
    ----------
    network : TorchNetwork
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).
    channels_last : bool
        Run in the channels-last 3D memory layout.
    """

    backend = "torch"

    def __init__(self, network: TorchNetwork, *, precision: str, channels_last: bool = False) -> None:
        self.network = network
        self.precision = precision
        self.channels_last = channels_last

    @property
    def modules(self) -> list:
        return [self.network.module]

    def __call__(self, x):
        import torch

        self.network.use_layout(self.channels_last)
        x = x.to(self.network.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        autocast = torch.autocast(self.network.device.type, dtype=dtype) if dtype is not None \
            else contextlib.nullcontext()
        with autocast:
            out = self.network.module(x)
        if isinstance(out, (list, tuple)):  # deep supervision heads: the first is full size
            out = out[0]
        return out.float()

    def close(self) -> None:
        self.network.release()

    def describe(self) -> dict[str, Any]:
        return {"backend": "torch", "channels_last": self.channels_last, "precision": self.precision}
