"""Lesion tables and evaluation results as CSV and versioned JSON documents, written atomically.

JSON documents carry ``"schema"`` and ``"schema_version"`` (bumped on any change a reader would
notice: a field renamed, removed or given another meaning; new fields are minor versions).
NaN and infinite values, which JSON cannot hold, are written as ``null``; CSV leaves them empty.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medseg import __version__
from medseg.io import write_text_atomic

__all__ = [
    "LESION_TABLE_SCHEMA",
    "EVALUATION_SCHEMA",
    "SCHEMA_VERSION",
    "lesion_records",
    "lesion_document",
    "write_lesion_csv",
    "write_lesion_json",
    "evaluation_document",
    "class_records",
    "match_records",
    "write_evaluation",
    "json_text",
    "csv_text",
]

LESION_TABLE_SCHEMA = "medseg.lesion_table"
EVALUATION_SCHEMA = "medseg.evaluation_report"
SCHEMA_VERSION = "1.0"
#: RECIST 1.1: a non-nodal lesion is measurable with a long axis of at least 10 mm.


def _plain(value):
    """JSON-ready: numpy scalars to Python, tuples to lists, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def json_text(document) -> str:
    """Strict JSON (no NaN), indented, with a final newline."""
    return json.dumps(_plain(document), indent=2, allow_nan=False) + "\n"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(value) else format(float(value), ".7g")
    return str(value)


def csv_text(records: list[dict], columns: list[str]) -> str:
    """CSV with a header row; numbers to 7 significant digits."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([_cell(record.get(c)) for c in columns])
    return buffer.getvalue()


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# --- lesion table ---------------------------------------------------------------------------
def lesion_columns(table) -> list[str]:
    from medseg.lesions.measure import percentile_key

    columns = ["id", "voxel_count", "volume_ml", "axial_long_axis_mm", "axial_short_axis_mm", "axial_slice",
               "max_3d_diameter_mm"]
    columns += [f"centroid_{a}_ras_mm" for a in "xyz"] + [f"centroid_{a}_lps_mm" for a in "xyz"]
    columns += [f"centroid_{a}" for a in "ijk"]
    columns += [f"bbox_{a}_start" for a in "ijk"] + [f"bbox_{a}_stop" for a in "ijk"]
    columns += ["surface_area_mm2", "mesh_volume_ml", "sphericity", "organ_value", "organ", "organ_fraction",
                "organ_source", "intensity_mean", "intensity_std", "intensity_min", "intensity_max"]
    columns += [f"intensity_{percentile_key(q)}" for q in table.percentiles]
    return columns


def lesion_records(table) -> list[dict]:
    """One flat dict per lesion with the CSV column names."""
    records = []
    for row in table.rows:
        record = {k: v for k, v in dataclasses.asdict(row).items() if not isinstance(v, (tuple, dict))}
        for name, key in (("ras_mm", "centroid_ras_mm"), ("lps_mm", "centroid_lps_mm")):
            record.update({f"centroid_{a}_{name}": v for a, v in zip("xyz", getattr(row, key))})
        record.update({f"centroid_{a}": v for a, v in zip("ijk", row.centroid_ijk)})
        record.update({f"bbox_{a}_start": v for a, v in zip("ijk", row.bbox_start_ijk)})
        record.update({f"bbox_{a}_stop": v for a, v in zip("ijk", row.bbox_stop_ijk)})
        record.update({f"intensity_{k}": v for k, v in row.intensity_percentiles.items()})
        records.append(record)
    return records


def lesion_document(table, *, command: str = "") -> dict:
    """The JSON document of a lesion table (schema ``medseg.lesion_table``)."""
    labels = table.instances.labels
    volumes = [r.volume_ml for r in table.rows]
    return {
        "schema": LESION_TABLE_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "medseg_version": __version__,
        "created_utc": _now(),
        "command": command,
        "inputs": {"lesions": table.instances.description, "image": table.image, "organs": table.organs},
        "grid": {k: v for k, v in labels.describe().items() if k != "source"},
        "settings": {**table.instances.settings(), "axial_slice_axis": table.slice_axis_description(),
                     "intensity_percentiles": list(table.percentiles)},
        "units": {"volume": "mL", "length": "mm", "area": "mm^2", "intensity": table.intensity_unit,
                  "coordinates": "RAS+ mm (centroid_lps_mm: the same point in LPS+, as DICOM)",
                  "indices": "voxel indices (i, j, k) of the lesion map; bbox stop is exclusive"},
        "summary": {
            "n_lesions": len(table),
            "total_volume_ml": table.total_volume_ml,
            "largest_volume_ml": max(volumes, default=0.0),
            "n_recist_measurable": table.n_recist_measurable,
        },
        "lesions": [row.as_dict() for row in table.rows],
    }


def write_lesion_csv(table, path: str | os.PathLike) -> Path:
    """``lesions.csv``: one row per lesion (header only when there are none)."""
    return write_text_atomic(path, csv_text(lesion_records(table), lesion_columns(table)))


def write_lesion_json(table, path: str | os.PathLike, *, command: str = "") -> Path:
    """``lesions.json``: the table with its inputs, settings and units."""
    return write_text_atomic(path, json_text(lesion_document(table, command=command)))


# --- evaluation -------------------------------------------------------------------------------
CLASS_COLUMNS = ["value", "name", "dice", "iou", "hd_mm", "hd95_mm", "assd_mm", "nsd", "pred_voxels", "ref_voxels",
                 "pred_volume_ml", "ref_volume_ml", "volume_difference_ml", "relative_volume_difference", "note"]
MATCH_COLUMNS = ["outcome", "ref_id", "pred_id", "ref_volume_ml", "pred_volume_ml", "intersection_ml", "iou", "dice"]


def class_records(result) -> list[dict]:
    return [dataclasses.asdict(c) for c in result.classes]


def match_records(result) -> list[dict]:
    if result.detection is None:
        return []
    return [{**dataclasses.asdict(m), "outcome": m.outcome} for m in result.detection.matches]


def evaluation_document(result, *, command: str = "") -> dict:
    """The JSON document of an evaluation (schema ``medseg.evaluation_report``)."""
    detection = None
    if result.detection is not None:
        d = dataclasses.asdict(result.detection)
        d["matches"] = match_records(result)
        detection = d
    return {
        "schema": EVALUATION_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "medseg_version": __version__,
        "created_utc": _now(),
        "command": command,
        "prediction": result.pred,
        "reference": result.ref,
        "grid": {k: v for k, v in result.grid.items() if k != "source"},
        "settings": {
            "nsd_tolerance_mm": result.nsd_tolerance_mm, "surface_distances": result.surface,
            "lesion_label": result.lesion_label, "match_iou": result.match_iou,
            "connectivity": result.connectivity, "resampled_prediction": result.resampled,
            "matching_rule": "one-to-one, IoU > match_iou, largest total IoU (Hungarian)",
            "surface_distance_definition": "MONAI: edge voxels (6-connected erosion), euclidean, spacing in mm",
        },
        "warnings": list(result.warnings),
        "summary": {f"mean_{m}": result.mean(m) for m in ("dice", "iou", "hd95_mm", "assd_mm", "nsd")},
        "classes": class_records(result),
        "lesions": detection,
    }


def write_evaluation(result, folder: str | os.PathLike, *, command: str = "") -> dict[str, Path]:
    """``report.json``, ``classes.csv`` and (with lesion scoring) ``lesion_matches.csv`` in ``folder``."""
    folder = Path(folder)
    paths = {
        "report": write_text_atomic(folder / "report.json", json_text(evaluation_document(result, command=command))),
        "classes": write_text_atomic(folder / "classes.csv", csv_text(class_records(result), CLASS_COLUMNS)),
    }
    if result.detection is not None:
        paths["lesion_matches"] = write_text_atomic(folder / "lesion_matches.csv",
                                                    csv_text(match_records(result), MATCH_COLUMNS))
    return paths
