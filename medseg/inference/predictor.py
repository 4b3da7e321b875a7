"""Running the network(s) on a batch of windows: ensembles, mirroring TTA, AMP, and two measured
choices that decide most of the CPU time.

Measured on the 2-core machine (``docs/bench_inference.md``), per 96^3 window: running 4 windows
per forward pass instead of 1 is 1.3-2x faster for UNet, SegResNet, DynUNet and SwinUNETR alike;
the channels-last memory layout is 1.3-1.5x faster again for UNet (batch norm) and SegResNet, but
0.8x for DynUNet (instance norm). So:

* **batch size**: unless the caller fixes it, the first window runs alone while forward hooks add
  up the size of every layer's output (an upper bound of the activation memory one window needs,
  since inference frees most of them on the way); that sets how many windows run together, at
  most 4, within a quarter of the memory available (1 where that is unknown). The resident set
  is no measure here: memory freed by preprocessing is reused without growing it;
* **layout**: the next two batches run once in each layout (real work either way, timed) and the
  faster layout is kept for the rest.

Outputs are the mean logits over networks and mirrorings, float32, on the compute device.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from medseg.errors import ModelError, option

__all__ = ["MIRRORS", "Predictor", "available_memory_bytes"]

#: The 8 mirrorings of a window (nnU-Net's test-time augmentation), as dims of (B, C, X, Y, Z).
MIRRORS = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))
MAX_BATCH = 4


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class _ActivationMeter:
    """Adds up the bytes of every leaf module's tensor output during one forward pass."""

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


class Predictor:
    """``predictor(batch) -> logits`` for :func:`medseg.inference.sliding.sliding_window_slabs`.

    Parameters
    ----------
    networks : list of torch.nn.Module
        In eval mode, on ``device``; their logits are averaged (ensemble).
    device : torch.device
    tta : bool
        Average over the 8 mirrorings of each window.
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).
    n_classes : int
        Expected output channels (checked on the first batch).
    batch_size : int or None
        Windows per forward pass; ``None`` measures it (see the module docstring).
    where : str
        Named in errors.
    """

    def __init__(self, networks, device, *, tta: bool, precision: str, n_classes: int,
                 batch_size: int | None, where: str) -> None:
        self.networks = list(networks)
        self.device = device
        self.mirrors = MIRRORS if tta else ((),)
        self.precision = precision
        self.n_classes = n_classes
        self.where = where
        self.batch_size = batch_size  # None until measured
        self.channels_last = False
        self._format_trials: list[tuple[bool, float]] = []
        self._ran = False
        self.decisions: dict[str, object] = {}

    def __call__(self, batch):
        import torch

        outputs, start = [], 0
        while start < batch.shape[0]:
            n = self.batch_size or 1
            outputs.append(self._timed(batch[start:start + n]))
            start += n
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    # --- measured choices ------------------------------------------------------------------------
    def _timed(self, chunk):
        measuring_memory = self.batch_size is None
        trial_format = not measuring_memory and len(self._format_trials) < 2 and chunk.shape[0] > 0
        if trial_format:
            self._set_layout(len(self._format_trials) == 1)  # first trial as is, second channels-last
        meter = _ActivationMeter(self.networks) if measuring_memory else None
        began = time.perf_counter()
        try:
            out = self._forward(chunk)
        except (RuntimeError, ValueError, AssertionError) as exc:
            if not self._ran:  # the first window: a window size or input the network cannot take
                raise ModelError(self.where, f"the network fails on a {tuple(chunk.shape[2:])} window "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
                                 f"choose a window the network accepts ({option('roi_size')}; e.g. multiples of 32 for "
                                 "SwinUNETR, of the strides' product for UNet/DynUNet)") from exc
            raise
        finally:
            if meter is not None:
                meter.close()
        self._ran = True
        seconds = (time.perf_counter() - began) / chunk.shape[0]
        if meter is not None:
            self._choose_batch(max(meter.total // max(len(self.mirrors), 1), 1))
        elif trial_format:
            self._format_trials.append((self.channels_last, seconds))
            if len(self._format_trials) == 2:
                (_, t_plain), (_, t_last) = self._format_trials
                self._set_layout(t_last < t_plain)
                self.decisions.update(seconds_per_window_contiguous=round(t_plain, 3),
                                      seconds_per_window_channels_last=round(t_last, 3),
                                      channels_last=self.channels_last)
        return out

    def _choose_batch(self, per_window: int) -> None:
        if self.device.type == "cuda":
            import torch

            free, _ = torch.cuda.mem_get_info(self.device)
            self.batch_size = MAX_BATCH if free > 16 * 2**30 else 2 if free > 6 * 2**30 else 1
        else:
            available = available_memory_bytes()
            fits = 1 if available is None else int(0.25 * available // per_window)
            self.batch_size = max(1, min(MAX_BATCH, fits))
        self.decisions.update(window_memory_mb=round(per_window / 2**20), batch_size=self.batch_size)

    def _set_layout(self, channels_last: bool) -> None:
        import torch

        if channels_last != self.channels_last:
            layout = torch.channels_last_3d if channels_last else torch.contiguous_format
            for net in self.networks:
                net.to(memory_format=layout)
            self.channels_last = channels_last

    def restore_layout(self) -> None:
        """Put the networks back in the default layout (they outlive this call)."""
        self._set_layout(False)

    # --- the forward pass ----------------------------------------------------------------------------
    def _forward(self, chunk):
        import torch

        x = chunk.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        total = None
        with torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            for index, net in enumerate(self.networks):
                xi = x[:, index:index + 1] if x.shape[1] > 1 else x  # ensembles: one channel per model
                for dims in self.mirrors:
                    out = net(xi.flip(dims) if dims else xi)
                    if isinstance(out, (list, tuple)):  # deep supervision heads: the first is full size
                        out = out[0]
                    out = out.float()
                    if out.shape[1] != self.n_classes:
                        raise ModelError(self.where, f"the network gives {out.shape[1]} output channels but "
                                         f"the model names {self.n_classes} classes",
                                         "the labels do not belong to this network")
                    out = out.flip(dims) if dims else out
                    total = out if total is None else total.add_(out)
        return (total / (len(self.networks) * len(self.mirrors))).contiguous()


def stack_inputs(channels: Sequence) -> object:
    """One (C, X, Y, Z) tensor from the per-model normalised images (ensembles: one channel each)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.stack(channels) if len(channels) > 1 else channels[0][None])
