"""``medseg convert INPUT OUTPUT [--series UID|INDEX]``: any readable input to NIfTI/NRRD/MHA."""

from __future__ import annotations

import argparse

HELP = "convert a DICOM series, NIfTI, NRRD or MHA image to NIfTI/NRRD/MHA, keeping its geometry"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="DICOM file or folder, NIfTI, NRRD or MHA")
    parser.add_argument("output", help="output file: .nii.gz, .nii, .nrrd or .mha")
    parser.add_argument("--series", help="series index or UID (see `medseg info`) when INPUT holds several")
    parser.add_argument("--allow-gaps", action="store_true",
                        help="read a DICOM series with missing slices anyway")
    parser.add_argument("--allow-2d", action="store_true", help="accept a single 2D slice")


def run(args: argparse.Namespace) -> int:
    from medseg.io import load_volume, save_volume

    volume = load_volume(args.input, args.series, allow_gaps=args.allow_gaps, allow_2d=args.allow_2d)
    out = save_volume(volume, args.output, inputs=(args.input,))
    shape = "x".join(str(s) for s in volume.shape)
    spacing = "x".join(f"{s:.4g}" for s in volume.spacing)
    print(f"wrote {out} ({shape} voxels, {spacing} mm, {volume.orientation}, {volume.array.dtype})")
    for warning in volume.source.warnings:
        print(f"note: {warning}")
    return 0
