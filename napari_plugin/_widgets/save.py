"""The Save case widget: labels (+ lesions, + image) as a case folder, with provenance.

The folder defaults to the case the labels came from, so Save after a correction writes a new
version (the previous one is kept in ``history/``). See :func:`napari_plugin._writer.save_case`.
"""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton

from medseg.errors import MedsegError
from napari_plugin._layers import layer_info
from napari_plugin._notify import OPTION_LABELS, notify_error, notify_info
from napari_plugin._widgets._viewer import unwrap
from napari_plugin._writer import save_case

if TYPE_CHECKING:
    import napari.viewer

__all__ = ["SaveCaseWidget"]


class SaveCaseWidget(Container):
    """Dock widget: choose the layers and the case folder, Save."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        viewer = unwrap(viewer)
        self._viewer = viewer
        self.labels_layer = ComboBox(label="Organ labels", choices=lambda *_: self._layers("labels"))
        self.lesions_layer = ComboBox(label="Lesions", choices=lambda *_: self._layers("lesions"), nullable=True)
        self.image_layer = ComboBox(label="Image", choices=lambda *_: self._layers("image"), nullable=True)
        self.folder = FileEdit(label=OPTION_LABELS["output"], mode="d", value="")
        self.author = LineEdit(label="Corrected by", value=getpass.getuser())
        self.store_image = CheckBox(text="Store the image in the case (for training)", value=False)
        self.save_button = PushButton(text="Save case")
        self.status = Label(value="")
        super().__init__(widgets=[self.labels_layer, self.lesions_layer, self.image_layer, self.folder, self.author, self.store_image,
                                  self.save_button, self.status], labels=True)
        self.save_button.changed.connect(self.save)
        self.labels_layer.changed.connect(self._on_labels)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh)
        self._refresh()

    def _layers(self, role: str) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers
                if layer_info(layer) is not None and layer_info(layer).role == role]

    def _refresh(self, *_: Any) -> None:
        for combo, role in ((self.labels_layer, "labels"), (self.lesions_layer, "lesions"), (self.image_layer, "image")):
            combo.reset_choices()
            layers = [layer for _, layer in self._layers(role)]
            if combo.value is None and layers:
                combo.value = layers[-1]
        self._on_labels(self.labels_layer.value)

    def _on_labels(self, layer: Any) -> None:
        info = layer_info(layer) if layer is not None else None
        if info is not None and info.case_path and str(self.folder.value) in ("", "."):
            self.folder.value = info.case_path

    def save(self, *_: Any) -> Any:
        """Write the case; returns its folder (None when refused, with a notification)."""
        folder = str(self.folder.value or "").strip()
        if folder in ("", "."):
            notify_error(f'"{OPTION_LABELS["output"]}": no folder chosen. Choose a new folder, or this scan\'s case')
            return None
        if self.labels_layer.value is None:
            notify_error('"Organ labels": no label layer to save. Open or compute labels first')
            return None
        try:
            written = save_case(folder, labels=self.labels_layer.value, lesions=self.lesions_layer.value, image=self.image_layer.value,
                                author=self.author.value or None, store_image=bool(self.store_image.value) or None)
        except MedsegError as error:
            self.status.value = "not saved: see the notification"
            notify_error(error)
            return None
        from medseg.case import read_case

        case = read_case(written)
        self.status.value = f"saved version {case.version} ({case.kind}) to {written}"
        notify_info(f"medseg: saved {written} (version {case.version}, {case.kind})")
        return written
