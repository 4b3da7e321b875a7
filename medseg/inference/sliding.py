"""Sliding-window inference that hands back finished slabs instead of one whole-image buffer.

The windows, their order-independent Gaussian (or constant) weights and the padding of images
smaller than the window are MONAI's (``dense_patch_slices``, ``compute_importance_map``, the scan
interval of ``sliding_window_inference``), so blended outputs equal MONAI's up to float rounding.
The two MONAI functions are restated here line for line (:func:`window_starts`,
:func:`importance_map`; tests compare them with MONAI's on many shapes) because importing
``monai.data`` costs ~3.5 s of start-up, and a run on a cached OpenVINO/ONNX Runtime export
needs nothing else from MONAI.
What differs is memory: windows are run in order of their start along the last axis, and as soon
as no later window can touch a range of planes, that range is divided by its accumulated weight
and yielded. The accumulator therefore spans one window depth (``C x X x Y x roi_z``), never the
whole ``C x X x Y x Z`` image, which is what makes 100-class models fit (MONAI #6427).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from medseg.progress import CancelToken, ProgressCallback, check_cancel, hold_for_tests, report

__all__ = ["WindowPlan", "importance_map", "plan_windows", "sliding_window_slabs", "window_starts"]


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Step between window starts per axis (MONAI ``_get_scan_interval``)."""
    out = []
    for n, roi in zip(image_size, roi_size):
        out.append(int(roi) if n == roi else max(int(roi * (1 - overlap)), 1))
    return tuple(out)


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows go on a (padded) image.

    ``pad`` is ``((before, after), ...)`` per axis, as MONAI pads images smaller than the window
    (``before = diff // 2``); ``windows`` are slice triples into the padded image, sorted by their
    start on the last axis.
    """

    image_shape: tuple[int, int, int]
    roi_size: tuple[int, int, int]
    pad: tuple[tuple[int, int], ...]
    windows: tuple[tuple[slice, slice, slice], ...]

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return tuple(n + a + b for n, (a, b) in zip(self.image_shape, self.pad))

    def __len__(self) -> int:
        return len(self.windows)


def window_starts(image_size: Sequence[int], roi_size: Sequence[int], interval: Sequence[int]) -> list[tuple[int, ...]]:
    """Start of every window, in MONAI ``dense_patch_slices`` order (the last axis fastest).

    Per axis, windows step by ``interval`` until one reaches the end; the last is moved back to
    end exactly at the image's border. ``roi_size`` is at most ``image_size`` (pad first).
    """
    import itertools
    import math

    per_axis = []
    for n, roi, step in zip(image_size, roi_size, interval):
        roi = min(int(roi), int(n))  # MONAI get_valid_patch_size
        if step == 0:
            count = 1
        else:
            count = next((d + 1 for d in range(int(math.ceil(n / step))) if d * step + roi >= n), 1)
        per_axis.append([i * step - max(i * step + roi - n, 0) for i in range(count)])
    return [tuple(int(v) for v in start) for start in itertools.product(*per_axis)]


def importance_map(roi_size: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125, device=None):
    """Blending weight of each voxel of a window (MONAI ``compute_importance_map``, same float ops).

    ``"gaussian"``: the product of 1D Gaussians with sigma ``sigma_scale * roi`` centred on the
    window, weights below 1e-3 raised to it (so no voxel has weight 0); ``"constant"``: ones.
    """
    import torch

    mode = str(mode).lower()
    if mode == "constant":
        weights = torch.ones(tuple(int(r) for r in roi_size), device=device, dtype=torch.float)
    elif mode == "gaussian":
        weights = None
        for i, size in enumerate(int(r) for r in roi_size):
            sigma = size * sigma_scale
            x = torch.arange(start=-(size - 1) / 2.0, end=(size - 1) / 2.0 + 1, dtype=torch.float, device=device)
            x = torch.exp(x**2 / (-2 * sigma**2))
            weights = x if i == 0 else weights.unsqueeze(-1) * x[(None,) * i]
    else:
        raise ValueError(f"blend mode must be gaussian or constant, got {mode!r}")
    floor = max(torch.min(weights).item(), 1e-3)
    return torch.clamp_(weights.to(torch.float), min=floor).to(torch.float32)


def plan_windows(image_shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> WindowPlan:
    pad = []
    for n, roi in zip(image_shape, roi_size):
        diff = max(int(roi) - int(n), 0)
        pad.append((diff // 2, diff - diff // 2))
    padded = tuple(int(n) + a + b for n, (a, b) in zip(image_shape, pad))
    roi = tuple(int(r) for r in roi_size)
    starts = window_starts(padded, roi, scan_interval(padded, roi, overlap))
    slices = [tuple(slice(a, a + r) for a, r in zip(start, roi)) for start in starts]
    windows = sorted(slices, key=lambda s: s[2].start)  # stable: MONAI order within
    return WindowPlan(tuple(int(n) for n in image_shape), roi, tuple(pad), tuple(windows))


def sliding_window_slabs(
    image,
    predictor: Callable,
    plan: WindowPlan,
    *,
    sw_batch_size: int = 1,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    padding_mode: str = "constant",
    cval: float = 0.0,
    device=None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Iterator[tuple[int, object]]:
    """Run ``predictor`` over the windows of ``plan`` and yield blended output slabs.

    Parameters
    ----------
    image : torch.Tensor, shape (C_in, X, Y, Z)
        Model-space input (on CPU; windows are moved to ``device``).
    predictor : callable
        ``predictor(batch)`` with ``batch`` of shape (B, C_in, *roi) returns (B, C, *roi) outputs
        (logits) on the compute device.
    plan : WindowPlan
        From :func:`plan_windows` for ``image``'s spatial shape.
    mode, sigma_scale
        Blending weights, as MONAI's ``compute_importance_map``.
    padding_mode, cval
        How an image smaller than the window is padded (``torch.nn.functional.pad`` modes).
    device : torch.device, optional
        Where outputs are accumulated (default: the input's device).

    Yields
    ------
    (z_start, slab)
        ``slab`` is a float32 tensor (C, X, Y, n) of blended outputs for planes
        ``z_start .. z_start + n - 1`` of the unpadded image; slabs come in order and cover Z once.
    """
    import torch
    import torch.nn.functional as F

    (px0, _), (py0, _), (pz0, _) = plan.pad
    nx, ny, nz = plan.image_shape
    roi_z = plan.roi_size[2]
    x = image[None]
    if any(a or b for a, b in plan.pad):
        flat = [v for a, b in reversed(plan.pad) for v in (a, b)]
        if padding_mode == "constant":
            x = F.pad(x, flat, mode="constant", value=cval)
        else:
            x = F.pad(x, flat, mode=padding_mode)
    x = x[0]
    out_device = torch.device(device) if device is not None else image.device
    weight = importance_map(plan.roi_size, mode=mode, sigma_scale=sigma_scale, device=out_device)
    groups: dict[int, list] = defaultdict(list)
    for window in plan.windows:
        groups[window[2].start].append(window)
    starts = sorted(groups)
    padded = plan.padded_shape
    acc = None
    wsum = torch.zeros((padded[0], padded[1], roi_z), dtype=torch.float32, device=out_device)
    done, total = 0, len(plan)
    for index, z_start in enumerate(starts):
        windows = groups[z_start]
        for b0 in range(0, len(windows), sw_batch_size):
            check_cancel(cancel, "inference")
            batch = windows[b0:b0 + sw_batch_size]
            data = torch.stack([x[(slice(None), *w)] for w in batch])
            out = predictor(data)
            out = out.to(device=out_device, dtype=torch.float32)
            if acc is None:
                acc = torch.zeros((out.shape[1], padded[0], padded[1], roi_z), dtype=torch.float32,
                                  device=out_device)
            for w, pred in zip(batch, out):
                region = (w[0], w[1])
                acc[(slice(None), *region)] += pred * weight
                wsum[region] += weight
            done += len(batch)
            report(progress, done, total, f"inference: window {done}/{total}")
            if done == len(batch):
                hold_for_tests("inference")
        # Planes before the next group's start are final: no later window reaches them.
        next_start = starts[index + 1] if index + 1 < len(starts) else z_start + roi_z
        n_final = next_start - z_start
        lo = max(z_start, pz0)
        hi = min(next_start, pz0 + nz)
        if hi > lo:
            zs = slice(lo - z_start, hi - z_start)
            slab = acc[:, px0:px0 + nx, py0:py0 + ny, zs] / wsum[px0:px0 + nx, py0:py0 + ny, zs]
            yield lo - pz0, slab
        if index + 1 < len(starts):
            keep = roi_z - n_final
            acc[..., :keep] = acc[..., n_final:].clone()
            acc[..., keep:] = 0
            wsum[..., :keep] = wsum[..., n_final:].clone()
            wsum[..., keep:] = 0
