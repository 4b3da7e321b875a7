"""Organ segmentation of an in-memory Volume: model space, sliding windows, labels on the input grid.

>>> from medseg.io import load_volume                                   # doctest: +SKIP
>>> from medseg.inference import segment                                # doctest: +SKIP
>>> result = segment(load_volume("ct.nii.gz"), "default", progress=print)  # doctest: +SKIP
>>> result.labels.same_grid(result.entropy or result.labels), result.present()  # doctest: +SKIP

The flow (each step in its own module): :func:`~medseg.inference.preprocess.plan_grid` and
``resample_to_grid`` (orientation and spacing as MONAI's Orientationd/Spacingd, intensity as
ScaleIntensityRanged/NormalizeIntensityd), a foreground crop, windows from
:mod:`~medseg.inference.sliding` aggregated slab by slab, softmax, and
:class:`~medseg.inference.restore.LabelRestorer` writing labels on the input's own grid.
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.device import resolve_device
from medseg.errors import MedsegError, ModelError, option
from medseg.inference import preprocess
from medseg.inference.postprocess import keep_largest_components
from medseg.inference.predictor import MAX_BATCH, Predictor, stack_inputs
from medseg.inference.restore import LabelRestorer
from medseg.inference.sliding import plan_windows, sliding_window_slabs
from medseg.labels import LabelSet
from medseg.models import SegmentationModel, resolve_model
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.volume import Volume

__all__ = ["SegmentationResult", "resolve_device", "segment", "segment_ensemble", "tune_malloc"]

_MALLOC_TUNED: bool | None = None


@dataclass
class SegmentationResult:
    """What :func:`segment` returns.

    Attributes
    ----------
    labels : Volume
        Label values on the input's exact grid (same shape and affine), uint8 (uint16 above 255),
        modality ``"SEG"``, the input's ``source`` kept for writers that refer back to it.
    label_set : LabelSet
        value -> name of every class the model knows (present or not).
    entropy : Volume or None
        Normalised per-voxel entropy of the class probabilities (0 = certain, 1 = uniform),
        float32 on the input grid, when ``uncertainty=True``; for review ranking.
    timings : dict
        Seconds per stage: ``preprocess`` (model space), ``inference`` (back-end set-up, windows and
        the streamed restore, which are interleaved), of which ``backend`` (export or cached export
        loaded and compiled; see :mod:`medseg.inference.backends`), ``network`` (windows, blending,
        softmax; on a back-end's first use also its agreement check and timing) and ``restore``
        (labels on the input grid), ``postprocess`` (clean-up), ``total``.
    provenance : dict
        Plain data: model(s), device, precision, back-end (``backend``: asked, used, how it was
        chosen, agreement with torch, exports), windows, model grid, crop box, versions; ``notes``:
        what the user may want to know (a back-end not used, and why).
    """

    labels: Volume
    label_set: LabelSet
    entropy: Volume | None = None
    timings: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def present(self) -> dict[int, str]:
        """value -> name of the classes that occur in ``labels`` (background excluded)."""
        found = np.unique(self.labels.array)
        return {int(v): self.label_set.name_of(int(v)) for v in found if v != 0}


def tune_malloc() -> bool:
    """Keep large freed blocks in glibc's heap instead of returning them to the OS at once.

    Sliding-window inference allocates and frees window-sized tensors thousands of times; with
    glibc's defaults each one is a fresh mmap/munmap and page faults take ~40 % of the time
    (ENVIRONMENT.md: 1.4-1.7x faster with higher M_MMAP_THRESHOLD and M_TRIM_THRESHOLD, at a few
    hundred MB more peak RSS). Process-wide, done once; off with ``MEDSEG_MALLOC_TUNING=0``;
    a no-op where the C library is not glibc. Returns whether the thresholds are set.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is not None:
        return _MALLOC_TUNED
    _MALLOC_TUNED = False
    if os.environ.get("MEDSEG_MALLOC_TUNING", "1") == "0" or platform.system() != "Linux" \
            or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    limit = ctypes.c_int(2**31 - 1)  # mallopt takes an int; 2 GiB is beyond any window tensor
    m_trim_threshold, m_mmap_threshold = -1, -3
    _MALLOC_TUNED = bool(libc.mallopt(m_mmap_threshold, limit)) and bool(libc.mallopt(m_trim_threshold, limit))
    return _MALLOC_TUNED


def segment(volume: Volume, model: Any = "default", *, device: str = "auto", backend: str = "auto",
            tta: bool = False, overlap: float | None = None, roi_size: Sequence[int] | None = None,
            sw_batch_size: int | None = None, precision: str = "auto", crop: bool | None = None,
            uncertainty: bool = False, postprocess: bool = True, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> SegmentationResult:
    """Segment ``volume`` into the model's classes; labels come back on the input's grid.

    Parameters
    ----------
    volume : Volume
        Any orientation and spacing; CT in HU (or MR) as the model expects.
    model : SegmentationModel, "default" or path
        Anything :func:`medseg.models.resolve_model` accepts (bundles in safe mode).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    backend : str
        What runs the network on the CPU: ``"auto"`` (the fastest installed back-end that agrees
        with torch, measured on the first windows and remembered for this model and machine; torch
        on CUDA), ``"torch"``, ``"openvino"`` or ``"onnxruntime"`` (exported once, cached; see
        :mod:`medseg.inference.backends`).
    tta : bool
        Average over the 8 mirrorings of every window (8x the network time).
    overlap : float, optional
        Window overlap in [0, 1) (default: the model's).
    roi_size : 3 ints, optional
        Window size in model voxels (default: the model's; must suit the network's down-sampling).
    sw_batch_size : int, optional
        Windows per forward pass (default: the model's, else measured: up to 4 as memory allows;
        see :mod:`medseg.inference.predictor`).
    precision : str
        ``"auto"`` (fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``, ``"bf16"`` (torch autocast or
        OpenVINO's bf16; on CPU only worth it where it was measured to agree), ``"fp16"`` (CUDA).
    crop : bool, optional
        Compute only the foreground box (default: the model's ``crop_foreground``).
    uncertainty : bool
        Also return the normalised entropy map.
    postprocess : bool
        Apply the model's clean-up: keep only the largest connected component of each class its
        spec names (``keep_largest_component``; see :mod:`medseg.inference.postprocess`).
        ``False`` returns the network's labels as they are.
    progress, cancel
        See :mod:`medseg.progress`; cancellation is checked between windows.

    Raises
    ------
    InputError
        The volume is too small for the model's window.
    ModelError, MedsegError
        The model cannot be used, the device is not available, or the back-end asked for is not
        installed, cannot export the model or disagrees with torch on it.
    """
    return segment_ensemble(volume, [model], device=device, backend=backend, tta=tta, overlap=overlap,
                            roi_size=roi_size, sw_batch_size=sw_batch_size, precision=precision, crop=crop,
                            uncertainty=uncertainty, postprocess=postprocess, progress=progress, cancel=cancel)


def segment_ensemble(volume: Volume, models: Sequence[Any], *, device: str = "auto", backend: str = "auto",
                     tta: bool = False,
                     overlap: float | None = None, roi_size: Sequence[int] | None = None,
                     sw_batch_size: int | None = None, precision: str = "auto", crop: bool | None = None,
                     uncertainty: bool = False, postprocess: bool = True,
                     progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None) -> SegmentationResult:
    """Segment with several models whose logits are averaged window by window.

    The models must share classes, orientation and spacing (e.g. the folds of one training);
    each gets its own intensity normalisation. Window size, overlap and blending come from the
    first model. All models run on the same back-end. Other parameters as :func:`segment`.
    """
    import torch

    from medseg.inference.backends import select

    t_start = time.perf_counter()
    tuned = tune_malloc()
    models = [resolve_model(m, lazy=True) for m in models]
    if not models:
        raise ValueError("segment_ensemble needs at least one model")
    first = models[0]
    _check_compatible(models)
    in_channels = [_in_channels(m) for m in models]
    for m, cin in zip(models, in_channels):
        if cin != 1:
            raise ModelError(m.path or m.name, f"the network takes {cin} input channels",
                             "medseg feeds one image per model; multi-channel models are not supported")
    torch_device = resolve_device(device)
    precision = _resolve_precision(precision, torch_device)
    pre = first.preprocessing
    roi = _check_roi(roi_size if roi_size is not None else pre.roi_size)
    overlap = pre.overlap if overlap is None else float(overlap)
    if not 0.0 <= overlap < 1.0:
        raise MedsegError(option("overlap", overlap), "is outside [0, 1)", "use e.g. 0.25 or 0.5")
    where = volume.source.path or "input volume"

    warnings = input_warnings(volume, first)
    report(progress, 0, 1, "preprocess: resampling to model space")
    grid = preprocess.plan_grid(volume, pre)
    preprocess.check_fits_roi(grid, roi, where)
    raw = preprocess.resample_to_grid(volume, grid)
    box = preprocess.compute_box(raw, grid, pre, crop=crop, roi_size=roi, overlap=overlap)
    channels = []
    for index, m in enumerate(models):
        values = raw if index == len(models) - 1 else raw.copy()
        channels.append(preprocess.crop_to_box(preprocess.apply_intensity(values, m.preprocessing.intensity), box))
    del raw, values
    grid = grid.with_box(box)
    image = stack_inputs(channels)
    del channels
    report(progress, 1, 1, "preprocess: done")
    check_cancel(cancel, "preprocess")
    t_pre = time.perf_counter()
    t_restore = 0.0  # labels back on the input grid, interleaved with the windows

    plan = plan_windows(grid.box_shape, roi, overlap)
    restorer = LabelRestorer(grid, first.labels.values, entropy=uncertainty)
    report(progress, 0, 1, f"inference: preparing the {backend} back-end")
    selection = select(models, backend=backend, device=torch_device, precision=precision, roi=roi,
                       where=first.path or first.name, windows=len(plan))
    t_ready = time.perf_counter()
    asked = sw_batch_size or first.sw_batch_size
    if asked is None and torch_device.type == "cpu" and selection.mode == "fixed" \
            and selection.active.backend == "openvino":
        # OpenVINO already uses every thread inside one window, and batches only add large fresh
        # buffers (and a reshape for the last, shorter batch). Measured on the 512x512x300 CT,
        # 2 threads: 14-class UNet at roi 96, network 5.0-5.4 s one window at a time against
        # 10.4-11.2 s in batches of 4, peak RSS 2.8-3.2 against 4.3 GB; default model 0.93-1.02 s
        # against 1.06 s, 1.0 against 1.3 GB. torch is 1.3-2x faster in batches and keeps them.
        asked = 1
    predictor = Predictor(selection, tta=tta, n_classes=len(first.labels), batch_size=asked,
                          where=first.path or first.name)
    try:
        with torch.inference_mode():
            for z_start, slab in sliding_window_slabs(
                    image, predictor, plan, sw_batch_size=asked or MAX_BATCH, mode=first.blend_mode,
                    padding_mode=first.padding_mode, device=torch_device, progress=progress, cancel=cancel):
                t_add = time.perf_counter()
                restorer.add(z_start, torch.softmax(slab, dim=0).cpu())
                t_restore += time.perf_counter() - t_add
            t_add = time.perf_counter()
            restorer.finish()
            t_restore += time.perf_counter() - t_add
    finally:
        selection.close()  # torch networks back to the CPU and their layout: models stay reusable
    t_inf = time.perf_counter()

    label_array, post = restorer.labels, {}
    kept = first.spec.keep_largest if (postprocess and first.spec is not None) else ()
    if kept:
        label_array, removed = keep_largest_components(label_array, [first.labels.value_of(n) for n in kept])
        post = {"keep_largest_component": list(kept),
                "removed_voxels": {first.labels.name_of(v): n for v, n in removed.items()}}
    labels = volume.with_array(label_array, modality="SEG", label_set=first.labels)
    if not warnings:
        # The input is what the model expects; now ask whether this scan and this result are
        # plausible (no body, a field of view or organ volumes unlike training). Skipped when the
        # input is already flagged: on an MR given to a CT model every check below would fire.
        from medseg.inference.guard import guard_warnings

        warnings = guard_warnings(volume, labels, first, removed_voxels=post.get("removed_voxels"))
    entropy = volume.with_array(restorer.entropy, modality="") if uncertainty else None
    t_end = time.perf_counter()
    timings = {"preprocess": t_pre - t_start, "inference": t_inf - t_pre, "backend": t_ready - t_pre,
               "network": t_inf - t_ready - t_restore, "restore": t_restore, "postprocess": t_end - t_inf,
               "total": t_end - t_start}
    provenance = {
        "models": [m.describe() for m in models],
        "device": str(torch_device), "precision": precision, "tta": bool(tta), "overlap": overlap,
        "roi_size": list(roi), "windows": len(plan), "torch_threads": torch.get_num_threads(),
        "backend": selection.describe(), "notes": list(selection.notes),
        "sw_batch_size": predictor.batch_size, "predictor": predictor.decisions,
        "malloc_tuned": tuned, "input": volume.describe(), **grid.describe(),
        "computed_fraction": preprocess.box_fraction(box, grid.shape),
        "mixed_voxel_fraction": restorer.mixed_voxels / max(restorer.written_voxels, 1),
        "postprocessing": post, "warnings": warnings, "versions": _versions(),
    }
    return SegmentationResult(labels, first.labels, entropy, timings, provenance)


#: A CT in HU has air (outside the body, lungs, bowel gas) near -1000; an image whose darkest
#: 0.1 % lies above this was not stored in HU (an MR, a PET, a rescaled or windowed export).
CT_DARKEST_HU = -200.0


def input_warnings(volume: Volume, model: SegmentationModel) -> list[str]:
    """Reasons to distrust the result that are visible before any work: the input's modality is
    not the model's, or a CT model is given values that are not Hounsfield units.

    Warnings, not errors: a tight crop inside an organ can have no air, and a model's modality can
    be wrong in its spec; the user decides.
    """
    wanted = (model.modality or "").upper()
    given = (volume.modality or "").upper()
    where = volume.source.path or "the input"
    if wanted and given and given not in (wanted, "OT"):
        return [f"{where} is {given} but the model {model.name} was trained on {wanted}: expect a wrong result"]
    if wanted == "CT":
        # A strided view of about 2 M voxels: no copy of a large volume just to look at it.
        step = max(1, round((volume.array.size / 2_000_000) ** (1 / 3)))
        darkest = float(np.percentile(volume.array[::step, ::step, ::step], 0.1))
        if darkest > CT_DARKEST_HU:
            return [f"{where} does not look like CT in Hounsfield units (its darkest 0.1 % is at {darkest:.0f}, "
                    f"air would be near -1000) but the model {model.name} expects CT: an MR or a rescaled image "
                    f"gives a wrong result"]
    return []


def _check_roi(roi_size: Sequence[int]) -> tuple[int, int, int]:
    """Three whole window sizes >= 1 voxel, or an error naming ``roi_size``."""
    try:
        roi = tuple(int(r) for r in roi_size)
        whole = all(float(r) == int(r) for r in roi_size)
    except (TypeError, ValueError, OverflowError):
        roi, whole = (), False
    if len(roi) != 3 or not whole or min(roi) < 1:
        shown = list(roi_size) if isinstance(roi_size, (list, tuple)) else roi_size
        raise MedsegError(option("roi_size", shown), "is not a window size (three whole numbers of model voxels, "
                          "each 1 or more)", f"leave out {option('roi_size')} to use the model's, or give e.g. "
                          f"{option('roi_size', (96, 96, 96))}")
    return roi  # type: ignore[return-value]


def _resolve_precision(precision: str, device) -> str:
    text = str(precision).lower()
    if text == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if text not in ("fp32", "bf16", "fp16"):
        raise MedsegError(option("precision", precision), "is not a precision", "use auto, fp32, bf16 or fp16")
    if text == "fp16" and device.type != "cuda":
        raise MedsegError(option("precision", "fp16"), "float16 autocast needs CUDA", "use fp32 or bf16 on CPU")
    return text


def _in_channels(model: SegmentationModel) -> int:
    if model.spec is not None:
        return model.spec.network.in_channels
    return 1


def _check_compatible(models: Sequence[SegmentationModel]) -> None:
    first = models[0]
    for other in models[1:]:
        if other.labels != first.labels:
            raise ModelError(other.path or other.name, "has other classes than the first model of the ensemble",
                             "ensemble only models trained on the same classes")
        a, b = first.preprocessing, other.preprocessing
        if a.orientation.upper() != b.orientation.upper() or not np.allclose(a.spacing_mm, b.spacing_mm):
            raise ModelError(other.path or other.name,
                             f"works at {b.orientation} {list(b.spacing_mm)} mm, the first model at "
                             f"{a.orientation} {list(a.spacing_mm)} mm",
                             "ensemble models that share orientation and spacing (e.g. folds of one training)")


def _versions() -> dict[str, str]:
    # From package metadata: importing MONAI only for its version costs ~3.5 s of start-up, and a
    # run on a cached export needs nothing else from it.
    from importlib import metadata

    from medseg import __version__

    out = {"medseg": __version__}
    for name in ("torch", "monai"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
    return out
