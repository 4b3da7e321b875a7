"""A montage of axial slices, one per lesion, with its outline, id and RECIST axes.

Each tile shows the slice on which the lesion's axial long axis was measured, centred on the
lesion, in the radiological convention (patient's right on the left of the screen, anterior
at the top), with true millimetre proportions. The lesion's outline is yellow, other lesions
on the slice are outlined in blue, the long axis is a solid and the short axis a dashed red
line. Grey levels are stretched between the 1st and 99th percentile of the tile.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.lesions.masks import require_same_grid, volume_name
from medseg.lesions.shape import outline_segments
from medseg.report.plots import new_figure, save_figure
from medseg.volume import Volume

__all__ = ["plot_lesion_montage", "lesion_tile", "Tile"]

_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))


def _letter(direction: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(direction)))
    return _LETTERS[axis][int(direction[axis] > 0)]


def _display_axes(affine: np.ndarray, slice_axis: int):
    """In-plane axes as (horizontal, vertical) with flips for the radiological view."""
    linear = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    b, c = [a for a in range(3) if a != slice_axis]
    horizontal, vertical = (b, c) if abs(linear[0, b]) >= abs(linear[0, c]) else (c, b)
    flip_h = linear[0, horizontal] > 0  # axis runs towards the patient's right: show it leftwards
    flip_v = linear[1, vertical] > 0  # axis runs anterior: anterior belongs at the top
    return horizontal, vertical, flip_h, flip_v, linear


@dataclass(frozen=True)
class Tile:
    """One lesion's slice as displayed: arrays indexed (screen row, screen column).

    Attributes
    ----------
    grey, ids : ndarray, shape (rows, columns)
        Background values and lesion ids of the slice, radiologically oriented.
    extent : (left, right, bottom, top) in mm, for ``imshow``.
    to_screen : callable
        Maps RAS points, shape (n, 3), to screen ``(x_mm, y_mm)`` (y downwards).
    right, down : ndarray, shape (3,)
        World directions of the screen's +x and +y.
    """

    grey: np.ndarray
    ids: np.ndarray
    extent: tuple[float, float, float, float]
    to_screen: object
    right: np.ndarray
    down: np.ndarray


def lesion_tile(row, labels: Volume, background: np.ndarray, slice_axis: int, *, margin_mm: float = 15.0) -> Tile:
    """The slice through ``row``'s long axis, centred on the lesion, as shown in the montage."""
    horizontal, vertical, flip_h, flip_v, linear = _display_axes(labels.affine, slice_axis)
    spacing, shape = labels.spacing, labels.shape
    ranges = []
    for axis in (horizontal, vertical):
        lo, hi = row.bbox_start_ijk[axis], row.bbox_stop_ijk[axis]
        centre = int(round((lo + hi - 1) / 2.0))
        half = int(math.ceil(max(margin_mm, 0.75 * (hi - lo) * spacing[axis]) / spacing[axis]))
        ranges.append((max(0, centre - half), min(shape[axis], centre + half + 1)))
    (h0, h1), (v0, v1) = ranges
    index = [slice(None)] * 3
    index[slice_axis] = row.axial_slice
    h_index = np.arange(h0, h1)[::-1] if flip_h else np.arange(h0, h1)
    v_index = np.arange(v0, v1)[::-1] if flip_v else np.arange(v0, v1)

    def plane(array):
        section = array[tuple(index)]  # 2D, the remaining axes in ascending order
        section = section if horizontal < vertical else section.T  # rows = horizontal axis
        return section[np.ix_(h_index, v_index)].T  # (vertical, horizontal)

    sh, sv = spacing[horizontal], spacing[vertical]
    inverse = np.linalg.inv(labels.affine)

    def to_screen(points_ras):
        ijk = np.asarray(points_ras, dtype=np.float64) @ inverse[:3, :3].T + inverse[:3, 3]
        h, v = ijk[:, horizontal], ijk[:, vertical]
        x = ((h1 - 1 - h) if flip_h else (h - h0)) + 0.5
        y = ((v1 - 1 - v) if flip_v else (v - v0)) + 0.5
        return x * sh, y * sv

    return Tile(plane(background).astype(np.float64), plane(labels.array),
                (0.0, len(h_index) * sh, len(v_index) * sv, 0.0), to_screen,
                linear[:, horizontal] * (-1 if flip_h else 1), linear[:, vertical] * (-1 if flip_v else 1))


def _outline(ax, tile: Tile, mask: np.ndarray, colour: str, width: float) -> None:
    """Draw the marching-squares outline of ``mask`` (the one the axes were measured on).

    matplotlib's own contour separates pixels that touch only at a corner; this outline keeps
    them connected, as the 8-connected cross-sections are.
    """
    if not mask.any():
        return
    from matplotlib.collections import LineCollection

    segments = outline_segments(np.pad(mask, 1)) - 1 + 0.5  # pixel centres at +0.5
    n_v, n_h = mask.shape
    scale = np.array([tile.extent[2] / n_v, tile.extent[1] / n_h])  # (row, column) -> mm
    xy = (segments * scale)[..., ::-1]  # (x, y) for matplotlib
    ax.add_collection(LineCollection(xy, colors=colour, linewidths=width))


def plot_lesion_montage(table, image: Volume | None, path: str | os.PathLike, *, max_lesions: int = 36,
                        columns: int = 6, margin_mm: float = 15.0) -> Path:
    """Write a PNG montage of one axial slice through each lesion.

    Parameters
    ----------
    table : LesionTable
        From :func:`medseg.lesions.lesion_table`; the instance map and slice axis come with it.
    image : Volume, optional
        Grey-level background on the same grid; without it lesions are drawn in grey on black.
    path : path-like
        The PNG to write (atomically).
    max_lesions : int
        Lesions after this many (by id) are left out and the title says so.
    columns : int
        Tiles per row.
    margin_mm : float
        At least this much tissue around the lesion's bounding box on each side.
    """
    labels = table.instances.labels
    if image is not None:
        require_same_grid(labels, image, name=volume_name(labels, "the lesion map"),
                          other_name=volume_name(image, "the image"))
    rows = list(table.rows)[:max_lesions]
    n_cols = max(1, min(columns, len(rows)))
    n_rows = max(1, math.ceil(len(rows) / n_cols))
    fig = new_figure(2.5 * n_cols, 2.75 * n_rows + 0.4, layout="constrained")
    title = f"{len(table)} lesions" + (f" (first {len(rows)} by id shown)" if len(rows) < len(table) else "")
    fig.suptitle(title + ": axial slice of each long axis", fontsize=10)
    if not rows:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no lesions", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return save_figure(fig, path)
    # Without an image every lesion is drawn in one mid grey (ids are not intensities).
    background = image.array if image is not None else (labels.array != 0).astype(np.float32)
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False).ravel())
    for ax in axes[len(rows):]:
        ax.set_axis_off()
    for number, (ax, row) in enumerate(zip(axes, rows)):
        tile = lesion_tile(row, labels, background, table.slice_axis, margin_mm=margin_mm)
        lo, hi = np.percentile(tile.grey, [1, 99]) if image is not None else (0.0, 2.0)
        ax.imshow(tile.grey, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, extent=tile.extent,
                  interpolation="nearest")
        _outline(ax, tile, (tile.ids != 0) & (tile.ids != row.id), "#33b5ff", 0.7)
        _outline(ax, tile, tile.ids == row.id, "#ffd000", 1.2)
        for line, style in ((row.long_axis_ras_mm, "-"), (row.short_axis_ras_mm, "--")):
            ax.plot(*tile.to_screen(line), style, color="#ff3b3b", linewidth=1.1)
        ax.text(0.03, 0.97, str(row.id), transform=ax.transAxes, va="top", ha="left", fontsize=9,
                fontweight="bold", color="black", bbox=dict(boxstyle="round,pad=0.2", fc="#ffd000", ec="none"))
        ax.set_title(f"{row.volume_ml:.3g} mL, {row.axial_long_axis_mm:.1f} x {row.axial_short_axis_mm:.1f} mm",
                     fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if number == 0:
            from matplotlib import patheffects

            outline = [patheffects.withStroke(linewidth=2, foreground="black")]
            for x, y, text in ((0.02, 0.5, _letter(-tile.right)), (0.98, 0.5, _letter(tile.right)),
                               (0.5, 0.98, _letter(-tile.down))):
                ax.text(x, y, text, transform=ax.transAxes, color="white", fontsize=8, ha="center", va="center",
                        fontweight="bold", path_effects=outline)
    return save_figure(fig, path, dpi=100)
