"""How an epoch draws its samples: cases with replacement, seeded by the epoch, real and synthetic mixed."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from medseg.training.config import TrainConfig

__all__ = ["CaseSamples", "make_loader", "steps_for", "MIN_STEPS_PER_EPOCH"]

#: An epoch is at least this many steps, so that tiny data sets do not validate every few steps.
MIN_STEPS_PER_EPOCH = 25


class CaseSamples(Dataset):
    """Item ``i`` = ``num_samples`` random crops of cached case ``i`` (a list of dicts)."""

    def __init__(self, items: list[dict[str, Any]], transform) -> None:
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.transform(self.items[index])


def cases_per_step(config: TrainConfig) -> int:
    return max(1, config.batch_size // config.num_samples)


def steps_for(n_cases: int, config: TrainConfig) -> int:
    """Default steps per epoch: every case about once, but at least :data:`MIN_STEPS_PER_EPOCH`."""
    return max(MIN_STEPS_PER_EPOCH, math.ceil(n_cases / cases_per_step(config)))


def make_loader(real: list[dict], synthetic: list[dict], transform, config: TrainConfig, steps: int,
                seed: int) -> DataLoader:
    """A loader of exactly ``steps`` batches for one epoch, fully determined by ``seed``.

    Real image cases and synthetic sources share the draws in the ratio
    ``config.synthetic_fraction`` (default: in proportion to their numbers).
    """
    from monai.data import list_data_collate
    from monai.data.utils import set_rnd, worker_init_fn

    items = real + synthetic
    if synthetic and real and config.synthetic_fraction is not None:
        share = float(config.synthetic_fraction)
        weights = [(1.0 - share) / len(real)] * len(real) + [share / len(synthetic)] * len(synthetic)
    else:
        weights = [1.0] * len(items)
    per_step = cases_per_step(config)
    sampler_rng = torch.Generator().manual_seed(seed)
    sampler = WeightedRandomSampler(weights, num_samples=steps * per_step, replacement=True, generator=sampler_rng)
    dataset = CaseSamples(items, transform)
    # In-process loading: seed the transforms here; worker processes are seeded by worker_init_fn
    # from the loader's generator, which is seeded by the epoch as well.
    set_rnd(transform, seed)
    return DataLoader(dataset, batch_size=per_step, sampler=sampler, num_workers=config.num_workers,
                      collate_fn=list_data_collate, worker_init_fn=worker_init_fn,
                      generator=torch.Generator().manual_seed(seed + 1),
                      persistent_workers=False, drop_last=False)
