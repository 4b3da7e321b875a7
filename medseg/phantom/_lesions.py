"""Lesions of the phantom: hypodense liver lesions (two of them touching) and one elsewhere.

Each lesion is an exact voxel mask (a slightly irregular ellipsoid) placed wholly inside its
organ, so its true volume is its voxel count times the voxel volume. Two liver lesions overlap
(centres 75-85 % of the sum of their radii apart) and form **one** 26-connected component that
instance separation has to split; their shared voxels go to the lesion they lie deeper inside
(smaller normalised radius), so each is one piece and the boundary between them is smooth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.phantom._canvas import Canvas
from medseg.phantom._random import Stream
from medseg.phantom._shapes import Blob, Box, rotation, waves

__all__ = ["LesionPlan", "plan_lesions", "paint_lesions"]

_MARGIN_MM = 3.0  # parenchyma left between a lesion and its organ's surface
_GAP_MM = 8.0  # between lesions that must not touch


@dataclass(frozen=True)
class LesionPlan:
    """What to place: organ, nominal radius (mm), HU, and whether it touches the previous one."""

    organ: str
    radius_mm: float
    hu: float
    touches_previous: bool = False


def plan_lesions(stream: Stream, variation: float) -> list[LesionPlan]:
    """A large, a touching pair and a small liver lesion, one outside the liver, maybe more."""
    u = stream.uniform
    plans = [
        LesionPlan("liver", u(13.0, 18.0), u(30.0, 40.0)),
        LesionPlan("liver", u(9.5, 12.0), u(30.0, 40.0)),
        LesionPlan("liver", u(7.5, 10.0), u(30.0, 40.0), touches_previous=True),
        LesionPlan("liver", u(4.5, 6.0), u(30.0, 40.0)),
    ]
    other = ("spleen", "kidney_left", "kidney_right")[stream.integer(3)]
    if other == "spleen":
        plans.append(LesionPlan("spleen", u(6.5, 9.0), u(40.0, 55.0)))
    else:  # a cyst-like renal lesion, small enough to sit inside the parenchyma
        plans.append(LesionPlan(other, u(5.0, 6.5), u(12.0, 25.0)))
    for _ in range(stream.integer(3) if variation > 0 else 0):
        plans.append(LesionPlan("liver", u(5.0, 14.0), u(28.0, 45.0)))
    return plans


def _inner_distance(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel of ``mask`` to the nearest voxel outside it."""
    padded = np.pad(mask, 1)
    return ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]


class _Placer:
    def __init__(self, canvas: Canvas, stream: Stream, spacing: np.ndarray) -> None:
        self.canvas, self.rng, self.spacing = canvas, stream, spacing
        self.placed: list[tuple[np.ndarray, float]] = []  # centres (mm) and reach (mm)
        self._distance: dict[int, tuple[Box, np.ndarray]] = {}

    def distance(self, label: int) -> tuple[Box, np.ndarray]:
        if label not in self._distance:
            where = np.nonzero(self.canvas.organs == label)
            lo = [int(w.min()) for w in where]
            hi = [int(w.max()) + 1 for w in where]
            index = tuple(slice(a, b) for a, b in zip(lo, hi))
            coords = [c[s] for c, s in zip(self.canvas.grid.coords, index)]
            box = Box(index, coords[0][:, None, None], coords[1][None, :, None], coords[2][None, None, :])
            self._distance[label] = (box, _inner_distance(self.canvas.organs[index] == label, self.spacing))
        return self._distance[label]

    def fits(self, centre: np.ndarray, reach: float, label: int, ignore: int | None = None) -> bool:
        box, dist = self.distance(label)
        ijk = [int(np.argmin(np.abs(c.ravel() - centre[a]))) for a, c in enumerate((box.x, box.y, box.z))]
        if dist[tuple(ijk)] < reach + _MARGIN_MM:
            return False
        return all(np.linalg.norm(centre - c) >= reach + r + _GAP_MM
                   for n, (c, r) in enumerate(self.placed) if n != ignore)

    def candidate(self, label: int, reach: float) -> np.ndarray | None:
        """A random centre (mm) at least ``reach`` + margin inside the organ, or None."""
        box, dist = self.distance(label)
        options = np.argwhere(dist >= reach + _MARGIN_MM)
        if not len(options):
            return None
        i, j, k = options[self.rng.integer(len(options))]
        return np.array([box.x.ravel()[i], box.y.ravel()[j], box.z.ravel()[k]])

    def blob(self, centre: np.ndarray, radius: float, *, amplitude: float) -> Blob:
        radii = radius * (1.0 + self.rng.uniform(-0.15, 0.15, 3))
        axes = rotation(self.rng.unit_vectors(1)[0], self.rng.unit_vectors(1)[0])
        deform = waves(self.rng, 3, wavelength_mm=(2.5 * radius, 6.0 * radius), amplitude=amplitude)
        return Blob(centre, radii, axes, 2.0, deform)


def _reach(blob: Blob) -> float:
    return float(np.max(blob.radii) * (1.0 + np.abs(blob.deform[:, 5]).sum()))


def paint_lesions(canvas: Canvas, plans: list[LesionPlan], stream: Stream,
                  spacing: np.ndarray) -> tuple[np.ndarray, list[LesionPlan]]:
    """Place and paint the planned lesions; return the instance map (1..N) and what was placed.

    A lesion that finds no room (a small organ in an unusual seed) is tried smaller, then
    left out, so every returned lesion lies wholly inside its organ.
    """
    from medseg.labels import DEFAULT_ORGANS

    placer = _Placer(canvas, stream, spacing)
    blobs: list[Blob] = []
    placed: list[LesionPlan] = []
    # Units to place: a single lesion, or a lesion with the touching one that follows it.
    units = []
    for plan in plans:
        if plan.touches_previous and units:
            units[-1].append(plan)
        else:
            units.append([plan])
    for unit in units:
        label = DEFAULT_ORGANS.value_of(unit[0].organ)
        if not np.any(canvas.organs == label):
            continue
        for shrink in (1.0, 0.85, 0.7):
            found = _try_place(placer, unit, label, shrink)
            if found:
                for blob, plan in zip(found, unit):
                    placer.placed.append((blob.centre, _reach(blob)))
                    blobs.append(blob)
                    placed.append(plan)
                break
    instances = np.zeros(canvas.grid.shape, dtype=np.uint8 if len(blobs) < 256 else np.uint16)
    for n, (blob, plan) in enumerate(zip(blobs, placed)):
        lo, hi = blob.bounds()
        box = canvas.grid.box(lo - 2.0, hi + 2.0)
        level = blob.level(box)
        mask = level < 1.0
        # Two touching lesions share out their overlap: each voxel goes to the lesion whose
        # surface is relatively farther away (smaller normalised radius).
        if n + 1 < len(placed) and placed[n + 1].touches_previous:
            mask &= level <= blobs[n + 1].level(box)
        if plan.touches_previous:
            mask &= level < blobs[n - 1].level(box)
        label = DEFAULT_ORGANS.value_of(plan.organ)
        assert np.all(canvas.organs[box.index][mask] == label), "lesion left its organ"
        instances[box.index][mask] = n + 1
        # Slightly darker centre, as in many metastases and cysts.
        canvas.paint(box, mask, (plan.hu - 8.0 * (1.0 - level)).astype(np.float32))
    return instances, placed


def _try_place(placer: _Placer, unit: list[LesionPlan], label: int, shrink: float) -> list[Blob]:
    """Blobs for a single lesion or a touching pair, wholly inside the organ; [] if no room."""
    radii = [plan.radius_mm * shrink for plan in unit]
    # Pairs deform less, so that their planned overlap survives the deformation.
    amplitude = 0.05 if len(unit) > 1 else 0.08
    for _ in range(80):
        centre = placer.candidate(label, 1.35 * radii[0])
        if centre is None:
            return []
        first = placer.blob(centre, radii[0], amplitude=amplitude)
        if not placer.fits(centre, _reach(first), label):
            continue
        if len(unit) == 1:
            return [first]
        for _ in range(8):
            direction = placer.rng.unit_vectors(1)[0]
            second = placer.blob(np.zeros(3), radii[1], amplitude=amplitude)
            # Centres closer than the sum of the radii along that line: even with both
            # surfaces pulled in by the 5 % deformation the two still share voxels, so they
            # always form one connected component.
            gap = placer.rng.uniform(0.75, 0.85) * (_extent(first, direction) + _extent(second, -direction))
            second = Blob(centre + gap * direction, second.radii, second.axes, 2.0, second.deform)
            if placer.fits(second.centre, _reach(second), label):
                return [first, second]
    return []


def _extent(blob: Blob, direction: np.ndarray) -> float:
    """Distance (mm) from the centre to the ellipsoid surface along ``direction``."""
    local = blob.axes.T @ direction / blob.radii
    return float(1.0 / np.linalg.norm(local))
