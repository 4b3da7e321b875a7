"""``train()``: from training cases to a medseg model folder, resumable after a kill.

The output folder is at once the model folder (``medseg-model.json`` + ``weights.safetensors``,
loadable by ``medseg segment --model``) and the record of the run::

    MODEL_DIR/
      medseg-model.json, weights.safetensors   the selected weights (best or last epoch)
      training.json                            settings, classes and cases of the run
      metrics.csv, curves.png                  one row per epoch; loss and Dice curves
      checkpoints/                             last and best epoch (see checkpoints.py)

Every epoch ends with a checkpoint, so a killed run loses at most the epoch in progress; running
the same command again resumes after the last finished epoch. Each epoch draws its samples from
a seed derived from ``(seed, epoch)``, so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.device import resolve_device
from medseg.errors import InputError, option
from medseg.io import write_text_atomic
from medseg.labels import LabelSet
from medseg.progress import CancelToken, ProgressCallback, check_cancel, report
from medseg.training import checkpoints as ckpt
from medseg.training.config import RESUME_KEYS, TrainConfig, TrainResult, resolve_learning_rate
from medseg.training.datasets import DatasetDescription, TrainingCase, discover_cases
from medseg.training.history import CURVES_FILE, METRICS_FILE, plot_curves, write_metrics_csv
from medseg.training.losses import MarginalDiceCELoss
from medseg.training.setup import (build_model_spec, epoch_seed, load_items, model_labels_for, seed_everything,
                                   split_validation)
from medseg.training.validation import validate

__all__ = ["train", "TRAINING_FILE"]

TRAINING_FILE = "training.json"


def _cases(data: Any) -> tuple[list[TrainingCase], str, str | None]:
    """(cases, root folder, modality the data declares) of any accepted ``data``."""
    if data is None:
        return [], "", None
    if isinstance(data, (str, os.PathLike)):
        data = discover_cases(data)
    if isinstance(data, DatasetDescription):
        return list(data.cases), data.root, data.modality
    return list(data), "", None


def _check_output(out: Path, record: dict[str, Any], *, restart: bool) -> bool:
    """Refuse a foreign or incompatible folder (writes nothing); True when a run can resume."""
    record_path = out / TRAINING_FILE
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder", "choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not record_path.is_file():
        raise InputError(out, "is not empty and is not a medseg training folder",
                         "choose a new output folder; medseg will not write into it")
    if restart or not record_path.is_file() or not (out / ckpt.CHECKPOINT_DIR / "last.json").is_file():
        return False  # nothing finished yet: the run starts afresh
    previous = json.loads(record_path.read_text(encoding="utf-8"))
    changed = [k for k in RESUME_KEYS if previous.get("config", {}).get(k) != record["config"].get(k)]
    if previous.get("labels") != record["labels"]:
        changed.append("classes")
    if previous.get("cases") != record["cases"]:
        changed.append("training cases")
    if changed:
        raise InputError(out, f"holds a training run with other settings ({', '.join(changed)})",
                         f"use another output folder, or pass {option('restart', True)} to discard that run")
    return True


def _start_output(out: Path, record: dict[str, Any], *, resume: bool) -> None:
    """Create the folder and its record; a fresh start removes an earlier run's checkpoints."""
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        shutil.rmtree(out / ckpt.CHECKPOINT_DIR, ignore_errors=True)
        write_text_atomic(out / TRAINING_FILE, json.dumps(record, indent=2) + "\n")


def _publish(out: Path, spec, state: dict[str, torch.Tensor], *, half: bool) -> None:
    """Write ``state`` as the folder's model (weights first, then the spec that names their sha256)."""
    from medseg.models import store

    class _Holder:
        def state_dict(self) -> dict[str, torch.Tensor]:
            return state

    tmp = Path(tempfile.mkdtemp(prefix=".publish-medseg-tmp-", dir=out))
    try:
        store.save_model(spec, _Holder(), tmp / "model", half=half)
        os.replace(tmp / "model" / store.WEIGHTS_FILE, out / store.WEIGHTS_FILE)
        os.replace(tmp / "model" / store.SPEC_FILE, out / store.SPEC_FILE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _lr_lambda(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(round(total_steps * warmup_fraction)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _plain(tensor: Any) -> torch.Tensor:
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def train(
    data: Any,
    output: str | os.PathLike,
    *,
    config: TrainConfig = TrainConfig(),
    labels: LabelSet | None = None,
    initial: Any = None,
    parent: Any = None,
    synthetic_sources: Sequence[TrainingCase] = (),
    validation_data: Any = None,
    restart: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or fine-tune) a segmentation network and write a medseg model folder.

    Parameters
    ----------
    data : path, DatasetDescription or sequence of TrainingCase
        Image/label cases (see :func:`medseg.training.discover_cases`); may be None when
        ``synthetic_sources`` are given.
    output : path
        The model folder to write (see the module docstring). If it holds a run with the same
        settings, training resumes after its last finished epoch.
    config : TrainConfig
    labels : LabelSet, optional
        The model's classes; default: the parent's extended by the data's, or the data's.
    initial : str or path, optional
        ``"default"``, a medseg model folder or a MONAI bundle to fine-tune from. Fine-tuning uses
        :data:`~medseg.training.config.FINETUNE_LEARNING_RATE` unless ``config.learning_rate`` is
        set (at 1e-3 one step wiped the default model's liver on a real slab). ``parent`` is the
        same argument under its earlier name.
    synthetic_sources : TrainingCase with ``image=None``
        Label maps that images are generated from (:mod:`medseg.training.synth`).
    validation_data : path, DatasetDescription or cases, optional
        Fixed validation cases; default: ``config.val_fraction`` of the image cases.
    restart : bool
        Discard a previous run in ``output`` instead of resuming it.
    progress, cancel
        See :mod:`medseg.progress`. A cancelled run keeps every finished epoch.
    log : callable, optional
        Receives one human-readable line per event (epoch summaries, resume).

    Returns
    -------
    TrainResult
    """
    started = time.time()
    say = log or (lambda line: None)
    out = Path(output)
    if initial is not None and parent is not None and str(initial) != str(parent):
        raise InputError("train", f"{option('initial')} and {option('parent')} name two different models",
                         "give one of them")
    parent = initial if initial is not None else parent
    config = resolve_learning_rate(config, fine_tuning=bool(parent))
    cases, root, modality = _cases(data)
    config = config.replace(modality=config.modality or modality or "CT")
    synthetic = list(synthetic_sources)
    if not cases and not synthetic:
        raise InputError(root or "DATA", "holds no training cases", "add images with label maps")
    parent_model = None
    if parent:
        from medseg.training.finetune import load_parent

        parent_model = load_parent(parent)
    model_labels = model_labels_for(cases + synthetic, labels, parent_model)
    spec = build_model_spec(config, model_labels, parent_model, cases)
    pre = spec.preprocessing
    if validation_data is not None:
        train_cases, val_cases = cases, _cases(validation_data)[0]
    else:
        train_cases, val_cases = split_validation(cases, config.val_fraction, config.seed)
    record = {"config": config.to_dict(), "labels": model_labels.to_dict(), "spec": spec.to_dict(),
              "parent": parent or None, "data_root": root,
              "cases": {"train": [c.name for c in train_cases], "validation": [c.name for c in val_cases],
                        "synthetic": [c.name for c in synthetic]},
              "case_provenance": {c.name: c.provenance for c in cases if c.provenance}}
    resume = _check_output(out, record, restart=restart)

    device = resolve_device(config.device)
    seed_everything(config.seed)
    from medseg.models.networks import build_network

    network = build_network(spec.network, len(model_labels))
    if parent_model is not None:
        from medseg.training.finetune import transfer_weights

        grown = transfer_weights(network, parent_model.state, len(parent_model.spec.labels), parent or "")
        say(f"fine-tuning from {parent} ({parent_model.source}); "
            f"{len(model_labels) - len(parent_model.spec.labels)} new class(es)"
            + (f", {len(grown)} output tensor(s) grown" if grown else ""))
    network.to(device).train()

    train_items, synth_items, val_items = load_items(train_cases, synthetic, val_cases, pre, model_labels,
                                                     augment=True, progress=progress, cancel=cancel)
    _start_output(out, record, resume=resume)
    from medseg.training.sampling import make_loader, steps_for

    steps_per_epoch = config.steps_per_epoch or steps_for(len(train_items) + len(synth_items), config)
    total_steps = config.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, config.warmup_fraction))
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    autocast_dtype = torch.float16 if use_amp else (torch.bfloat16 if config.cpu_bf16 and device.type == "cpu" else None)
    weights = None
    if config.ce_class_weights:
        unknown = [n for n in config.ce_class_weights if n not in model_labels.names]
        if unknown:
            raise InputError("ce_class_weights", f"names classes the model does not have ({', '.join(unknown)})",
                             f"use names of {', '.join(model_labels.names)}")
        weights = torch.tensor([float(config.ce_class_weights.get(n, 1.0)) for n in model_labels.names])
    loss_fn = MarginalDiceCELoss(class_weights=weights)

    history: list[dict[str, Any]] = []
    best_metric: float | None = None
    best_epoch = 0
    start_epoch = 1
    resumed_from = 0
    found = ckpt.load_checkpoint(out) if resume else None
    if found is not None:
        network.load_state_dict(found.model_state)
        optimizer.load_state_dict(found.state["optimizer"])
        scheduler.load_state_dict(found.state["scheduler"])
        scaler.load_state_dict(found.state["scaler"])
        ckpt.restore_rng_state(found.state["rng"])
        history = list(found.state["history"])
        best_metric = found.state.get("best_metric")
        best_epoch = int(found.state.get("best_epoch", 0))
        start_epoch = found.epoch + 1
        resumed_from = found.epoch
        say(f"resuming {out} after epoch {found.epoch} of {config.epochs}")

    from medseg.training.transforms import training_transforms

    lesion = next((c for c, n in enumerate(model_labels.names) if n == "lesion"), None)
    transform = training_transforms(pre, len(model_labels), num_samples=config.num_samples,
                                    synthesis=config.synthesis,
                                    lesion_channel=lesion if synth_items else None,
                                    lesion_probability=config.lesion_probability, lesion_count=config.lesion_count)
    step = (start_epoch - 1) * steps_per_epoch
    for epoch in range(start_epoch, config.epochs + 1):
        check_cancel(cancel, "medseg train")
        epoch_started = time.time()
        seed = epoch_seed(config.seed, epoch)
        seed_everything(seed)
        loader = make_loader(train_items, synth_items, transform, config, steps_per_epoch, seed)
        losses = []
        for batch in loader:
            check_cancel(cancel, "medseg train")
            # Plain tensors: MONAI's MetaTensor would route every network op through
            # __torch_function__ (measured 10x slower on small CPU batches).
            images = _plain(batch["image"]).to(device, non_blocking=True)
            target = _plain(batch["label"]).to(device, non_blocking=True)
            annotated = _plain(batch["annotated"]).to(device)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                logits = network(images)
            loss = loss_fn(logits, target, annotated)
            if not torch.isfinite(loss):
                raise InputError("medseg train", f"the loss became {loss.item()} at epoch {epoch}",
                                 "lower the learning rate, or check the images for extreme values")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            losses.append(float(loss.detach()))
            report(progress, len(losses), steps_per_epoch,
                   f"train: epoch {epoch}/{config.epochs} loss {np.mean(losses[-20:]):.3f}")
        row: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)),
                               "lr": float(scheduler.get_last_lr()[0]),
                               "epoch_seconds": round(time.time() - epoch_started, 1), "val_mean_dice": None}
        if val_items and (epoch % config.val_every == 0 or epoch == config.epochs):
            row.update(validate(network, val_items, model_labels, pre, device=device,
                                autocast_dtype=autocast_dtype, progress=progress, cancel=cancel))
        history.append(row)
        state_now = {k: v.detach().to("cpu").clone() for k, v in network.state_dict().items()}
        metric = row.get("val_mean_dice")
        improved = metric is not None and not math.isnan(metric) and (best_metric is None or metric > best_metric)
        if improved:
            best_metric, best_epoch = float(metric), epoch
            ckpt.save_best(out, epoch, state_now, best_metric)
        ckpt.save_checkpoint(out, epoch, state_now, {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": ckpt.rng_state(), "history": history,
            "best_metric": best_metric, "best_epoch": best_epoch, "step": step})
        write_metrics_csv(history, out / METRICS_FILE)
        plot_curves(history, out / CURVES_FILE, title=f"{spec.name}: {len(train_items)} image case(s), "
                    f"{len(synth_items)} synthetic source(s)")
        say(f"epoch {epoch}/{config.epochs}: loss {row['train_loss']:.4f}"
            + (f", validation mean Dice {metric:.3f}" if metric is not None and not math.isnan(metric) else "")
            + f" ({row['epoch_seconds']:.0f} s)")

    from medseg.training.setup import final_spec

    use_best = config.select == "best" and best_metric is not None
    selected_epoch = best_epoch if use_best else (history[-1]["epoch"] if history else 0)
    if use_best:
        from safetensors.torch import load_file

        weights_path, _ = ckpt.best_weights_path(out)
        final_state = load_file(str(weights_path))
    else:
        final_state = {k: v.detach().to("cpu") for k, v in network.state_dict().items()}
    spec_out = final_spec(spec, config, record, history, selected_epoch, parent_model, device,
                          seconds=sum(r["epoch_seconds"] for r in history))
    _publish(out, spec_out, final_state, half=config.half_precision_weights)
    say(f"model written to {out} (epoch {selected_epoch}"
        + (f", validation mean Dice {best_metric:.3f})" if use_best else ")"))
    return TrainResult(model_dir=str(out), epochs_completed=history[-1]["epoch"] if history else 0,
                       resumed_from_epoch=resumed_from, selected_epoch=selected_epoch,
                       best_metric=best_metric, last_metrics=history[-1] if history else {},
                       labels=model_labels.to_dict(), n_train_cases=len(train_items) + len(synth_items),
                       n_val_cases=len(val_items), seconds=round(time.time() - started, 1))
