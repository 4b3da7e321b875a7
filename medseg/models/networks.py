"""Build MONAI networks from a :class:`~medseg.models.spec.NetworkSpec` (the only torch import here).

The architecture name picks a class from a fixed table; nothing in a spec can name any other
callable. :func:`default_network` gives sensible arguments for each architecture, used by
``medseg train --arch`` and the tests.
"""

from __future__ import annotations

from typing import Any

import torch

from medseg.models.spec import ARCHITECTURES, NetworkSpec

__all__ = ["build_network", "default_network", "count_parameters"]


def _classes() -> dict[str, type[torch.nn.Module]]:
    from monai.networks import nets

    return {"unet": nets.UNet, "segresnet": nets.SegResNet, "swinunetr": nets.SwinUNETR,
            "dynunet": nets.DynUNet}


def build_network(spec: NetworkSpec, out_channels: int) -> torch.nn.Module:
    """Instantiate the MONAI network for ``spec`` with ``out_channels`` outputs (3D, in eval mode)."""
    cls = _classes()[spec.arch]
    kwargs: dict[str, Any] = dict(spec.kwargs)
    kwargs.update(in_channels=spec.in_channels, out_channels=int(out_channels), spatial_dims=3)
    net = cls(**kwargs)
    net.eval()
    return net


def default_network(arch: str, *, size: str = "small") -> NetworkSpec:
    """Reasonable arguments for ``arch`` (``size``: "tiny" for tests, "small", "base").

    The sizes keep every architecture's down-sampling compatible with ROIs that are multiples
    of 32 voxels (16 for "tiny").
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    width = {"tiny": 4, "small": 16, "base": 32}[size]
    if arch == "unet":
        depth = 4 if size == "tiny" else 5
        channels = [width * 2**i for i in range(depth)]
        return NetworkSpec("unet", {"channels": channels, "strides": [2] * (depth - 1),
                                    "num_res_units": 1 if size == "tiny" else 2, "norm": "INSTANCE"})
    if arch == "segresnet":
        blocks = [1, 1, 1] if size == "tiny" else [1, 2, 2, 4]
        return NetworkSpec("segresnet", {"init_filters": max(width, 8), "blocks_down": blocks,
                                         "blocks_up": [1] * (len(blocks) - 1), "dropout_prob": None})
    if arch == "swinunetr":
        return NetworkSpec("swinunetr", {"feature_size": 12 if size == "tiny" else (24 if size == "small" else 48),
                                         "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24],
                                         "use_checkpoint": False})
    levels = 4 if size == "tiny" else 5
    return NetworkSpec("dynunet", {"kernel_size": [3] * levels, "strides": [1] + [2] * (levels - 1),
                                   "upsample_kernel_size": [2] * (levels - 1),
                                   "filters": [width * 2**i for i in range(levels)],
                                   "norm_name": "instance", "res_block": True})


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
