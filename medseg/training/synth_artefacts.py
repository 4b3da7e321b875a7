"""Artefacts and structures a synthetic CT draws on top of its tissues (used by :mod:`.synth`).

Lung vessels and the gravity gradient, beam-hardening-like streaks from bone, the CT couch, and
thick-slice simulation. Each works in place (or returns a new array) on ``(i, j, k)`` RAS HU
arrays; randomness only through the ``rng`` passed in, so a seed reproduces a sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from medseg.training.synth import SynthesisSettings

__all__ = ["draw_lung", "draw_streaks", "draw_table", "simulate_thick_slices", "smooth_field"]


def smooth_field(shape: tuple[int, ...], scale_vox: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field with zero mean and unit std; features about ``scale_vox`` voxels.

    Drawn on a coarse grid and interpolated up trilinearly (torch: ~20x faster than
    ``scipy.ndimage.zoom`` here, and the field only needs to be smooth, not exact).
    """
    import torch

    coarse = tuple(max(2, int(np.ceil(s / max(scale_vox, 1.0))) + 1) for s in shape)
    field = torch.from_numpy(rng.standard_normal(coarse).astype(np.float32))[None, None]
    up = torch.nn.functional.interpolate(field, size=tuple(shape), mode="trilinear",
                                         align_corners=True)[0, 0].numpy()
    std = float(up.std())
    return (up - up.mean()) / (std if std > 1e-6 else 1.0)


def draw_lung(image: np.ndarray, lung: np.ndarray, blood_hu: float, settings: SynthesisSettings,
               rng: np.random.Generator) -> None:
    """Vessels and a gravity gradient in aerated lung (in place).

    Vessels: voxels near the zero sets of two independent smooth fields, which meet along curves
    (a tube network); the share of lung they take is drawn from ``lung_vessel_fraction``. Their
    HU lies between the lung's and blood's: at 3 mm a 2-4 mm vessel fills part of a voxel.
    """
    if lung.sum() < 8:
        return
    shape = image.shape
    scale = rng.uniform(2.0, 4.0)
    tube = np.maximum(np.abs(smooth_field(shape, scale, rng)), np.abs(smooth_field(shape, scale, rng)))
    share = rng.uniform(*settings.lung_vessel_fraction)
    if share > 0:
        vessels = lung & (tube <= np.quantile(tube[lung], share))
        fill = rng.uniform(0.4, 1.0, size=int(vessels.sum())).astype(np.float32)
        image[vessels] = image[vessels] + fill * (blood_hu - image[vessels])
    gradient = rng.uniform(*settings.lung_gradient_hu)
    if gradient > 0:  # j grows anterior in RAS: the posterior lung (small j) is denser
        j = np.linspace(1.0, 0.0, shape[1], dtype=np.float32)[None, :, None]
        image += np.where(lung, gradient * j, 0.0).astype(np.float32)


def draw_streaks(image: np.ndarray, bone: np.ndarray, settings: SynthesisSettings,
                  rng: np.random.Generator) -> None:
    """Beam-hardening-like streaks: thin rays of alternating sign from a dense bone (in place)."""
    where = np.argwhere(bone)
    if len(where) == 0:
        return
    ci, cj, ck = where[int(rng.integers(len(where)))]
    shape = image.shape
    i = np.arange(shape[0], dtype=np.float32)[:, None] - ci
    j = np.arange(shape[1], dtype=np.float32)[None, :] - cj
    angle = np.arctan2(j, i)
    radius = np.sqrt(i * i + j * j)
    pattern = np.zeros(shape[:2], dtype=np.float32)
    for _ in range(int(rng.integers(2, 7))):
        theta = rng.uniform(-np.pi, np.pi)
        width = rng.uniform(0.01, 0.05)
        delta = np.angle(np.exp(1j * (angle - theta)))
        pattern += rng.choice((-1.0, 1.0)) * np.exp(-(delta / width) ** 2)
    pattern *= rng.uniform(*settings.streak_hu) * 8.0 / (radius + 8.0)
    half = int(rng.integers(2, 12))
    band = slice(max(0, ck - half), min(shape[2], ck + half + 1))
    image[:, :, band] += pattern[:, :, None]


def draw_table(image: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> None:
    """A CT couch: a thin curved plate a little posterior to the body (``j`` = anterior)."""
    rows = np.flatnonzero(body.any(axis=(0, 2)))
    cols = np.flatnonzero(body.any(axis=(1, 2)))
    if rows.size == 0:
        return
    top = int(rows[0]) - int(rng.integers(0, 4))
    thick = int(rng.integers(1, 4))
    centre = 0.5 * (cols[0] + cols[-1])
    i = np.arange(image.shape[0], dtype=np.float64)
    surface = top - np.round(rng.uniform(0.0, 0.006) * (i - centre) ** 2).astype(int)
    j = np.arange(image.shape[1])[None, :]
    plate = (j <= surface[:, None]) & (j > surface[:, None] - thick)
    if not plate.any():
        return
    plate3 = np.broadcast_to(plate[:, :, None], image.shape) & ~body
    image[plate3] = rng.uniform(-400.0, 300.0)


def simulate_thick_slices(image: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """Average over ``factor`` voxels along ``axis``, sample coarsely, interpolate back."""
    sigma = [0.0, 0.0, 0.0]
    sigma[axis] = factor / 2.355  # FWHM of the slice profile = slice thickness
    blurred = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    zoom = [1.0, 1.0, 1.0]
    zoom[axis] = 1.0 / factor
    coarse = ndimage.zoom(blurred, zoom, order=1, mode="nearest", grid_mode=True)
    back = [s / c for s, c in zip(image.shape, coarse.shape)]
    up = ndimage.zoom(coarse, back, order=1, mode="nearest", grid_mode=True)
    out = np.empty_like(image)
    fit = tuple(slice(0, min(a, b)) for a, b in zip(image.shape, up.shape))
    out[...] = image  # border voxels lost by rounding keep the blurred-only value
    out[fit] = up[fit]
    return out
