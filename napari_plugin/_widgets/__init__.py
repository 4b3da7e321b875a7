"""The plugin's dock widgets (magicgui Containers; napari injects the viewer).

``segment`` runs a model, ``lesion_table`` lists and follows lesions, ``save`` writes the case,
``view`` switches planes and CT windows, ``series`` picks one series of a DICOM folder, ``correct``
edits labels and lesions in napari's undo history, ``review`` marks slices and lesions reviewed.
"""

from napari_plugin._widgets.correct import CorrectWidget
from napari_plugin._widgets.lesion_table import LesionTableWidget
from napari_plugin._widgets.review import ReviewWidget
from napari_plugin._widgets.save import SaveCaseWidget
from napari_plugin._widgets.segment import SegmentWidget
from napari_plugin._widgets.series import SeriesPicker
from napari_plugin._widgets.view import ViewWidget

__all__ = ["CorrectWidget", "LesionTableWidget", "ReviewWidget", "SaveCaseWidget", "SegmentWidget", "SeriesPicker",
           "ViewWidget"]
