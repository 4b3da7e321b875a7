"""The arrays a phantom is painted into, and the tissue values (HU) it uses."""

from __future__ import annotations

import numpy as np

from medseg.phantom._random import Stream
from medseg.phantom._shapes import Box, Grid

__all__ = ["Canvas", "NOMINAL_HU", "sample_hu"]

#: Portal-venous-phase CT values (HU) before per-seed variation.
NOMINAL_HU: dict[str, float] = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "visceral_fat": -92.0,
    "renal_sinus_fat": -80.0,
    "skin": 20.0,
    "muscle": 50.0,
    "liver": 105.0,
    "spleen": 115.0,
    "kidney_cortex": 175.0,
    "kidney_medulla": 160.0,
    "pancreas": 90.0,
    "aorta": 170.0,
    "portal_vein": 165.0,
    "vein": 145.0,
    "heart": 130.0,
    "stomach_wall": 85.0,
    "bowel_wall": 95.0,
    "fluid": 12.0,
    "bile": 8.0,
    "stool": -40.0,
    "disc": 85.0,
    "spinal_canal": 25.0,
    "cancellous_bone": 290.0,
    "cortical_bone": 850.0,
    "table": 220.0,
    "table_foam": -880.0,
}

# How far each value may move between seeds (HU, uniform +-).
_HU_SPREAD = {
    "liver": 10.0, "spleen": 8.0, "kidney_cortex": 20.0, "kidney_medulla": 15.0, "pancreas": 10.0,
    "aorta": 25.0, "portal_vein": 20.0, "vein": 20.0, "heart": 20.0, "muscle": 8.0, "fat": 10.0,
    "visceral_fat": 8.0, "lung": 40.0, "cancellous_bone": 60.0, "cortical_bone": 120.0,
    "fluid": 8.0, "stomach_wall": 10.0, "bowel_wall": 15.0,
}


def sample_hu(stream: Stream, variation: float) -> dict[str, float]:
    """Tissue values for one phantom: the nominal ones moved by up to their spread."""
    hu = {}
    for name, value in NOMINAL_HU.items():
        spread = _HU_SPREAD.get(name, 0.0)
        hu[name] = round(value + stream.jitter(spread, variation), 1)
    # Portal-venous phase keeps the spleen a little brighter than the liver.
    hu["spleen"] = max(hu["spleen"], hu["liver"] + 4.0)
    return hu


class Canvas:
    """HU and organ-label arrays on one grid; later paint covers earlier paint.

    ``hu`` is float32 (the ideal, noise-free image); ``organs`` holds the label values of
    :data:`medseg.labels.DEFAULT_ORGANS`.
    """

    def __init__(self, grid: Grid, hu: dict[str, float]) -> None:
        self.grid = grid
        self.values = hu
        self.hu = np.full(grid.shape, hu["air"], dtype=np.float32)
        self.organs = np.zeros(grid.shape, dtype=np.uint8)
        # Regions the later stages share, set when the body is painted.
        #: Inside the muscle wall (abdominal and thoracic cavity).
        self.cavity = np.zeros(grid.shape, dtype=bool)
        #: Erector spinae, psoas and quadratus lumborum.
        self.back_muscles = np.zeros(grid.shape, dtype=bool)
        #: The 9 mm just outside the cavity, where the ribs run.
        self.rib_shell = np.zeros(grid.shape, dtype=bool)
        #: Where abdominal organs may lie: cavity, below the diaphragm, not in a back muscle.
        self.abdomen = np.zeros(grid.shape, dtype=bool)

    def paint(self, box: Box, mask: np.ndarray, tissue: str | float | np.ndarray,
              organ: int | None = None) -> None:
        """Set the voxels of ``mask`` (box-shaped) to a tissue value and, if given, a label.

        ``organ=None`` keeps the labels already there (e.g. vessels inside the liver stay
        liver); ``organ=0`` clears them (e.g. the gallbladder or the IVC cut out of the liver).
        """
        if box.empty or not mask.any():
            return
        value = self.values[tissue] if isinstance(tissue, str) else tissue
        view = self.hu[box.index]
        if isinstance(value, np.ndarray):
            view[mask] = np.broadcast_to(value, box.shape)[mask]
        else:
            view[mask] = value
        if organ is not None:
            self.organs[box.index][mask] = organ
