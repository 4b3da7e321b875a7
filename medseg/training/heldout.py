"""Held-out evaluation of a CT organ model with medseg's own inference and evaluation.

::

    python -m medseg.training.heldout --model default -o results/heldout

Cases (none of them is a training case of the default model):

* ``example_ct`` (``totalsegmentator/example_ct.nii.gz``, real 3 mm CT) against TotalSegmentator's
  ``example_seg_fast_force_split.nii.gz``;
* ``example_ct_dicom`` (the real 512x512x20 JPEG 2000 DICOM series) against
  ``example_seg_dicom.nii.gz``;
* the shipped synthetic sample ``sample_data/phantom`` (seed 0) against its exact truth.

The TotalSegmentator references are model predictions, not expert annotation; their 117 classes
are merged into the model's classes with :mod:`medseg.training.class_maps` (lung lobes -> lungs,
vertebrae/ribs/hips/... -> bone), the same table the training targets use. On the phantom, lesion
voxels are class ``lesion`` in the reference (the model's convention), and lesion detection is
scored too. Writes per-case ``report.json``/``classes.csv`` (via :func:`medseg.evaluation.evaluate`)
and ``heldout.md``, the table in ``docs/model_card.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["reference_in_model_classes", "keep_largest_components", "evaluate_heldout", "main"]


def reference_in_model_classes(reference, names: dict[int, str], labels):
    """A reference label map re-expressed in the model's label values (through the class map)."""
    from medseg.training.transforms import channel_lookup

    channels = channel_lookup(names, labels)
    values = np.asarray(labels.values, dtype=np.int32)[channels]
    array = np.asarray(reference.array).astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= len(values)):
        raise ValueError(f"reference values outside 0..{len(values) - 1}")
    return reference.with_array(values[array].astype(np.uint8))


def _cases(shared_data: Path | None, sample: Path | None) -> list[dict[str, Any]]:
    from medseg.labels import DEFAULT_ORGANS
    from medseg.training.default_model import heldout_cases

    cases = [{"name": c.name, "image": c.image, "label": c.label, "names": c.label_names, "lesions": None,
              "kind": "real CT, TotalSegmentator reference"} for c in heldout_cases(shared_data)]
    if sample is not None and (sample / "ct.nii.gz").is_file():
        names = {int(k): v for k, v in DEFAULT_ORGANS.to_dict().items()}
        cases.append({"name": "phantom_seed0", "image": str(sample / "ct.nii.gz"),
                      "label": str(sample / "organs.nii.gz"), "names": names,
                      "lesions": str(sample / "lesions.nii.gz"), "kind": "synthetic phantom, exact truth"})
    return cases


def keep_largest_components(labels, *, skip: tuple[int, ...] = ()):
    """The label map with each class except ``skip`` reduced to its largest 26-connected component.

    For models without the clean-up in their spec; see :mod:`medseg.inference.postprocess`.
    """
    from medseg.inference.postprocess import keep_largest_components as keep

    values = [int(v) for v in np.unique(labels.array) if v != 0 and int(v) not in skip]
    return labels.with_array(keep(labels.array, values)[0])


def evaluate_heldout(model: str, output: str | Path, *, shared_data: str | Path | None = None,
                     sample: str | Path | None = "sample_data/phantom", device: str = "cpu",
                     keep_largest: bool = False, postprocess: bool = True, log=print) -> dict[str, Any]:
    """Segment every held-out case with ``model``, score it, write reports; returns the summary.

    ``keep_largest`` scores the prediction after :func:`keep_largest_components` (organs only);
    ``postprocess=False`` skips the model's own clean-up (``segment(..., postprocess=False)``).
    """
    from medseg.evaluation import evaluate
    from medseg.inference import segment
    from medseg.io import load_volume, save_volume, write_text_atomic
    from medseg.models import resolve_model

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    resolved = resolve_model(model)
    labels = resolved.labels
    lesion_value = next((lab.value for lab in labels if lab.name == "lesion"), None)
    summary: dict[str, Any] = {"model": resolved.describe(), "cases": {}}
    for case in _cases(Path(shared_data) if shared_data else None, Path(sample) if sample else None):
        image = load_volume(case["image"])
        reference = load_volume(case["label"])
        if not reference.same_grid(image) and reference.reoriented(image.orientation).same_grid(image):
            reference = reference.reoriented(image.orientation)
        reference = reference_in_model_classes(reference, case["names"], labels)
        scored = {lab.value: lab.name for lab in labels.foreground if lab.value != lesion_value}
        if case["lesions"] is not None and lesion_value is not None:
            lesions = load_volume(case["lesions"])
            reference = reference.with_array(np.where(lesions.array > 0, lesion_value, reference.array).astype(np.uint8))
            scored[lesion_value] = "lesion"
        roi = _window_for(image, resolved)
        started = time.perf_counter()
        result = segment(image, resolved, device=device, roi_size=roi, postprocess=postprocess)
        seconds = time.perf_counter() - started
        prediction = result.labels
        if keep_largest:
            prediction = keep_largest_components(prediction, skip=tuple(
                lab.value for lab in labels if lab.name in ("bone", "lesion")))
        folder = out / case["name"]
        folder.mkdir(exist_ok=True)
        save_volume(prediction, folder / "prediction.nii.gz")
        save_volume(reference, folder / "reference.nii.gz")
        metrics = evaluate(prediction, reference, labels=scored,
                           lesion_label=lesion_value if case["lesions"] else None)
        rows = {c.name: {"dice": c.dice, "hd95_mm": c.hd95_mm, "ref_ml": c.ref_volume_ml, "pred_ml": c.pred_volume_ml}
                for c in metrics.classes}
        entry = {"kind": case["kind"], "image": case["image"], "reference": case["label"],
                 "shape": list(image.shape), "spacing_mm": [round(float(s), 4) for s in image.spacing],
                 "segment_seconds": round(seconds, 2), "window": list(roi), "classes": rows,
                 "mean_dice_present": _mean([r["dice"] for r in rows.values() if r["ref_ml"] > 0])}
        if metrics.detection is not None:
            d = metrics.detection
            entry["lesion_detection"] = {"f1": d.f1, "precision": d.precision, "recall": d.recall, "pq": d.pq,
                                         "tp": d.tp, "fp": d.fp, "fn": d.fn}
        summary["cases"][case["name"]] = entry
        write_text_atomic(folder / "report.json", json.dumps(entry, indent=2, default=json_default) + "\n")
        log(f"{case['name']}: mean Dice {entry['mean_dice_present']:.3f} over classes in the reference "
            f"({seconds:.1f} s to segment)")
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=json_default) + "\n")
    write_text_atomic(out / "heldout.md", markdown_table(summary, labels))
    return summary


def _window_for(image, model) -> tuple[int, int, int]:
    """The model's window, shortened along axes where the image is thinner than a quarter of it.

    The 20-slice DICOM case covers 14 voxels of 3 mm in z; an 80-voxel window would be 80 %
    padding there (inference refuses that), so its z window becomes the smallest multiple of 16
    (the UNet's down-sampling) that holds the image.
    """
    from medseg.inference.preprocess import plan_grid

    grid = plan_grid(image, model.preprocessing)
    roi = []
    for n, size in zip(grid.shape, model.preprocessing.roi_size):
        roi.append(int(size) if n >= size / 4 else int(max(16, math.ceil(n / 16) * 16)))
    return tuple(roi)


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def json_default(value):
    """``json.dumps(default=...)`` for numpy scalars and NaN (written as null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _cell(dice: float, hd95: float, ref_ml: float) -> str:
    if ref_ml <= 0:
        return "absent" if math.isnan(dice) else "absent (FP)"
    hd = "" if math.isnan(hd95) else f" / {hd95:.1f}"
    return f"{dice:.3f}{hd}"


def markdown_table(summary: dict[str, Any], labels) -> str:
    """Per-class Dice / HD95 (mm) per case as a Markdown table."""
    cases = list(summary["cases"])
    lines = ["| class | " + " | ".join(cases) + " |", "|---|" + "---|" * len(cases)]
    for lab in labels.foreground:
        cells = []
        for name in cases:
            row = summary["cases"][name]["classes"].get(lab.name)
            cells.append("not scored" if row is None else _cell(row["dice"], row["hd95_mm"], row["ref_ml"]))
        lines.append(f"| {lab.name} | " + " | ".join(cells) + " |")
    lines.append("| **mean Dice (classes in the reference)** | "
                 + " | ".join(f"**{summary['cases'][n]['mean_dice_present']:.3f}**" for n in cases) + " |")
    lines.append("| seconds to segment (CPU) | "
                 + " | ".join(f"{summary['cases'][n]['segment_seconds']:.1f}" for n in cases) + " |")
    for name in cases:
        det = summary["cases"][name].get("lesion_detection")
        if det:
            lines.append(f"\nLesion detection on {name}: F1 {det['f1']:.3f}, precision {det['precision']:.3f}, "
                         f"recall {det['recall']:.3f}, PQ {det['pq']:.3f} (TP {det['tp']}, FP {det['fp']}, "
                         f"FN {det['fn']}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medseg.training.heldout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default', a model folder or a MONAI bundle")
    parser.add_argument("-o", "--output", required=True, help="folder for predictions and reports")
    parser.add_argument("--shared-data", help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--sample", default="sample_data/phantom", help="the shipped phantom sample folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--no-postprocess", action="store_true",
                        help="score the network's labels without the model's clean-up")
    parser.add_argument("--keep-largest", action="store_true",
                        help="score each organ's largest connected component only (bone, lesion unchanged)")
    args = parser.parse_args(argv)
    evaluate_heldout(args.model, args.output, shared_data=args.shared_data, sample=args.sample, device=args.device,
                     keep_largest=args.keep_largest, postprocess=not args.no_postprocess)
    print((Path(args.output) / "heldout.md").read_text())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
