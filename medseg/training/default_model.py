"""The reproducible recipe of medseg's shipped default model (``medseg/models/default/``).

::

    python -m medseg.training.default_model --work runs/default --output medseg/models/default

Data (see ``docs/model_card.md``): CT-like images generated on the fly from three real label
maps without images (AMOS case 0013; TotalSegmentator data set subjects s0327 and s0328; read
from ``../shared/data/train/labels_only``), with synthetic hypodense lesions inserted into liver,
spleen and kidneys, plus a small share of medseg phantoms of seeds 1-4 (never seed 0, the
shipped sample). The real CTs with organ labels (``totalsegmentator/example_ct*`` and
``example_ct_dicom``) are never trained on: they are the held-out test cases, used during
training only to draw the validation curve (the shipped weights are the last epoch's, not
selected on them).

Killed runs resume: run the same command again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from medseg.labels import DEFAULT_ORGANS, LabelSet

__all__ = ["DEFAULT_MODEL_LABELS", "PHANTOM_SEEDS", "PHANTOM_SEEDS_STAGE3", "label_sources", "heldout_cases",
           "phantom_cases", "recipe_config", "build_default_model", "main"]

#: The default model's classes: medseg's default organs plus a lesion class.
DEFAULT_MODEL_LABELS: LabelSet = DEFAULT_ORGANS.extended(["lesion"])

#: (label map, its value -> name table) under ``shared/data/train/labels_only``.
_LABEL_SOURCES = (
    ("amos_0013_label.nii.gz", "amos_labels.json"),
    ("totalseg_s0327_label.nii.gz", "totalseg_total_classes.json"),
    ("totalseg_s0328_label.nii.gz", "totalseg_total_classes.json"),
)

#: Phantom seeds used as extra training images (seed 0 is the shipped sample: never).
PHANTOM_SEEDS = (1, 2, 3, 4)
#: Stage 3 sees more phantoms, more often (see recipe_config).
PHANTOM_SEEDS_STAGE3 = (1, 2, 3, 4, 5, 6, 7, 8)


def _shared_data(path: str | os.PathLike | None) -> Path:
    from medseg.recipes.cases import shared_data_root

    return shared_data_root(path)


def label_sources(shared_data: str | os.PathLike | None = None):
    """The label maps images are generated from, as :class:`TrainingCase` with ``image=None``."""
    from medseg.training.datasets import TrainingCase, read_label_names

    root = _shared_data(shared_data) / "train" / "labels_only"
    cases = []
    for label, names in _LABEL_SOURCES:
        cases.append(TrainingCase(label.split("_label")[0], None, str(root / label),
                                  read_label_names(root / names), source="labels-only"))
    return cases


def heldout_cases(shared_data: str | os.PathLike | None = None):
    """The real CTs with TotalSegmentator labels that the default model is tested on."""
    from medseg.training.datasets import TrainingCase, read_label_names

    root = _shared_data(shared_data) / "totalsegmentator"
    names = read_label_names(_shared_data(shared_data) / "train" / "labels_only" / "totalseg_total_classes.json")
    return [
        TrainingCase("example_ct", str(root / "example_ct.nii.gz"),
                     str(root / "example_seg_fast_force_split.nii.gz"), names, source="heldout"),
        TrainingCase("example_ct_dicom", str(root / "example_ct_dicom"),
                     str(root / "example_seg_dicom.nii.gz"), names, source="heldout"),
    ]


def phantom_cases(cache: str | os.PathLike, seeds=PHANTOM_SEEDS):
    """Phantoms of ``seeds`` written once to ``cache`` as image/label pairs (lesions = class 11)."""
    import json

    import numpy as np

    from medseg.io import save_volume, write_text_atomic
    from medseg.phantom import GENERATOR_VERSION, make_phantom
    from medseg.training.datasets import TrainingCase

    if 0 in seeds:
        raise ValueError("phantom seed 0 is the shipped sample and must not be trained on")
    cache = Path(cache) / f"phantoms-v{GENERATOR_VERSION}"
    lesion = DEFAULT_MODEL_LABELS.value_of("lesion")
    names = {int(k): v for k, v in DEFAULT_MODEL_LABELS.to_dict().items()}
    cases = []
    for seed in seeds:
        image, label = cache / f"seed{seed}_image.nii.gz", cache / f"seed{seed}_label.nii.gz"
        if not label.is_file():
            ph = make_phantom(seed=seed)
            target = ph.organs.array.astype(np.uint8).copy()
            target[ph.lesions.array > 0] = lesion
            save_volume(ph.ct, image)
            save_volume(ph.organs.with_array(target), label)
        cases.append(TrainingCase(f"phantom_seed{seed}", str(image), str(label), names, source="phantom"))
    write_text_atomic(cache / "labels.json", json.dumps({str(k): v for k, v in names.items()}) + "\n")
    return cases


def recipe_config(*, epochs: int = 40, steps_per_epoch: int = 50, num_workers: int = 1,
                  learning_rate: float = 1e-3, stage: int = 1):
    """The training settings of the shipped model (3 mm, 64^3 windows, UNet 16-256)."""
    from medseg.training.config import TrainConfig
    from medseg.training.synth import SynthesisSettings

    return TrainConfig(
        arch="unet", size="small", spacing_mm=(3.0, 3.0, 3.0), roi_size=(64, 64, 64), modality="CT",
        epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=2, num_samples=2,
        learning_rate=learning_rate, weight_decay=1e-4, warmup_fraction=0.03, val_every=4, select="last",
        # Stage 3 shows the phantoms (the only images with real lesion masks) in 30 % of the samples.
        synthetic_fraction=0.7 if stage == 3 else 0.9,
        # Stage 1 left the rare lesion class at zero (its softmax saturated); stages 2 and 3 insert
        # lesions into every synthetic sample and weight their cross-entropy.
        lesion_probability=0.5 if stage == 1 else 1.0, lesion_count=(1, 4) if stage == 1 else (2, 5),
        ce_class_weights=None if stage == 1 else {"lesion": 10.0},
        synthesis=SynthesisSettings(random_intensity_probability=0.1),
        seed=20261124, num_workers=num_workers, half_precision_weights=True,
        name="medseg-default-ct-3mm", version="1.0.0",
        # Each of these is one connected organ: stray islands elsewhere are removed at inference.
        keep_largest=("liver", "spleen", "kidney_right", "kidney_left", "stomach", "pancreas", "aorta",
                      "lung_right", "lung_left"),
        description="Abdominal/lower-chest CT organs and lesions at 3 mm, trained on CPU from images "
                    "generated from real label maps (see docs/model_card.md)")


def build_default_model(work: str | os.PathLike, output: str | os.PathLike | None = None, *,
                        shared_data: str | os.PathLike | None = None, config=None, phantoms: bool = True,
                        parent: str | None = None, phantom_seeds=PHANTOM_SEEDS, progress=None, cancel=None,
                        log=None):
    """Train (or resume) the default model in ``work`` and copy it to ``output``.

    ``parent`` continues from an earlier stage's model folder (same classes, model space and data;
    a fresh warm-up and cosine schedule at ``config.learning_rate``).
    """
    from medseg.training.loop import train

    config = config or recipe_config()
    work = Path(work)
    sources = label_sources(shared_data)
    real = phantom_cases(work.parent / f"{work.name}-cache", phantom_seeds) if phantoms else []
    result = train(real, work, config=config, labels=DEFAULT_MODEL_LABELS, synthetic_sources=sources,
                   validation_data=heldout_cases(shared_data), parent=parent, progress=progress, cancel=cancel,
                   log=log)
    if output is not None:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        for name in ("medseg-model.json", "weights.safetensors", "metrics.csv", "curves.png"):
            shutil.copy2(work / name, output / name)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medseg.training.default_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="run folder (checkpoints; resumed if present)")
    parser.add_argument("--output", help="where to copy the finished model (e.g. medseg/models/default)")
    parser.add_argument("--shared-data", help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--parent", help="continue from this model folder (a second stage)")
    parser.add_argument("--stage", type=int, choices=(1, 2, 3), default=1,
                        help="recipe stage: 2 adds more lesions and weights their loss, 3 also shows "
                             "phantoms 1-8 in 30 %% of the samples (default: 1)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default: 1e-3)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--no-phantoms", action="store_true", help="train on the label maps only")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's choice; 1 is fastest on a busy shared CPU)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    from medseg.progress import tqdm_progress

    config = recipe_config(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, num_workers=args.num_workers,
                           learning_rate=args.lr, stage=args.stage)
    with tqdm_progress(disable=not sys.stderr.isatty()) as bar:
        result = build_default_model(args.work, args.output, shared_data=args.shared_data, config=config,
                                     phantoms=not args.no_phantoms, parent=args.parent, progress=bar,
                                     phantom_seeds=PHANTOM_SEEDS_STAGE3 if args.stage == 3 else PHANTOM_SEEDS,
                                     log=lambda line: print(line, flush=True))
    print(result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
