"""napari plugin for medseg: a review workstation over the pure-Python core in ``medseg``.

Layers are placed in world RAS millimetres (spacing as ``scale``, origin as ``translate``, the
residual direction as ``rotate``, axis order and flips as a view of the data: see
:mod:`napari_plugin._geometry`), so layers from different grids overlay where they are in the
patient and napari's brush works in mm. Widgets: Segment (``run_case`` in a worker), Lesion table,
Correct (slice-by-slice operations in napari's one undo history, auto-saved for recovery), Review
(slices and lesions reviewed, coverage), Save case, View (planes and CT windows). DICOM SEG and
RTSTRUCT files open as layers; labels save as a DICOM SEG. User guide: ``docs/napari.md``.
"""

from napari_plugin._layers import layer_data_from_volume, volume_from_layer
from napari_plugin._view import show_axial, show_plane

__all__ = ["layer_data_from_volume", "show_axial", "show_plane", "volume_from_layer"]
