"""``medseg run INPUT -o CASE``: the whole chain for one scan, reading the input once.

segment -> lesions (when the model has a lesion class) -> report, written as one case folder
(``docs/case.md``). A thin wrapper over :func:`medseg.pipeline.run_case`.
"""

from __future__ import annotations

import argparse
import sys

from medseg.cli._options import add_case_arguments, add_lesion_options, add_model_options

HELP = "segment a scan, separate and measure its lesions, and write one case folder (labels, lesions, report)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_case_arguments(parser, output_help="case folder to write (replaced as a whole; see docs/case.md)")
    add_model_options(parser)
    add_lesion_options(parser)
    parser.add_argument("--no-lesions", action="store_true", help="no lesion instances or table")
    parser.add_argument("--no-plots", action="store_true", help="no lesion plots")
    parser.add_argument("--save-image", action="store_true", help="store the image in the case (image.nii.gz)")
    parser.add_argument("--dicom-seg", nargs="?", const="binary", choices=("binary", "labelmap"),
                        help="also write exports/seg.dcm: a DICOM SEG of the labels and lesions that refers to the "
                             "DICOM input (BINARY by default; LABELMAP is smaller, fewer viewers read it)")
    parser.add_argument("--rtstruct", action="store_true",
                        help="also write exports/rtstruct.dcm (DICOM RT Structure Set; needs a DICOM input)")


def run(args: argparse.Namespace, *, lesions: bool = True) -> int:
    from medseg.cli._options import command_line, lesion_options, model_kwargs, set_threads
    from medseg.pipeline import run_case, stage_seconds, summary_lines
    from medseg.progress import tqdm_progress

    set_threads(args)
    want_lesions = lesions and not getattr(args, "no_lesions", False)
    exports = {}
    if getattr(args, "dicom_seg", None) or getattr(args, "rtstruct", False):
        from medseg.errors import InputError
        from medseg.io._formats import guess_format

        if guess_format(args.input) not in ("dicom", "dicom-folder"):
            raise InputError(args.input, "is not DICOM: a DICOM SEG or RTSTRUCT refers to DICOM images",
                             "give the DICOM series, or leave out --dicom-seg / --rtstruct")
    if getattr(args, "dicom_seg", None):
        from medseg.export.dicom_seg import seg_writer

        exports["seg.dcm"] = seg_writer(segmentation_type=args.dicom_seg.upper())
    if getattr(args, "rtstruct", False):
        from medseg.export.rtstruct import rtstruct_exporter

        exports["rtstruct.dcm"] = rtstruct_exporter()
    with tqdm_progress(disable=args.quiet or not sys.stderr.isatty()) as bar:
        case = run_case(args.input, output=args.output, series=args.series, **model_kwargs(args), exports=exports,
                        lesions=lesion_options(args) if want_lesions else False,
                        plots=not getattr(args, "no_plots", False), save_image=getattr(args, "save_image", False),
                        allow_replacing_corrections=getattr(args, "replace_corrections", False),
                        command=command_line(args.command), progress=bar)
    for warning in case.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in case.provenance.get("notes", []):
        print(f"note: {note}")
    for line in summary_lines(case):
        print(line)
    print(f"stages: {stage_seconds(case.timings)}")
    return 0
