"""The training record a person reads: ``metrics.csv`` and ``curves.png`` (loss and Dice per epoch)."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io import atomic_output, write_text_atomic

__all__ = ["write_metrics_csv", "plot_curves", "METRICS_FILE", "CURVES_FILE"]

METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"


def _columns(history: list[dict[str, Any]]) -> list[str]:
    fixed = ["epoch", "step", "train_loss", "lr", "epoch_seconds", "val_mean_dice"]
    extra: list[str] = []
    for row in history:
        extra += [k for k in row if k not in fixed and k not in extra]
    return fixed + extra


def write_metrics_csv(history: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """One row per epoch; validation columns are empty in epochs without validation."""
    buffer = io.StringIO()
    columns = _columns(history)
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None or (isinstance(row.get(k), float) and math.isnan(row[k]))
                             else (f"{row[k]:.6g}" if isinstance(row.get(k), float) else row[k]))
                         for k in columns})
    return write_text_atomic(path, buffer.getvalue())


def plot_curves(history: list[dict[str, Any]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Training loss (left) and validation Dice, mean and per class (right), against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medseg.labels import label_colour

    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(12, 4.5))
    epochs = [row["epoch"] for row in history]
    ax_loss.plot(epochs, [row.get("train_loss") for row in history], "k.-", label="train loss (Dice+CE)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(loc="upper right")
    val = [row for row in history if row.get("val_mean_dice") is not None
           and not (isinstance(row["val_mean_dice"], float) and math.isnan(row["val_mean_dice"]))]
    if val:
        per_class = sorted({k[len("val_dice_"):] for row in val for k in row if k.startswith("val_dice_")})
        for name in per_class:
            points = [(row["epoch"], row[f"val_dice_{name}"]) for row in val
                      if row.get(f"val_dice_{name}") is not None and not math.isnan(row[f"val_dice_{name}"])]
            if points:
                xs, ys = zip(*points)
                colour = np.asarray(label_colour(name))
                if colour.mean() > 0.8:  # bone's near-white would vanish on the white plot
                    colour = colour * 0.6
                ax_dice.plot(xs, ys, ".-", lw=1, color=colour, label=name)
        ax_dice.plot([row["epoch"] for row in val], [row["val_mean_dice"] for row in val], "ko-", lw=2.5,
                     label="mean")
        ax_dice.set_xlim(0.5, max(epochs) + 0.5)
        ax_dice.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax_dice.text(0.5, 0.5, "no validation cases", ha="center", va="center", transform=ax_dice.transAxes)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("validation Dice")
    ax_dice.set_ylim(0, 1)
    ax_dice.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return Path(path)
