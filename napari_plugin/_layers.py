"""Volumes -> napari layers and back: geometry, class names, colours, and what a layer came from.

A layer made here carries ``layer.metadata["medseg"]`` (:class:`LayerInfo`): its role (``"image"``,
``"labels"`` for class maps, ``"lesions"`` for instance maps), the :class:`LayerGeometry` that maps
its data to the source volume's grid, the volume's :class:`~medseg.volume.SourceInfo`, the
:class:`~medseg.labels.LabelSet` naming its values, and for results the provenance and case folder.
:func:`volume_from_layer` turns any such layer back into a :class:`~medseg.volume.Volume` on its
exact source grid, which is how the writer and the case save work.

Edits to label layers go through napari's own history (see :mod:`napari_plugin._edits`).
No Qt here: napari's model layer only.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medseg.labels import LabelSet, label_colour
from medseg.volume import SourceInfo, Volume
from napari_plugin._geometry import LayerGeometry, layer_geometry, same_world_grid

__all__ = [
    "CT_WINDOWS",
    "DEFAULT_WINDOW",
    "MEDSEG",
    "LayerInfo",
    "add_layers",
    "class_colormap",
    "layer_data_from_volume",
    "layer_info",
    "lesion_colormap",
    "lesion_colour",
    "looks_like_labels",
    "rows_from_records",
    "sequential_ids",
    "volume_from_layer",
]

#: Key of the plugin's record in ``layer.metadata``.
MEDSEG = "medseg"

#: CT windows as (level, width) in HU, the radiology presets.
CT_WINDOWS = {
    "abdomen": (40.0, 400.0),   # soft tissue: -160..240 HU
    "lung": (-600.0, 1500.0),   # -1350..150 HU
    "bone": (400.0, 1800.0),    # -500..1300 HU
    "brain": (40.0, 80.0),      # 0..80 HU
}
DEFAULT_WINDOW = "abdomen"

#: Colour of a class value the label table does not name (visible, clearly "unknown").
_UNNAMED_COLOUR = (1.0, 0.0, 1.0, 1.0)
#: Lesion colours cycle through this many hues (golden-angle steps: neighbours differ most).
_LESION_COLOURS = 48


@dataclass
class LayerInfo:
    """What the plugin knows about a layer it made (``layer.metadata["medseg"]``).

    Attributes
    ----------
    role : {"image", "labels", "lesions"}
    geometry : LayerGeometry
        Layer data <-> source grid.
    modality : str
    source : SourceInfo
        Where the volume came from (DICOM UIDs, files).
    label_set : LabelSet or None
        Names of class values (``"labels"``), None for images and instance maps.
    provenance : dict or None
        The model run or case this layer's values came from.
    case_path : str
        The case folder it was read from or written to ("" if none).
    edits : int
        Edits made in napari since it was read, computed or saved.
    renumbered : dict
        For instance maps read with gaps in their ids: new id -> id in the file.
    notes : list of str
        What the user was told when it was opened (e.g. an oblique grid).
    reviewed : set of int
        Lesion ids a person marked as reviewed (instance maps).
    proposal : CaseResult or None
        A model run not yet saved anywhere, kept unchanged (the layer holds a copy), so that a
        first save can keep the model's proposal under the person's correction.
    lesion_rows : list of LesionMeasurement or None
        The lesion table computed with the map (by the model run, or stored in the case), so the
        table widget need not measure again; None when unknown.
    session : ScanSession or None
        The correction session of the scan (``napari_plugin._corrections``), once one started.
    rows_edits : int
        The value of ``edits`` when ``lesion_rows`` were last brought up to date (the rows describe
        the map exactly while the two are equal).
    """

    role: str
    geometry: LayerGeometry
    modality: str = ""
    source: SourceInfo = field(default_factory=SourceInfo)
    label_set: LabelSet | None = None
    provenance: dict[str, Any] | None = None
    case_path: str = ""
    edits: int = 0
    renumbered: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reviewed: set[int] = field(default_factory=set)
    proposal: Any = None
    lesion_rows: list[Any] | None = None
    session: Any = None
    rows_edits: int = -1

    def describe(self) -> dict[str, Any]:
        """Plain data (for a session file or a bug report)."""
        return {"role": self.role, "geometry": self.geometry.describe(), "modality": self.modality,
                "source": self.source.path, "series_uid": self.source.series_uid,
                "labels": None if self.label_set is None else self.label_set.to_dict(),
                "case_path": self.case_path, "edits": self.edits, "notes": list(self.notes)}


def layer_info(layer: Any) -> LayerInfo | None:
    """The plugin's record of a layer, or None for layers it did not make."""
    info = getattr(layer, "metadata", {}).get(MEDSEG)
    return info if isinstance(info, LayerInfo) else None


# --- colours ---------------------------------------------------------------------------------------
def class_colormap(label_set: LabelSet | None, values: Any = ()) -> dict:
    """``{value: RGBA}`` for a class map: the fixed colour of each class name (``label_colour``).

    Values without a name get the colour of ``"class <value>"`` when listed in ``values``, and
    magenta otherwise (``None`` key: napari's default for unlisted values).
    """
    colours: dict[Any, tuple[float, ...]] = {None: _UNNAMED_COLOUR, 0: (0.0, 0.0, 0.0, 0.0)}
    if label_set is not None:
        colours.update(label_set.colours())
    for value in values:
        value = int(value)
        if value and value not in colours:
            colours[value] = (*label_colour(f"class {value}"), 1.0)
    return colours


def lesion_colour(lesion_id: int) -> tuple[float, float, float, float]:
    """RGBA of lesion ``lesion_id``: hues in golden-angle steps, so neighbouring ids differ most.

    The first lesion is cyan, a hue no organ of :func:`medseg.labels.label_colour`'s fixed table
    has (liver orange, aorta red, spleen purple, lungs blue, kidneys yellow).
    """
    if lesion_id <= 0:
        return (0.0, 0.0, 0.0, 0.0)
    index = (int(lesion_id) - 1) % _LESION_COLOURS
    hue = (0.5 + index * 0.381966) % 1.0
    value = 1.0 if index % 2 == 0 else 0.8
    return (*colorsys.hsv_to_rgb(hue, 0.85, value), 1.0)


def lesion_colormap():
    """napari colormap for instance maps: the same colour for the same id in every session."""
    from napari.utils.colormaps import CyclicLabelColormap

    colours = np.array([lesion_colour(i) for i in range(_LESION_COLOURS + 1)], dtype=np.float32)
    return CyclicLabelColormap(colors=colours, name="medseg lesions")


# --- layers from volumes ---------------------------------------------------------------------------
def looks_like_labels(volume: Volume, name: str = "") -> bool:
    """A label map: names attached, or (not a CT/MR/PET series) named like one, or integer data with
    few non-negative values."""
    array = volume.array
    if array.dtype.kind not in "biu":
        return False
    if volume.label_set is not None:
        return True
    if volume.modality.upper() in ("CT", "MR", "PT"):  # a scanner's image, whatever its folder is called
        return False
    lowered = name.lower()
    if any(word in lowered for word in ("label", "seg", "mask", "lesion", "organ")):
        return True
    sample = array[:: max(1, array.shape[0] // 32), :: max(1, array.shape[1] // 32), :]
    values = np.unique(sample)
    return bool(values.size and values.min() >= 0 and values.size <= 64 and values.max() < 4096)


def _present_values(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        return np.zeros(0, np.int64)
    if array.dtype.kind in "bu" and array.dtype.itemsize <= 2:
        return np.flatnonzero(np.bincount(array.ravel(order="K"), minlength=1))
    return np.unique(array)


def sequential_ids(array: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Instance ids renumbered 1..n when they have gaps (napari sizes colour tables by the largest
    id, napari #2620); returns the array (unchanged when already 1..n) and new id -> old id."""
    values = _present_values(array)
    values = values[values != 0]
    if values.size == 0 or int(values[-1]) == values.size:
        return array, {}
    from skimage.segmentation import relabel_sequential

    relabelled, _, _ = relabel_sequential(array)
    dtype = np.uint16 if values.size < 65535 else np.uint32
    return relabelled.astype(dtype, copy=False), {i + 1: int(v) for i, v in enumerate(values)}


def _is_ct(volume: Volume) -> bool:
    if volume.modality.upper() == "CT":
        return True
    if volume.modality or volume.array.size == 0:
        return False
    sample = volume.array[::4, ::4, ::2]
    return bool(sample.min() < -500 and sample.max() > 200)  # air and bone in HU: a CT without a tag


def layer_data_from_volume(volume: Volume, name: str, *, kind: str | None = None,
                           provenance: dict[str, Any] | None = None, case_path: str = "",
                           notes: list[str] | None = None) -> tuple[Any, dict, str]:
    """A napari LayerData tuple ``(data, kwargs, layer_type)`` placing ``volume`` in RAS mm.

    Parameters
    ----------
    volume : Volume
    name : str
        Layer name.
    kind : {"image", "labels", "lesions"}, optional
        Default: ``"labels"`` for integer maps that look like labels (``"lesions"`` when the name
        says lesion and no class names are attached), else ``"image"``.
    provenance, case_path
        Kept on the layer for saving a case later.
    notes : list of str
        Messages already given to the user about this volume.

    Returns
    -------
    tuple
        The data is a view of ``volume.array`` (transposed/flipped; see
        :mod:`napari_plugin._geometry`) except for instance maps whose ids had to be renumbered.
    """
    if kind is None:
        kind = "labels" if looks_like_labels(volume, name) else "image"
        if kind == "labels" and volume.label_set is None and "lesion" in name.lower():
            kind = "lesions"
    if kind not in ("image", "labels", "lesions"):
        raise ValueError(f"kind must be 'image', 'labels' or 'lesions', not {kind!r}")
    geometry = layer_geometry(volume.affine, volume.shape)
    info = LayerInfo(role=kind, geometry=geometry, modality=volume.modality, source=volume.source,
                     label_set=volume.label_set if kind == "labels" else None, provenance=provenance,
                     case_path=str(case_path or ""), notes=list(notes or []))
    if geometry.problem():
        info.notes.append(geometry.problem())
    kwargs: dict[str, Any] = {"name": name, **geometry.layer_kwargs(), "metadata": {MEDSEG: info}}
    array = volume.array
    if kind == "image":
        kwargs["colormap"] = "gray"
        kwargs["rgb"] = False  # napari would read a last axis of 3 or 4 voxels as colour channels
        if _is_ct(volume):
            level, width = CT_WINDOWS[DEFAULT_WINDOW]
            kwargs["contrast_limits"] = (level - width / 2, level + width / 2)
        return geometry.to_layer(array), kwargs, "image"
    if array.dtype.kind not in "iu":
        array = array.astype(np.uint8 if array.size == 0 or array.max() < 256 else np.int32)
    if kind == "lesions":
        array, info.renumbered = sequential_ids(array)
        kwargs["colormap"] = lesion_colormap()
        kwargs["opacity"] = 0.8
        values = _present_values(array)
        kwargs["features"] = {"index": [int(v) for v in values], "lesion": [f"lesion {v}" if v else "" for v in values]}
        return geometry.to_layer(array), kwargs, "labels"
    label_set = volume.label_set
    # Unnamed maps: name and colour the values present (a named map shows unknown values magenta).
    present = _present_values(array) if label_set is None else np.zeros(0, np.int64)
    if label_set is None:
        names = {int(v): f"class {int(v)}" for v in present if v}
        names[0] = "background"
    else:
        names = {lab.value: lab.name for lab in label_set}
    kwargs["colormap"] = _direct_colormap(class_colormap(label_set, present))
    kwargs["opacity"] = 0.5
    values = sorted(names)
    kwargs["features"] = {"index": values, "class": [names[v] for v in values]}
    return geometry.to_layer(array), kwargs, "labels"


def _direct_colormap(colours: dict):
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=colours, name="medseg classes")


def rows_from_records(records: list[dict[str, Any]]) -> list[Any]:
    """``LesionMeasurement`` rows from their JSON form (``lesions/lesions.json`` of a case)."""
    from medseg.lesions import LesionMeasurement

    def tuples(value: Any) -> Any:
        return tuple(tuples(v) for v in value) if isinstance(value, list) else value

    return [LesionMeasurement(**{key: tuples(value) for key, value in record.items()}) for record in records]


def add_layers(viewer: Any, layer_data: list[tuple]) -> list[Any]:
    """Add LayerData tuples to ``viewer`` (what napari does with a reader's result)."""
    added = []
    for item in layer_data:
        if len(item) < 3 or item[0] is None:
            continue
        data, kwargs, kind = item
        added.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return added


# --- and back -------------------------------------------------------------------------------------
def volume_from_layer(layer: Any, *, reference: Any = None, grid: Any = None) -> Volume:
    """The volume a layer shows, on its exact source grid (a view of the layer's data, no copy).

    Parameters
    ----------
    layer : napari layer, or a ``(data, meta)`` pair as an npe2 writer receives them
    reference : napari layer, optional
        For a layer the plugin did not make (e.g. a new Labels layer drawn over an image), the
        layer whose grid it shares (same data shape); default: none (an error).
    grid : napari layer, optional
        Express the volume in the array order and affine of this layer's source volume instead
        of its own (the same voxel centres stored another way, e.g. LAS labels of an LPS DICOM
        series): still a view, no resampling.

    Raises
    ------
    InputError
        For a layer with no known grid, a reference of another shape, or a ``grid`` whose voxel
        centres differ from the layer's.
    """
    from medseg.errors import InputError

    data, metadata, name = _parts(layer)
    info = metadata.get(MEDSEG) if isinstance(metadata.get(MEDSEG), LayerInfo) else None
    if info is None and reference is not None:
        _, ref_meta, ref_name = _parts(reference)
        ref_info = ref_meta.get(MEDSEG)
        if not isinstance(ref_info, LayerInfo):
            raise InputError(ref_name, "was not opened with medseg, so its grid is unknown",
                             "open the image with the medseg reader")
        if tuple(np.shape(data)) != ref_info.geometry.layer_shape:
            raise InputError(name, f"has shape {tuple(np.shape(data))}, the image {ref_name} has "
                             f"{ref_info.geometry.layer_shape}", "draw the labels on the image's own grid")
        info = replace(ref_info, role="labels", label_set=None, provenance=None, edits=0, notes=[],
                       reviewed=set(), proposal=None, lesion_rows=None, renumbered={}, session=None)
    if info is None:
        raise InputError(name, "was not opened or made by medseg, so its grid in the patient is unknown",
                         "open the image with the medseg reader and draw labels on a layer made from it")
    geometry = info.geometry
    if grid is not None:
        _, grid_meta, grid_name = _parts(grid)
        target = grid_meta.get(MEDSEG).geometry
        if not same_world_grid(geometry, target):
            raise InputError(name, f"does not lie on the grid of {grid_name} (other voxel centres)",
                             "use layers of the same scan")
        geometry = target
    if tuple(np.shape(data)) != geometry.layer_shape:
        raise InputError(name, f"has shape {tuple(np.shape(data))}, its source grid is {geometry.layer_shape}",
                         "the layer data was replaced by an array of another shape; open the image again")
    label_set = info.label_set if info.role == "labels" else None
    return Volume(geometry.to_volume(np.asarray(data)), geometry.affine, info.modality, info.source, label_set)


def _parts(layer: Any) -> tuple[Any, dict, str]:
    if isinstance(layer, tuple):
        data, meta = layer[0], (layer[1] if len(layer) > 1 else {})
        return data, dict(meta.get("metadata") or {}), str(meta.get("name", "layer"))
    return layer.data, dict(layer.metadata or {}), str(layer.name)
