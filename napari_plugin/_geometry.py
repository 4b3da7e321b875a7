"""How a :class:`~medseg.volume.Volume`'s grid becomes a napari layer's data and transform, and back.

World coordinates in the viewer are medseg's RAS millimetres, axis 0 = x (towards the patient's
Right), 1 = y (Anterior), 2 = z (Superior), so layers from different grids overlay where they are
in the patient and every measurement reads in mm.

Why not one ``affine`` (what this plugin did before): napari's 3D brush and ``n_edit_dim`` read
spacing from ``layer.scale`` only, and a layer whose data axes are *permuted* against the world
axes (a sagittal or coronal acquisition) makes napari's 2D slice transform singular; vispy then
fails with ``LinAlgError: Singular matrix`` as the layer is added, whether the permutation comes as
``affine`` or as ``rotate`` (checked on napari 0.9.2). So the geometry is split in two:

1. **Axis order and flips** go into the *data*: the layer shows a view (``np.transpose`` plus
   negative strides, no copy) of the volume's array whose axis ``a`` runs along world axis ``a``
   in the positive direction, the axis nibabel's :func:`~nibabel.orientations.io_orientation`
   finds closest. Edits in napari write straight through into the volume's own array.
2. What is left is passed as napari's components, composed as ``rotate @ shear @ diag(scale)``
   plus ``translate``: ``scale`` = voxel spacing in mm along the layer's axes, ``translate`` = RAS
   position of layer voxel (0, 0, 0), ``rotate`` = the residual direction (identity for an
   axis-aligned scan), ``shear`` = a gantry tilt's skew (identity otherwise). This is the QR
   decomposition napari itself uses (``decompose_linear_matrix``).

A residual rotation or shear (an oblique MR, a gantry-tilted CT) is exact in napari's 3D view and
in ``layer.data_to_world``, but napari slices in 2D along data axes (oblique slicing is open:
napari #2616, #4205, #7310), so 2D slices are then only approximately planar in world space.
:attr:`LayerGeometry.exact_in_2d` says so and the plugin tells the user.

Pure numpy: no napari, no Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["OBLIQUE_TOLERANCE_DEG", "LayerGeometry", "layer_geometry", "same_world_grid"]

#: Directions within this angle of a world axis count as axis-aligned (DICOM stores direction
#: cosines with ~6 decimals, i.e. ~1e-4 degrees of noise).
OBLIQUE_TOLERANCE_DEG = 1e-3


@dataclass(frozen=True, eq=False)
class LayerGeometry:
    """The map between a volume's array and a napari layer showing it.

    Attributes
    ----------
    volume_shape : tuple of int
        Shape of the volume's array (i, j, k).
    axes : tuple of int
        Layer axis ``a`` shows volume axis ``axes[a]``.
    flips : tuple of bool
        Whether layer axis ``a`` runs against volume axis ``axes[a]``.
    affine : ndarray (4, 4)
        The volume's voxel -> RAS affine (kept to write the layer back on its exact grid).
    scale, translate : ndarray (3,)
        napari ``scale`` (mm per layer voxel) and ``translate`` (RAS mm of layer voxel 0, 0, 0).
    rotate, shear : ndarray (3, 3)
        napari ``rotate`` (orthonormal, det +1) and ``shear`` (unit upper triangular).
    oblique_deg : float
        Largest angle between a layer axis and its world axis (0 for axis-aligned scans).
    shear_deg : float
        Largest angle by which the axes depart from being perpendicular (gantry tilt).
    """

    volume_shape: tuple[int, int, int]
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    affine: np.ndarray
    scale: np.ndarray
    translate: np.ndarray
    rotate: np.ndarray
    shear: np.ndarray
    oblique_deg: float
    shear_deg: float

    # --- what napari needs ---------------------------------------------------------------------
    @property
    def exact_in_2d(self) -> bool:
        """True when napari's 2D slices are exact planes of the volume (no residual rotation/shear)."""
        return self.oblique_deg <= OBLIQUE_TOLERANCE_DEG and self.shear_deg <= OBLIQUE_TOLERANCE_DEG

    @property
    def layer_shape(self) -> tuple[int, int, int]:
        return tuple(self.volume_shape[a] for a in self.axes)  # type: ignore[return-value]

    def layer_kwargs(self) -> dict[str, Any]:
        """``scale``, ``translate``, ``rotate`` and ``shear`` for a napari layer."""
        return {"scale": tuple(float(s) for s in self.scale), "translate": tuple(float(t) for t in self.translate),
                "rotate": self.rotate.copy(), "shear": self.shear.copy()}

    @property
    def layer_affine(self) -> np.ndarray:
        """Layer voxel -> RAS mm (what napari's ``data_to_world`` computes from the components)."""
        out = np.eye(4)
        out[:3, :3] = self.rotate @ self.shear @ np.diag(self.scale)
        out[:3, 3] = self.translate
        return out

    def problem(self) -> str:
        """One sentence for the user when napari cannot show 2D slices of this grid exactly, else ""."""
        if self.exact_in_2d:
            return ""
        what = []
        if self.oblique_deg > OBLIQUE_TOLERANCE_DEG:
            what.append(f"oblique by {self.oblique_deg:.2f} degrees")
        if self.shear_deg > OBLIQUE_TOLERANCE_DEG:
            what.append(f"sheared by {self.shear_deg:.2f} degrees (gantry tilt)")
        return (f"the scan is {' and '.join(what)}: world positions, 3D view and measurements are exact, but "
                "napari shows 2D slices along the scan's own axes (napari has no oblique slicing), so a 2D "
                "slice is not exactly one axial/coronal/sagittal plane")

    def describe(self) -> dict[str, Any]:
        """Plain data for layer metadata."""
        return {"volume_axes": list(self.axes), "flips": [bool(f) for f in self.flips],
                "affine_ras": [[float(v) for v in row] for row in self.affine],
                "oblique_deg": round(float(self.oblique_deg), 6), "shear_deg": round(float(self.shear_deg), 6),
                "exact_in_2d": self.exact_in_2d, "problem": self.problem()}

    # --- arrays and indices ---------------------------------------------------------------------
    def to_layer(self, array: np.ndarray) -> np.ndarray:
        """A view of a volume array (i, j, k) in layer axis order (no copy)."""
        view = np.transpose(np.asarray(array), self.axes)
        return view[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]

    def to_volume(self, layer_array: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_layer`: a view in the volume's (i, j, k) order (no copy)."""
        view = np.asarray(layer_array)[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]
        return np.transpose(view, np.argsort(self.axes))

    def volume_index(self, layer_index: Any) -> np.ndarray:
        """Volume (i, j, k) of layer indices, shape (..., 3) (fractional indices allowed)."""
        layer_index = np.asarray(layer_index, dtype=np.float64)
        out = np.empty_like(layer_index)
        for a, (axis, flip) in enumerate(zip(self.axes, self.flips)):
            value = layer_index[..., a]
            out[..., axis] = (self.volume_shape[axis] - 1 - value) if flip else value
        return out

    def layer_index(self, volume_index: Any) -> np.ndarray:
        """Layer indices of volume (i, j, k), shape (..., 3)."""
        volume_index = np.asarray(volume_index, dtype=np.float64)
        out = np.empty_like(volume_index)
        for a, (axis, flip) in enumerate(zip(self.axes, self.flips)):
            value = volume_index[..., axis]
            out[..., a] = (self.volume_shape[axis] - 1 - value) if flip else value
        return out

    def volume_box(self, layer_box: tuple[slice, ...]) -> tuple[slice, slice, slice]:
        """The volume-index box (slices with step 1) covering a layer-index box."""
        out: list[slice] = [slice(0, 0)] * 3
        for a, (axis, flip) in enumerate(zip(self.axes, self.flips)):
            start, stop, _ = layer_box[a].indices(self.volume_shape[axis])
            n = self.volume_shape[axis]
            out[axis] = slice(n - stop, n - start) if flip else slice(start, stop)
        return tuple(out)  # type: ignore[return-value]


def _unit_upper(tri: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return tri @ np.diag(1.0 / scale)


def layer_geometry(affine: np.ndarray, shape: tuple[int, ...]) -> LayerGeometry:
    """Split a volume's voxel -> RAS affine into a data view plus napari layer components.

    Parameters
    ----------
    affine : ndarray (4, 4)
        ``Volume.affine``.
    shape : tuple of int
        ``Volume.shape``.

    Examples
    --------
    A sagittal series: i runs posterior, j inferior, k towards the patient's right.

    >>> affine = np.array([[0, 0, 5.0, 10], [-0.7, 0, 0, 20], [0, -0.7, 0, 30], [0, 0, 0, 1]])
    >>> geo = layer_geometry(affine, (4, 5, 6))
    >>> geo.axes, geo.flips, geo.scale.tolist(), geo.exact_in_2d
    ((2, 0, 1), (False, True, True), [5.0, 0.7, 0.7], True)
    """
    from nibabel.orientations import io_orientation

    affine = np.asarray(affine, dtype=np.float64)
    shape = tuple(int(s) for s in shape[:3])
    ornt = io_orientation(affine)  # per volume axis: (world axis, +1/-1)
    axes = [0, 0, 0]
    flips = [False, False, False]
    for volume_axis, (world_axis, sign) in enumerate(ornt):
        axes[int(world_axis)] = volume_axis
        flips[int(world_axis)] = bool(sign < 0)
    # layer index l -> volume index v, as a 4x4 matrix (v = P @ l)
    perm = np.zeros((4, 4))
    perm[3, 3] = 1.0
    for a, (axis, flip) in enumerate(zip(axes, flips)):
        perm[axis, a] = -1.0 if flip else 1.0
        perm[axis, 3] = shape[axis] - 1 if flip else 0.0
    layer_affine = affine @ perm
    linear = layer_affine[:3, :3]
    if np.allclose(linear, np.diag(np.diag(linear)), rtol=0, atol=1e-9 * np.abs(linear).max()):
        # Axis-aligned: keep the header's spacing bit for bit (a QR would add rounding noise).
        scale = np.abs(np.diag(linear)).copy()
        rotate = np.eye(3)
        shear = np.eye(3)
    else:
        import scipy.linalg

        rotate, tri = scipy.linalg.qr(linear)
        signs = np.sign(np.diag(tri))
        signs[signs == 0] = 1.0
        rotate = rotate * signs
        tri = tri * signs[:, None]
        scale = np.diag(tri).copy()
        shear = _unit_upper(tri, scale)
    directions = linear / np.linalg.norm(linear, axis=0)
    oblique = float(np.degrees(np.arccos(np.clip(np.min(np.abs(np.diag(directions))), -1.0, 1.0))))
    cosines = np.abs(directions.T @ directions - np.eye(3))
    shear_deg = float(np.degrees(np.arcsin(np.clip(cosines.max(), 0.0, 1.0))))
    return LayerGeometry(shape, tuple(axes), tuple(flips), affine.copy(), scale, layer_affine[:3, 3].copy(),
                         rotate, shear, oblique, shear_deg)


def same_world_grid(a: LayerGeometry, b: LayerGeometry, *, atol_mm: float = 1e-3) -> bool:
    """True when two volumes have the same voxel centres in the patient, whatever the order their
    arrays store them in (a DICOM series read LPS and its label map written LAS by dcm2niix)."""
    if a.layer_shape != b.layer_shape:
        return False
    corners = np.array([[0, 0, 0], [s - 1 for s in a.layer_shape]], dtype=np.float64)
    corners = np.c_[corners, np.ones(2)]
    size = max(a.layer_shape)
    return bool(np.allclose(a.layer_affine[:3, :3], b.layer_affine[:3, :3], atol=atol_mm / size)
                and np.allclose(corners @ a.layer_affine.T, corners @ b.layer_affine.T, atol=atol_mm))
