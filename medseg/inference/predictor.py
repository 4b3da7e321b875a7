"""Running the network(s) on a batch of windows: ensembles, mirroring TTA, and the measured choices
that decide most of the CPU time.

The forwards come from :mod:`medseg.inference.backends` (torch, OpenVINO, ONNX Runtime): a
:class:`~medseg.inference.backends.Selection` holds the candidates, and this predictor makes the
choices that need real windows, all on the first windows of the volume:

* **agreement**: a back-end not yet checked for this model runs the first window beside torch;
  it is kept only if its labels and logits agree (:mod:`medseg.inference.backends.agreement`);
* **batch size**: unless the caller fixes it, the first window runs alone while forward hooks add
  up the size of every layer's output (an upper bound of the activation memory one window needs);
  that sets how many windows run together, at most 4, within a quarter of the memory available
  (1 where that is unknown). Measured on the 2-core machine: 4 windows per pass are 1.3-2x faster
  than 1 for UNet, SegResNet, DynUNet and SwinUNETR. A cached export with no torch network reuses
  the activation size measured when it was checked;
* **torch's memory layout** (``backend="torch"``, and CUDA): the next two batches run once in each
  layout (real work either way, timed) and the faster is kept: channels-last is 1.3-1.5x faster
  for UNet (batch norm) and SegResNet, 0.8x for DynUNet (instance norm);
* **the back-end** (``backend="auto"`` without a cached choice): every candidate (torch in both
  layouts, OpenVINO, ONNX Runtime) runs the same real batch once untimed (each back-end's one-off
  cost of a new batch shape, 1-3 s for OpenVINO) and twice timed, in passes of opposite order;
  the fastest best time is kept and remembered for this machine.

Outputs are the mean logits over networks and mirrorings, float32, on the compute device.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from medseg.errors import ModelError, option

__all__ = ["MAX_BATCH", "MIRRORS", "Predictor", "available_memory_bytes", "stack_inputs"]

#: The 8 mirrorings of a window (nnU-Net's test-time augmentation), as dims of (B, C, X, Y, Z).
MIRRORS = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))
MAX_BATCH = 4
#: What a forward raises when it cannot run a window (shapes, unsupported ops, runtime failures).
_RUN_ERRORS = (RuntimeError, ValueError, AssertionError)


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


class Predictor:
    """``predictor(batch) -> logits`` for :func:`medseg.inference.sliding.sliding_window_slabs`.

    Parameters
    ----------
    selection : medseg.inference.backends.Selection
        The candidate forwards (one per model each) and what is known about them.
    tta : bool
        Average over the 8 mirrorings of each window.
    n_classes : int
        Expected output channels (checked on every forward).
    batch_size : int or None
        Windows per forward pass; ``None`` measures it (see the module docstring).
    where : str
        Named in errors.
    """

    def __init__(self, selection, *, tta: bool, n_classes: int, batch_size: int | None, where: str) -> None:
        self.selection = selection
        self.mirrors = MIRRORS if tta else ((),)
        self.n_classes = n_classes
        self.where = where
        self.batch_size = batch_size  # None until measured
        self._trials: list[tuple[str, float]] = []
        self._ran = False
        self.decisions: dict[str, object] = {}

    @property
    def device(self):
        return self.selection.device

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
        sel = self.selection
        if not self._ran:
            out = self._first(chunk)
            self._ran = True
            return out
        if sel.mode == "calibrate" and chunk.shape[0] > 0:
            return self._calibrate(chunk)
        if sel.mode == "trial" and len(self._trials) < len(sel.candidates) and chunk.shape[0] > 0:
            return self._trial(chunk)
        return self._run(sel.active, chunk)[0]

    def _first(self, chunk):
        """The first window(s): agreement checks, the batch size, and errors as one clear line."""
        from medseg.inference.backends.agreement import compare

        sel = self.selection
        measuring = self.batch_size is None
        n = chunk.shape[0]
        try:
            memory = None
            outputs = {}
            if sel.unchecked:
                refs, memory = self._per_model(sel.reference, chunk, meter=True)
                outputs[sel.reference.name] = _mean(refs)
                for candidate in list(sel.unchecked):
                    try:
                        outs, _ = self._per_model(candidate, chunk)
                    except _RUN_ERRORS as exc:
                        sel.refuse(candidate, f"it fails on a window ({_one_line(exc)})")
                        continue
                    results = [compare(r, o, sel.precision) for r, o in zip(refs, outs)]
                    if sel.judge(candidate, results, [m // max(n, 1) for m in memory]):
                        outputs[candidate.name] = _mean(outs)
                self.decisions["agreement_checked"] = sorted(sel.agreement)
            active = sel.active
            if len(self.mirrors) == 1 and active.name in outputs:
                out = outputs[active.name]
            else:
                out, measured = self._run(active, chunk, meter=measuring and memory is None)
                memory = memory or measured
        except _RUN_ERRORS as exc:  # the first window: a window size or input the network cannot take
            raise ModelError(self.where, f"the network fails on a {tuple(chunk.shape[2:])} window "
                             f"({_one_line(exc)})", f"choose a window the network accepts ({option('roi_size')}; "
                             "e.g. multiples of 32 for SwinUNETR, of the strides' product for UNet/DynUNet)") from exc
        if measuring:
            per_window = sum(memory) // max(n, 1) if memory else sel.window_memory_bytes()
            self._choose_batch(per_window)
        return out

    def _calibrate(self, chunk):
        """``auto``: time every candidate on this chunk and keep the fastest.

        Each candidate first runs once untimed (a new batch shape costs once: 1-3 s for OpenVINO,
        ~2x for torch), then twice timed, in two passes of opposite order; its best time counts.
        On a shared machine whose load swings within seconds, a single timing was seen to rank
        OpenVINO level with torch where whole runs measured it at 0.37x.
        """
        sel = self.selection
        n = chunk.shape[0]
        seconds: dict[str, float] = {}
        best_out: dict[str, object] = {}
        began = time.perf_counter()
        for candidate in list(sel.candidates):
            try:
                self._as_it_would_run(candidate, chunk)  # warm-up
            except _RUN_ERRORS as exc:
                if candidate.is_torch:
                    raise
                sel.refuse(candidate, f"it fails on a batch of {n} windows ({_one_line(exc)})")
        for order in (sel.candidates, sel.candidates[::-1]):
            for candidate in list(order):
                start = time.perf_counter()
                out = self._as_it_would_run(candidate, chunk)
                took = (time.perf_counter() - start) / n
                if took < seconds.get(candidate.name, float("inf")):
                    seconds[candidate.name] = took
                best_out = {candidate.name: out} if min(seconds, key=seconds.get) == candidate.name else best_out
        best = min(seconds, key=seconds.get)
        sel.choose(best, seconds, calibration_seconds=time.perf_counter() - began)
        self.decisions.update(backend=best, seconds_per_window={k: round(v, 4) for k, v in seconds.items()})
        return best_out[best] if len(self.mirrors) == 1 and best in best_out else self._run(sel.active, chunk)[0]

    def _as_it_would_run(self, candidate, chunk):
        """``candidate``'s logits for ``chunk``, windows grouped as the engine would run it once
        chosen: OpenVINO one window per call on the CPU (see ``segment_ensemble``), others whole."""
        import torch

        if candidate.backend == "openvino" and self.device.type == "cpu" and chunk.shape[0] > 1:
            return torch.cat([self._run(candidate, chunk[i:i + 1], mirrors=((),))[0] for i in range(chunk.shape[0])])
        return self._run(candidate, chunk, mirrors=((),))[0]

    def _trial(self, chunk):
        """Torch's layouts, each timed on one chunk of real work; the faster is kept."""
        sel = self.selection
        candidate = sel.candidates[len(self._trials)]
        start = time.perf_counter()
        out, _ = self._run(candidate, chunk)
        self._trials.append((candidate.name, (time.perf_counter() - start) / chunk.shape[0]))
        if len(self._trials) == len(sel.candidates):
            seconds = dict(self._trials)
            best = min(seconds, key=seconds.get)
            sel.choose(best, seconds, calibration_seconds=0.0, remember=False)
            if {"torch", "torch:channels_last"} <= set(seconds):
                self.decisions.update(seconds_per_window_contiguous=round(seconds["torch"], 3),
                                      seconds_per_window_channels_last=round(seconds["torch:channels_last"], 3),
                                      channels_last=best == "torch:channels_last")
        return out

    def _choose_batch(self, per_window: int | None) -> None:
        if self.device.type == "cuda":
            import torch

            free, _ = torch.cuda.mem_get_info(self.device)
            self.batch_size = MAX_BATCH if free > 16 * 2**30 else 2 if free > 6 * 2**30 else 1
        else:
            available = available_memory_bytes()
            fits = 1 if available is None or not per_window else int(0.25 * available // per_window)
            self.batch_size = max(1, min(MAX_BATCH, fits))
        self.decisions.update(window_memory_mb=None if per_window is None else round(per_window / 2**20),
                              batch_size=self.batch_size)

    # --- the forward pass ----------------------------------------------------------------------------
    def _run(self, candidate, chunk, *, mirrors=None, meter: bool = False):
        """Mean logits of ``candidate``'s forwards over ``mirrors``; with ``meter`` (torch only) also
        the activation bytes per model for the whole chunk."""
        mirrors = mirrors or self.mirrors
        meters = self._meters(candidate) if meter else None
        try:
            total = None
            for index, forward in enumerate(candidate.forwards):
                xi = chunk[:, index:index + 1] if chunk.shape[1] > 1 else chunk  # ensembles: a channel each
                for dims in mirrors:
                    out = self._checked(forward(xi.flip(dims) if dims else xi))
                    out = out.flip(dims) if dims else out
                    total = out if total is None else total.add_(out)
        finally:
            for m in meters or ():
                m.close()
        memory = [m.total // len(mirrors) for m in meters] if meters else None
        return (total / (len(candidate.forwards) * len(mirrors))).contiguous(), memory

    def _per_model(self, candidate, chunk, *, meter: bool = False):
        """Each model's logits without mirroring (for the agreement check)."""
        meters = self._meters(candidate) if meter else None
        try:
            outs = [self._checked(forward(chunk[:, i:i + 1] if chunk.shape[1] > 1 else chunk))
                    for i, forward in enumerate(candidate.forwards)]
        finally:
            for m in meters or ():
                m.close()
        return outs, [m.total for m in meters] if meters else None

    @staticmethod
    def _meters(candidate):
        if not candidate.is_torch:
            return None
        from medseg.inference.backends.torch_backend import ActivationMeter

        return [ActivationMeter(forward.modules) for forward in candidate.forwards]

    def _checked(self, out):
        if out.shape[1] != self.n_classes:
            raise ModelError(self.where, f"the network gives {out.shape[1]} output channels but "
                             f"the model names {self.n_classes} classes", "the labels do not belong to this network")
        return out.to(self.device) if out.device != self.device else out


def _mean(outputs):
    total = outputs[0].clone() if len(outputs) > 1 else outputs[0]
    for out in outputs[1:]:
        total.add_(out)
    return (total / len(outputs)).contiguous() if len(outputs) > 1 else total.contiguous()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def stack_inputs(channels: Sequence) -> object:
    """One (C, X, Y, Z) tensor from the per-model normalised images (ensembles: one channel each)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.stack(channels) if len(channels) > 1 else channels[0][None])
