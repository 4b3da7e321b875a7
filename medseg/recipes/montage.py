"""Pictures for the model card: a scan's slices with reference and prediction outlines side by side.

Every panel is drawn in world proportions (the voxel spacing sets the aspect), the patient's
right on the viewer's left (radiological convention), with the class colours of
:func:`medseg.labels.label_colour`. Matplotlib with the Agg backend only (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["worst_slices", "montage"]


def worst_slices(pred: np.ndarray, ref: np.ndarray, values: Sequence[int], *, axis: int = 2, count: int = 3
                 ) -> list[int]:
    """Indices along ``axis`` where prediction and reference disagree on most voxels of ``values``."""
    pred_in = np.isin(pred, values)
    ref_in = np.isin(ref, values)
    wrong = (pred_in | ref_in) & (pred != ref)
    other = tuple(a for a in range(3) if a != axis)
    per_slice = wrong.sum(axis=other)
    order = [int(k) for k in np.argsort(per_slice)[::-1] if per_slice[k] > 0]
    picked: list[int] = []
    spread = max(2, pred.shape[axis] // 12)
    for k in order:  # spread the slices out rather than show three neighbours
        if all(abs(k - p) >= spread for p in picked):
            picked.append(k)
        if len(picked) == count:
            break
    return sorted(picked)


def _panel(ax, hu: np.ndarray, labels: np.ndarray | None, colours: dict[int, tuple], aspect: float, title: str):
    from matplotlib.colors import ListedColormap

    ax.imshow(np.clip(hu, -1000, 1000).T, cmap="gray", vmin=-1000, vmax=600, origin="lower", aspect=aspect,
              interpolation="nearest")
    if labels is not None and labels.any():
        top = max(colours) if colours else 1
        table = np.zeros((top + 1, 4))
        for value, rgb in colours.items():
            table[value, :3] = np.asarray(rgb[:3])
            table[value, 3] = 0.45
        ax.imshow(labels.T, cmap=ListedColormap(table), vmin=0, vmax=top, origin="lower", aspect=aspect,
                  interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def montage(image, prediction, reference, path: str | Path, *, label_set, slices: Sequence[int] | None = None,
            axis: int = 2, title: str = "", values: Sequence[int] | None = None) -> Path:
    """Write a PNG: for each slice, the image, the reference and the prediction (RAS volumes).

    ``image``, ``prediction``, ``reference`` are Volumes on one grid (``reference`` may be None);
    they are shown reoriented to RAS, each slice flipped so the patient's right is on the left.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ras_image = image.reoriented("RAS")
    pred = prediction.reoriented("RAS").array
    ref = reference.reoriented("RAS").array if reference is not None else None
    hu = np.asarray(ras_image.array, dtype=np.float32)
    if values is None:
        values = [lab.value for lab in label_set.foreground]
    if slices is None:
        slices = worst_slices(pred, ref if ref is not None else np.zeros_like(pred), values, axis=axis)
        if not slices:
            slices = [pred.shape[axis] // 2]
    colours = {lab.value: tuple(label_set.colours()[lab.value][:3]) for lab in label_set.foreground}
    spacing = ras_image.spacing
    other = [a for a in range(3) if a != axis]
    aspect = float(spacing[other[1]] / spacing[other[0]])
    columns = 3 if ref is not None else 2
    fig, axes = plt.subplots(len(slices), columns, figsize=(2.6 * columns, 2.6 * len(slices)), squeeze=False)
    names = "ijk"
    for row, index in enumerate(slices):
        take = [slice(None)] * 3
        take[axis] = index
        # Flip the first in-plane axis (RAS i grows to the right): the patient's right on the left.
        cut = lambda a: np.asarray(a[tuple(take)])[::-1] if other[0] == 0 else np.asarray(a[tuple(take)])  # noqa: E731
        _panel(axes[row, 0], cut(hu), None, colours, aspect, f"{names[axis]} = {index}")
        if ref is not None:
            _panel(axes[row, 1], cut(hu), cut(ref), colours, aspect, "reference")
        _panel(axes[row, columns - 1], cut(hu), cut(pred), colours, aspect, "prediction")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    fig.legend(handles, [label_set.name_of(v) for v in colours], loc="lower center", ncol=min(6, len(colours)),
               fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
