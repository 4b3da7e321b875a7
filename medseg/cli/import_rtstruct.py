"""``medseg import-rtstruct rs.dcm --dicom SOURCE -o CASE``: an RT Structure Set as a medseg case.

Every organ ROI becomes a class of the label map (ROI names mapped to medseg's class names by
the alias table), every GTV/lesion ROI a lesion instance with its row in the lesion table;
planning structures (PTV, CTV, body, ...) are left out unless named with ``--rois``. See
``docs/rtstruct.md``.
"""

from __future__ import annotations

import argparse

HELP = "read a DICOM RTSTRUCT onto its CT series and write a case (labels, names, lesions)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rtstruct", metavar="RS.dcm", help="the RTSTRUCT file")
    parser.add_argument("-o", "--output", required=True, metavar="CASE", help="case folder to write")
    parser.add_argument("--dicom", metavar="SOURCE",
                        help="DICOM folder holding the CT series it references (default: beside the RTSTRUCT)")
    parser.add_argument("--series", help="series index or UID, when SOURCE holds several and the RTSTRUCT names none")
    parser.add_argument("--rois", nargs="+", metavar="NAME",
                        help="import only these ROIs (ROI or class names; planning structures too)")
    parser.add_argument("--aliases", metavar="JSON", help="extra ROI name -> class name aliases (see docs/rtstruct.md)")
    parser.add_argument("--snap-to-slices", action="store_true",
                        help="put contours that lie off the slice planes on their nearest slice (default: refuse)")
    parser.add_argument("--plane-tolerance-mm", type=float, metavar="MM",
                        help="how far contour points may lie from their slice plane (default 0.05)")
    parser.add_argument("--save-image", action="store_true", help="also store the CT as image.nii.gz in the case")
    parser.add_argument("--no-plots", action="store_true", help="no lesion plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from medseg.cli._options import command_line
    from medseg.io._rtstruct import import_rtstruct
    from medseg.progress import tqdm_progress

    options = {}
    for name in ("series", "rois", "aliases", "plane_tolerance_mm"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.snap_to_slices:
        options["snap_to_slices"] = True
    with tqdm_progress(disable=args.quiet) as progress:
        result = import_rtstruct(args.rtstruct, args.output, dicom=args.dicom, save_image=args.save_image,
                                 plots=not args.no_plots, command=command_line("import-rtstruct"),
                                 progress=progress, **options)
    imported = [roi for roi in result.rois if roi.status == "imported"]
    n_lesions = sum(1 for roi in imported if roi.instance)
    shape = "x".join(str(s) for s in result.labels.shape)
    print(f"imported {len(imported)} of {len(result.rois)} ROIs onto {shape} {result.labels.orientation} "
          f"({len(imported) - n_lesions} organ ROIs, {n_lesions} lesions) -> {result.path}")
    for roi in result.rois:
        where = f"lesion {roi.instance}" if roi.instance else roi.class_name
        print(f"  {roi.number:>4} {roi.name:<28} -> {where:<22} {roi.status:<12} {roi.volume_ml:10.2f} mL")
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0
