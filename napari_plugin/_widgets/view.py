"""The View widget: axial / coronal / sagittal in one click, CT window presets, the shortcuts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, Label, PushButton

from napari_plugin._layers import CT_WINDOWS, DEFAULT_WINDOW
from napari_plugin._view import SHORTCUTS, install_shortcuts, set_window, show_plane
from napari_plugin._widgets._viewer import unwrap

if TYPE_CHECKING:
    import napari.viewer

__all__ = ["ViewWidget"]


class ViewWidget(Container):
    """Dock widget: plane buttons, CT window, and the keyboard shortcuts listed."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        viewer = unwrap(viewer)
        self._viewer = viewer
        buttons = {plane: PushButton(text=plane.capitalize()) for plane in ("axial", "coronal", "sagittal")}
        self.window = ComboBox(label="CT window", choices=list(CT_WINDOWS), value=DEFAULT_WINDOW)
        keys = "; ".join(f"{key.replace('-', '+')} {argument}" for key, (_, argument) in SHORTCUTS.items())
        self.keys = Label(value=f"Keys: {keys}")
        planes = Container(widgets=list(buttons.values()), layout="horizontal", labels=False)
        super().__init__(widgets=[planes, self.window, self.keys], labels=True)
        self.keys.native.setWordWrap(True)
        for plane, button in buttons.items():
            button.changed.connect(lambda *_, p=plane: show_plane(self._viewer, p))
        self.buttons = buttons
        self.window.changed.connect(lambda preset: set_window(self._viewer, preset))
        install_shortcuts(viewer)
