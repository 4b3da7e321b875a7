"""Validation during training: sliding-window inference over whole volumes and per-class Dice."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medseg.labels import LabelSet
from medseg.models.spec import Preprocessing
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.training.transforms import normalise_intensity

__all__ = ["dice_per_class", "validate"]


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, n_classes: int,
                   annotated: Sequence[bool] | None = None) -> np.ndarray:
    """Dice of channels ``1..n_classes-1`` (index 0 of the result is channel 1).

    NaN where the class is absent from both maps or not annotated in the reference.
    """
    pred = prediction.reshape(-1).astype(np.int64)
    ref = reference.reshape(-1).astype(np.int64)
    both = np.bincount(pred[pred == ref], minlength=n_classes)[:n_classes]
    n_pred = np.bincount(pred, minlength=n_classes)[:n_classes]
    n_ref = np.bincount(ref, minlength=n_classes)[:n_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2.0 * both / (n_pred + n_ref)
    dice = dice.astype(np.float64)
    dice[(n_pred + n_ref) == 0] = np.nan
    if annotated is not None:
        dice[~np.asarray(annotated, dtype=bool)] = np.nan
    return dice[1:]


def validate(network: torch.nn.Module, items: list[dict[str, Any]], labels: LabelSet, pre: Preprocessing, *,
             device: torch.device, autocast_dtype: torch.dtype | None = None,
             progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict[str, float]:
    """Mean and per-class Dice over ``items`` (``image`` HU and ``label`` channels in model space).

    Returns ``{"val_mean_dice": ..., "val_dice_<class>": ...}``; a class's Dice is averaged over
    the cases where it is present in the reference or the prediction; the mean is over classes.
    """
    from monai.inferers import sliding_window_inference

    network.eval()
    scores = []
    with torch.no_grad():
        for index, item in enumerate(items):
            check_cancel(cancel, "medseg train")
            report(progress, index, len(items), f"validate: {item.get('name', index)}")
            image = normalise_intensity(np.asarray(item["image"], dtype=np.float32), pre.intensity)
            tensor = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
            if tensor.ndim == 4:
                tensor = tensor[None]
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                logits = sliding_window_inference(tensor, pre.roi_size, sw_batch_size=2, predictor=network,
                                                  overlap=pre.overlap, mode="gaussian")
            prediction = logits.argmax(1)[0].cpu().numpy()
            reference = np.asarray(item["label"]).reshape(prediction.shape)
            scores.append(dice_per_class(prediction, reference, len(labels), item.get("annotated")))
    report(progress, len(items), len(items), "validate: done")
    network.train()
    with warnings.catch_warnings():  # a class absent from every case is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        per_class = np.nanmean(np.vstack(scores), axis=0) if scores else np.full(len(labels) - 1, np.nan)
        out = {"val_mean_dice": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")}
    for name, value in zip(labels.names[1:], per_class):
        out[f"val_dice_{name}"] = float(value)
    return out
