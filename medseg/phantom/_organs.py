"""Abdominal organs, hollow viscera and vessels of the phantom, painted in anatomical order.

Positions are anatomical mm (see :mod:`medseg.phantom._body`): +x patient Right, +y Anterior,
+z Superior, origin at a vertebral body centre at the level of the renal hila. Later paint
covers earlier paint, so the order below decides what lies on top where shapes meet
(a kidney makes its impression in the liver; the IVC and gallbladder are cut out of it).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.labels import DEFAULT_ORGANS
from medseg.phantom._body import Body
from medseg.phantom._canvas import Canvas
from medseg.phantom._random import Stream
from medseg.phantom._shapes import Blob, Box, Tube, rotation, waves

__all__ = ["paint_organs"]

LABEL = {lab.name: lab.value for lab in DEFAULT_ORGANS.foreground}


class _Painter:
    """Organ painting with the body's limits (inside the cavity, below the diaphragm)."""

    def __init__(self, canvas: Canvas, body: Body, stream: Stream, texture: Stream, variation: float) -> None:
        self.canvas, self.body, self.rng, self.variation = canvas, body, stream, variation
        # Textures draw as many numbers as their box has voxels: a stream of their own keeps
        # the shapes' numbers unchanged when a box changes size.
        self.texture = texture

    def j(self, scale: float, size: int | None = None):
        return self.rng.jitter(scale, self.variation, size)

    def place(self, centre, spread=(8.0, 8.0, 10.0), *, anterior: bool = True) -> np.ndarray:
        """A centre moved by up to ``spread`` mm; anterior organs move with the belly."""
        c = np.asarray(centre, dtype=np.float64).copy()
        if anterior and c[1] > 0:
            c[1] *= self.body.ap_scale
        return c + self.j(1.0, 3) * np.asarray(spread)

    def blob(self, centre, radii, axes=None, *, exponent=2.0, amplitude=0.1,
             wavelength=(60.0, 160.0), size_spread=0.12, anterior=True, spread=(8.0, 8.0, 10.0)) -> Blob:
        scale = 1.0 + self.j(size_spread)
        return Blob(self.place(centre, spread, anterior=anterior), np.asarray(radii, float) * scale,
                    np.eye(3) if axes is None else axes, exponent,
                    waves(self.rng, 5, wavelength_mm=wavelength, amplitude=amplitude))

    def tube(self, control, radii, *, anterior=True, spread=(5.0, 5.0, 5.0), size_spread=0.1) -> Tube:
        shift = self.j(1.0, 3) * np.asarray(spread)
        pts = []
        for p in np.asarray(control, dtype=np.float64):
            p = p.copy()
            if anterior and p[1] > 0:
                p[1] *= self.body.ap_scale
            pts.append(p + shift + self.j(2.0, 3))
        return Tube.through(pts, np.asarray(radii, float) * (1.0 + self.j(size_spread)))

    def region(self, box: Box) -> np.ndarray:
        """Where abdominal organs may be: inside the cavity and below the diaphragm."""
        return self.canvas.abdomen[box.index]

    def box_of(self, shape, margin=2.0) -> Box:
        lo, hi = shape.bounds()
        return self.canvas.grid.box(lo - margin, hi + margin)

    def vessel(self, tube: Tube, tissue: str, *, keep_liver: bool = True, label: int = 0) -> None:
        """Paint a vessel: label ``label`` outside the liver; inside it, liver if ``keep_liver``."""
        box = self.canvas.grid.box(*tube.bounds(1.0))
        if box.empty:
            return
        cavity = self.canvas.cavity[box.index]
        inside = (tube.level(box, cavity) < 1.0) & cavity
        in_liver = self.canvas.organs[box.index] == LABEL["liver"]
        if keep_liver:
            self.canvas.paint(box, inside & in_liver, tissue)
            self.canvas.paint(box, inside & ~in_liver, tissue, label)
        else:
            self.canvas.paint(box, inside, tissue, label)

    def hollow(self, tube: Tube, *, wall_mm: float, wall: str, label: int, air_fraction: float,
               stool: bool = False) -> None:
        """Bowel or stomach: an enhancing wall around fluid, stool and gas (gas rises anteriorly)."""
        box = self.canvas.grid.box(*tube.bounds(1.0))
        if box.empty:
            return
        region = self.region(box)
        d, r = tube.distance(box, within=region)
        inside = (d < r) & region
        lumen = inside & (d < r - wall_mm)
        t = ndimage.gaussian_filter(self.texture.normal(size=box.shape), 1.5)
        t /= max(float(t.std()), 1e-6)
        if stool:
            contents = np.where(t > 1.1, self.canvas.values["air"], self.canvas.values["stool"] + 35.0 * t)
        else:
            contents = np.full(box.shape, self.canvas.values["fluid"], dtype=np.float64)
        # A gas-fluid level: the top (anterior) part of each lumen holds gas when lying supine.
        top = np.broadcast_to(box.y, box.shape)
        ys = top[lumen]
        if ys.size and air_fraction > 0:
            level = np.quantile(ys, 1.0 - air_fraction)
            contents = np.where(top > level, self.canvas.values["air"], contents)
        self.canvas.paint(box, inside, wall, label)
        self.canvas.paint(box, lumen, contents.astype(np.float32), label)


def _random_loop(p: _Painter, lo, hi, n_points: int) -> list[np.ndarray]:
    """Control points of a bowel loop wandering inside the box [lo, hi] (mm)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    point = lo + (hi - lo) * p.rng.uniform(0.15, 0.85, 3)
    direction = p.rng.unit_vectors(1)[0]
    points = [point]
    for _ in range(n_points - 1):
        direction = direction + 0.9 * p.rng.unit_vectors(1)[0]
        direction /= np.linalg.norm(direction)
        step = point + direction * p.rng.uniform(22.0, 32.0)
        outside = (step < lo) | (step > hi)
        direction[outside] *= -1.0  # bounce off the box walls
        point = np.clip(step, lo, hi)
        points.append(point)
    return points


def paint_organs(canvas: Canvas, body: Body, stream: Stream, texture: Stream, variation: float) -> None:
    """Paint bowel, stomach, pancreas, liver, gallbladder, spleen, kidneys and vessels.

    ``stream`` draws shapes and positions, ``texture`` the noise-like textures inside them.
    """
    p = _Painter(canvas, body, stream, texture, variation)
    grid = canvas.grid
    sy = float(body.spine_y(0.0))

    # --- bowel: small-bowel loops, the colon frame and the duodenal C-loop (unlabelled) -------
    for lo, hi in (((-75, 35, -110), (75, 110, -25)), ((-75, 35, -110), (75, 110, -25)),
                   ((-70, 40, -100), (70, 105, -40)), ((-95, 45, -45), (-30, 100, 10))):
        lo = np.array(lo, float) * [1, body.ap_scale, 1]
        hi = np.array(hi, float) * [1, body.ap_scale, 1]
        loop = Tube.through(_random_loop(p, lo, hi, 9), 11.5 + p.j(1.5))
        p.hollow(loop, wall_mm=2.5, wall="bowel_wall", label=0, air_fraction=0.08 * p.rng.uniform())
    colon = p.tube([(100, 35, -115), (98, 40, -20), (85, 55, 8), (45, 100, -10), (0, 108, -25),
                    (-50, 100, -8), (-92, 48, 38), (-105, 25, 0), (-100, 25, -115)],
                   [24, 24, 22, 21, 20, 20, 19, 17, 17], spread=(6.0, 6.0, 8.0))
    p.hollow(colon, wall_mm=2.0, wall="muscle", label=0, air_fraction=0.0, stool=True)
    duodenum = p.tube([(22, 75, 22), (45, 58, 22), (55, 42, 5), (55, 38, -28), (30, 40, -42),
                       (0, 42, -45), (-28, 48, -35), (-35, 55, -15)], 11.0, spread=(4.0, 4.0, 4.0))
    p.hollow(duodenum, wall_mm=2.5, wall="bowel_wall", label=0, air_fraction=0.1)

    # --- stomach: fundus under the left dome, body forward and down, antrum across the midline
    stomach = p.tube([(-50, 20, 85), (-62, 50, 50), (-45, 78, 25), (-8, 88, 20), (20, 76, 22)],
                     [34, 36, 30, 20, 11], spread=(8.0, 8.0, 8.0), size_spread=0.15)
    p.hollow(stomach, wall_mm=4.0, wall="stomach_wall", label=LABEL["stomach"],
             air_fraction=0.06 + 0.12 * p.rng.uniform())
    esophagus = Tube.through([(-14, sy + 45, 130), (-22, sy + 55, 100), (-45, 30, 82)], 8.0)
    p.vessel(esophagus, "muscle", keep_liver=False)

    # --- pancreas: head in the duodenal C-loop, body across the aorta, tail at the splenic hilum
    pancreas = p.tube([(32, 42, -8), (10, 58, 4), (-30, 48, 14), (-68, 14, 28)], [21, 15, 15, 13],
                      spread=(5.0, 5.0, 6.0))
    box = grid.box(*pancreas.bounds(1.0))
    texture = ndimage.gaussian_filter(p.texture.normal(size=box.shape), 1.0) * 12.0
    canvas.paint(box, (pancreas.level(box, p.region(box)) < 1.0) & p.region(box),
                 (canvas.values["pancreas"] + texture).astype(np.float32), LABEL["pancreas"])

    # --- liver: right lobe, left lobe reaching across the midline, caudate lobe -------------
    lobes = [
        p.blob((66, 38, 44), (80, 90, 78), amplitude=0.09, spread=(8.0, 8.0, 8.0)),
        p.blob((-12, 82, 62), (62, 36, 32), axes=rotation((0.2, 0, 1), (1, -0.25, 0)), amplitude=0.1),
        p.blob((22, 32, 45), (18, 18, 30), amplitude=0.08, spread=(4.0, 4.0, 6.0)),
    ]
    lo = np.min([b.bounds()[0] for b in lobes], axis=0)
    hi = np.max([b.bounds()[1] for b in lobes], axis=0)
    box = grid.box(lo, hi)
    liver = np.zeros(box.shape, dtype=bool)
    for lobe in lobes:
        liver |= lobe.mask(box)
    canvas.paint(box, liver & p.region(box), "liver", LABEL["liver"])
    gallbladder = p.blob((48, 75, 12), (15, 14, 32), axes=rotation((0.3, -0.5, 1), (1, 0, 0)),
                         amplitude=0.06, spread=(5.0, 5.0, 6.0))
    box = p.box_of(gallbladder)
    canvas.paint(box, gallbladder.mask(box) & p.region(box), "bile", 0)

    # --- spleen: a crescent against the left posterolateral wall --------------------------------
    long_axis = np.array([-0.55, 0.6, 0.58])
    spleen = p.blob((-90, 5, 52), (28, 48, 62), axes=rotation(long_axis, (0.8, 0.6, 0)),
                    amplitude=0.08, anterior=False)
    hilum = Blob(spleen.centre + np.array([30.0, 22.0, 0.0]), np.array([26.0, 30.0, 45.0]))
    box = p.box_of(spleen)
    canvas.paint(box, spleen.mask(box) & ~hilum.mask(box) & p.region(box), "spleen", LABEL["spleen"])

    # --- kidneys: cortex, medulla, sinus fat and pelvis; the hilum faces antero-medially ------
    for side, name, z in ((1.0, "kidney_right", -6.0), (-1.0, "kidney_left", 8.0)):
        centre = (side * 72.0, -4.0, z)
        # Long axis: upper pole medial and posterior; first axis: towards the hilum.
        toward_hilum = np.array([-side * 0.75, 0.65, 0.0])
        axes = rotation((-side * 0.22, -0.2, 1.0), toward_hilum)
        kidney = p.blob(centre, (26.0, 23.0, 57.0), axes, amplitude=0.05, anterior=False,
                        size_spread=0.1, spread=(6.0, 5.0, 10.0))
        # The sinus opens through the hilum, as on CT.
        sinus = Blob(kidney.centre + toward_hilum * 0.75 * kidney.radii[0],
                     kidney.radii * np.array([0.55, 0.45, 0.6]), axes)
        pelvis = Blob(kidney.centre + toward_hilum * 0.8 * kidney.radii[0], np.array([8.0, 7.0, 11.0]))
        box = p.box_of(kidney, 4.0)
        level = kidney.level(box)
        organ = (level < 1.0) & p.region(box)
        canvas.paint(box, organ, "kidney_cortex", LABEL[name])
        canvas.paint(box, organ & (level < 0.72), "kidney_medulla")
        canvas.paint(box, organ & sinus.mask(box), "renal_sinus_fat", 0)
        canvas.paint(box, organ & pelvis.mask(box), "fluid", 0)

    # --- vessels --------------------------------------------------------------------------------
    zs = np.linspace(-120.0, 120.0, 7)
    aorta_x = -14.0 + p.j(4.0) - 0.02 * zs
    aorta = Tube.through(np.column_stack([aorta_x, [body.spine_y(z) + 30.0 - 0.02 * z for z in zs], zs]),
                         np.linspace(9.5, 12.5, 7) * (1.0 + p.j(0.12)))
    a_mid = aorta.points[len(aorta.points) // 2]
    ivc = p.tube([(25, sy + 30, -120), (26, sy + 32, -20), (28, sy + 40, 40), (20, sy + 52, 120)],
                 [11, 12, 12, 13], anterior=False, spread=(4.0, 3.0, 0.0))
    portal = [(8, 48, 2), (30, 58, 30)]
    veins = [
        (p.tube([(10, 58, -120), (9, 52, -30), *portal[:1]], [5.5, 6.0, 7.0]), "portal_vein"),
        (p.tube([*portal, (70, 45, 45), (104, 30, 55)], [7.5, 7.0, 5.0, 3.0]), "portal_vein"),
        (p.tube([portal[1], (0, 75, 52), (-40, 85, 60)], [6.0, 4.5, 2.5]), "portal_vein"),
        (p.tube([*portal[:1], (-30, 38, 12), (-70, 15, 30), (-82, 6, 42)], [5.0, 5.0, 4.5, 4.0]),
         "portal_vein"),
    ]
    for target in ((100, 20, 70), (50, 82, 72), (-25, 80, 82)):
        veins.append((p.tube([(20, sy + 52, 88), target], [5.5, 2.5], spread=(3.0, 3.0, 3.0)), "vein"))
    veins.append((p.tube([(-50, 2, 8), (-28, 40, 10), (a_mid[0], a_mid[1] + 16, 10),
                          (12, sy + 42, 7), (24, sy + 34, 6)], 5.0, anterior=False), "vein"))
    veins.append((p.tube([(48, 0, -2), (24, sy + 34, 1)], 5.0, anterior=False), "vein"))
    for tube, tissue in veins:
        p.vessel(tube, tissue)
    p.vessel(ivc, "vein", keep_liver=False)
    sma = Tube.through([(a_mid[0], a_mid[1] + 8, 16), (a_mid[0] + 4, a_mid[1] + 26, 2),
                        (a_mid[0] + 8, a_mid[1] + 30, -120)], 4.0)
    p.vessel(sma, "aorta")
    p.vessel(aorta, "aorta", keep_liver=False, label=LABEL["aorta"])
