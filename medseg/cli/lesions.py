"""``medseg lesions LABELS [--image IMAGE] -o OUTDIR``: separate, number and measure lesions.

Writes ``lesions.nii.gz`` (instance map on the input grid), ``lesions.csv``, ``lesions.json``
and, unless ``--no-plots``, ``lesion_sizes.png`` and ``lesion_montage.png``: one folder, replaced
as a whole. A thin wrapper over :func:`medseg.lesions.measure_lesions`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "separate lesion instances, measure each (volume, RECIST axes, HU, organ) and write a table"

#: What this command writes; an output folder holding only these may be replaced.
WRITTEN = ("lesions.nii.gz", "lesions.csv", "lesions.json", "lesions.ctbl", "lesions.itksnap.txt", "lesion_sizes.png",
           "lesion_montage.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", help="lesion mask, semantic label map or probability map (NIfTI, NRRD, MHA, DICOM)")
    parser.add_argument("--image", help="the image the labels belong to (same grid): intensity statistics, montage")
    parser.add_argument("-o", "--output", required=True, help="output folder (created, or replaced as a whole)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--lesion-label", metavar="NAME_OR_VALUE",
                      help="lesion class in a semantic label map (default: the class its labels.json names "
                           "lesion/tumour/...)")
    what.add_argument("--threshold", type=float, metavar="P",
                      help="LABELS is a probability map: voxels >= P are lesion")
    what.add_argument("--as-instances", action="store_true",
                      help="LABELS is already an instance map (e.g. corrected): measure each value, keep ids")
    what.add_argument("--any-nonzero", action="store_true",
                      help="every non-zero voxel is lesion, whatever its value (separate an instance map again)")
    parser.add_argument("--allow-absent-label", action="store_true",
                        help="a map without the lesion label gives zero lesions instead of an error")
    parser.add_argument("--organs", help="organ label map on the same grid (default: LABELS itself when it holds "
                                         "other classes than the lesion class)")
    parser.add_argument("--organ-names", metavar="JSON", help='a JSON file of organ names, e.g. {"1": "liver"} '
                        "(default: the labels.json beside the organ map)")
    parser.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=26,
                        help="voxels touching by faces (6), +edges (18), +corners (26, default) are connected")
    parser.add_argument("--min-volume", type=float, default=0.0, metavar="MM3",
                        help="remove components smaller than this many mm^3 (default 0: keep all)")
    parser.add_argument("--split", type=float, metavar="H_MM",
                        help="split touching lesions at necks at least H_MM narrower than the parts "
                             "(h-maxima of the distance map; 1-3 mm typical; default: no splitting)")
    parser.add_argument("--order", choices=("volume", "position"), default="volume",
                        help="id order: largest first (default) or superior to inferior")
    parser.add_argument("--modality", help="modality of IMAGE when the file does not say (CT gives HU)")
    parser.add_argument("--no-plots", action="store_true", help="write no PNG plots")


def _print_table(table, limit: int = 15) -> None:
    unit = f" {table.intensity_unit}" if table.intensity_unit else ""
    print(f"  {'id':>4} {'volume mL':>10} {'long x short mm':>16} {'3D mm':>7}  {'organ':<14} {'mean' + unit:>9}")
    for row in table.rows[:limit]:
        axes = f"{row.axial_long_axis_mm:.1f} x {row.axial_short_axis_mm:.1f}"
        mean = "" if row.intensity_mean is None else f"{row.intensity_mean:.1f}"
        print(f"  {row.id:>4} {row.volume_ml:>10.4g} {axes:>16} {row.max_3d_diameter_mm:>7.1f}  "
              f"{row.organ[:14]:<14} {mean:>9}")
    if len(table) > limit:
        print(f"  ... {len(table) - limit} more in lesions.csv")


def _replaceable(folder: Path) -> str:
    extra = sorted(p.name for p in folder.iterdir() if p.name not in WRITTEN)
    return "" if not extra else (f"holds other files ({', '.join(extra[:4])}); medseg lesions replaces its output "
                                 "folder as a whole")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from medseg.case import write_lesions
    from medseg.cli._options import command_line
    from medseg.io import load_volume, refuse_overwriting_inputs
    from medseg.io._atomic import atomic_folder
    from medseg.labels import read_label_table
    from medseg.lesions import measure_lesions
    from medseg.progress import tqdm_progress

    out = Path(args.output)
    inputs = tuple(p for p in (args.labels, args.image, args.organs) if p)
    for name in WRITTEN:
        refuse_overwriting_inputs(out / name, inputs)
    labels = load_volume(args.labels)
    image = load_volume(args.image) if args.image else None
    if image is not None and args.modality:
        image = dataclasses.replace(image, modality=args.modality.upper())
    organs = None
    if args.organs and Path(args.organs).resolve() != Path(args.labels).resolve():
        organs = load_volume(args.organs)
    if args.organ_names:
        names = read_label_table(args.organ_names)
        if organs is not None:
            organs = organs.with_labels(names)
        elif not (args.threshold is not None or args.as_instances or args.any_nonzero):
            labels = labels.with_labels(names)
    label = args.lesion_label
    from medseg.labels import label_table_path

    named = organs if organs is not None else labels
    if named.label_set is not None and not args.organ_names:
        print(f"organ names from {label_table_path(named.source.path)}")
    with tqdm_progress(disable=not sys.stderr.isatty()) as progress:
        instances, table = measure_lesions(
            labels, image=image, organs=organs, label=label, threshold=args.threshold,
            as_instances=args.as_instances, any_nonzero=args.any_nonzero,
            allow_absent_label=args.allow_absent_label, min_volume_mm3=args.min_volume, split_h_mm=args.split,
            connectivity=args.connectivity, order=args.order, progress=progress)
    with atomic_folder(out, replaceable=_replaceable) as built:
        write_lesions(built, instances.labels, table, image, not args.no_plots, command_line("lesions"))
    settings = instances.settings()
    how = "ids kept" if args.as_instances else f"{args.connectivity}-connected"
    if instances.n_dust:
        how += f", {instances.n_dust} below {args.min_volume:g} mm^3 removed ({instances.dust_volume_ml:.3g} mL)"
    if instances.n_split:
        how += f", {instances.n_split} touching group(s) split"
    print(f"{len(table)} lesion(s) in {settings['source']} ({how}): {table.total_volume_ml:.4g} mL in total, "
          f"{table.n_recist_measurable} with an axial long axis >= 10 mm (RECIST measurable)")
    print(f"axial diameters measured on slices across {table.slice_axis_description()}; "
          f"centroids and axes in RAS mm (LPS in the CSV too)")
    if len(table):
        _print_table(table)
    written = [n for n in WRITTEN if (out / n).exists()]
    print(f"wrote {', '.join(written)} to {out}")
    return 0
