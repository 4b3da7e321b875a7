"""``medseg export-rtstruct CASE --dicom SOURCE -o rs.dcm``: a case as a DICOM RT Structure Set.

Organs (one ROI per class present) and lesion instances (one GTV ROI each) as closed planar
contours on the CT series the case was made from; see ``docs/rtstruct.md``.
"""

from __future__ import annotations

import argparse

HELP = "write a case's organs and lesions as a DICOM RTSTRUCT on its CT series (for planning systems, PACS)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", metavar="CASE", help="case folder written by medseg run/segment/import or napari")
    parser.add_argument("-o", "--output", required=True, metavar="RS.dcm", help="the RTSTRUCT file to write")
    parser.add_argument("--dicom", metavar="SOURCE",
                        help="DICOM folder of the CT series the case was made from (default: the case's source)")
    parser.add_argument("--series", help="series index or UID when SOURCE holds several (default: the case's)")
    parser.add_argument("--max-deviation-mm", type=float, metavar="MM",
                        help="allow fewer contour points, none farther than MM from the exact contour "
                             "(default 0: exact)")
    parser.add_argument("--smoothing-mm", type=float, metavar="MM",
                        help="smooth contours (Gaussian sigma in mm), within --max-deviation-mm")
    parser.add_argument("--organs-without-lesions", action="store_true",
                        help="draw organs exactly as the label map holds them, with holes where lesions are "
                             "(default: organs include their lesions, as radiotherapy draws them)")
    parser.add_argument("--aliases", metavar="JSON", help="ROI interpreted types per class (see docs/rtstruct.md)")
    parser.add_argument("--label", help="StructureSetLabel (default: medseg)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from medseg.export.rtstruct import export_case_rtstruct
    from medseg.progress import tqdm_progress

    options = {"lesions_in_organs": not args.organs_without_lesions}
    for name in ("max_deviation_mm", "smoothing_mm", "aliases", "label"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    with tqdm_progress(disable=args.quiet) as progress:
        result = export_case_rtstruct(args.case, args.output, dicom=args.dicom, series=args.series,
                                      progress=progress, **options)
    lesions = sum(1 for roi in result.rois if roi["interpreted_type"] == "GTV")
    contours = sum(roi["contours"] for roi in result.rois)
    print(f"wrote {result.path}: {len(result.rois)} ROIs ({len(result.rois) - lesions} organs, {lesions} lesions), "
          f"{contours} contours")
    for roi in result.rois:
        print(f"  {roi['number']:>4} {roi['name']:<28} {roi['interpreted_type']:<9} {roi['volume_ml']:10.2f} mL "
              f"{roi['contours']:5d} contours")
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0
