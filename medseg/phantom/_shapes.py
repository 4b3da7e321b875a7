"""Smooth 3D shapes rasterised on an axis-aligned grid, each only inside its bounding box.

Coordinates are *anatomical* millimetres: RAS axes (+x patient Right, +y Anterior,
+z Superior) with the origin at the centre of the body at the level of the renal hila. The
:class:`Grid` knows where every voxel centre lies in that frame; shapes give boolean masks
or level values for the voxels of a box, so a small organ costs only its own box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree

from medseg.phantom._random import Stream

__all__ = ["Grid", "Box", "Blob", "Tube", "smooth_curve", "waves", "wave_field", "rotation"]


@dataclass(frozen=True)
class Box:
    """Voxels of a sub-box of the grid and the anatomical coordinates of their centres.

    ``x, y, z`` have shapes (n_i, 1, 1), (1, n_j, 1) and (1, 1, n_k), so expressions in them
    broadcast to the box shape without building full coordinate arrays.
    """

    index: tuple[slice, slice, slice]
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.x.shape[0], self.y.shape[1], self.z.shape[2])

    @property
    def empty(self) -> bool:
        return 0 in self.shape


class Grid:
    """Voxel centres of an axis-aligned grid in anatomical mm (one 1D vector per array axis).

    Parameters
    ----------
    x, y, z : ndarray
        Anatomical coordinate (mm) of the voxel centres along array axes i, j, k. Each must be
        monotonic (the phantom's LPS grid has x and y decreasing, z increasing).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
        self.coords = tuple(np.asarray(c, dtype=np.float64) for c in (x, y, z))
        self.shape = tuple(len(c) for c in self.coords)

    def box(self, lo, hi) -> Box:
        """The voxels whose centres lie in ``[lo, hi]`` (mm, per axis), clipped to the grid."""
        index, parts = [], []
        for axis, c in enumerate(self.coords):
            inside = np.flatnonzero((c >= lo[axis]) & (c <= hi[axis]))
            start, stop = (int(inside[0]), int(inside[-1]) + 1) if inside.size else (0, 0)
            index.append(slice(start, stop))
            shape = [1, 1, 1]
            shape[axis] = stop - start
            parts.append(c[start:stop].reshape(shape))
        return Box(tuple(index), *parts)

    def full(self) -> Box:
        return self.box([-np.inf] * 3, [np.inf] * 3)


def waves(stream: Stream, n: int, *, wavelength_mm: tuple[float, float], amplitude: float) -> np.ndarray:
    """Random plane waves for a smooth deformation: rows (dx, dy, dz, k, phase, amplitude).

    ``k`` is the angular wave number (rad/mm) for wavelengths in the given range; the
    amplitudes sum to at most ``amplitude`` (a fraction of the shape's radius).
    """
    directions = stream.unit_vectors(n)
    k = 2 * np.pi / stream.uniform(*wavelength_mm, size=n)
    phase = stream.uniform(0.0, 2 * np.pi, size=n)
    weights = stream.uniform(0.5, 1.0, size=n)
    amp = amplitude * weights / weights.sum()
    return np.column_stack([directions, k, phase, amp])


def wave_field(w: np.ndarray, box: Box, centre: np.ndarray) -> np.ndarray | float:
    """Sum of the plane waves ``w`` at the box voxels (0.0 when there are none).

    ``cos(kx*x + ky*y + kz*z + phase)`` is the real part of a product of three 1D complex
    exponentials, so the box costs one complex multiply per voxel and wave instead of a cosine.
    """
    if not len(w):
        return 0.0
    dx, dy, dz = (box.x - centre[0]).ravel(), (box.y - centre[1]).ravel(), (box.z - centre[2]).ravel()
    total = np.zeros(box.shape)
    product = np.empty(box.shape)
    for ux, uy, uz, k, phase, amp in w:
        plane = np.multiply.outer(amp * np.exp(1j * (k * ux * dx + phase)), np.exp(1j * k * uy * dy))
        along_z = np.exp(1j * k * uz * dz)
        # Re(p * q) = Re(p) Re(q) - Im(p) Im(q), in place to spare full-size temporaries.
        np.multiply(plane.real[:, :, None], along_z.real, out=product)
        total += product
        np.multiply(plane.imag[:, :, None], along_z.imag, out=product)
        total -= product
    return total


def rotation(axis_long: np.ndarray, axis_second: np.ndarray) -> np.ndarray:
    """Right-handed rotation whose columns are: ``axis_second`` (orthogonalised), a third
    axis, and ``axis_long``; i.e. local (u, v, w) with w the long axis."""
    w = np.asarray(axis_long, dtype=np.float64)
    w = w / np.linalg.norm(w)
    u = np.asarray(axis_second, dtype=np.float64)
    u = u - (u @ w) * w
    u = u / np.linalg.norm(u)
    return np.column_stack([u, np.cross(w, u), w])


@dataclass(frozen=True)
class Blob:
    """A superellipsoid with a smooth random surface, e.g. an organ or a lesion.

    Parameters
    ----------
    centre : (3,) mm, anatomical frame.
    radii : (3,) mm along the local axes (columns of ``axes``).
    axes : (3, 3) rotation; column ``c`` is local axis ``c`` in the anatomical frame.
    exponent : 2 gives an ellipsoid, larger values a boxier shape.
    deform : rows from :func:`waves`; the surface lies where ``rho == 1 + sum(waves)``.
    """

    centre: np.ndarray
    radii: np.ndarray
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))
    exponent: float = 2.0
    deform: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """An anatomical box (mm) that contains the whole shape."""
        growth = 1.0 + float(np.abs(self.deform[:, 5]).sum()) if len(self.deform) else 1.0
        half = np.abs(np.asarray(self.axes)) @ (np.asarray(self.radii) * growth)
        c = np.asarray(self.centre, dtype=np.float64)
        return c - half, c + half

    def level(self, box: Box) -> np.ndarray:
        """``rho / (1 + deformation)``: < 1 inside, 1 on the surface; shape of the box."""
        c = np.asarray(self.centre, dtype=np.float64)
        dx, dy, dz = box.x - c[0], box.y - c[1], box.z - c[2]
        e = self.exponent
        total: np.ndarray | float = 0.0
        for axis in range(3):
            a = self.axes[:, axis]
            local = (a[0] * dx + a[1] * dy + a[2] * dz) / self.radii[axis]
            total = total + (local * local if e == 2.0 else np.abs(local) ** e)
        rho = np.sqrt(total) if e == 2.0 else total ** (1.0 / e)
        if len(self.deform):
            rho = rho / (1.0 + wave_field(self.deform, box, c))
        return np.broadcast_to(rho, box.shape)

    def mask(self, box: Box) -> np.ndarray:
        return self.level(box) < 1.0


def smooth_curve(control_mm, *, step_mm: float = 0.75) -> np.ndarray:
    """Points every ``step_mm`` along a smooth (C2) curve through the control points.

    Returns shape (N, 3) in mm. The spline parameter is the chord length, so the points are
    nearly evenly spaced along the curve.
    """
    p = np.asarray(control_mm, dtype=np.float64)
    chord = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    spline = CubicSpline(chord, p, bc_type="natural")
    n = max(2, int(np.ceil(chord[-1] / step_mm)) + 1)
    return spline(np.linspace(0.0, chord[-1], n))


@dataclass(frozen=True)
class Tube:
    """A tube of varying radius around a smooth centre line (vessels, bowel, pancreas).

    Parameters
    ----------
    points : (N, 3) mm, densely sampled centre line (see :func:`smooth_curve`).
    radii : (N,) mm, the radius at each centre-line point.
    """

    points: np.ndarray
    radii: np.ndarray

    @classmethod
    def through(cls, control_mm, radii_mm) -> Tube:
        """A tube through control points with radii given at those points (interpolated)."""
        control = np.asarray(control_mm, dtype=np.float64)
        points = smooth_curve(control)
        # Radii follow the control points by chord-length position.
        chord_ctrl = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(control, axis=0), axis=1))])
        chord_pts = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
        t = chord_pts / chord_pts[-1] * chord_ctrl[-1]
        radii = np.interp(t, chord_ctrl, np.broadcast_to(np.asarray(radii_mm, dtype=np.float64),
                                                         (len(control),)))
        return cls(points, radii)

    def bounds(self, margin_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        r = float(self.radii.max()) + margin_mm
        return self.points.min(axis=0) - r, self.points.max(axis=0) + r

    def distance(self, box: Box, *, within: np.ndarray | None = None,
                 margin_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Distance (mm) from each box voxel to the centre line, and the radius there.

        Only voxels in ``within`` (box-shaped bool, default all) and no farther than the
        largest radius + ``margin_mm`` get finite values; the others get ``inf`` and radius 0.
        """
        shape = box.shape
        d = np.full(shape, np.inf)
        radius = np.zeros(shape)
        if within is None:
            within = np.ones(shape, dtype=bool)
        # Voxels farther than the largest radius from the centre line's bounding box are out.
        lo, hi = self.bounds(margin_mm)
        near = within & (box.x >= lo[0]) & (box.x <= hi[0]) & (box.y >= lo[1]) & (box.y <= hi[1]) \
            & (box.z >= lo[2]) & (box.z <= hi[2])
        where = np.nonzero(near)
        if not where[0].size:
            return d, radius
        coords = np.column_stack([box.x.ravel()[where[0]], box.y.ravel()[where[1]], box.z.ravel()[where[2]]])
        found_d, idx = cKDTree(self.points).query(coords, distance_upper_bound=float(self.radii.max()) + margin_mm)
        found = np.isfinite(found_d)
        d[tuple(w[found] for w in where)] = found_d[found]
        radius[tuple(w[found] for w in where)] = self.radii[idx[found]]
        return d, radius

    def level(self, box: Box, within: np.ndarray | None = None) -> np.ndarray:
        """``distance / radius``: < 1 inside the tube (only voxels in ``within`` are tested)."""
        d, r = self.distance(box, within=within)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.isfinite(d), d / np.where(r > 0, r, 1.0), np.inf)
