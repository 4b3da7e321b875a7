"""``medseg export-seg LABELS_OR_CASE --dicom SOURCE -o seg.dcm``: labels (and lesions) as a DICOM SEG.

A thin wrapper over :func:`medseg.export.dicom_seg.export_seg` (a label file) and
:func:`~medseg.export.dicom_seg.export_case_seg` (a case folder: its labels, lesions and
provenance, and its DICOM input when ``--dicom`` is left out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "write labels and lesions as a DICOM SEG referencing the source DICOM series (BINARY or LABELMAP)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", metavar="LABELS_OR_CASE",
                        help="label map (NIfTI/NRRD/MHA with its labels.json) or a case folder")
    parser.add_argument("--dicom", metavar="SOURCE",
                        help="the DICOM series the labels were made on (default for a case: its input)")
    parser.add_argument("--series", help="series index or UID in SOURCE when it holds several (see `medseg info`)")
    parser.add_argument("--lesions", metavar="LESIONS", help="lesion instance map on the same grid: one segment each "
                        "(default for a case: its lesions)")
    parser.add_argument("-o", "--output", required=True, help="the SEG file to write, e.g. seg.dcm")
    parser.add_argument("--labelmap", action="store_true",
                        help="write a LABELMAP SEG (DICOM 2024; smaller, few viewers read it yet) instead of BINARY")
    parser.add_argument("--compression", choices=("deflate", "rle", "none"),
                        help="lossless: deflate (default), rle (LABELMAP only) or none")
    parser.add_argument("--algorithm", metavar="NAME[:VERSION]",
                        help="the program that made LABELS, when it has no medseg provenance (default: MANUAL)")
    parser.add_argument("--allow-gaps", action="store_true", help="accept a source series with missing slices")


def _provenance_beside(labels: Path) -> dict | None:
    """``provenance.json`` that ``medseg segment`` wrote beside its labels (names the model)."""
    candidate = labels.parent / "provenance.json"
    try:
        data = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("model"), dict) else None


def run(args: argparse.Namespace) -> int:
    from medseg.case import is_case
    from medseg.cli._options import cli_flag
    from medseg.errors import MedsegError
    from medseg.export._seg_source import read_source
    from medseg.export.dicom_seg import export_case_seg, export_seg
    from medseg.io import load_volume

    options = {"segmentation_type": "LABELMAP" if args.labelmap else "BINARY"}
    if args.compression:
        options["compression"] = args.compression
    if args.algorithm:
        options["algorithm"] = args.algorithm
    lesions = load_volume(args.lesions) if args.lesions else None
    dicom = read_source(args.dicom, args.series, allow_gaps=args.allow_gaps) if args.dicom else None
    inputs = tuple(p for p in (args.labels, args.lesions, args.dicom) if p)
    if is_case(args.labels):
        if lesions is not None:
            options["lesions"] = lesions
        result = export_case_seg(args.labels, args.output, dicom=dicom, series=args.series, inputs=inputs, **options)
    else:
        labels = load_volume(args.labels)
        provenance = _provenance_beside(Path(args.labels))
        result = export_seg(labels, dicom, args.output, lesions=lesions, series=args.series, provenance=provenance,
                            inputs=inputs, **options)
    print(f"wrote {result.path}: {result.summary()}")
    for segment in result.segments[:12]:
        codes = segment.codes
        side = f" ({codes.modifier.meaning.lower()})" if codes.modifier else ""
        print(f"  {segment.number:>3} {segment.label:<24} {codes.type.meaning}{side} [SCT {codes.type.value}]"
              f"  {segment.voxels} voxels")
    if len(result.segments) > 12:
        print(f"  ... {len(result.segments) - 12} more")
    for warning in result.warnings:
        print(f"warning: {MedsegError('', warning).render(cli_flag)[2:]}")
    return 0
