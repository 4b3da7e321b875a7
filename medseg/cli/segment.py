"""``medseg segment INPUT -o OUTDIR [--model default|PATH|BUNDLE] [--device ...] [--tta] [--trust-bundle]``.

Writes ``OUTDIR/labels.nii.gz`` (class values on the input's exact grid), ``OUTDIR/labels.json``
(value -> name), ``OUTDIR/provenance.json`` (model, device, timings, geometry) and, with
``--uncertainty``, ``OUTDIR/uncertainty.nii.gz``. Every file is written atomically, and only after
inference succeeded: a failure leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "segment organs in a CT/MR volume; writes labels.nii.gz on the input's grid and labels.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="DICOM file or folder, NIfTI, NRRD or MHA")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the results")
    parser.add_argument("--model", default="default",
                        help="'default', a medseg model folder, or a MONAI bundle folder/config (default: default)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--tta", action="store_true", help="average over 8 mirrorings (8x slower, smoother)")
    parser.add_argument("--trust-bundle", action="store_true",
                        help="let a MONAI bundle run its own Python code (only for bundles you trust)")
    parser.add_argument("--series", help="series index or UID when INPUT holds several (see `medseg info`)")
    parser.add_argument("--overlap", type=float, help="window overlap in [0, 1) (default: the model's)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: fp16 autocast on CUDA, fp32 on CPU (default: auto)")
    parser.add_argument("--roi-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="window size in model voxels (default: the model's; keep the network's divisibility)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-crop", action="store_true", help="compute the whole image, not just the body")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write uncertainty.nii.gz (normalised entropy, 0..1)")
    parser.add_argument("--no-postprocess", action="store_true",
                        help="keep every island the network predicts (default: the model's clean-up, e.g. "
                             "each organ's largest connected component)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _output_paths(outdir: Path, uncertainty: bool) -> dict[str, Path]:
    paths = {"labels": outdir / "labels.nii.gz", "names": outdir / "labels.json",
             "provenance": outdir / "provenance.json"}
    if uncertainty:
        paths["uncertainty"] = outdir / "uncertainty.nii.gz"
    return paths


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from medseg.errors import InputError, MedsegError
    from medseg.inference import resolve_device, segment
    from medseg.io import load_volume, refuse_overwriting_inputs, save_volume, write_text_atomic
    from medseg.models import resolve_model
    from medseg.progress import tqdm_progress

    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "is a file, not a folder", "give a folder for the results with -o")
    paths = _output_paths(outdir, args.uncertainty)
    for path in paths.values():  # before any work: never write over, or into, the input
        refuse_overwriting_inputs(path, (args.input,))
    if args.threads is not None:
        if args.threads < 1:
            raise MedsegError("--threads", f"{args.threads} is not a thread count", "use 1 or more")
        import torch

        torch.set_num_threads(args.threads)
    resolve_device(args.device)
    volume = load_volume(args.input, args.series)
    model = resolve_model(args.model, trust_bundle=args.trust_bundle)
    for note in model.notes:
        print(f"note: {note}")
    with tqdm_progress(disable=args.quiet or not sys.stderr.isatty()) as bar:
        result = segment(volume, model, device=args.device, tta=args.tta, overlap=args.overlap,
                         roi_size=args.roi_size, precision=args.precision, crop=False if args.no_crop else None,
                         uncertainty=args.uncertainty, postprocess=not args.no_postprocess, progress=bar)

    for warning in result.provenance["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    save_volume(result.labels, paths["labels"], inputs=(args.input,))
    write_text_atomic(paths["names"], json.dumps(result.label_set.to_dict(), indent=2) + "\n")
    if args.uncertainty:
        save_volume(result.entropy, paths["uncertainty"], inputs=(args.input,))
    provenance = {"input": str(args.input), "outputs": {k: str(v) for k, v in paths.items()},
                  "timings_s": {k: round(v, 3) for k, v in result.timings.items()}, **result.provenance}
    write_text_atomic(paths["provenance"], json.dumps(provenance, indent=2, default=str) + "\n")

    counts = np.bincount(result.labels.array.ravel())
    present = [(int(v), int(n)) for v, n in enumerate(counts) if v != 0 and n]
    present.sort(key=lambda item: -item[1])
    shape = "x".join(str(s) for s in result.labels.shape)
    print(f"wrote {paths['labels']} ({shape}, {result.labels.orientation}, {len(present)} of "
          f"{len(result.label_set) - 1} classes found) in {result.timings['total']:.1f} s on "
          f"{result.provenance['device']}")
    voxel_ml = volume.voxel_volume_ml
    for value, n in present[:12]:
        print(f"  {value:>4} {result.label_set.name_of(value):<28} {n * voxel_ml:10.1f} mL")
    if len(present) > 12:
        print(f"  ... {len(present) - 12} more (see {paths['names']})")
    return 0
