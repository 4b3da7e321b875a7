"""Everything ``train()`` decides before the first step: classes, model spec, split, cached items."""

from __future__ import annotations

import platform
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medseg.errors import InputError, option
from medseg.labels import LabelSet, canonical_name
from medseg.models.spec import IntensitySpec, ModelSpec, NetworkSpec, Preprocessing
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.training.config import TrainConfig
from medseg.training.datasets import TrainingCase

__all__ = ["model_labels_for", "build_model_spec", "split_validation", "load_items", "seed_everything",
           "epoch_seed", "final_spec"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: depends only on the run's seed and the epoch number."""
    return (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**31 - 1)


def model_labels_for(cases: Sequence[TrainingCase], labels: LabelSet | None, parent) -> LabelSet:
    """The model's classes: given, or the parent's extended by the data's, or the data's own."""
    if labels is not None:
        return labels
    names: list[str] = []
    for case in cases:
        for value in sorted(case.label_names):
            names.append(case.label_names[value])
    if parent is not None:
        from medseg.training.finetune import merge_labels

        return merge_labels(parent.spec.labels, names)
    table: dict[int, str] = {0: "background"}
    by_name: dict[str, int] = {"background": 0}
    for case in cases:
        for value, name in sorted(case.label_names.items()):
            key = canonical_name(name)
            if key in by_name:
                continue
            if value in table:  # the value is another class's in an earlier case: give a new one
                value = max(table) + 1
            table[value] = name
            by_name[key] = value
    if len(table) < 2:
        raise InputError(cases[0].label if cases else "DATA", "names no class besides background",
                         'list the classes in labels.json, e.g. {"0": "background", "1": "liver"}')
    return LabelSet(table)


def build_model_spec(config: TrainConfig, labels: LabelSet, parent, cases: Sequence[TrainingCase]) -> ModelSpec:
    """The spec of the model being trained (the parent's model space when fine-tuning)."""
    from medseg.models.networks import default_network

    if parent is not None:
        base = parent.spec
        pre = base.preprocessing
        if config.spacing_mm is not None and tuple(config.spacing_mm) != tuple(pre.spacing_mm):
            pre = Preprocessing(**{**_pre_dict(pre), "spacing_mm": config.spacing_mm})
        return base.replace(labels=labels, preprocessing=pre,
                            name=config.name or f"{base.name}-finetuned",
                            version=config.version, description=config.description or base.description,
                            keep_largest=_keep_largest(config, labels) or base.keep_largest)
    modality = config.modality or "CT"
    intensity = (IntensitySpec(kind="window", a_min=-1000.0, a_max=1000.0, b_min=0.0, b_max=1.0, clip=True) if modality.upper() == "CT"
                 else IntensitySpec(kind="zscore", nonzero_threshold=0.0))
    try:
        network = (NetworkSpec(config.arch, dict(config.network_kwargs)) if config.network_kwargs is not None
                   else default_network(config.arch, size=config.size))
    except ValueError as exc:
        raise InputError(option("arch", config.arch), str(exc), "choose unet, segresnet, dynunet or swinunetr") from exc
    pre = Preprocessing(orientation="RAS", spacing_mm=config.spacing_mm or (1.5, 1.5, 1.5), intensity=intensity,
                        roi_size=config.roi_size, overlap=0.25, crop_foreground=modality.upper() == "CT",
                        foreground_threshold=-500.0 if modality.upper() == "CT" else None)
    return ModelSpec(name=config.name or "medseg-trained", network=network, labels=labels, preprocessing=pre,
                     version=config.version, modality=modality, description=config.description,
                     keep_largest=_keep_largest(config, labels))


def _keep_largest(config: TrainConfig, labels: LabelSet) -> tuple[str, ...]:
    unknown = [n for n in config.keep_largest if n not in labels.names]
    if unknown:
        raise InputError(option("keep_largest"), f"names {', '.join(unknown)}, which are not classes of the model "
                         f"({', '.join(labels.names[1:])})", "use the class names of the data's labels")
    return tuple(config.keep_largest)


def _pre_dict(pre: Preprocessing) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(pre, f.name) for f in dataclasses.fields(pre)}


def split_validation(cases: Sequence[TrainingCase], fraction: float, seed: int
                     ) -> tuple[list[TrainingCase], list[TrainingCase]]:
    """Hold out ``fraction`` of the cases (at least one when there are two or more), by seed."""
    cases = list(cases)
    if fraction <= 0 or len(cases) < 2:
        return cases, []
    n_val = min(max(1, int(round(fraction * len(cases)))), len(cases) - 1)
    order = np.random.default_rng(seed).permutation(len(cases))
    val_idx = set(order[:n_val].tolist())
    return ([c for i, c in enumerate(cases) if i not in val_idx], [c for i, c in enumerate(cases) if i in val_idx])


def load_items(train_cases, synthetic, val_cases, pre: Preprocessing, labels: LabelSet, *, augment: bool,
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None):
    """Read every case once into model space (the cache the random pipeline samples from)."""
    from medseg.training.transforms import load_case, load_label_source, prepare_item

    total = len(train_cases) + len(synthetic) + len(val_cases)
    done = 0
    train_items, synth_items, val_items = [], [], []
    for kind, group, target in (("train", train_cases, train_items), ("synthetic", synthetic, synth_items),
                                ("validation", val_cases, val_items)):
        for case in group:
            check_cancel(cancel, "medseg train")
            report(progress, done, total, f"load: {kind} case {case.name}")
            if case.image is None:
                if kind == "validation":
                    raise InputError(case.label, "a validation case needs an image", "give image/label pairs")
                item = load_label_source(case, pre, labels)
            else:
                item = load_case(case, pre, labels)
            target.append(item if kind == "validation" else prepare_item(item, pre, len(labels), augment=augment))
            done += 1
    report(progress, total, total, "load: done")
    return train_items, synth_items, val_items


def final_spec(spec: ModelSpec, config: TrainConfig, record: dict, history: list[dict], selected_epoch: int,
               parent, device: torch.device, *, seconds: float) -> ModelSpec:
    """The spec written with the weights, with the run's provenance."""
    import medseg

    selected = next((row for row in history if row["epoch"] == selected_epoch), history[-1] if history else {})
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    provenance = {
        "trained_with": f"medseg {medseg.__version__} (torch {torch.__version__})",
        "data_root": record.get("data_root"),
        "cases": record["cases"],
        "epochs": len(history) and history[-1]["epoch"],
        "selected_epoch": selected_epoch,
        "selection": config.select,
        "validation": {k: v for k, v in selected.items() if k.startswith("val_") and v is not None},
        "train_seconds": round(seconds, 1),
        "device": f"{device.type}: {hardware} ({torch.get_num_threads()} threads)" if device.type == "cpu"
        else f"{device.type}: {hardware}",
        "config": config.to_dict(),
    }
    if parent is not None:
        provenance["parent"] = {"path": parent.path, "source": parent.source, "name": parent.spec.name,
                                "version": parent.spec.version, "weights_sha256": parent.weights_sha256}
    return spec.replace(provenance={**spec.provenance, **provenance} if parent is None else provenance)
