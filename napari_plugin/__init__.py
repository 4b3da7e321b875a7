"""napari plugin for medseg: a thin GUI over the pure-Python core in ``medseg``.

World coordinates in the viewer are medseg's RAS millimetres (``Volume.affine`` is passed as
the layer affine), so layers from different grids overlay where they are in the patient and
measurements read in mm. :func:`show_axial` sets the radiological axial view.
"""

from napari_plugin._view import layer_data_from_volume, show_axial

__all__ = ["layer_data_from_volume", "show_axial"]
