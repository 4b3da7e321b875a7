"""The viewer a widget is given, as the napari object itself."""

from __future__ import annotations

from typing import Any

__all__ = ["unwrap"]


def unwrap(viewer: Any) -> Any:
    """napari hands plugin widgets its viewer inside a ``PublicOnlyProxy``, which wraps every object
    reached through it in a new proxy (it also wraps this plugin's own objects: their module name
    starts with "napari"). A fresh proxy per access breaks identity (``layer is self.layer``),
    napari's own layer selection (napari #5767) and weak references to layers, so widgets keep the
    viewer itself. The proxy's purpose, keeping plugins off private attributes, still holds: this
    plugin uses none."""
    return getattr(viewer, "__wrapped__", viewer)
