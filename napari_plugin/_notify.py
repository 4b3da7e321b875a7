"""medseg's one-line errors as napari notifications, with options named as the widgets label them.

The core names API options in its messages (:func:`medseg.errors.option`); the CLI renders them
as flags (``--roi-size``), the plugin as the label a user sees on the widget ("Window size").
A :class:`~medseg.errors.MedsegError` is the user's to fix: it becomes one notification, never a
traceback. Anything else is a bug and is left to napari's error reporting.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPTION_LABELS", "message", "notify_error", "notify_info", "notify_warning", "widget_label"]

#: API option -> the widget label that sets it.
OPTION_LABELS = {
    "model": "Model",
    "trust_bundle": "Trust the bundle's code",
    "device": "Device",
    "backend": "Back-end",
    "tta": "Test-time augmentation",
    "roi_size": "Window size",
    "overlap": "Window overlap",
    "precision": "Precision",
    "lesions": "Lesion class",
    "lesion_label": "Lesion class",
    "label": "Lesion class",
    "min_volume_mm3": "Smallest lesion (mm³)",
    "split_h_mm": "Split touching lesions (mm)",
    "order": "Lesion numbering",
    "series": "Series",
    "output": "Case folder",
    "allow_replacing_corrections": "Replace corrected case",
    "allow_gaps": "Read with missing slices",
}


def widget_label(name: str, value: str | None = None) -> str:
    """How the plugin names an API option in a message: ``"Window size" (64 64 64)``."""
    label = OPTION_LABELS.get(name, name.replace("_", " ").capitalize())
    return f'"{label}"' if value is None else f'"{label}" ({value})'


def message(error: BaseException) -> str:
    """The one line a user reads for ``error``."""
    from medseg.errors import MedsegError

    if isinstance(error, MedsegError):
        return error.render(widget_label)
    return f"{type(error).__name__}: {error}"


def notify_error(error: BaseException | str) -> str:
    """Show an error notification; returns the text shown."""
    from napari.utils.notifications import show_error

    text = error if isinstance(error, str) else message(error)
    show_error(text)
    return text


def notify_warning(text: str) -> str:
    from napari.utils.notifications import show_warning

    show_warning(text)
    return text


def notify_info(text: str) -> str:
    from napari.utils.notifications import show_info

    show_info(text)
    return text


def catching(function: Any) -> Any:
    """Decorator: a MedsegError raised by ``function`` becomes a notification (returns None)."""
    import functools

    from medseg.errors import MedsegError

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except MedsegError as error:
            notify_error(error)
            return None

    return wrapper
