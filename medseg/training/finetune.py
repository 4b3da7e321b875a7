"""Starting from an existing model: keep its label values, add new classes, carry its weights over.

A parent is a medseg model folder, ``"default"`` or a MONAI bundle (read in safe mode through
:func:`medseg.models.resolve_model`). The new model's classes are the parent's, in the parent's
channel order and with the parent's label values, followed by the data's classes whose names the
parent lacks (:meth:`LabelSet.extended`). Every parent tensor is copied; output layers grow by the
new channels, which start from the layer's own random initialisation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from medseg.errors import ModelError
from medseg.labels import LabelSet, canonical_name
from medseg.models.spec import ModelSpec

__all__ = ["Parent", "load_parent", "merge_labels", "transfer_weights"]


@dataclass
class Parent:
    """The model fine-tuning starts from."""

    spec: ModelSpec
    state: dict[str, torch.Tensor]
    source: str
    path: str
    weights_sha256: str


def load_parent(model: str) -> Parent:
    """Load a medseg model folder, ``"default"`` or a MONAI bundle as a fine-tuning parent."""
    from medseg.models import resolve_model

    resolved = resolve_model(model)
    if resolved.spec is None:
        raise ModelError(model, "its network cannot be described as a medseg spec (a trusted bundle)",
                         "fine-tune from a medseg model folder or a bundle that loads in safe mode")
    state = {k: v.detach().clone() for k, v in resolved.network.state_dict().items()}
    return Parent(resolved.spec, state, resolved.source, resolved.path, resolved.weights_sha256)


def merge_labels(parent: LabelSet, names: Iterable[str]) -> LabelSet:
    """The parent's classes (values and channels unchanged) plus new names at new values."""
    known = {canonical_name(n) for n in parent.names}
    new = [n for n in names if canonical_name(n) not in known and canonical_name(n) != "background"]
    return parent.extended(new)


def transfer_weights(network: torch.nn.Module, state: dict[str, torch.Tensor], n_parent: int,
                     where: str) -> list[str]:
    """Copy ``state`` into ``network``; tensors that grew by new output channels are copied in part.

    A tensor may differ from the network's only along axes where the parent has ``n_parent``
    entries and the network more (output convolutions along axis 0, transposed convolutions
    along axis 1, a class-to-class residual unit along both, biases); the parent's block is
    copied into the first ``n_parent`` entries. Returns the names of tensors copied in part.

    Raises
    ------
    ModelError
        A tensor is missing or differs in any other way (another architecture).
    """
    target = network.state_dict()
    partial: list[str] = []
    merged: dict[str, Any] = {}
    for key, value in target.items():
        if key not in state:
            raise ModelError(where, f"the parent has no tensor {key}", "fine-tune with the parent's architecture")
        old = state[key].to(value.dtype)
        if tuple(old.shape) == tuple(value.shape):
            merged[key] = old
            continue
        axes = [a for a, (o, n) in enumerate(zip(old.shape, value.shape)) if o != n]
        if old.ndim != value.ndim or any(old.shape[a] != n_parent or value.shape[a] < n_parent for a in axes):
            raise ModelError(where, f"parent tensor {key} has shape {tuple(old.shape)}, the new network "
                             f"{tuple(value.shape)}", "fine-tune with the parent's architecture")
        grown = value.clone()
        block = grown
        for axis in axes:  # e.g. MONAI UNet's last residual unit maps classes to classes: 2 axes
            block = block.narrow(axis, 0, n_parent)
        block.copy_(old)
        merged[key] = grown
        partial.append(key)
    unexpected = [k for k in state if k not in target]
    if unexpected:
        raise ModelError(where, f"the parent has tensors the network lacks ({unexpected[:3]})",
                         "fine-tune with the parent's architecture")
    network.load_state_dict(merged, strict=True)
    return partial
