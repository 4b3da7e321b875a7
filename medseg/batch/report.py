"""The cohort report of a batch: one CSV row per case and three plots, rebuilt after every run.

``OUTPUT_DIR/cohort.csv``
    case id, status, input, organ volumes (mL, one column per class), lesion count, total lesion
    burden (mL), RECIST-measurable lesions, seconds per stage, peak memory (MB), attempts,
    worker, warnings and, for a failed case, its one-line reason.
``cohort_organ_volumes.png``
    Distribution of each organ's volume over the cohort (box and points, log scale).
``cohort_lesion_burden.png``
    Total lesion volume per case, with the lesion count.
``cohort_case_times.png``
    Seconds per case, stacked by stage (read, model space, network, restore, ...).

The rows come from the manifest, so a resumed batch reports every case, whichever run made it.
Every file is written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.volume import value_counts

__all__ = ["COHORT_FILES", "case_summary", "cohort_records", "write_cohort_report"]

COHORT_FILES = {"csv": "cohort.csv", "organ_volumes": "cohort_organ_volumes.png",
                "lesion_burden": "cohort_lesion_burden.png", "case_times": "cohort_case_times.png"}
_STAGE_COLOURS = {"read": "#8c8c8c", "load_model": "#c7c7c7", "model_space": "#f0a030", "network": "#3b7dd8",
                  "restore": "#59a14f", "cleanup": "#b07aa1", "lesions": "#e15759", "report": "#76b7b2"}


def _load(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def cohort_records(rows: Sequence[Mapping[str, Any] | None], class_order: Sequence[str] = ()) -> tuple[
        list[dict[str, Any]], list[str], list[str]]:
    """(records, columns, organ names) for the cohort CSV from manifest case rows."""
    from medseg.pipeline import STAGES

    records, organs_seen = [], []
    for row in rows:
        if not row:
            continue
        summary = _load(row.get("summary_json")) or {}
        timings = _load(row.get("timings_json")) or summary.get("timings_s") or {}
        warnings = _load(row.get("warnings_json")) or summary.get("warnings") or []
        volumes = summary.get("organ_volumes_ml") or {}
        organs_seen += [name for name in volumes if name not in organs_seen]
        record = {"case_id": row["case_id"], "status": row.get("status"), "input": row.get("input_path"),
                  "series": row.get("series"), "n_lesions": summary.get("n_lesions"),
                  "lesion_burden_ml": summary.get("lesion_burden_ml"),
                  "n_recist_measurable": summary.get("n_recist_measurable"),
                  "peak_rss_mb": row.get("peak_rss_mb"), "attempts": row.get("attempts"),
                  "retries": row.get("retries"), "worker": row.get("worker"), "finished_utc": row.get("finished_utc"),
                  "input_sha256": row.get("input_sha256"), "warnings": "; ".join(warnings),
                  "error": row.get("error") if row.get("status") == "failed" else None, "note": row.get("note")}
        record.update({f"{name}_ml": value for name, value in volumes.items()})
        record.update({f"time_{stage}_s": timings.get(stage) for stage in (*STAGES, "total")})
        record["_timings"] = timings
        records.append(record)
    organs = [n for n in class_order if n in organs_seen] + sorted(n for n in organs_seen if n not in class_order)
    columns = (["case_id", "status", "input", "series"] + [f"{n}_ml" for n in organs]
               + ["n_lesions", "lesion_burden_ml", "n_recist_measurable"]
               + [f"time_{s}_s" for s in (*STAGES, "total")]
               + ["peak_rss_mb", "attempts", "retries", "worker", "finished_utc", "input_sha256", "warnings", "error",
                  "note"])
    return records, columns, organs


def case_summary(case) -> dict[str, Any]:
    """The cohort numbers of a case folder as it is now (a person's corrections included):
    organ volumes from its labels, lesions from its lesion table."""
    labels = case.labels
    counts = value_counts(labels.array)
    label_set = labels.label_set
    lesion_values = set(label_set.lesion_values())
    volumes = {label_set.name_of(v) if v in label_set.values else str(v): float(n * labels.voxel_volume_ml)
               for v, n in enumerate(counts) if v and n and v not in lesion_values}
    document = case.lesion_document or {}
    summary = document.get("summary") or {}
    return {"organ_volumes_ml": volumes, "n_lesions": summary.get("n_lesions"),
            "lesion_burden_ml": summary.get("total_volume_ml"), "n_recist_measurable": summary.get("n_recist_measurable")}


def write_cohort_report(output_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any] | None], *,
                        class_order: Sequence[str] = (), plots: bool = True) -> dict[str, Path]:
    """Write ``cohort.csv`` and the cohort plots into ``output_dir``; returns their paths."""
    from medseg.io import write_text_atomic
    from medseg.report.tables import csv_text

    out = Path(output_dir)
    records, columns, organs = cohort_records(rows, class_order)
    paths = {"csv": write_text_atomic(out / COHORT_FILES["csv"], csv_text(records, columns))}
    if plots:
        done = [r for r in records if r["status"] == "done"]
        paths["organ_volumes"] = _plot_organ_volumes(done, organs, out / COHORT_FILES["organ_volumes"])
        paths["lesion_burden"] = _plot_lesion_burden(done, out / COHORT_FILES["lesion_burden"])
        paths["case_times"] = _plot_case_times(done, out / COHORT_FILES["case_times"])
    return paths


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _case_ticks(ax, names: list[str]) -> None:
    if len(names) <= 60:
        ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
    else:  # hundreds of names are unreadable: the CSV has them
        ax.set_xticks([])
        ax.set_xlabel(f"{len(names)} cases")


def _plot_organ_volumes(records: list[dict], organs: list[str], path: Path) -> Path:
    from medseg.report.plots import new_figure, save_figure

    data = [(name, np.array([r[f"{name}_ml"] for r in records if r.get(f"{name}_ml")], float)) for name in organs]
    data = [(name, values) for name, values in data if values.size]
    fig = new_figure(8, max(2.4, 0.45 * len(data) + 1.2))
    ax = fig.subplots()
    if not data:
        _empty(ax, "no organ volumes (no case done)")
        return save_figure(fig, path)
    positions = np.arange(len(data))[::-1]
    ax.boxplot([values for _, values in data], positions=positions, orientation="horizontal", widths=0.6, showfliers=False)
    rng = np.random.default_rng(0)  # fixed jitter: the same cohort gives the same picture
    for y, (_, values) in zip(positions, data):
        ax.scatter(values, y + rng.uniform(-0.18, 0.18, values.size), s=10, color="#3b7dd8", alpha=0.7, zorder=3)
    ax.set_yticks(positions, [f"{name} (n={values.size})" for name, values in data], fontsize=8)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 200, 500, 1000 mL, not 2x10^2
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("volume (mL, log scale)")
    ax.set_title(f"Organ volumes over {len(records)} cases", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def _plot_lesion_burden(records: list[dict], path: Path) -> Path:
    from medseg.report.plots import new_figure, save_figure

    rows = sorted((r for r in records if r.get("n_lesions") is not None),
                  key=lambda r: (-(r.get("lesion_burden_ml") or 0.0), r["case_id"]))
    fig = new_figure(max(6, min(16, 0.28 * len(rows) + 3)), 3.8)
    ax = fig.subplots()
    if not rows:
        _empty(ax, "no lesion tables (the model has no lesion class, or lesions were off)")
        return save_figure(fig, path)
    burden = [r.get("lesion_burden_ml") or 0.0 for r in rows]
    bars = ax.bar(range(len(rows)), burden, color="#e15759")
    if len(rows) <= 60:
        for bar, r in zip(bars, rows):
            ax.annotate(str(r["n_lesions"]), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    _case_ticks(ax, [r["case_id"] for r in rows])
    with_lesions = sum(1 for r in rows if r["n_lesions"])
    ax.set_ylabel("total lesion volume (mL)")
    ax.set_title(f"Lesion burden per case ({with_lesions} of {len(rows)} with lesions; number = lesion count)",
                 fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def _plot_case_times(records: list[dict], path: Path) -> Path:
    from medseg.pipeline import STAGES
    from medseg.report.plots import new_figure, save_figure

    rows = sorted((r for r in records if r["_timings"]), key=lambda r: (-(r["_timings"].get("total") or 0.0),
                                                                       r["case_id"]))
    fig = new_figure(max(6, min(16, 0.28 * len(rows) + 3)), 3.8)
    ax = fig.subplots()
    if not rows:
        _empty(ax, "no timings (no case done in a run that measured it)")
        return save_figure(fig, path)
    bottom = np.zeros(len(rows))
    for stage in STAGES:
        values = np.array([r["_timings"].get(stage) or 0.0 for r in rows])
        if values.any():
            ax.bar(range(len(rows)), values, bottom=bottom, color=_STAGE_COLOURS.get(stage), label=stage)
            bottom += values
    _case_ticks(ax, [r["case_id"] for r in rows])
    totals = np.array([r["_timings"].get("total") or 0.0 for r in rows])
    ax.set_ylabel("seconds")
    ax.set_title(f"Time per case (median {np.median(totals):.1f} s, total {totals.sum():.0f} s of work)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="stage", title_fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)
