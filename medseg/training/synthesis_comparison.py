"""Which training images work best? A short, reproducible comparison on the held-out real CT.

::

    python -m medseg.training.synthesis_comparison --work results/synthesis_comparison

Trains the same small network for the same number of steps on four kinds of training images and
scores each on the real CTs with medseg's own inference and evaluation
(:func:`medseg.training.heldout.evaluate_heldout`):

``ct_like``
    CT-like images from the three label maps (tissue HU ranges, phases, body, scanner effects).
``synthseg``
    The same label maps with fully random intensities per structure (SynthSeg).
``mixed``
    CT-like with 10 % SynthSeg samples (the default model's recipe).
``mixed_plus_real``
    ``mixed`` plus the real ``example_ct_dicom`` slab as 20 % of the samples; it is then a training
    case, so only ``example_ct`` is held out for this variant.

The runs are deliberately small (a 8-128 channel UNet, 48^3 windows, 400 steps) so the comparison
fits on a CPU; they rank the options, they do not reach the default model's quality.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["VARIANTS", "run_comparison", "main"]

VARIANTS = ("ct_like", "synthseg", "mixed", "mixed_plus_real")


def _config(variant: str, steps: int, epochs: int):
    from medseg.training.config import TrainConfig
    from medseg.training.synth import SynthesisSettings

    random_share = {"ct_like": 0.0, "synthseg": 1.0}.get(variant, 0.1)
    return TrainConfig(
        arch="unet", network_kwargs={"channels": [8, 16, 32, 64, 128], "strides": [2, 2, 2, 2],
                                     "num_res_units": 1, "norm": "INSTANCE"},
        spacing_mm=(3.0, 3.0, 3.0), roi_size=(48, 48, 48), modality="CT", epochs=epochs,
        steps_per_epoch=steps, batch_size=2, num_samples=2, val_fraction=0.0, select="last",
        synthetic_fraction=0.8 if variant == "mixed_plus_real" else None, lesion_probability=0.0,
        synthesis=SynthesisSettings(random_intensity_probability=random_share), seed=7,
        name=f"comparison-{variant}")


def run_comparison(work: str | Path, *, variants=VARIANTS, steps: int = 50, epochs: int = 8,
                   shared_data=None, log=print) -> dict:
    """Train and score each variant; returns ``{variant: {case: {class: dice}}}`` and writes it."""
    from medseg.io import write_text_atomic
    from medseg.labels import DEFAULT_ORGANS
    from medseg.training.default_model import heldout_cases, label_sources
    from medseg.training.heldout import evaluate_heldout
    from medseg.training.loop import train

    work = Path(work)
    results: dict = {}
    for variant in variants:
        real = [c for c in heldout_cases(shared_data) if c.name == "example_ct_dicom"] \
            if variant == "mixed_plus_real" else []
        folder = work / variant
        train(real, folder, config=_config(variant, steps, epochs), labels=DEFAULT_ORGANS,  # no lesion class
              synthetic_sources=label_sources(shared_data), validation_data=[], log=log)
        summary = evaluate_heldout(str(folder), folder / "heldout", shared_data=shared_data, sample=None, log=log)
        results[variant] = {case: {name: row["dice"] for name, row in entry["classes"].items()}
                            | {"mean_dice_present": entry["mean_dice_present"]}
                            for case, entry in summary["cases"].items()}
        log(f"{variant}: example_ct mean Dice {results[variant]['example_ct']['mean_dice_present']:.3f}")
    write_text_atomic(work / "comparison.json", json.dumps(results, indent=2, default=str) + "\n")
    write_text_atomic(work / "comparison.md", markdown(results))
    return results


def markdown(results: dict) -> str:
    variants = list(results)
    classes = [k for k in next(iter(results.values()))["example_ct"] if k != "mean_dice_present"]
    lines = ["| example_ct Dice | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for name in classes + ["mean_dice_present"]:
        cells = []
        for v in variants:
            value = results[v]["example_ct"].get(name)
            cells.append("" if value is None or value != value else f"{value:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| example_ct_dicom mean Dice | " + " | ".join(
        ("(trained on) " if v == "mixed_plus_real" else "") + f"{results[v]['example_ct_dicom']['mean_dice_present']:.3f}"
        for v in variants) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medseg.training.synthesis_comparison", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--shared-data")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    run_comparison(args.work, variants=args.variants, steps=args.steps_per_epoch, epochs=args.epochs,
                   shared_data=args.shared_data)
    print((Path(args.work) / "comparison.md").read_text())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
