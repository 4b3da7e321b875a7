"""``medseg import-seg SEG -o labels.nii.gz [--dicom SOURCE]``: a DICOM SEG back to label maps.

A thin wrapper over :func:`medseg.io._dicom_seg.read_seg`. With ``-o X.nii.gz`` (or .nrrd/.mha)
it writes the class map there with its names (``X.json``) and viewer colour tables (``X.ctbl``,
``X.itksnap.txt``), lesion instances to ``X_lesions.nii.gz`` and, with ``--split-overlapping``,
further maps to ``X_2.nii.gz``, ...; with ``-o FOLDER`` it writes a case folder (kind "import").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HELP = "read a DICOM SEG (BINARY, FRACTIONAL, LABELMAP) into label maps on the source series' grid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("seg", metavar="SEG", help="the DICOM SEG file")
    parser.add_argument("-o", "--output", required=True,
                        help="label map file (.nii.gz, .nii, .nrrd, .mha) or a folder for a case")
    parser.add_argument("--dicom", metavar="SOURCE", help="the DICOM series the SEG was made on: maps on its whole "
                        "grid (default: the SEG's own grid, the slab its frames cover)")
    parser.add_argument("--series", help="series index or UID in SOURCE when it holds several")
    parser.add_argument("--split-overlapping", action="store_true",
                        help="write overlapping segments to further label maps instead of refusing")
    parser.add_argument("--fraction-threshold", type=float, metavar="F",
                        help="FRACTIONAL SEG: voxels with fraction >= F belong to the segment (default 0.5)")
    parser.add_argument("--allow-gaps", action="store_true", help="accept a source series with missing slices")


def _with_suffix(path: Path, tail: str) -> Path:
    from medseg.io._atomic import split_suffix

    stem, suffix = split_suffix(path)
    return path.with_name(f"{stem}{tail}{suffix}")


def run(args: argparse.Namespace) -> int:
    from medseg.cli._options import cli_flag, command_line
    from medseg.errors import MedsegError
    from medseg.export.colour_tables import lesion_label_set, write_colour_tables
    from medseg.io import WRITABLE_SUFFIXES, save_volume
    from medseg.io._dicom_seg import read_seg
    from medseg.labels import LabelSet

    options = {"split_overlapping": args.split_overlapping, "allow_gaps": args.allow_gaps}
    if args.fraction_threshold is not None:
        options["fraction_threshold"] = args.fraction_threshold
    result = read_seg(args.seg, args.dicom, series=args.series, **options)
    lesion_ids = lesion_label_set([s.lesion_id for s in result.segments if s.kind == "lesion"])
    out = Path(args.output)
    inputs = tuple(p for p in (args.seg, args.dicom) if p)
    written: list[Path] = []
    if out.name.lower().endswith(WRITABLE_SUFFIXES):
        targets = [(m, m.label_set, out if i == 0 else _with_suffix(out, f"_{i + 1}"))
                   for i, m in enumerate(result.maps)]
        if result.lesions is not None:
            targets.append((result.lesions, lesion_ids, _with_suffix(out, "_lesions")))
        for volume, names, target in targets:
            written.append(save_volume(volume, target, inputs=inputs))
            write_colour_tables(names, target, inputs=inputs)
    else:
        from medseg.case import write_case

        if len(result.maps) > 1:
            raise MedsegError(out, "is a case folder, which holds one class map, but the SEG's segments overlap",
                              "write label files instead (-o labels.nii.gz)")
        labels = result.labels
        if labels is None:  # a SEG of lesions only: the class map is "lesion" wherever one lies
            labels = result.lesions.with_array((result.lesions.array > 0).astype(np.uint8),
                                               label_set=LabelSet({0: "background", 1: "lesion"}))
        provenance = {"command": command_line("import-seg"), "input": {"path": str(Path(args.seg).resolve()),
                      "format": "dicom-seg", "series_uid": ",".join(result.referenced_series_uids),
                      "segmentation_type": result.segmentation_type},
                      "source_image": str(Path(args.dicom).resolve()) if args.dicom else "",
                      "segments": [{"number": s.number, "label": s.label, "kind": s.kind, "value": s.value,
                                    "lesion_id": s.lesion_id, "tracking_uid": s.tracking_uid,
                                    "algorithm": s.algorithm_name, "voxels": s.voxels} for s in result.segments],
                      "warnings": result.warnings}
        written.append(write_case(out, labels=labels, lesions=result.lesions, provenance=provenance, kind="import",
                                  plots=False, inputs=inputs))
    n_lesions = sum(s.kind == "lesion" for s in result.segments)
    grid = result.maps[0] if result.maps else result.lesions
    print(f"read {result.segmentation_type} SEG {args.seg}: {len(result.segments)} segments "
          f"({len(result.segments) - n_lesions} classes, {n_lesions} lesions) on "
          f"{'x'.join(map(str, grid.shape))} voxels, {grid.orientation}")
    for path in written:
        print(f"wrote {path}")
    for warning in result.warnings:
        print(f"warning: {MedsegError('', warning).render(cli_flag)[2:]}")
    return 0
