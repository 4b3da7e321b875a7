"""`Volume`: a 3D image (or label map) with its geometry, the one type that crosses every stage.

Axis order and world space (stated once, kept everywhere)
---------------------------------------------------------
``Volume.array`` is indexed ``array[i, j, k]``:

* ``i`` runs along a row of the stored image (DICOM: the first ImageOrientationPatient vector,
  i.e. across the columns of a slice),
* ``j`` runs down the columns (DICOM: the second ImageOrientationPatient vector),
* ``k`` runs across slices, in the order of increasing position along the slice normal.

``Volume.affine`` maps ``(i, j, k, 1)`` to world coordinates in millimetres in **RAS+**
(+x = towards the patient's Right, +y = Anterior, +z = Superior), the convention of NIfTI, nibabel,
MONAI and dcm2niix. DICOM and ITK use LPS+; ``affine_lps``, ``origin_lps`` and
``direction_lps`` give the same geometry in LPS for them. The orientation code is nibabel's:
the world direction each array axis *points to*, e.g. ``"LPS"`` for a DICOM axial
head-first-supine series read as above (i towards the patient's left, j posterior, k superior).

This is the layout nibabel and MONAI use, so arrays go to them without transposes; SimpleITK's
``GetArrayFromImage`` returns ``array.transpose(2, 1, 0)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from medseg.labels import LabelSet

__all__ = ["Volume", "SourceInfo", "LPS_TO_RAS", "affine_from_lps", "affine_problem", "lps_from_affine",
           "value_counts"]

#: Flips x and y: turns an LPS affine into a RAS one and back (it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SourceInfo:
    """Where a volume came from: what later writers (DICOM SEG, reports) need to refer back to it.

    All fields are optional; readers fill what the format carries. DICOM fields are kept as
    strings exactly as read (UIDs unchanged, even when empty in a broken file).
    """

    path: str = ""
    format: str = ""  # "dicom", "nifti", "nrrd", "mha", "memory"
    series_uid: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    sop_class_uid: str = ""
    #: SOPInstanceUID of each slice in ``k`` order (for DICOM SEG references).
    sop_instance_uids: tuple[str, ...] = ()
    patient_id: str = ""
    patient_name: str = ""
    patient_position: str = ""  # e.g. "HFS"
    series_description: str = ""
    series_number: str = ""
    manufacturer: str = ""
    #: Problems found while reading that did not stop it (skipped files, tilt, ...).
    warnings: tuple[str, ...] = ()
    #: Anything else a reader wants to keep (JSON-serialisable values).
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> SourceInfo:
        return dataclasses.replace(self, **changes)


def affine_problem(affine: np.ndarray) -> str:
    """What is wrong with an affine, in one line ("" when it is a usable voxel-to-world map).

    Spacings below 1 micrometre or above 10 m come from broken headers (a NIfTI whose pixdim is
    1e-6), not from scanners.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        return f"it is {affine.shape}, not 4x4"
    if not np.all(np.isfinite(affine)):
        return "it holds NaN or infinite values"
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing < 1e-3) or np.any(spacing > 1e4):
        return f"voxel spacing {', '.join(f'{s:.3g}' for s in spacing)} mm is not plausible"
    if abs(np.linalg.det(affine[:3, :3] / spacing)) < 1e-6:
        return "its axes are parallel (the direction matrix is singular)"
    return ""


def affine_from_lps(spacing: Sequence[float], origin_lps: Sequence[float],
                    direction_lps: np.ndarray) -> np.ndarray:
    """Build the RAS affine from ITK/DICOM-style geometry.

    Parameters
    ----------
    spacing : (3,) mm between voxel centres along i, j, k.
    origin_lps : (3,) LPS position (mm) of voxel (0, 0, 0).
    direction_lps : (3, 3) direction cosines; column ``c`` is the LPS direction of axis ``c``
        (ITK's ``GetDirection()`` reshaped row-major to 3x3).
    """
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction_lps, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    lps[:3, 3] = np.asarray(origin_lps, dtype=np.float64)
    return LPS_TO_RAS @ lps


def lps_from_affine(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a RAS affine into ITK-style ``(spacing, origin_lps, direction_lps)``."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return spacing, lps[:3, 3].copy(), lps[:3, :3] / spacing


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D array and the geometry that places it in the patient.

    Parameters
    ----------
    array : ndarray, shape (I, J, K)
        Voxel values: HU for CT (RescaleSlope/Intercept applied), scanner units for MR, class
        or instance ids for label maps. Axis order as in the module docstring.
    affine : ndarray, shape (4, 4)
        Maps voxel indices ``(i, j, k, 1)`` to RAS+ millimetres.
    modality : str
        DICOM modality ("CT", "MR", "SEG", ...) or "" when the file format does not say.
    source : SourceInfo
        Where it came from, for provenance and for writing DICOM back.
    label_set : LabelSet, optional
        For a label map: what its values mean (value -> class name). Read from the ``labels.json``
        beside a label file and written back with it, so names travel with the voxels as the
        geometry does. ``None`` for images and for maps whose values have no names (instance ids).

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.zeros((4, 5, 6), np.int16), np.diag([0.5, 0.5, 2.0, 1.0]), "CT")
    >>> vol.spacing.tolist(), vol.orientation
    ([0.5, 0.5, 2.0], 'RAS')
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = ""
    source: SourceInfo = field(default_factory=SourceInfo)
    label_set: LabelSet | None = None

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Volume needs a 3D array (i, j, k), got shape {array.shape}")
        affine = np.array(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {affine.shape}")
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            # One line: this message may reach a user through a reader (see affine_problem).
            raise ValueError(f"affine is singular or not finite: {affine_problem(affine)}")
        affine.setflags(write=False)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "affine", affine)

    # --- geometry ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel spacing in mm along ``i, j, k``."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 RAS direction cosines; column ``c`` is the direction of axis ``c``."""
        return self.affine[:3, :3] / self.spacing

    @property
    def affine_lps(self) -> np.ndarray:
        return LPS_TO_RAS @ self.affine

    @property
    def origin_lps(self) -> np.ndarray:
        return self.affine_lps[:3, 3].copy()

    @property
    def direction_lps(self) -> np.ndarray:
        return self.affine_lps[:3, :3] / self.spacing

    @property
    def orientation(self) -> str:
        """nibabel axis codes, e.g. ``"LPS"``: where each array axis points in RAS+ world."""
        from nibabel.orientations import aff2axcodes

        return "".join(aff2axcodes(self.affine))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices, shape (..., 3), to RAS mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Map RAS mm, shape (..., 3), to (fractional) voxel indices."""
        inv = np.linalg.inv(self.affine)
        xyz = np.asarray(xyz, dtype=np.float64)
        return xyz @ inv[:3, :3].T + inv[:3, 3]

    def same_grid(self, other: Volume, *, atol_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same shape and its voxel centres lie within ``atol_mm``."""
        if self.shape != other.shape:
            return False
        corners = np.array([[0, 0, 0], [s - 1 for s in self.shape]], dtype=np.float64)
        return bool(
            np.allclose(self.affine[:3, :3], other.affine[:3, :3], atol=atol_mm / max(self.shape))
            and np.allclose(self.voxel_to_world(corners), other.voxel_to_world(corners), atol=atol_mm)
        )

    # --- derived volumes ----------------------------------------------------------------------
    def with_array(self, array: np.ndarray, *, modality: str | None = None,
                   label_set: LabelSet | None = None) -> Volume:
        """A volume on the same grid with other voxel values (e.g. a label map of this image).

        The new values mean something else, so ``label_set`` is not carried over: pass the new
        map's own (or ``self.label_set`` when the values keep their meaning).
        """
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.affine, self.modality if modality is None else modality, self.source,
                      label_set)

    def with_labels(self, label_set: LabelSet | None) -> Volume:
        """The same voxels and grid with ``label_set`` naming the values."""
        return dataclasses.replace(self, label_set=label_set)

    def crop(self, box: Sequence[slice]) -> Volume:
        """The sub-volume ``array[box]`` with its affine moved so world positions are unchanged.

        ``box`` holds three slices with step 1 (or None); indices are clipped like numpy's.
        """
        starts = []
        for axis, s in enumerate(box):
            start, _, step = s.indices(self.array.shape[axis])
            if step != 1:
                raise ValueError("crop takes slices with step 1")
            starts.append(start)
        affine = self.affine.copy()
        affine[:3, 3] = self.voxel_to_world(np.array(starts, dtype=np.float64))
        return Volume(self.array[tuple(box)], affine, self.modality, self.source, self.label_set)

    def reoriented(self, axcodes: str = "RAS") -> Volume:
        """The same image with its array axes permuted/flipped to ``axcodes``; world unchanged.

        Only a view of the data is taken (no resampling), so voxel values are identical.
        """
        from nibabel import orientations as ornt

        current = ornt.io_orientation(self.affine)
        target = ornt.axcodes2ornt(tuple(axcodes))
        transform = ornt.ornt_transform(current, target)
        array = ornt.apply_orientation(self.array, transform)
        affine = self.affine @ ornt.inv_ornt_aff(transform, self.array.shape)
        return Volume(array, affine, self.modality, self.source, self.label_set)

    def describe(self) -> dict[str, Any]:
        """Plain-data summary (JSON-serialisable) of shape, geometry and source."""
        return {
            "shape": list(self.shape),
            "dtype": str(self.array.dtype),
            "spacing_mm": [round(float(s), 6) for s in self.spacing],
            "origin_ras_mm": [round(float(o), 4) for o in self.origin],
            "orientation": self.orientation,
            "modality": self.modality,
            "affine_ras": [[float(v) for v in row] for row in self.affine],
            "source": {
                "path": self.source.path,
                "format": self.source.format,
                "series_uid": self.source.series_uid,
                "series_description": self.source.series_description,
            },
            **({"labels": self.label_set.to_dict()} if self.label_set is not None else {}),
        }


def value_counts(array: np.ndarray) -> np.ndarray:
    """Voxels per value (index = value) of a non-negative integer array, in 256 k-voxel chunks.

    ``np.bincount`` converts its input to int64 first: on a 512x512x300 map that is a 630 MB
    temporary (0.15-0.85 s with its page faults); chunks of 2 MB stay in the CPU's cache (0.09 s).
    """
    flat = np.ravel(array, order="K")  # a view for C- or F-ordered arrays
    if flat.dtype.kind not in "iub" or not flat.size:
        return np.bincount(flat.astype(np.int64)) if flat.size else np.zeros(1, np.int64)
    top = int(flat.max())
    out = np.zeros(top + 1, np.int64)
    for start in range(0, flat.size, 1 << 18):
        out += np.bincount(flat[start:start + (1 << 18)], minlength=top + 1)
    return out
