"""``medseg lesions LABELS [--image IMAGE] -o OUTDIR``: separate, number and measure lesions.

Writes ``lesions.nii.gz`` (instance map on the input grid), ``lesions.csv``, ``lesions.json``
and, unless ``--no-plots``, ``lesion_sizes.png`` and ``lesion_montage.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medseg.errors import InputError

HELP = "separate lesion instances, measure each (volume, RECIST axes, HU, organ) and write a table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", help="lesion mask, semantic label map or probability map (NIfTI, NRRD, MHA, DICOM)")
    parser.add_argument("--image", help="the image the labels belong to (same grid): intensity statistics, montage")
    parser.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--lesion-label", type=int, metavar="N", help="lesion class value in a semantic label map")
    what.add_argument("--threshold", type=float, metavar="P",
                      help="LABELS is a probability map: voxels >= P are lesion")
    what.add_argument("--as-instances", action="store_true",
                      help="LABELS is already an instance map (e.g. corrected): measure each value, keep ids")
    what.add_argument("--any-nonzero", action="store_true",
                      help="every non-zero voxel is lesion, whatever its value (separate an instance map again)")
    parser.add_argument("--allow-absent-label", action="store_true",
                        help="a map without the lesion label gives zero lesions instead of an error")
    parser.add_argument("--organs", help="organ label map on the same grid (default: LABELS itself when it holds "
                                         "other classes than --lesion-label)")
    parser.add_argument("--organ-names", metavar="JSON", help='a JSON file of organ names, e.g. {"1": "liver", "2": "spleen"} '
                        '(default: the labels.json that medseg segment wrote beside the organ map)')
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


def _organ_names(path: str | None, organs_path: str | None) -> dict[int, str]:
    """Names from ``--organ-names``, else from the JSON that ``medseg segment`` writes beside its
    label map (``labels.nii.gz`` -> ``labels.json``), else none (organs are then named by value)."""
    from medseg.cli.evaluate import read_label_names

    if path:
        return read_label_names(path)
    if organs_path:
        beside = _names_beside(Path(organs_path))
        if beside is not None:
            try:
                names = read_label_names(str(beside))
            except InputError:
                return {}  # another kind of sidecar (e.g. dcm2niix's BIDS JSON): not names
            print(f"organ names from {beside}")
            return names
    return {}


def _names_beside(image: Path) -> Path | None:
    name = image.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            candidate = image.with_name(name[: -len(suffix)] + ".json")
            return candidate if candidate.is_file() else None
    return None


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


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from medseg.io import load_volume, refuse_overwriting_inputs, save_volume
    from medseg.lesions import find_instances, instances_from_map, lesion_table
    from medseg.progress import tqdm_progress
    from medseg.report import plot_lesion_montage, plot_lesion_sizes, write_lesion_csv, write_lesion_json

    out = Path(args.output)
    inputs = tuple(p for p in (args.labels, args.image, args.organs) if p)
    names = {n: out / n for n in ("lesions.nii.gz", "lesions.csv", "lesions.json", "lesion_sizes.png",
                                  "lesion_montage.png")}
    for path in names.values():
        refuse_overwriting_inputs(path, inputs)
    labels = load_volume(args.labels)
    image = load_volume(args.image) if args.image else None
    if image is not None and args.modality:
        image = dataclasses.replace(image, modality=args.modality.upper())
    organs, ignore, organs_path = None, (), args.organs
    if args.organs:
        organs = load_volume(args.organs)
        if args.lesion_label is not None and Path(args.organs).resolve() == Path(args.labels).resolve():
            ignore = (args.lesion_label,)  # the lesion class of the same map is not an organ
    elif args.lesion_label is not None and np.any((labels.array != 0) & (labels.array != args.lesion_label)):
        organs, ignore, organs_path = labels, (args.lesion_label,), args.labels
    with tqdm_progress(disable=not sys.stderr.isatty()) as progress:
        if args.as_instances:
            instances = instances_from_map(labels)
        else:
            instances = find_instances(
                labels, label=args.lesion_label, threshold=args.threshold, any_nonzero=args.any_nonzero,
                allow_absent_label=args.allow_absent_label, connectivity=args.connectivity,
                min_volume_mm3=args.min_volume, split_h_mm=args.split, order=args.order, progress=progress)
        table = lesion_table(instances, image=image, organs=organs, organ_names=_organ_names(args.organ_names, organs_path),
                             ignore_organ_values=ignore, progress=progress)
    command = "medseg lesions " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["lesions"] else ""
    instance_map = instances.labels
    if instance_map.array.dtype.itemsize > 2 and len(table) and max(r.id for r in table.rows) <= 65535:
        # cc3d answers in uint32 for large volumes; 16 bits hold the ids and halve the file.
        instance_map = instance_map.with_array(instance_map.array.astype(np.uint16))
    save_volume(instance_map, names["lesions.nii.gz"], inputs=inputs)
    write_lesion_csv(table, names["lesions.csv"])
    write_lesion_json(table, names["lesions.json"], command=command)
    written = ["lesions.nii.gz", "lesions.csv", "lesions.json"]
    if not args.no_plots:
        plot_lesion_sizes(table, names["lesion_sizes.png"])
        plot_lesion_montage(table, image, names["lesion_montage.png"])
        written += ["lesion_sizes.png", "lesion_montage.png"]
    settings = instances.settings()
    how = "ids kept" if args.as_instances else f"{args.connectivity}-connected"
    if instances.n_dust:
        how += f", {instances.n_dust} below {args.min_volume:g} mm^3 removed ({instances.dust_volume_ml:.3g} mL)"
    if instances.n_split:
        how += f", {instances.n_split} touching group(s) split"
    measurable = sum(r.axial_long_axis_mm >= 10 for r in table.rows)
    print(f"{len(table)} lesion(s) in {settings['source']} ({how}): {table.total_volume_ml:.4g} mL in total, "
          f"{measurable} with an axial long axis >= 10 mm (RECIST measurable)")
    print(f"axial diameters measured on slices across {table.slice_axis_description()}; "
          f"centroids and axes in RAS mm (LPS in the CSV too)")
    if len(table):
        _print_table(table)
    print(f"wrote {', '.join(written)} to {out}")
    return 0
