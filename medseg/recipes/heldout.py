"""Every number of the default model's card, measured on held-out real scans by one command.

::

    python -m medseg.recipes.heldout --model default -o results/heldout-v2

For each scan of :func:`medseg.recipes.cases.heldout_cases`: segment as ``medseg segment`` does
(:func:`medseg.inference.segment`, fp32 on the CPU, labels on the input grid, the model's
clean-up), score the classes its reference labels (:func:`medseg.evaluation.evaluate`: Dice,
HD95 and NSD at 2 mm), list the volumes of every class predicted, count false lesion components
(26-connected, at least 100 mm^3, touching no reference lesion), and on chest-only scans measure
the liver drawn above the lungs' widest slice. Then two constructed inputs: a blank volume (air,
-1000 HU everywhere) and a chest-only crop of the CT angiography. The out-of-distribution
guard's warnings (:mod:`medseg.inference.guard`) are recorded for every input.

Writes ``summary.json``, ``heldout.md`` (the card's tables), per-scan ``prediction.nii.gz`` /
``reference.nii.gz`` and ``montages/<scan>.png`` (the worst slices: image, reference, prediction).
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

from medseg.training.heldout import json_default

__all__ = ["CORE_ORGANS", "LESION_MIN_MM3", "false_lesion_components", "liver_above_lungs_ml",
           "evaluate_model", "main"]

#: The organs of the issue's headline mean (each where the scan's reference labels it).
CORE_ORGANS = ("liver", "spleen", "kidney_right", "kidney_left", "lung_right", "lung_left", "aorta")
#: A lesion component smaller than this is a speck nobody would report (the lesion pipeline's default).
LESION_MIN_MM3 = 100.0


def false_lesion_components(labels, lesion_value: int | None, truth: np.ndarray | None, *,
                            min_mm3: float = LESION_MIN_MM3) -> dict[str, int]:
    """Predicted lesion components >= ``min_mm3`` (26-connected) that touch no true lesion, and those that do."""
    import cc3d

    if lesion_value is None:
        return {"false": 0, "touching_truth": 0, "truth_components": 0}
    mask = np.asarray(labels.array) == lesion_value
    comps = cc3d.connected_components(mask, connectivity=26)
    counts = np.bincount(comps.ravel())
    voxel_mm3 = float(np.prod(labels.spacing))
    big = [c for c in range(1, len(counts)) if counts[c] * voxel_mm3 >= min_mm3]
    touching = set(np.unique(comps[truth]).tolist()) if truth is not None else set()
    n_truth = int(cc3d.connected_components(truth, connectivity=26).max()) if truth is not None else 0
    return {"false": sum(1 for c in big if c not in touching), "touching_truth": sum(1 for c in big if c in touching),
            "truth_components": n_truth}


def liver_above_lungs_ml(labels, liver_value: int, lung_values) -> tuple[float, int]:
    """Liver volume (mL) above the slice where the lungs are widest (RAS), and that slice."""
    ras = labels.reoriented("RAS")
    array = np.asarray(ras.array)
    area = np.isin(array, list(lung_values)).sum(axis=(0, 1))
    if not area.any():
        return float((array == liver_value).sum() * ras.voxel_volume_ml), -1
    widest = int(np.argmax(area))
    return float((array[:, :, widest + 1:] == liver_value).sum() * ras.voxel_volume_ml), widest


def _volumes(labels, label_set) -> dict[str, float]:
    counts = np.bincount(np.asarray(labels.array).ravel())
    ml = labels.voxel_volume_ml
    return {label_set.name_of(v): round(float(counts[v] * ml), 1) for v in range(1, len(counts))
            if counts[v] and v in label_set.values}


def _guard(volume, result, model) -> list[str]:
    try:
        from medseg.inference.guard import guard_warnings
    except ImportError:  # pragma: no cover - older trees
        return list(result.provenance.get("warnings", []))
    removed = (result.provenance.get("postprocessing") or {}).get("removed_voxels")
    return guard_warnings(volume, result.labels, model, removed_voxels=removed)


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _segment(image, model, device):
    from medseg.inference import segment
    from medseg.training.heldout import _window_for

    started = time.perf_counter()
    result = segment(image, model, device=device, roi_size=_window_for(image, model))
    return result, time.perf_counter() - started


def _score_case(case, model, out: Path, device: str, montages: bool) -> dict[str, Any]:
    from medseg.evaluation import evaluate
    from medseg.io import save_volume

    labels = model.labels
    image, reference, scored, lesion_truth = case.load(labels)
    result, seconds = _segment(image, model, device)
    prediction = result.labels
    metrics = evaluate(prediction, reference, labels=scored, nsd_tolerance_mm=2.0)
    rows = {c.name: {"dice": c.dice, "hd95_mm": c.hd95_mm, "nsd_2mm": c.nsd, "ref_ml": round(c.ref_volume_ml, 1),
                     "pred_ml": round(c.pred_volume_ml, 1)} for c in metrics.classes}
    lesion_value = next((lab.value for lab in labels if lab.name == "lesion"), None)
    core = [rows[n]["dice"] for n in CORE_ORGANS if n in rows and rows[n]["ref_ml"] > 0]
    entry: dict[str, Any] = {
        "description": case.description, "field_of_view": case.field_of_view, "reference": case.reference_kind,
        "image": case.image, "shape": list(image.shape), "spacing_mm": [round(float(s), 3) for s in image.spacing],
        "segment_seconds": round(seconds, 2), "classes": rows,
        "mean_dice_core": _mean(core), "core_organs_scored": len(core),
        "mean_dice_all": _mean([r["dice"] for r in rows.values() if r["ref_ml"] > 0]),
        "predicted_ml": _volumes(prediction, labels),
        "lesions": false_lesion_components(prediction, lesion_value, lesion_truth),
        "warnings": _guard(image, result, model),
    }
    if case.chest_only and "liver" in labels.names:
        ml, widest = liver_above_lungs_ml(prediction, labels.value_of("liver"),
                                          [labels.value_of("lung_right"), labels.value_of("lung_left")])
        entry["chest_check"] = {"liver_above_widest_lung_slice_ml": round(ml, 1), "widest_slice": widest}
    folder = out / case.name
    folder.mkdir(parents=True, exist_ok=True)
    save_volume(prediction, folder / "prediction.nii.gz")
    save_volume(reference, folder / "reference.nii.gz")
    if montages:
        from medseg.recipes.montage import montage

        montage(image, prediction, reference, out / "montages" / f"{case.name}.png", label_set=labels,
                values=list(scored), title=f"{case.name}: {case.description} (worst slices; reference: "
                f"{case.reference_kind})")
    return entry


def _constructed(model, cases, out: Path, device: str) -> dict[str, Any]:
    """The blank volume and a chest-only crop of the CT angiography."""
    from medseg.io import load_volume
    from medseg.recipes.lung_reference import lung_reference
    from medseg.volume import Volume

    found: dict[str, Any] = {}
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    blank = Volume(np.full((200, 200, 120), -1000, dtype=np.int16), affine, modality="CT")
    result, seconds = _segment(blank, model, device)
    found["blank"] = {"description": "all -1000 HU, 200 x 200 x 120 at 1.5 mm",
                      "predicted_ml": _volumes(result.labels, model.labels),
                      "warnings": _guard(blank, result, model), "segment_seconds": round(seconds, 2)}
    cta = next((c for c in cases if c.name == "aorta_cta"), None)
    if cta is not None:
        image = load_volume(cta.image).reoriented("RAS")
        lungs = lung_reference(image).array
        area = (lungs > 0).sum(axis=(0, 1))
        widest = int(np.argmax(area))
        crop = image.crop((slice(None), slice(None), slice(widest, image.shape[2])))
        lung_crop = lungs[:, :, widest:]
        result, seconds = _segment(crop, model, device)
        pred = np.asarray(result.labels.array)
        names = model.labels
        ml = crop.voxel_volume_ml
        entry = {"description": f"aorta_cta from its lungs' widest slice up ({crop.shape[2] * 1.5:.0f} mm): "
                                "lungs and mediastinum only",
                 "predicted_ml": _volumes(result.labels, names), "warnings": _guard(crop, result, model),
                 "reference_lungs_ml": {"lung_right": round(float((lung_crop == 1).sum() * ml), 1),
                                        "lung_left": round(float((lung_crop == 2).sum() * ml), 1)},
                 "segment_seconds": round(seconds, 2)}
        for side, name in ((1, "lung_right"), (2, "lung_left")):
            a, b = pred == names.value_of(name), lung_crop == side
            entry.setdefault("lung_dice", {})[name] = round(float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1)), 3)
        found["chest_crop"] = entry
    return found


def evaluate_model(model: str, output: str | Path, *, shared_data=None, device: str = "cpu", montages: bool = True,
                   log=print) -> dict[str, Any]:
    """Score ``model`` on every held-out real scan and the constructed inputs; write the reports."""
    from medseg.io import write_text_atomic
    from medseg.models import resolve_model
    from medseg.recipes.cases import heldout_cases

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    resolved = resolve_model(model)
    cases = heldout_cases(shared_data)
    summary: dict[str, Any] = {"model": resolved.describe(), "cases": {}}
    for case in cases:
        entry = _score_case(case, resolved, out, device, montages)
        summary["cases"][case.name] = entry
        log(f"{case.name}: core-organ mean Dice {entry['mean_dice_core']:.3f} over {entry['core_organs_scored']} "
            f"organ(s); false lesions {entry['lesions']['false']}; {len(entry['warnings'])} warning(s)")
    summary["constructed"] = _constructed(resolved, cases, out, device)
    core = [d for e in summary["cases"].values() for n, d in
            ((n, r["dice"]) for n, r in e["classes"].items()) if n in CORE_ORGANS and e["classes"][n]["ref_ml"] > 0]
    summary["mean_dice_core_all_instances"] = _mean(core)
    summary["core_instances"] = len(core)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=json_default) + "\n")
    from medseg.recipes.report import markdown_report

    write_text_atomic(out / "heldout.md", markdown_report(summary, resolved.labels))
    log(f"mean Dice over {len(core)} core organ instances: {summary['mean_dice_core_all_instances']:.3f}")
    return summary




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medseg.recipes.heldout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default', a model folder or a MONAI bundle")
    parser.add_argument("-o", "--output", required=True, help="folder for predictions, montages and reports")
    parser.add_argument("--shared-data", help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-montages", action="store_true")
    args = parser.parse_args(argv)
    evaluate_model(args.model, args.output, shared_data=args.shared_data, device=args.device,
                   montages=not args.no_montages)
    print((Path(args.output) / "heldout.md").read_text())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
