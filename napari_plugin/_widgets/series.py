"""The series picker: a DICOM folder holding several series opens this instead of guessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import Container, Label, PushButton, Select

from medseg.errors import MedsegError
from napari_plugin._layers import add_layers
from napari_plugin._notify import notify_error

__all__ = ["SeriesPicker"]


class SeriesPicker(Container):
    """Lists the series ``medseg.io.scan`` found; Open reads the chosen ones as layers."""

    def __init__(self, viewer: Any, folder: Path, infos: list[Any]) -> None:
        self._viewer = viewer
        self.folder = Path(folder)
        self.infos = list(infos)
        choices = []
        for info in self.infos:
            text = info.one_line() + ("" if info.readable else f"  (cannot be read: {'; '.join(info.problems)})")
            choices.append((text, info))
        readable = [info for info in self.infos if info.readable]
        self.series = Select(label="Series", choices=choices, value=readable[:1])
        self.open_button = PushButton(text="Open")
        super().__init__(widgets=[Label(value=f"{self.folder.name} holds {len(self.infos)} series:"), self.series,
                                  self.open_button], labels=False)
        self.open_button.changed.connect(self.open)

    def open(self, *_: Any) -> list[Any]:
        """Read the selected series into layers; returns the layers added."""
        from napari_plugin._reader import announce, read_volume_layers

        added = []
        for info in self.series.value:
            if not info.readable:
                notify_error(f"{info.path}: series {info.index} cannot be read ({'; '.join(info.problems)})")
                continue
            try:
                data = read_volume_layers(self.folder, self._viewer, series=info.key,
                                          name=f"{self.folder.name} [{info.index}]")
            except MedsegError as error:
                notify_error(error)
                continue
            announce(data)
            added += add_layers(self._viewer, data)
        return added
