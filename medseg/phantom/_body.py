"""Body wall, table, diaphragm, lung bases, heart, back muscles and skeleton of the phantom.

Anatomical frame (mm): RAS axes with the origin at the centre of a vertebral body at the level
of the renal hila; the body outline, the organs and the ribs are placed relative to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.labels import DEFAULT_ORGANS
from medseg.phantom._canvas import Canvas
from medseg.phantom._random import Stream
from medseg.phantom._shapes import Blob, Box, waves
from medseg.phantom._shapes import wave_field as _waves_at

__all__ = ["Body", "sample_body", "paint_body", "paint_thorax", "paint_skeleton"]

BONE = DEFAULT_ORGANS.value_of("bone")
LUNG_RIGHT = DEFAULT_ORGANS.value_of("lung_right")
LUNG_LEFT = DEFAULT_ORGANS.value_of("lung_left")


@dataclass(frozen=True)
class Body:
    """The body outline (a superellipse per slice) and the levels that depend on it (mm)."""

    centre_y: float  # body centre, anterior of the spine
    half_width: float
    half_ap_anterior: float
    half_ap_posterior: float
    fat_lateral: float
    fat_anterior: float
    fat_posterior: float
    muscle: float
    deform: np.ndarray
    dome_right: tuple[float, float, float]  # apex x, y, z of the right hemidiaphragm
    dome_left: tuple[float, float, float]
    vertebra_phase: float
    ap_scale: float  # how much the anterior organs move with the belly

    def levels(self, box: Box, insets: list[tuple[float, float, float]]) -> list[np.ndarray]:
        """For each (lateral, anterior, posterior) inset (mm): a level that is < 1 inside the
        outline shrunk by that much (a superellipse norm to the power p, not a distance).
        The lower chest is a little wider; the back is flatter, as it lies on the table."""
        dy = (box.y - self.centre_y)[0, :, 0]
        deform = 1.0 + _waves_at(self.deform, box, np.array([0.0, self.centre_y, 0.0]))
        sides = []
        for side, b, p in ((dy >= 0, self.half_ap_anterior, 2.2), (dy < 0, self.half_ap_posterior, 2.9)):
            if side.any():
                sides.append((side, b, p, np.broadcast_to(deform, box.shape)[:, side, :] ** p))
        out = []
        for lateral, anterior, posterior in insets:
            a = self.half_width * (1.0 + 0.0004 * box.z) - lateral
            level = np.empty(box.shape)
            for side, b, p, deform_p in sides:
                b = b - (anterior if p == 2.2 else posterior)
                yy = np.abs(dy[side] / b)[None, :, None] ** p
                level[:, side, :] = (np.abs(box.x / a) ** p + yy) / deform_p
            out.append(level)
        return out

    def cavity_inset(self) -> tuple[float, float, float]:
        """Insets (mm) of the abdominal and thoracic cavity: inside the muscle wall."""
        return (self.fat_lateral + self.muscle, self.fat_anterior + self.muscle,
                self.fat_posterior + self.muscle + 4.0)

    def back_muscles(self, box: Box) -> np.ndarray:
        """Erector spinae beside the spine; psoas and quadratus lumborum below the diaphragm."""
        y0 = self.spine_y(box.z)
        mask = np.zeros(box.shape, dtype=bool)
        grow = np.clip((25.0 - box.z) / 125.0, 0.0, 1.0)
        r = 4.0 + 18.0 * grow
        for side in (1.0, -1.0):
            mask |= ((box.x - side * 35.0) / 26.0) ** 2 + ((box.y - y0 + 44.0) / 18.0) ** 2 < 1.0
            mask |= ((((box.x - side * (28.0 + 10.0 * grow)) / r) ** 2
                      + ((box.y - y0 - 2.0) / (0.85 * r)) ** 2 < 1.0) & (box.z < 25.0))
            mask |= ((((box.x - side * 62.0) / 17.0) ** 2 + ((box.y - y0 + 30.0) / 9.0) ** 2 < 1.0)
                     & (box.z < 30.0))
        return mask

    def diaphragm_z(self, box: Box) -> np.ndarray:
        """Height (mm) of the diaphragm dome above each (x, y): the higher of the two domes."""
        domes = []
        for (ax, ay, az), side in ((self.dome_right, 1.0), (self.dome_left, -1.0)):
            dx, dy = box.x - ax, box.y - ay
            k_y = np.where(dy < 0, 0.0065, 0.0035)  # the posterior recess reaches lowest
            domes.append(az - 0.006 * dx * dx - k_y * dy * dy)
        return np.broadcast_to(np.maximum(domes[0], domes[1]), (box.shape[0], box.shape[1], 1))

    def below_diaphragm(self, box: Box, margin_mm: float = 4.0) -> np.ndarray:
        return np.broadcast_to(box.z < self.diaphragm_z(box) - margin_mm, box.shape)

    def spine_y(self, z: np.ndarray | float) -> np.ndarray | float:
        """AP position of the vertebral body centres: a mild lumbar lordosis."""
        return 6.0 - 0.00035 * (np.asarray(z) + 60.0) ** 2


def sample_body(stream: Stream, variation: float) -> Body:
    j = lambda scale: stream.jitter(scale, variation)  # noqa: E731
    fat_post = max(6.0, 16.0 + j(8.0))
    half_post = 100.0 + j(8.0)
    half_ant = 112.0 + j(12.0)
    z_right = 112.0 + j(6.0)
    return Body(
        centre_y=-(fat_post + 58.0) + half_post,
        half_width=160.0 + j(18.0),
        half_ap_anterior=half_ant,
        half_ap_posterior=half_post,
        fat_lateral=max(8.0, 22.0 + j(12.0)),
        fat_anterior=max(8.0, 20.0 + j(12.0)),
        fat_posterior=fat_post,
        muscle=12.0 + j(3.0),
        deform=waves(stream, 4, wavelength_mm=(250.0, 600.0), amplitude=0.04 * max(variation, 0.25)),
        dome_right=(55.0 + j(8.0), 40.0 + j(8.0), z_right),
        dome_left=(-55.0 + j(8.0), 35.0 + j(8.0), z_right - 12.0 + j(5.0)),
        vertebra_phase=stream.uniform(0.0, 37.0),
        ap_scale=1.0 + 0.5 * (half_ant / 112.0 - 1.0),
    )


def paint_body(canvas: Canvas, body: Body) -> None:
    """Table, skin, subcutaneous fat, muscle wall, visceral fat, back muscles and psoas.

    Also sets ``canvas.cavity``, ``canvas.back_muscles`` and ``canvas.rib_shell`` (the 9 mm
    just outside the cavity, where the ribs run), which the later stages use.
    """
    full = canvas.grid.full()
    cavity_inset = body.cavity_inset()
    outer, skin, fat, cavity, ribs = body.levels(full, [
        (0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (body.fat_lateral, body.fat_anterior, body.fat_posterior),
        cavity_inset, tuple(v - 9.0 for v in cavity_inset)])
    inside = outer < 1.0
    # Table: two thin carbon shells around a foam core, curved up at the sides, under the back.
    back = body.centre_y - body.half_ap_posterior
    top = back - 2.0 + 0.0004 * full.x ** 2
    depth = np.broadcast_to(top - full.y, full.shape)
    canvas.paint(full, (depth >= 0) & (depth < 3) & ~inside, "table")
    canvas.paint(full, (depth >= 3) & (depth < 18) & ~inside, "table_foam")
    canvas.paint(full, (depth >= 18) & (depth < 21) & ~inside, "table")

    canvas.paint(full, inside, "skin")
    canvas.paint(full, skin < 1.0, "fat")
    canvas.paint(full, fat < 1.0, "muscle")
    canvas.paint(full, cavity < 1.0, "visceral_fat")
    canvas.back_muscles = body.back_muscles(full) & (fat < 1.0)
    canvas.paint(full, canvas.back_muscles, "muscle")
    canvas.cavity = cavity < 1.0
    canvas.rib_shell = (cavity >= 1.0) & (ribs < 1.0)


def paint_thorax(canvas: Canvas, body: Body, stream: Stream, variation: float) -> None:
    """Diaphragm, lung bases (right/left by the sign of x) and the bottom of the heart."""
    everything = canvas.grid.full()
    # Only the slices that reach above the lowest point of the diaphragm matter here.
    lowest = float(body.diaphragm_z(everything).min()) - 5.0
    full = canvas.grid.box([-np.inf, -np.inf, lowest], [np.inf, np.inf, np.inf])
    if full.empty:
        return
    cavity = canvas.cavity[full.index] & ~canvas.back_muscles[full.index]
    dome = body.diaphragm_z(full)
    above = np.broadcast_to(full.z >= dome, full.shape) & cavity
    muscle = np.broadcast_to((full.z < dome) & (full.z >= dome - 4.0), full.shape) & cavity
    canvas.paint(full, muscle, "muscle")
    # Between the lungs, in front of the spine: oesophagus, aorta, fat (an ellipse, not a slab).
    mediastinum = np.broadcast_to(
        (full.x / 30.0) ** 2 + ((full.y - body.spine_y(full.z) - 45.0) / 45.0) ** 2 < 1.0, full.shape)
    heart = Blob(np.array([-15.0 + stream.jitter(8.0, variation), 70.0 * body.ap_scale,
                           body.dome_right[2] + 20.0]),
                 np.array([62.0, 48.0, 40.0]) * (1.0 + stream.jitter(0.1, variation)),
                 deform=waves(stream, 3, wavelength_mm=(80.0, 200.0), amplitude=0.06))
    heart_mask = heart.mask(full) & above
    lungs = above & ~mediastinum & ~heart_mask
    # Faint smooth texture: vessels and dependent density make real lung bases uneven.
    texture = ndimage.gaussian_filter(stream.normal(size=full.shape).astype(np.float32), 1.2) * 60.0
    lung_hu = canvas.values["lung"] + texture + 40.0 * np.clip(-(full.y - body.spine_y(0.0)) / 60.0, 0, 1)
    canvas.paint(full, lungs & np.broadcast_to(full.x >= 0, full.shape), lung_hu, LUNG_RIGHT)
    canvas.paint(full, lungs & np.broadcast_to(full.x < 0, full.shape), lung_hu, LUNG_LEFT)
    canvas.paint(full, above & mediastinum & ~heart_mask, "visceral_fat")
    canvas.paint(full, heart_mask, "heart")


def _ribs(body: Body, box: Box, shell: np.ndarray) -> np.ndarray:
    """Lower ribs (7-12) in the ``shell`` just outside the cavity; they descend steeply from
    the back to the front, so each axial slice cuts short oblique pieces."""
    where = np.nonzero(shell)  # a thin layer: work on its voxels only
    x, y, z = box.x.ravel()[where[0]], box.y.ravel()[where[1]], box.z.ravel()[where[2]]
    phi = np.arctan2(np.abs(x), -(y - body.centre_y))  # 0 at the spine, pi in front
    z12 = 8.0  # posterior end of the 12th rib, at the renal hila
    rib = np.zeros(len(x), dtype=bool)
    for n, phi_end in ((12, 1.25), (11, 1.7), (10, 2.35), (9, 2.6), (8, 2.75), (7, 2.85)):
        centre = z12 + 31.0 * (12 - n) - 48.0 * (phi - 0.35)
        rib |= (np.abs(z - centre) < 4.5) & (phi > 0.35) & (phi < phi_end)
    mask = np.zeros(box.shape, dtype=bool)
    mask[tuple(w[rib] for w in where)] = True
    return mask


def paint_skeleton(canvas: Canvas, body: Body) -> None:
    """Vertebrae (bodies, discs, arches, spinous and transverse processes) and ribs.

    Every bone voxel gets the bone label; its outer in-plane layer gets cortical HU and the
    inside cancellous HU, so bones show a bright rim as on CT.
    """
    grid = canvas.grid
    full = grid.full()
    bone = np.zeros(grid.shape, dtype=bool)
    disc = np.zeros(grid.shape, dtype=bool)
    z = full.z
    y0 = body.spine_y(z)
    ax = 22.0 - 0.02 * z
    ay = 16.5 - 0.012 * z
    column = (full.x / ax) ** 2 + ((full.y - y0) / ay) ** 2 < 1.0
    pitch, height = 37.0, 27.0
    phase = np.mod(z - body.vertebra_phase, pitch)
    in_body = phase < height
    bone |= column & in_body
    disc |= column & ~in_body
    # Posterior elements, a little lower than their body.
    arch_phase = np.mod(z - body.vertebra_phase + 5.0, pitch)
    in_arch = arch_phase < 31.0  # the laminae overlap like roof tiles: short gaps only
    dy = full.y - y0
    r_canal = np.sqrt(full.x ** 2 + (dy + 30.0) ** 2)
    canal = r_canal < 9.0
    lamina = (r_canal >= 9.0) & (r_canal < 15.0) & (dy < -28.0)
    pedicles = (np.abs(full.x) > 8.0) & (np.abs(full.x) < 15.0) & (dy > -32.0) & (dy < -12.0)
    spinous = (full.x / 4.5) ** 2 + ((dy + 52.0) / 15.0) ** 2 < 1.0
    transverse = ((np.abs(full.x) - 30.0) / 16.0) ** 2 + ((dy + 30.0) / 4.0) ** 2 < 1.0
    mid = np.abs(arch_phase - 15.5) < 7.0
    bone |= ((lamina | pedicles | spinous) & in_arch) | (transverse & in_arch & mid)
    bone |= _ribs(body, full, canvas.rib_shell)
    bone &= ~canal
    canvas.paint(full, np.broadcast_to(canal, full.shape), "spinal_canal", 0)
    canvas.paint(full, np.broadcast_to(disc, full.shape) & ~bone, "disc", 0)
    # Cortex: bone voxels with a non-bone neighbour in the slice plane.
    inner = ndimage.binary_erosion(bone, structure=np.ones((3, 3, 1), dtype=bool))
    canvas.paint(full, bone & ~inner, "cortical_bone", BONE)
    canvas.paint(full, inner, "cancellous_bone", BONE)
