"""Right and left lungs from Hounsfield units: the reference for real scans without lung labels.

Aerated lung is air (about -850 HU) inside the body, so where a scan has no lung labels (the
pyradiomics chest CTs, TotalSegmentator's CT angiography) a classical threshold segmentation is
a fair reference, and the one radiology software used before deep learning (Hu, Hoffman and
Reinhardt, IEEE TMI 2001: threshold, remove trachea and main bronchi, split the lungs at the
anterior/posterior junction). Steps, on the image's own grid reoriented to RAS:

1. the body: the largest 26-connected component above -500 HU, holes filled slice by slice;
2. air inside it (below -400 HU), of which the 3D components of at least a tenth of the largest
   (at most two: the lungs, joined or not through the bronchi; bowel gas is smaller or separate);
3. vessels inside the lungs (brighter than -400 HU) filled back in: a morphological closing with a
   3 mm ball and, slice by slice, holes up to 315 mm^2 (a 20 mm vessel), as expert lung masks
   include them (the liver dome or the heart, ringed by lung on a slice, stay out);
4. the trachea removed on slices above the lungs' widest extent where it is a separate round
   piece near the midline;
5. each axial slice split into right and left at the emptiest column near the body's centre.

What it cannot do: a lung filled with tumour, effusion or consolidation keeps only its aerated
part; bronchi beyond the main ones stay inside. Both are small against a lung's 2-3 L and are
stated wherever this reference is used (``docs/model_card.md``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["lung_reference", "BODY_HU", "AIR_HU"]

#: Voxels above this are body (soft tissue, fat at -100, bone); below, outside air or lung.
BODY_HU = -500.0
#: Aerated lung is below this.
AIR_HU = -400.0
#: Holes in a lung's slice up to this area (mm^2, a vessel of 20 mm) are filled: expert lung masks
#: include the vessels inside the lung, not the liver dome or heart that a slice's lung may ring.
VESSEL_HOLE_MM2 = 315.0


def _fill_slices(mask: np.ndarray, max_hole_px: int | None = None) -> np.ndarray:
    """Holes filled slice by slice; with ``max_hole_px`` only holes up to that many pixels."""
    from skimage.morphology import remove_small_holes

    out = np.empty_like(mask)
    for k in range(mask.shape[2]):
        if max_hole_px is None:
            out[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
        else:
            out[:, :, k] = remove_small_holes(mask[:, :, k], max_size=max_hole_px)
    return out


def _largest(mask: np.ndarray) -> np.ndarray:
    import cc3d

    labels = cc3d.connected_components(mask, connectivity=26)
    if labels.max() == 0:
        return mask
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def _ball(radius_mm: float, spacing) -> np.ndarray:
    r = [max(1, int(round(radius_mm / s))) for s in spacing]
    grid = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    return sum((g * s / radius_mm) ** 2 for g, s in zip(grid, spacing)) <= 1.0


def lung_reference(volume, *, right_value: int = 1, left_value: int = 2):
    """Label map (0, ``right_value``, ``left_value``) of the aerated lungs of a CT in HU.

    Parameters
    ----------
    volume : Volume
        A CT in Hounsfield units, any orientation.

    Returns
    -------
    Volume
        uint8 label map on ``volume``'s own grid (same orientation and affine).
    """
    import cc3d

    ras = volume.reoriented("RAS")
    hu = np.asarray(ras.array, dtype=np.float32)
    spacing = [float(s) for s in ras.spacing]
    body = _fill_slices(_largest(hu > BODY_HU))
    air = (hu < AIR_HU) & body
    parts = cc3d.connected_components(air, connectivity=26)
    counts = np.bincount(parts.ravel())
    counts[0] = 0
    lungs = np.zeros(air.shape, dtype=bool)
    if counts.max() > 0:
        order = np.argsort(counts)[::-1]
        for index in order[:2]:
            if counts[index] >= 0.1 * counts[order[0]] and counts[index] > 0:
                lungs |= parts == index
    if lungs.any():
        pad = [max(1, int(round(3.0 / s))) + 1 for s in spacing]
        padded = np.pad(lungs, [(p, p) for p in pad])
        closed = ndimage.binary_closing(padded, structure=_ball(3.0, spacing))
        lungs = closed[tuple(slice(p, -p) for p in pad)]
        # Vessels are small holes; the liver dome or the heart, ringed by lung on a slice, are not.
        lungs = _fill_slices(lungs, int(round(VESSEL_HOLE_MM2 / (spacing[0] * spacing[1])))) & body
    label = np.zeros(lungs.shape, dtype=np.uint8)
    body_x = np.flatnonzero(body.any(axis=(1, 2)))
    centre = 0.5 * (body_x[0] + body_x[-1]) if body_x.size else lungs.shape[0] / 2.0
    near = max(3, int(round(40.0 / spacing[0])))
    area = lungs.sum(axis=(0, 1))
    widest = int(np.argmax(area)) if area.any() else 0
    pixel_mm2 = spacing[0] * spacing[1]
    for k in np.flatnonzero(area):
        piece = lungs[:, :, k]
        if k > widest:  # above the widest slice: the trachea is a small round piece on the midline
            comps, n = ndimage.label(piece)
            for c in range(1, n + 1):
                where = comps == c
                ci = np.argwhere(where)[:, 0].mean()
                if where.sum() * pixel_mm2 < 600.0 and abs(ci - centre) * spacing[0] < 25.0:
                    piece = piece & ~where
        profile = piece.sum(axis=1)
        lo, hi = max(0, int(centre) - near), min(piece.shape[0], int(centre) + near + 1)
        split = lo + int(np.argmin(profile[lo:hi])) if hi > lo else int(centre)
        # RAS: i grows towards the patient's right.
        label[split:, :, k][piece[split:]] = right_value
        label[:split, :, k][piece[:split]] = left_value
    out = ras.with_array(label, modality="SEG")
    return out.reoriented(volume.orientation) if volume.orientation != "RAS" else out
