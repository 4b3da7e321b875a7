"""Training settings and results as plain data (what ``training.json`` in a model folder records)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from medseg.training.synth import SynthesisSettings

__all__ = ["TrainConfig", "TrainResult", "RESUME_KEYS"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train (every field has a default that works on a CPU).

    Model space
        ``spacing_mm`` (mm, isotropic or 3 values; ``None``: the parent model's, else 1.5 mm),
        ``roi_size`` (voxels of a training crop and of an inference window), ``modality``
        ("CT" uses a -1000..1000 HU window, "MR" a z-score).
    Network
        ``arch`` (unet, segresnet, dynunet, swinunetr) and ``size`` (tiny, small, base) through
        :func:`medseg.models.networks.default_network`, or explicit ``network_kwargs``.
    Optimisation
        ``epochs`` x ``steps_per_epoch`` steps of ``batch_size`` crops (``num_samples`` crops
        per loaded case), AdamW with ``learning_rate`` (default :data:`LEARNING_RATE`, or
        :data:`FINETUNE_LEARNING_RATE` when fine-tuning) and ``weight_decay``, linear warm-up over
        ``warmup_fraction`` of the steps then cosine decay to zero, Dice + cross-entropy.
    Validation
        ``val_fraction`` of the image cases (at least one when there are two or more), every
        ``val_every`` epochs, sliding-window over the whole volume, per-class Dice. ``select``:
        "best" ships the weights of the best validation epoch, "last" the final ones.
    Data
        ``synthetic_fraction`` of the samples come from label maps without images (when
        both kinds are given; ``None``: in proportion to the number of cases);
        ``lesion_probability``: chance that a synthetic sample gets inserted lesions (when the
        model has a ``lesion`` class), ``lesion_count`` of them; ``ce_class_weights``: class name
        -> cross-entropy weight (default 1).
    Runtime
        ``device`` ("auto", "cpu", "cuda"), ``amp`` (float16 autocast on CUDA), ``cpu_bf16``
        (bfloat16 autocast on CPU), ``num_workers`` (data loading processes), ``seed``.
    """

    arch: str = "unet"
    size: str = "small"
    network_kwargs: dict[str, Any] | None = None
    spacing_mm: tuple[float, float, float] | None = None
    roi_size: tuple[int, int, int] = (96, 96, 96)
    modality: str | None = None
    epochs: int = 50
    steps_per_epoch: int | None = None
    batch_size: int = 2
    num_samples: int = 2
    learning_rate: float | None = None
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.03
    val_fraction: float = 0.2
    val_every: int = 1
    select: str = "best"
    synthetic_fraction: float | None = None
    lesion_probability: float = 0.5
    lesion_count: tuple[int, int] = (1, 4)
    ce_class_weights: dict[str, float] | None = None
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    cpu_bf16: bool = False
    num_workers: int = 0
    half_precision_weights: bool = False
    name: str = ""
    version: str = "1.0.0"
    description: str = ""
    #: Classes that are one connected organ each; inference keeps their largest component
    #: (written to the model's spec; empty: no clean-up, or the parent model's when fine-tuning).
    keep_largest: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_largest", tuple(str(n) for n in self.keep_largest))
        if self.spacing_mm is not None:
            spacing = self.spacing_mm
            spacing = (float(spacing),) * 3 if isinstance(spacing, (int, float)) else tuple(float(s) for s in spacing)
            object.__setattr__(self, "spacing_mm", spacing)
        roi = self.roi_size
        roi = (int(roi),) * 3 if isinstance(roi, int) else tuple(int(s) for s in roi)
        object.__setattr__(self, "roi_size", roi)
        object.__setattr__(self, "lesion_count", tuple(int(n) for n in self.lesion_count))
        if isinstance(self.synthesis, dict):
            object.__setattr__(self, "synthesis", SynthesisSettings(**{
                k: tuple(v) if isinstance(v, list) else v for k, v in self.synthesis.items()}))
        problems = []
        if self.spacing_mm is not None and not all(math.isfinite(v) and v > 0 for v in self.spacing_mm):
            problems.append(f"spacing_mm must be positive numbers of mm, got {list(self.spacing_mm)}")
        if self.learning_rate is not None and not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"learning_rate must be a positive number, got {self.learning_rate}")
        if min(self.roi_size) < 1:
            problems.append(f"roi_size must be positive, got {list(self.roi_size)}")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.num_samples < 1:
            problems.append("batch_size and num_samples must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.select not in ("best", "last"):
            problems.append(f"select must be 'best' or 'last', got {self.select!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            problems.append(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key, value in list(data.items()):
            if isinstance(value, tuple):
                data[key] = list(value)
        data["synthesis"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data["synthesis"].items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


#: AdamW learning rate of a model trained from scratch.
LEARNING_RATE = 1e-3
#: ... and of fine-tuning a trained model: its weights are not thrown far from where they were
#: (at 1e-3 one step wiped the default model's liver on a real slab).
FINETUNE_LEARNING_RATE = 1e-4


def resolve_learning_rate(config: TrainConfig, *, fine_tuning: bool) -> TrainConfig:
    """``config`` with its learning rate filled in by the policy above when it was not set."""
    if config.learning_rate is not None:
        return config
    return config.replace(learning_rate=FINETUNE_LEARNING_RATE if fine_tuning else LEARNING_RATE)


#: Settings that must be equal for a run to resume from a checkpoint (the others, such as
#: ``device`` or ``num_workers``, may change between the interrupted and the resumed run).
RESUME_KEYS = ("arch", "size", "network_kwargs", "spacing_mm", "roi_size", "modality", "epochs",
               "steps_per_epoch", "batch_size", "num_samples", "learning_rate", "weight_decay",
               "warmup_fraction", "val_fraction", "val_every", "synthetic_fraction", "lesion_probability",
               "lesion_count", "ce_class_weights", "synthesis", "seed")


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or resumed and finished) training run produced."""

    model_dir: str
    epochs_completed: int
    resumed_from_epoch: int
    selected_epoch: int
    best_metric: float | None
    last_metrics: dict[str, Any]
    labels: dict[str, str]
    n_train_cases: int
    n_val_cases: int
    seconds: float
