"""``python -m medseg.phantom OUTDIR [--seed N]``: write a synthetic CT phantom to OUTDIR/phantom/."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from medseg.errors import MedsegError


def build_parser() -> argparse.ArgumentParser:
    from medseg.phantom._generate import DEFAULT_SHAPE, DEFAULT_SPACING_MM

    parser = argparse.ArgumentParser(
        prog="python -m medseg.phantom",
        description="Write a synthetic abdominal CT phantom with exact organ and lesion truth to "
                    "OUTDIR/phantom/: ct_dicom/ (DICOM series), ct.nii.gz, organs.nii.gz, "
                    "lesions.nii.gz, organs.json, truth.json, README.md. Same seed, same bytes.")
    parser.add_argument("outdir", metavar="OUTDIR", help="parent folder of the phantom/ folder to write")
    parser.add_argument("--seed", type=int, default=0, help="which phantom (default 0, the shipped sample)")
    parser.add_argument("--variation", type=float, default=1.0,
                        help="how far the seed moves anatomy, HU and noise from the nominal (0..1, default 1)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("I", "J", "K"), default=list(DEFAULT_SHAPE),
                        help="voxels along i (right to left), j (front to back), k (feet to head); "
                             "default %(default)s")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SI", "SJ", "SK"),
                        default=list(DEFAULT_SPACING_MM), help="voxel spacing in mm; default %(default)s")
    parser.add_argument("--replace", action="store_true", help="replace an existing OUTDIR/phantom folder")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from medseg.phantom import make_phantom
        from medseg.phantom._write import write_phantom

        if args.seed < 0:
            raise MedsegError("--seed", f"must be >= 0, got {args.seed}")
        if min(args.shape) < 8 or min(args.spacing) <= 0:
            raise MedsegError("--shape/--spacing", "need at least 8 voxels per axis and positive spacing")
        phantom = make_phantom(seed=args.seed, shape=args.shape, spacing_mm=args.spacing,
                               variation=args.variation)
        files = write_phantom(phantom, args.outdir, replace=args.replace)
    except MedsegError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"medseg.phantom: error: {exc}", file=sys.stderr)
        return exc.exit_code
    truth = phantom.truth
    print(f"wrote {files.folder}: {len(files.dicom_files)} DICOM slices, ct/organs/lesions .nii.gz, truth.json")
    print(f"seed {truth['seed']}: {truth['lesion_count']} lesions in {truth['lesion_components_26']} "
          f"connected components; liver {truth['organs']['liver']['volume_ml']:.1f} mL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
