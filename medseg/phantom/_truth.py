"""Known answers of a phantom, computed from its exact voxel masks (not from the plan)."""

from __future__ import annotations

from typing import Any

import cc3d
import numpy as np
from scipy import ndimage
from scipy.spatial.distance import pdist

from medseg.labels import DEFAULT_ORGANS
from medseg.volume import Volume

__all__ = ["compute_truth", "longest_diameter_mm"]

#: How the diameters in ``truth.json`` are defined (they are stated there too).
DIAMETER_DEFINITION = (
    "longest_diameter_mm: largest distance between the centres of two voxels of the lesion (3D); "
    "longest_axial_diameter_mm: the same within one axial slice (k), the largest over all slices"
)


def _boundary(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a neighbour outside it: the farthest pair always lies here."""
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def longest_diameter_mm(mask: np.ndarray, affine: np.ndarray) -> tuple[float, float]:
    """(3D, axial) longest distance between voxel centres of ``mask``, in mm.

    Parameters
    ----------
    mask : bool array (I, J, K), the lesion's voxels.
    affine : (4, 4) RAS affine of the grid; slices are planes of constant ``k``.
    """
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    surface = np.argwhere(_boundary(mask, ndimage.generate_binary_structure(3, 1)))
    longest = float(pdist(surface @ matrix.T).max()) if len(surface) > 1 else 0.0
    axial = 0.0
    for k in np.unique(surface[:, 2]):
        plane = mask[:, :, k]
        edge = np.argwhere(_boundary(plane, ndimage.generate_binary_structure(2, 1)))
        if len(edge) > 1:
            points = np.column_stack([edge, np.full(len(edge), k)]) @ matrix.T
            axial = max(axial, float(pdist(points).max()))
    return longest, axial


def _centroid_ras(ijk: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ ijk + affine[:3, 3]


def compute_truth(ct: Volume, organs: Volume, lesions: Volume, *, seed: int, variation: float,
                  version: str, hu: dict[str, float], noise_sd_hu: float) -> dict[str, Any]:
    """Counts, volumes (mL), centroids (RAS and LPS mm) and diameters from the voxel masks."""
    affine = organs.affine
    voxel_ml = organs.voxel_volume_ml
    lps = np.array([-1.0, -1.0, 1.0])
    organ_rows: dict[str, Any] = {}
    labels = organs.array
    counts = np.bincount(labels.ravel(), minlength=256)
    values = [lab.value for lab in DEFAULT_ORGANS.foreground]
    centres = ndimage.center_of_mass(np.ones(labels.shape, dtype=np.uint8), labels, values)
    means = ndimage.mean(ct.array, labels, values)
    for lab, centre, mean in zip(DEFAULT_ORGANS.foreground, centres, means):
        n = int(counts[lab.value])
        ras = _centroid_ras(np.asarray(centre), affine) if n else np.full(3, np.nan)
        organ_rows[lab.name] = {
            "value": lab.value,
            "voxels": n,
            "volume_ml": round(n * voxel_ml, 6),
            "centroid_ras_mm": [round(float(v), 3) for v in ras] if n else None,
            "mean_hu": round(float(mean), 1) if n else None,
        }

    inst = lesions.array
    components, n_components = cc3d.connected_components(inst > 0, connectivity=26, return_N=True)
    objects = ndimage.find_objects(inst)
    padded_inst = np.pad(inst, 1)
    rows = []
    for lesion_id, box in enumerate(objects, start=1):
        if box is None:
            continue
        mask = inst[box] == lesion_id
        n = int(mask.sum())
        start = np.array([s.start for s in box], dtype=np.float64)
        ijk = np.argwhere(mask).mean(axis=0) + start
        ras = _centroid_ras(ijk, affine)
        sub_affine = affine.copy()
        sub_affine[:3, 3] = _centroid_ras(start, affine)
        longest, axial = longest_diameter_mm(mask, sub_affine)
        host = np.bincount(labels[box][mask]).argmax()
        component = int(np.bincount(components[box][mask]).argmax())
        # Touching: another lesion among the 26 neighbours of one of this lesion's voxels.
        grown = ndimage.binary_dilation(np.pad(mask, 1), structure=np.ones((3, 3, 3), bool))
        padded = padded_inst[tuple(slice(s.start, s.stop + 2) for s in box)]
        touches = sorted(int(v) for v in np.unique(padded[grown]) if v not in (0, lesion_id))
        rows.append({
            "id": lesion_id,
            "organ": DEFAULT_ORGANS.name_of(int(host)),
            "voxels": n,
            "volume_ml": round(n * voxel_ml, 6),
            "centroid_ras_mm": [round(float(v), 3) for v in ras],
            "centroid_lps_mm": [round(float(v), 3) for v in ras * lps],
            "centroid_ijk": [round(float(v), 3) for v in ijk],
            "longest_diameter_mm": round(longest, 3),
            "longest_axial_diameter_mm": round(axial, 3),
            "mean_hu": round(float(ct.array[box][mask].mean()), 1),
            "component_26": component,
            "touches": touches,
        })

    return {
        "generator": "medseg.phantom",
        "generator_version": version,
        "seed": int(seed),
        "variation": float(variation),
        "geometry": {
            "shape": list(organs.shape),
            "spacing_mm": [round(float(s), 6) for s in organs.spacing],
            "orientation": organs.orientation,
            "origin_ras_mm": [round(float(v), 6) for v in organs.origin],
            "affine_ras": [[round(float(v), 6) for v in row] for row in affine],
            "voxel_volume_ml": round(voxel_ml, 9),
        },
        "lesion_count": len(rows),
        "lesion_components_26": int(n_components),
        "lesions": rows,
        "organs": organ_rows,
        "tissue_hu": hu,
        "noise_sd_hu": round(float(noise_sd_hu), 2),
        "definitions": {
            "diameters": DIAMETER_DEFINITION,
            "volume_ml": "voxel count x voxel volume (exact: the masks are the truth)",
            "centroid": "mean of the voxel centres; RAS+ and LPS+ millimetres, and voxel indices",
            "lesion_in_organ": "lesion voxels keep their organ's label in organs.nii.gz",
        },
    }
