"""Geometry of one stack of frames: slice order, spacing, gaps, tilt, and the RAS affine.

Conventions (docs/dicom.md): slices are ordered by their position along the slice normal
``n = row x column`` (ImageOrientationPatient), never by InstanceNumber or file name; the
spacing along ``k`` comes from the positions, never from SliceThickness. When the stacking
direction is not the normal (CT gantry tilt), the affine keeps the true, sheared step between
slices so every voxel stays exactly where the scanner put it; nothing is resampled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medseg.io._dicom_frames import Frame
from medseg.volume import LPS_TO_RAS

__all__ = ["StackGeometry", "stack_geometry", "POSITION_TOLERANCE_MM"]

#: Two frames closer than this along the normal share one slice position (4D / duplicates).
POSITION_TOLERANCE_MM = 0.01


@dataclass
class StackGeometry:
    """Slices in ``k`` order and where they lie.

    ``grid_k[n]`` is the ``k`` index of ``frames[n]``; without gaps it is ``n``. ``problems``
    holds ``(code, text)`` pairs; code ``"2d"`` and ``"gaps"`` can be overridden by the caller,
    ``"blocking"`` cannot.
    """

    frames: list[Frame]
    grid_k: list[int]
    n_slices: int
    affine: np.ndarray | None
    spacing_mm: tuple[float, float, float] | None
    positions_mm: list[float] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _geometryless(frames: list[Frame]) -> StackGeometry:
    """Frames without ImagePositionPatient/ImageOrientationPatient: a plain pixel grid."""
    ordered = sorted(frames, key=lambda f: (f.instance_number or 0, f.path, f.index_in_file))
    f0 = ordered[0]
    ps = f0.pixel_spacing or (1.0, 1.0)
    dz = f0.slice_spacing_hint or 1.0
    lps = np.diag([ps[1], ps[0], dz, 1.0])
    geo = StackGeometry(ordered, list(range(len(ordered))), len(ordered), LPS_TO_RAS @ lps,
                        (float(ps[1]), float(ps[0]), float(dz)))
    geo.warnings.append("no ImagePositionPatient/ImageOrientationPatient: the image is placed on an "
                        f"axis-aligned grid at the origin ({ps[1]:g} x {ps[0]:g} x {dz:g} mm), "
                        "in file/frame order; its position in the patient is unknown")
    if len(ordered) == 1:
        geo.problems.append(("2d", "single 2D slice: a 3D volume is needed"))
    return geo


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def stack_geometry(frames: list[Frame]) -> StackGeometry:
    """Sort ``frames`` (one orientation, one position each) along the normal and build the affine."""
    with_position = [f for f in frames if f.ipp is not None and f.iop is not None]
    if not with_position:
        return _geometryless(frames)
    if len(with_position) != len(frames):
        geo = StackGeometry(frames, list(range(len(frames))), len(frames), None, None)
        geo.problems.append(("blocking", f"{len(frames) - len(with_position)} of {len(frames)} slices "
                             "have no ImagePositionPatient/ImageOrientationPatient"))
        return geo
    f0 = frames[0]
    row, col = np.asarray(f0.iop[:3]), np.asarray(f0.iop[3:])
    if abs(float(np.dot(_unit(row), _unit(col)))) > 1e-3:
        geo = StackGeometry(frames, list(range(len(frames))), len(frames), None, None)
        geo.problems.append(("blocking", f"ImageOrientationPatient {list(f0.iop)} has row and column "
                             "directions that are not perpendicular"))
        return geo
    row, col = _unit(row), _unit(col)
    normal = np.cross(row, col)
    ps = f0.pixel_spacing
    if ps is None:
        ps = (1.0, 1.0)
    positions = np.array([float(np.dot(f.ipp, normal)) for f in frames])
    order = np.argsort(positions, kind="stable")
    frames = [frames[i] for i in order]
    d = positions[order]
    ipps = np.array([f.ipp for f in frames])
    n = len(frames)
    problems: list[tuple[str, str]] = []
    notes: list[str] = []
    extra: dict = {}

    if n == 1:
        dz = f0.slice_spacing_hint or 1.0
        grid_k, n_slices, step = [0], 1, normal * dz
        problems.append(("2d", "single 2D slice: a 3D volume is needed"))
    else:
        steps = np.diff(d)
        typical = float(np.median(steps))
        if typical <= POSITION_TOLERANCE_MM:
            geo = StackGeometry(frames, list(range(n)), n, None, None, list(map(float, d)))
            geo.problems.append(("blocking", "several slices share one position; they could not be "
                                 "told apart as time points"))
            return geo
        ratios = steps / typical
        whole = np.rint(ratios)
        tol = max(POSITION_TOLERANCE_MM, 0.01 * typical)
        if np.all(whole >= 1) and np.all(np.abs(steps - whole * typical) <= tol):
            grid_k = [0, *np.cumsum(whole).astype(int).tolist()]
        else:
            grid_k = None
        if grid_k is not None:
            n_slices = grid_k[-1] + 1
            dz = (d[-1] - d[0]) / grid_k[-1]
            off_grid = np.abs(d - (d[0] + np.array(grid_k) * dz))
            if np.max(off_grid) > tol:
                grid_k = None
        if grid_k is None:
            worst = int(np.argmax(np.abs(steps - typical)))
            geo = StackGeometry(frames, list(range(n)), n, None, None, list(map(float, d)))
            geo.problems.append(("blocking", (
                f"non-uniform slice spacing: {_fmt(float(steps.min()))} to {_fmt(float(steps.max()))} mm "
                f"(typical {_fmt(typical)} mm; slices {worst} and {worst + 1} at positions "
                f"{_fmt(d[worst])} and {_fmt(d[worst + 1])} mm along the slice normal are "
                f"{_fmt(float(steps[worst]))} mm apart)")))
            return geo
        if n_slices != n:
            gaps = [(i, int(whole[i]) - 1) for i in range(n - 1) if whole[i] > 1]
            first, missing = gaps[0]
            total = sum(m for _, m in gaps)
            problems.append(("gaps", (
                f"{total} missing slice(s) in {len(gaps)} gap(s); the first gap is between slice {first} "
                f"(position {_fmt(d[first])} mm) and slice {first + 1} (position {_fmt(d[first + 1])} mm) "
                f"along the slice normal: {_fmt(float(steps[first]))} mm where the spacing is "
                f"{_fmt(dz)} mm ({missing} slice(s) missing)")))
            extra["missing_slices"] = total
        # Step between consecutive grid positions, measured from the first and last slices.
        step = (ipps[-1] - ipps[0]) / grid_k[-1]
        in_plane = step - np.dot(step, normal) * normal
        drift = float(np.linalg.norm(in_plane)) * grid_k[-1]
        if drift <= POSITION_TOLERANCE_MM:
            step = normal * dz
        else:
            angle = float(np.degrees(np.arctan2(np.linalg.norm(in_plane), abs(np.dot(step, normal)))))
            tilt = f0.meta.gantry_tilt_deg
            said = f" (GantryDetectorTilt {tilt:g} deg)" if tilt else ""
            notes.append(f"gantry tilt{said}: slices are stacked {angle:.3f} deg off their normal; the "
                         "affine keeps this shear exactly and the voxels are not resampled")
            extra["shear_deg"] = angle
        # Every slice must sit on the line the affine describes.
        expected = ipps[0] + np.outer(grid_k, step)
        misfit = float(np.max(np.linalg.norm(ipps - expected, axis=1)))
        if misfit > max(POSITION_TOLERANCE_MM, 0.02 * min(ps)):
            geo = StackGeometry(frames, grid_k, n_slices, None, None, list(map(float, d)))
            geo.problems.append(("blocking", f"slices are not stacked on one straight line (one is "
                                 f"{misfit:.3f} mm off it)"))
            return geo

    lps = np.eye(4)
    lps[:3, 0] = row * ps[1]
    lps[:3, 1] = col * ps[0]
    lps[:3, 2] = step
    lps[:3, 3] = ipps[0]
    spacing = (float(ps[1]), float(ps[0]), float(np.linalg.norm(step)))
    geo = StackGeometry(frames, list(grid_k), n_slices, LPS_TO_RAS @ lps, spacing,
                        list(map(float, d)), problems, notes, extra)
    return geo
