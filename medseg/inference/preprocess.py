"""To model space and back: orientation, spacing and intensity as an invertible per-axis map.

Model space is where a network runs: the input's array axes permuted/flipped to the model's
orientation (exactly MONAI's ``Orientationd``: no resampling), then resampled to the model's voxel
spacing along those same axes (MONAI's ``Spacingd`` with ``diagonal=False``: the first voxel
centre is kept, ``shape = round((n - 1) * s_in / s_out) + 1``, trilinear, border padding), then
intensity-normalised. Because orientation only permutes axes and spacing only scales them, the map
between the input grid and the model grid is separable: model coordinate ``x = i * s_in / s_out``
along each axis. :mod:`medseg.inference.restore` uses the same map backwards, so labels come back
on the input's exact grid (shape and affine) without any rotation or general resampling.

All arrays are indexed ``[i, j, k]`` (see :mod:`medseg.volume`); spacings are in mm, CT values in HU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from medseg.errors import InputError, option
from medseg.models.spec import IntensitySpec, Preprocessing
from medseg.volume import Volume

__all__ = [
    "ModelGrid",
    "ModelInput",
    "apply_intensity",
    "check_fits_roi",
    "compute_box",
    "foreground_box",
    "linear_weights",
    "plan_grid",
    "resample_linear",
    "resample_to_grid",
    "to_model_space",
    "window_aligned_box",
]

#: An axis in model space shorter than this fraction of the window is "too small": the network
#: would see mostly padding, and its output there means little.
MIN_ROI_FRACTION = 0.25


@dataclass(frozen=True, eq=False)
class ModelGrid:
    """How an input grid maps onto a model grid (and back), axis by axis.

    Attributes
    ----------
    input_shape, input_affine
        The input volume's grid (its array order, RAS affine).
    transform : ndarray, shape (3, 2)
        nibabel orientation transform from the input's axes to the model orientation.
    oriented_shape, oriented_affine
        The input grid after that transform (a view of the same voxels).
    zoom : tuple of 3 float
        Model voxel size divided by the oriented input voxel size, per axis:
        oriented input index ``i = x * zoom`` for model index ``x``.
    shape, affine
        The full model grid.
    box : tuple of 3 (start, stop)
        The region of the model grid that is computed (foreground crop); the rest is background.
    """

    input_shape: tuple[int, int, int]
    input_affine: np.ndarray
    transform: np.ndarray
    oriented_shape: tuple[int, int, int]
    oriented_affine: np.ndarray
    zoom: tuple[float, float, float]
    shape: tuple[int, int, int]
    affine: np.ndarray
    box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

    @property
    def spacing(self) -> np.ndarray:
        """Model voxel spacing in mm along the model axes."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def box_shape(self) -> tuple[int, int, int]:
        return tuple(int(b - a) for a, b in self.box)  # type: ignore[return-value]

    def oriented(self, array: np.ndarray) -> np.ndarray:
        """A view of ``array`` (input order) in the model orientation; writes go through."""
        from nibabel.orientations import apply_orientation

        return apply_orientation(array, self.transform)

    def source_coords(self, axis: int, stop: int | None = None) -> np.ndarray:
        """Oriented input coordinate (fractional index) of model indices ``0..stop-1`` on ``axis``."""
        n = self.shape[axis] if stop is None else stop
        return np.arange(n, dtype=np.float64) * self.zoom[axis]

    def model_coords(self, axis: int) -> np.ndarray:
        """Model coordinate (fractional index) of every oriented input index on ``axis``."""
        return np.arange(self.oriented_shape[axis], dtype=np.float64) / self.zoom[axis]

    def nearest_labels(self, array: np.ndarray) -> np.ndarray:
        """A label array on the input grid (input order) -> the model grid by nearest neighbour.

        The same source coordinates as the images' trilinear resampling, rounded, so an image and
        its label map land on one grid (training uses this; no second grid is planned).
        """
        oriented = self.oriented(array)
        index = [np.clip(np.floor(self.source_coords(axis) + 0.5).astype(np.int64), 0, oriented.shape[axis] - 1)
                 for axis in range(3)]
        return np.asarray(oriented)[np.ix_(*index)]

    def with_box(self, box) -> ModelGrid:
        return dataclasses.replace(self, box=tuple((int(a), int(b)) for a, b in box))

    def describe(self) -> dict:
        return {"model_shape": list(self.shape), "model_spacing_mm": [round(float(s), 4) for s in self.spacing],
                "model_orientation": orientation_code(self.affine),
                "computed_box": [list(b) for b in self.box], "computed_shape": list(self.box_shape)}


def orientation_code(affine: np.ndarray) -> str:
    from nibabel.orientations import aff2axcodes

    return "".join(aff2axcodes(affine))


def plan_grid(volume: Volume, preprocessing: Preprocessing) -> ModelGrid:
    """The model grid for ``volume`` (no voxel is touched; cheap).

    Orientation is nibabel's ``io_orientation`` of the affine, as in MONAI's ``Orientationd``, so
    slightly oblique scans go to the nearest axes without resampling; the direction cosines are
    kept, so the model grid is the input grid scaled along its own axes.
    """
    from nibabel import orientations as ornt

    transform = ornt.ornt_transform(ornt.io_orientation(volume.affine),
                                    ornt.axcodes2ornt(tuple(preprocessing.orientation.upper())))
    oriented_affine = volume.affine @ ornt.inv_ornt_aff(transform, volume.shape)
    oriented_shape = [0, 0, 0]
    for in_axis, (out_axis, _) in enumerate(transform):
        oriented_shape[int(out_axis)] = volume.shape[in_axis]
    spacing_in = np.linalg.norm(oriented_affine[:3, :3], axis=0)
    zoom = np.asarray(preprocessing.spacing_mm, dtype=np.float64) / spacing_in
    # MONAI compute_shape_offset (scale_extent=False): round(extent between the first and last
    # voxel centres in output voxels + 1), numpy's round-half-to-even included.
    shape = tuple(max(int(np.round((n - 1) / z + 1.0)), 1) for n, z in zip(oriented_shape, zoom))
    affine = oriented_affine @ np.diag([*zoom, 1.0])
    return ModelGrid(volume.shape, volume.affine, transform, tuple(oriented_shape), oriented_affine,
                     tuple(float(z) for z in zoom), shape, affine, tuple((0, n) for n in shape))


def check_fits_roi(grid: ModelGrid, roi_size, where: str) -> None:
    """Refuse an input whose model-space extent is a small fraction of the network's window."""
    spacing = grid.spacing
    for axis, (n, roi) in enumerate(zip(grid.shape, roi_size)):
        if n < max(2, MIN_ROI_FRACTION * roi):
            need = max(2, int(np.ceil(MIN_ROI_FRACTION * roi)))
            raise InputError(where, f"is too small for the model: it covers {n * spacing[axis]:.0f} mm along "
                             f"model axis {'ijk'[axis]} ({n} voxels at {spacing[axis]:g} mm), the model's "
                             f"window is {roi} voxels ({roi * spacing[axis]:.0f} mm) and at least {need} voxels "
                             "are needed", f"give a larger volume, or a smaller window ({option('roi_size')}) if the "
                             "network allows it")


def linear_weights(n_src: int, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbours ``i0, i1`` and weight ``w`` of ``coords`` for 1D linear interpolation.

    Coordinates outside ``[0, n_src - 1]`` are clamped (MONAI/grid_sample "border" padding).
    ``value = src[i0] * (1 - w) + src[i1] * w``.
    """
    c = np.clip(np.asarray(coords, dtype=np.float64), 0.0, n_src - 1)
    i0 = np.minimum(np.floor(c).astype(np.int64), max(n_src - 2, 0))
    i1 = np.minimum(i0 + 1, n_src - 1)
    w = np.clip(c - i0, 0.0, 1.0).astype(np.float32)
    return i0, i1, w


def _interp_axis(t, axis: int, coords: np.ndarray):
    import torch

    i0, i1, w = linear_weights(t.shape[axis], coords)
    shape = [1] * t.ndim
    shape[axis] = len(w)
    a = t.index_select(axis, torch.from_numpy(i0))
    b = t.index_select(axis, torch.from_numpy(i1))
    return a.lerp_(b, torch.from_numpy(w).reshape(shape))


def resample_linear(array: np.ndarray, coords: tuple[np.ndarray, np.ndarray, np.ndarray], *,
                    slab: int = 16) -> np.ndarray:
    """Trilinear resampling of a 3D array at a separable grid of source coordinates.

    Parameters
    ----------
    array : ndarray, shape (I, J, K)
        Any real dtype, any strides (a flipped/transposed view is fine).
    coords : three 1D arrays
        Fractional source indices along i, j and k of the output samples.
    slab : int
        Planes along k converted to float32 at a time, so a large int16 input is never held
        as float32 in full.

    Returns
    -------
    ndarray, float32, shape (len(coords[0]), len(coords[1]), len(coords[2]))
    """
    import torch

    ci, cj, ck = coords
    out_ij = np.empty((len(ci), len(cj), array.shape[2]), dtype=np.float32)
    target = torch.from_numpy(out_ij)
    for k0 in range(0, array.shape[2], slab):
        block = torch.from_numpy(np.ascontiguousarray(array[:, :, k0:k0 + slab], dtype=np.float32))
        target[:, :, k0:k0 + slab] = _interp_axis(_interp_axis(block, 0, ci), 1, cj)
    return _interp_axis(target, 2, ck).numpy()


def apply_intensity(array: np.ndarray, spec: IntensitySpec) -> np.ndarray:
    """Normalise voxel values for the network, in place on a float32 array (also returned).

    ``window``: MONAI ScaleIntensityRange (``(v - a_min) / (a_max - a_min) * (b_max - b_min) + b_min``,
    then clipped to ``[b_min, b_max]`` when ``clip``). ``zscore``: MONAI NormalizeIntensity (mean
    and population std over the voxels ``zscore_over`` selects; a std of 0 counts as 1). Then the
    optional ``rescale_to`` min-max rescaling (MONAI ScaleIntensity). Training and inference both
    call this, so a model sees the same values in both.
    """
    if array.dtype != np.float32:
        raise TypeError(f"apply_intensity works in place on float32, got {array.dtype}")
    if spec.kind == "window":
        scale = (spec.b_max - spec.b_min) / (spec.a_max - spec.a_min)
        array -= np.float32(spec.a_min)
        array *= np.float32(scale)
        array += np.float32(spec.b_min)
        if spec.clip:
            np.clip(array, spec.b_min, spec.b_max, out=array)
    elif spec.kind == "zscore":
        if spec.zscore_over == "all":
            mask = None
            values = array
        else:
            mask = array != 0 if spec.zscore_over == "nonzero" else array > spec.nonzero_threshold
            values = array[mask]
        if values.size:
            mean = float(values.mean(dtype=np.float64))
            std = float(values.std(dtype=np.float64)) or 1.0
            if mask is None:
                array -= np.float32(mean)
                array /= np.float32(std)
            else:
                array[mask] = (values - np.float32(mean)) / np.float32(std)
                array[~mask] = 0.0
    if spec.rescale_to is not None:
        lo, hi = float(array.min()), float(array.max())
        if hi > lo:
            array -= np.float32(lo)
            array *= np.float32((spec.rescale_to[1] - spec.rescale_to[0]) / (hi - lo))
            array += np.float32(spec.rescale_to[0])
        else:
            array[...] = np.float32(spec.rescale_to[0]) * array
    return array


def foreground_box(values: np.ndarray, threshold: float | None,
                   margin: tuple[int, int, int]) -> tuple[tuple[int, int], ...]:
    """Bounding box ``(start, stop)`` per axis of ``values > threshold`` (``None``: above the
    minimum), grown by ``margin`` voxels. An empty mask gives the whole image."""
    mask = values > (values.min() if threshold is None else threshold)
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return tuple((0, n) for n in values.shape)
        box.append((int(max(0, hit[0] - margin[axis])), int(min(values.shape[axis], hit[-1] + 1 + margin[axis]))))
    return tuple(box)


def window_aligned_box(box, shape, roi_size, overlap: float) -> tuple[tuple[int, int], ...]:
    """The union of the whole-image sliding windows that touch ``box``.

    The windows MONAI's ``sliding_window_inference`` would place on the whole image form a grid
    per axis (starts ``0, s, 2s, ...`` and a last one flush with the end). Cropping to whole
    windows of that grid means the windows placed on the crop are exactly the kept ones, so
    every voxel not also covered by a skipped (all-background) window gets the same blended
    output as without the crop. Axes shorter than the window are kept whole (they are padded).
    """
    from medseg.inference.sliding import scan_interval

    aligned = []
    for (lo, hi), n, roi in zip(box, shape, roi_size):
        if n <= roi:
            aligned.append((0, int(n)))
            continue
        step = scan_interval((n,), (roi,), overlap)[0]
        count = next(d for d in range(n) if d * step + roi >= n) + 1
        starts = [min(d * step, n - roi) for d in range(count)]
        kept = [s for s in starts if s < hi and s + roi > lo]
        aligned.append((int(min(kept)), int(max(kept) + roi)))
    return tuple(aligned)


@dataclass(frozen=True, eq=False)
class ModelInput:
    """A volume in model space: the computed box of the model grid, intensity-normalised.

    ``image`` has shape ``grid.box_shape`` (float32); ``foreground_fraction`` is the share of the
    full model grid that the box covers (1.0 without a crop).
    """

    grid: ModelGrid
    image: np.ndarray
    foreground_fraction: float


def resample_to_grid(volume: Volume, grid: ModelGrid) -> np.ndarray:
    """The volume's raw values (HU for CT) trilinearly resampled onto the full model grid (float32).

    NaN/inf (float images from some MR pipelines) become the lowest finite value, so they read as
    background instead of spreading NaN through every window that touches them.
    """
    coords = tuple(grid.source_coords(axis) for axis in range(3))
    values = resample_linear(grid.oriented(volume.array), coords)
    if volume.array.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            low = float(values[finite].min()) if finite.any() else 0.0
            values[~finite] = low
    return values


def compute_box(values: np.ndarray, grid: ModelGrid, preprocessing: Preprocessing, *,
                crop: bool | None = None, roi_size=None, overlap: float | None = None) -> tuple[tuple[int, int], ...]:
    """The region of the model grid to compute: the whole-image windows that touch the
    foreground box (see :func:`window_aligned_box`), or everything."""
    crop = preprocessing.crop_foreground if crop is None else crop
    if not crop:
        return tuple((0, n) for n in grid.shape)
    margin = tuple(int(np.ceil(preprocessing.crop_margin_mm / s)) for s in grid.spacing)
    box = foreground_box(values, preprocessing.foreground_threshold, margin)
    return window_aligned_box(box, grid.shape, tuple(roi_size or preprocessing.roi_size),
                              preprocessing.overlap if overlap is None else overlap)


def to_model_space(volume: Volume, preprocessing: Preprocessing, *, crop: bool | None = None,
                   roi_size=None, overlap: float | None = None, grid: ModelGrid | None = None) -> ModelInput:
    """Resample ``volume`` to model space, crop to the foreground, normalise intensity.

    Intensity statistics (z-score, rescale) are taken over the whole resampled image, as MONAI's
    transforms do, before the crop; the crop threshold is applied to the resampled raw values
    (HU for CT).

    Parameters
    ----------
    crop : bool, optional
        Crop to the foreground (default: ``preprocessing.crop_foreground``).
    roi_size, overlap : optional
        The window size and overlap (default: the model's); the crop keeps whole windows.
    grid : ModelGrid, optional
        A grid from :func:`plan_grid` (planned again when omitted).
    """
    grid = grid or plan_grid(volume, preprocessing)
    values = resample_to_grid(volume, grid)
    box = compute_box(values, grid, preprocessing, crop=crop, roi_size=roi_size, overlap=overlap)
    apply_intensity(values, preprocessing.intensity)
    return ModelInput(grid.with_box(box), crop_to_box(values, box), box_fraction(box, grid.shape))


def crop_to_box(values: np.ndarray, box) -> np.ndarray:
    if all(a == 0 and b == n for (a, b), n in zip(box, values.shape)):
        return values
    return np.ascontiguousarray(values[tuple(slice(a, b) for a, b in box)])


def box_fraction(box, shape) -> float:
    return float(np.prod([b - a for a, b in box]) / np.prod(shape))
