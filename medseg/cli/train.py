"""``medseg train DATA -o MODEL_DIR``: train or fine-tune a model; resumes an interrupted run."""

from __future__ import annotations

import argparse
import sys

HELP = "train or fine-tune a segmentation model on DATA (MSD/nnU-Net folder, image/label pairs, corrected cases)"

_EPILOG = """\
DATA layouts (see docs/training.md):
  dataset.json + imagesTr/ + labelsTr/      Medical Segmentation Decathlon or nnU-Net v2
  CASE/{image,labels}.nii.gz + labels.json  cases corrected in medseg's napari plugin
  images/ + labels/ (same names), or X_image.nii.gz + X_label.nii.gz, with labels.json

Run the same command again to resume after the last finished epoch (e.g. after Ctrl-C).

examples:
  medseg train my_cases/ -o my_model --from default --epochs 20
  medseg train Task09_Spleen/ -o spleen_model --arch unet --spacing 1.5 --epochs 100 --device cuda
"""


def _spacing(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or any(not (p > 0 and p < float("inf")) for p in parts):
        raise argparse.ArgumentTypeError(f"spacing must be one or three positive numbers in mm, got {text!r}")
    return tuple(parts)  # type: ignore[return-value]


def _roi(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or any(p < 16 for p in parts):
        raise argparse.ArgumentTypeError(f"roi must be one or three sizes >= 16 voxels, got {text!r}")
    return tuple(parts)  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("data", metavar="DATA", help="training data folder")
    parser.add_argument("-o", "--output", metavar="MODEL_DIR", required=True,
                        help="model folder to write (resumed if it holds the same run)")
    parser.add_argument("--from", dest="parent", metavar="MODEL_OR_BUNDLE",
                        help="fine-tune from 'default', a medseg model folder or a MONAI bundle; its label "
                             "values are kept and new class names are added")
    parser.add_argument("--arch", choices=("unet", "segresnet", "dynunet", "swinunetr"), default="unet",
                        help="network for a new model (default: unet; ignored with --from)")
    parser.add_argument("--size", choices=("tiny", "small", "base"), default="small",
                        help="network width/depth (default: small)")
    parser.add_argument("--spacing", type=_spacing, metavar="MM",
                        help="model voxel spacing in mm, one value or i,j,k (default: the parent's, else 1.5)")
    parser.add_argument("--roi", type=_roi, default=(96, 96, 96), metavar="VOXELS",
                        help="training crop and inference window, voxels (default: 96)")
    parser.add_argument("--epochs", type=int, default=50, metavar="N", help="epochs (default: 50)")
    parser.add_argument("--steps-per-epoch", type=int, metavar="N",
                        help="optimiser steps per epoch (default: one per training case, at least 25)")
    parser.add_argument("--batch-size", type=int, default=2, metavar="N", help="crops per step (default: 2)")
    parser.add_argument("--lr", type=float, help="AdamW learning rate (default: 1e-3, or 1e-4 with --from: a "
                        "trained model's weights are not thrown far from where they were)")
    parser.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="share of cases held out for validation (default: 0.2)")
    parser.add_argument("--val-every", type=int, default=1, metavar="N", help="validate every N epochs (default: 1)")
    parser.add_argument("--select", choices=("best", "last"), default="best",
                        help="ship the best validation epoch or the last one (default: best)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to train (default: auto = cuda if available)")
    parser.add_argument("--num-workers", type=int, default=0, metavar="N", help="data loading processes (default: 0)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy machine)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    parser.add_argument("--keep-largest", type=lambda text: tuple(n.strip() for n in text.split(",") if n.strip()),
                        default=(), metavar="NAME,NAME",
                        help="classes that are one connected organ each: inference keeps only their largest "
                             "component (e.g. liver,spleen)")
    parser.add_argument("--name", default="", help="model name written into the spec")
    parser.add_argument("--restart", action="store_true", help="discard a previous run in MODEL_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from medseg.errors import InputError
    from medseg.progress import tqdm_progress
    from medseg.training import TrainConfig, discover_cases, train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    found = discover_cases(args.data)
    print(f"{args.data}: {len(found.cases)} case(s), {found.layout} layout; "
          f"classes {', '.join(found.class_names[1:]) or '(none)'}", flush=True)
    try:
        config = TrainConfig(arch=args.arch, size=args.size, spacing_mm=args.spacing, roi_size=args.roi,
                             epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                             num_samples=min(2, args.batch_size),
                             learning_rate=args.lr,
                             val_fraction=args.val_fraction, val_every=args.val_every, select=args.select,
                             device=args.device, num_workers=args.num_workers, seed=args.seed,
                             half_precision_weights=args.half, name=args.name, modality=found.modality,
                             keep_largest=args.keep_largest)
    except ValueError as exc:
        raise InputError("medseg train", str(exc), "fix the option") from exc
    with tqdm_progress(disable=args.quiet or not sys.stderr.isatty()) as bar:
        result = train(found, args.output, config=config, initial=args.parent, restart=args.restart,
                       progress=bar, log=lambda line: print(line, flush=True))
    print(f"trained {result.epochs_completed} epoch(s) on {result.n_train_cases} case(s) "
          f"({result.n_val_cases} for validation) in {result.seconds:.0f} s; "
          f"segment with: medseg segment IMAGE --model {result.model_dir}")
    return 0
