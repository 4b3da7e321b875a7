"""The viewer a widget is given, as the napari object itself."""

from __future__ import annotations

from typing import Any

__all__ = ["unwrap", "wrap_text"]


def unwrap(viewer: Any) -> Any:
    """napari hands plugin widgets its viewer inside a ``PublicOnlyProxy``, which wraps every object
    reached through it in a new proxy (it also wraps this plugin's own objects: their module name
    starts with "napari"). A fresh proxy per access breaks identity (``layer is self.layer``),
    napari's own layer selection (napari #5767) and weak references to layers, so widgets keep the
    viewer itself. The proxy's purpose, keeping plugins off private attributes, still holds: this
    plugin uses none."""
    return getattr(viewer, "__wrapped__", viewer)


def wrap_text(label: Any, lines: int) -> None:
    """Let a magicgui ``Label`` wrap its text and keep room for ``lines`` lines of it.

    A word-wrapped QLabel in a crowded dock is squeezed to one line by Qt's layout and its text is
    drawn over its neighbours; a minimum height makes the dock scroll instead.
    """
    from qtpy.QtWidgets import QSizePolicy

    native = label.native
    native.setWordWrap(True)
    # Wrapped labels otherwise ask for a narrow column and wrap every few words.
    native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
    native.setMinimumHeight(lines * native.fontMetrics().lineSpacing() + 4)
