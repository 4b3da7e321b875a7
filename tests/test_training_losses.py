"""Marginal Dice + CE: equal to MONAI's DiceCE when everything is annotated; blind to unannotated classes."""

from __future__ import annotations

import torch

from medseg.training.losses import MarginalDiceCELoss


def test_equals_monai_dice_ce_when_every_class_is_annotated():
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, 8)
    target = torch.randint(0, 5, (2, 1, 6, 7, 8))
    monai = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)(logits, target)
    ours = MarginalDiceCELoss()(logits, target)
    assert torch.allclose(ours, monai, atol=1e-6)


def test_unannotated_class_takes_background_mass_without_penalty():
    # A case that does not annotate class 2: its "background" voxels may be class 2.
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[..., :2] = 1
    annotated = torch.tensor([[True, True, False]])
    base = torch.zeros(1, 3, 4, 4, 4)
    base[:, 1, ..., :2] = 4.0
    base[:, 0, ..., 2:] = 4.0
    moved = base.clone()
    moved[:, 2, ..., 2:] = 4.0  # class 2 now claims half of the background's probability
    moved[:, 0, ..., 2:] = 4.0
    loss = MarginalDiceCELoss()
    fully = loss(moved, target)  # with class 2 annotated, claiming background voxels is punished
    marginal = loss(moved, target, annotated)
    assert marginal < fully - 0.1
    # Marginally, moving background mass to class 2 costs (almost) nothing: bg + class 2 is merged.
    assert abs(float(loss(base, target, annotated)) - float(marginal)) < 0.05


def test_gradient_of_an_unannotated_channel_only_merges_with_background():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    target = torch.randint(0, 2, (1, 1, 4, 4, 4))
    loss = MarginalDiceCELoss(dice_weight=0.0)(logits, target, torch.tensor([[True, True, False]]))
    loss.backward()
    grad = logits.grad[0]
    # CE on merged {background + class 2}: both channels get the same gradient direction per voxel.
    same_sign = torch.sign(grad[0]) == torch.sign(grad[2])
    assert bool(same_sign.all())
