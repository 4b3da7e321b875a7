"""``medseg evaluate PRED REF -o OUTDIR``: per-class metrics and lesion detection against a reference.

Writes ``report.json``, ``classes.csv``, ``lesion_matches.csv`` (with lesion scoring) and,
unless ``--no-plots``, ``class_metrics.png``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

HELP = "compare a predicted label map with a reference: Dice, IoU, HD95, ASSD, NSD, volumes, lesion F1 and PQ"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred", help="predicted label map")
    parser.add_argument("ref", help="reference label map")
    parser.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    parser.add_argument("--labels", help='classes to score: "1,2,5", "liver=1,spleen=2" or a JSON file '
                                         '{"1": "liver"}; default: every value present')
    lesions = parser.add_mutually_exclusive_group()
    lesions.add_argument("--lesion-label", type=int, metavar="N",
                         help="also score lesion detection (F1, PQ) on the instances of class N")
    lesions.add_argument("--instances", action="store_true",
                         help="PRED and REF are instance maps: score lesion detection on their ids")
    parser.add_argument("--match-iou", type=float, default=0.5,
                        help="lesions match when IoU > this (default 0.5, PQ's rule)")
    parser.add_argument("--nsd-tolerance", type=float, default=2.0, metavar="MM",
                        help="tolerance of the normalised surface Dice in mm (default 2)")
    parser.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=26,
                        help="connectivity for separating lesions (default 26)")
    parser.add_argument("--resample", action="store_true",
                        help="resample PRED onto REF's grid (nearest neighbour) when the grids differ")
    parser.add_argument("--reference-classes", action="store_true",
                        help="score only the classes the reference names (with names on both maps; e.g. leave a "
                             "model's lesion class out when the truth holds organs only)")
    parser.add_argument("--no-surface", action="store_true", help="skip HD, HD95, ASSD and NSD (faster)")
    parser.add_argument("--no-plots", action="store_true", help="write no PNG plot")


def parse_labels(spec: str | None) -> dict[int, str] | None:
    """``"1,2"`` -> {1: "1", 2: "2"}; ``"liver=1,spleen=2"`` -> names; a JSON file -> its names."""
    if not spec:
        return None
    from medseg.errors import InputError

    path = Path(spec)
    if path.suffix.lower() == ".json" or path.is_file():
        from medseg.labels import read_label_table

        return {lab.value: lab.name for lab in read_label_table(spec).foreground}
    labels: dict[int, str] = {}
    for item in spec.split(","):
        name, _, value = item.strip().rpartition("=")
        try:
            labels[int(value)] = name.strip() or value.strip()
        except ValueError as exc:
            raise InputError("--labels", f"{item.strip()!r} is not a class value or name=value",
                             'use e.g. "1,2,5" or "liver=1,spleen=2"') from exc
    return labels


def _number(value: float, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> int:
    from medseg.evaluation import evaluate
    from medseg.io import load_volume, refuse_overwriting_inputs
    from medseg.progress import tqdm_progress
    from medseg.report import plot_class_metrics, write_evaluation

    out = Path(args.output)
    for name in ("report.json", "classes.csv", "lesion_matches.csv", "class_metrics.png"):
        refuse_overwriting_inputs(out / name, (args.pred, args.ref))
    labels = parse_labels(args.labels)
    pred = load_volume(args.pred)
    ref = load_volume(args.ref)
    with tqdm_progress(disable=not sys.stderr.isatty()) as progress:
        result = evaluate(pred, ref, labels=labels, lesion_label=args.lesion_label, lesion_instances=args.instances,
                          connectivity=args.connectivity, match_iou=args.match_iou,
                          nsd_tolerance_mm=args.nsd_tolerance, surface=not args.no_surface,
                          resample=args.resample, classes="reference" if args.reference_classes else "all",
                          progress=progress)
    command = "medseg evaluate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["evaluate"] else ""
    written = list(write_evaluation(result, out, command=command).values())
    if not args.no_plots:
        written.append(plot_class_metrics(result, out / "class_metrics.png"))
    for note in result.warnings:
        print(f"note: {note}")
    print(f"{'class':<16} {'Dice':>6} {'IoU':>6} {'HD95 mm':>8} {'ASSD mm':>8} "
          f"{f'NSD@{args.nsd_tolerance:g}':>8} {'vol. diff mL':>12}")
    for c in result.classes:
        print(f"{c.name[:16]:<16} {_number(c.dice):>6} {_number(c.iou):>6} {_number(c.hd95_mm, 2):>8} "
              f"{_number(c.assd_mm, 2):>8} {_number(c.nsd):>8} {c.volume_difference_ml:>+12.3f}"
              + (f"  ({c.note})" if c.note else ""))
    print(f"{'mean':<16} {_number(result.mean('dice')):>6} {_number(result.mean('iou')):>6} "
          f"{_number(result.mean('hd95_mm'), 2):>8} {_number(result.mean('assd_mm'), 2):>8} "
          f"{_number(result.mean('nsd')):>8}")
    d = result.detection
    if d is not None:
        print(f"lesions: {d.n_ref} reference, {d.n_pred} predicted; TP {d.tp}, FP {d.fp}, FN {d.fn}; "
              f"precision {_number(d.precision)}, recall {_number(d.recall)}, F1 {_number(d.f1)}; "
              f"PQ {_number(d.pq)} = SQ {_number(d.sq)} x RQ {_number(d.rq)}; "
              f"mean Dice of matched lesions {_number(d.mean_tp_dice)} (match: IoU > {d.match_iou:g})")
    print(f"wrote {', '.join(Path(p).name for p in written)} to {out}")
    return 0
