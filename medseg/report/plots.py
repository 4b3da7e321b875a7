"""Plots people would rather look at than read: per-class Dice, lesion size distribution.

matplotlib is imported lazily and used through ``Figure`` objects drawn with Agg (no display,
no pyplot state); every PNG is written atomically. The montage of lesion slices is in
:mod:`medseg.report.montage`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from medseg.io import atomic_output

__all__ = ["plot_class_metrics", "plot_lesion_sizes", "save_figure", "new_figure"]


def new_figure(width: float, height: float, *, layout: str | None = None):
    """A matplotlib Figure drawn with Agg, without pyplot's global state.

    Nothing touches the process-wide backend, so plots can be made from a napari worker thread
    or beside a Qt GUI.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout)


def save_figure(figure, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Write ``figure`` as PNG atomically."""
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def plot_class_metrics(result, path: str | os.PathLike) -> Path:
    """Horizontal bars of Dice and NSD per class, with each class's HD95 written beside it.

    Classes absent from both maps are left out; a class absent from one map shows a bar of 0
    and its note ("empty prediction").
    """
    classes = [c for c in result.classes if c.note != "absent in both"]
    fig = new_figure(7.5, max(2.2, 0.42 * len(classes) + 1.3))
    ax = fig.subplots()
    if not classes:
        ax.text(0.5, 0.5, "no classes to score", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return save_figure(fig, path)
    y = np.arange(len(classes))[::-1]
    dice = np.array([c.dice for c in classes])
    nsd = np.array([c.nsd for c in classes])
    ax.barh(y + 0.18, np.nan_to_num(dice), height=0.36, color="#3b7dd8", label="Dice")
    if result.surface:
        ax.barh(y - 0.18, np.nan_to_num(nsd), height=0.36, color="#f0a030",
                label=f"NSD @ {result.nsd_tolerance_mm:g} mm")
    for yi, c in zip(y, classes):
        text = f"{c.dice:.3f}"
        if result.surface and not math.isnan(c.hd95_mm):
            text += f"   HD95 {c.hd95_mm:.1f} mm"
        if c.note:
            text += f"   ({c.note})"
        ax.text(1.02, yi, text, va="center", fontsize=8, transform=ax.get_yaxis_transform())
    ax.set_yticks(y, [c.name for c in classes], fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (1 = perfect)")
    mean = result.mean("dice")
    if not math.isnan(mean):
        ax.axvline(mean, color="#3b7dd8", linestyle=":", linewidth=1)
    ax.set_title(f"Per-class overlap (mean Dice {mean:.3f})", fontsize=11)
    # Below the axis, where no bar can be: inside it, the legend covered the last class's bars.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def plot_lesion_sizes(table, path: str | os.PathLike) -> Path:
    """Distribution of lesion volumes (log scale) and axial long axes with the RECIST 10 mm line."""
    from medseg.lesions.measure import RECIST_MEASURABLE_MM

    fig = new_figure(10, 3.6)
    left, right = fig.subplots(1, 2)
    volumes = np.array([r.volume_ml for r in table.rows])
    longs = np.array([r.axial_long_axis_mm for r in table.rows])
    if len(table) == 0:
        for ax in (left, right):
            ax.text(0.5, 0.5, "no lesions", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        return save_figure(fig, path)
    low, high = volumes.min(), volumes.max()
    bins = np.geomspace(low / 1.2, high * 1.2, max(6, min(30, len(volumes) // 2 + 4)))
    left.hist(volumes, bins=bins, color="#3b7dd8", edgecolor="white")
    left.set_xscale("log")
    left.set_xlabel("lesion volume (mL, log scale)")
    left.set_ylabel("lesions")
    left.set_title(f"{len(table)} lesions, {volumes.sum():.3g} mL in total", fontsize=10)
    right.hist(longs, bins=max(6, min(30, len(longs) // 2 + 4)), color="#f0a030", edgecolor="white")
    right.axvline(RECIST_MEASURABLE_MM, color="k", linestyle="--", linewidth=1)
    measurable = int(np.count_nonzero(longs >= RECIST_MEASURABLE_MM))
    right.text(RECIST_MEASURABLE_MM, 0.97, f"  RECIST measurable: {measurable}", transform=right.get_xaxis_transform(),
               va="top", fontsize=8)
    right.set_xlabel("axial long axis (mm)")
    right.set_title("Longest axial diameter", fontsize=10)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.yaxis.get_major_locator().set_params(integer=True)
    return save_figure(fig, path)
