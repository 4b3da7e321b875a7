"""Dice + cross-entropy that also learns from partially annotated cases (marginal loss).

A case annotates a subset of the model's classes (a liver-only corrected case, AMOS without
bones, a fine-tuning set that lacks some of the parent model's organs). Voxels labelled
background there may really belong to an unannotated class, so penalising those classes would
teach the network to forget them. The *marginal* loss (Shi et al., "Marginal loss and
exclusion loss for partially supervised multi-organ segmentation", MedIA 2021) merges the
probabilities of the unannotated classes into background before the cross-entropy, and the
Dice term covers only annotated classes. With every class annotated it equals MONAI's
``DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)``.
"""

from __future__ import annotations

import torch

__all__ = ["MarginalDiceCELoss"]


class MarginalDiceCELoss(torch.nn.Module):
    """``dice_weight * Dice + ce_weight * CE`` over annotated classes.

    Parameters
    ----------
    smooth : Dice smoothing added to numerator and denominator (MONAI's default 1e-5).
    class_weights : optional per-channel weights of the cross-entropy (a rare class such as small
        lesions learns faster with a weight above 1; the softmax otherwise saturates against it).

    Call with ``logits`` ``(B, C, *spatial)``, ``target`` ``(B, 1, *spatial)`` channel indices,
    and ``annotated`` ``(B, C)`` bool (channel 0, background, is always treated as annotated).
    """

    def __init__(self, *, dice_weight: float = 1.0, ce_weight: float = 1.0, smooth: float = 1e-5,
                 class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.smooth = smooth
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                annotated: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        n_classes = logits.shape[1]
        target = target.long()
        if target.ndim == logits.ndim:
            target = target[:, 0]
        if annotated is None:
            annotated = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
        annotated = annotated.to(logits.device).bool().clone()
        annotated[:, 0] = True
        shape = (*annotated.shape, *([1] * (logits.ndim - 2)))
        known = annotated.view(shape).to(logits.dtype)

        # Cross-entropy on the merged distribution: unannotated classes count as background.
        log_p = torch.log_softmax(logits, dim=1)
        log_unknown = torch.logsumexp(log_p.masked_fill(known.bool(), float("-inf")), dim=1)
        merged_bg = torch.logaddexp(log_p[:, 0], log_unknown)
        picked = log_p.gather(1, target[:, None])[:, 0]
        log_target = torch.where(target == 0, merged_bg, picked)
        if self.class_weights is None:
            ce = -log_target.mean()
        else:  # weighted like torch's cross_entropy(weight=...): normalised by the weights' sum
            weights = self.class_weights.to(logits.device)[target]
            ce = -(weights * log_target).sum() / weights.sum().clamp_min(1e-8)

        # Batch Dice over annotated foreground channels (an unannotated channel of a sample is
        # left out of both sums, so it neither rewards nor penalises that channel).
        probs = torch.softmax(logits, dim=1)
        onehot = torch.nn.functional.one_hot(target, n_classes).movedim(-1, 1).to(probs.dtype)
        spatial = tuple(range(2, logits.ndim))
        inter = (probs * onehot).sum(spatial) * known.flatten(1)
        denom = (probs.sum(spatial) + onehot.sum(spatial)) * known.flatten(1)
        inter, denom = inter[:, 1:].sum(0), denom[:, 1:].sum(0)
        counted = annotated[:, 1:].any(0)
        dice = 1.0 - (2.0 * inter + self.smooth) / (denom + self.smooth)
        dice = dice[counted].mean() if bool(counted.any()) else logits.sum() * 0.0
        return self.dice_weight * dice + self.ce_weight * ce
