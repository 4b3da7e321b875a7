"""Class labels as pure data: which network channel means which label value and organ name.

Imports no torch, so the CLI, reports and the napari plugin can name classes without loading
a network. A :class:`LabelSet` is ordered: entry ``c`` is the meaning of output channel ``c``,
and its ``value`` is the voxel value written to the label map (usually ``c`` itself, but a
fine-tuned model keeps the values of the model it came from, and data sets may skip values).
"""

from __future__ import annotations

import colorsys
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Label", "LabelSet", "canonical_name", "label_colour", "DEFAULT_ORGANS"]


def canonical_name(name: str) -> str:
    """Normalise a class name for matching: lower case, words joined by ``_``.

    ``"Right Kidney"``, ``"right-kidney"`` and ``"kidney_right"`` are not merged (word order
    is kept); only case and separators are normalised.
    """
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def label_colour(name: str) -> tuple[float, float, float]:
    """A stable RGB colour (0..1) for a class name, the same in every run and every viewer."""
    if canonical_name(name) in _FIXED_COLOURS:
        return _FIXED_COLOURS[canonical_name(name)]
    digest = hashlib.sha256(canonical_name(name).encode()).digest()
    hue = digest[0] / 255.0
    return colorsys.hsv_to_rgb(hue, 0.55 + 0.35 * digest[1] / 255.0, 0.75 + 0.25 * digest[2] / 255.0)


# Colours people expect for the common abdominal organs (close to 3D Slicer's/TotalSegmentator's).
_FIXED_COLOURS = {
    "background": (0.0, 0.0, 0.0),
    "liver": (0.86, 0.55, 0.40),
    "spleen": (0.62, 0.20, 0.60),
    "kidney_left": (0.72, 0.74, 0.30),
    "kidney_right": (0.85, 0.87, 0.36),
    "stomach": (0.85, 0.73, 0.55),
    "pancreas": (0.95, 0.85, 0.30),
    "aorta": (0.85, 0.15, 0.15),
    "lung_left": (0.55, 0.75, 0.90),
    "lung_right": (0.45, 0.65, 0.85),
    "bone": (0.95, 0.95, 0.85),
    "lesion": (0.10, 0.90, 0.20),
}


@dataclass(frozen=True)
class Label:
    """One class: the voxel ``value`` written to label maps and its ``name``."""

    value: int
    name: str


class LabelSet:
    """Ordered classes of a segmentation; entry ``c`` is output channel ``c``.

    Parameters
    ----------
    labels : iterable of Label, or mapping value -> name
        Channel order is the iteration order (for a mapping: sorted by value). The first entry
        must be background with value 0.

    Examples
    --------
    >>> ls = LabelSet({0: "background", 1: "liver", 2: "spleen"})
    >>> ls.value_of("Liver"), ls.names[1:], len(ls)
    (1, ('liver', 'spleen'), 3)
    """

    def __init__(self, labels: Iterable[Label] | Mapping[int, str]) -> None:
        if isinstance(labels, Mapping):
            items = [Label(int(v), str(n)) for v, n in sorted(labels.items(), key=lambda kv: int(kv[0]))]
        else:
            items = [lab if isinstance(lab, Label) else Label(int(lab[0]), str(lab[1])) for lab in labels]
        if not items:
            raise ValueError("a LabelSet needs at least the background class")
        if items[0].value != 0:
            raise ValueError(f"channel 0 must be background with value 0, got {items[0]}")
        values = [lab.value for lab in items]
        if len(set(values)) != len(values):
            raise ValueError(f"label values repeat: {values}")
        names = [canonical_name(lab.name) for lab in items]
        if len(set(names)) != len(names):
            raise ValueError(f"label names repeat: {[lab.name for lab in items]}")
        if any(v < 0 for v in values):
            raise ValueError(f"label values must be >= 0: {values}")
        self._labels: tuple[Label, ...] = tuple(items)

    # --- views --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self):
        return iter(self._labels)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and self._labels == other._labels

    def __repr__(self) -> str:
        return f"LabelSet({self.to_dict()})"

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(lab.value for lab in self._labels)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(lab.name for lab in self._labels)

    @property
    def foreground(self) -> tuple[Label, ...]:
        return self._labels[1:]

    @property
    def is_identity(self) -> bool:
        """True when channel ``c`` writes value ``c`` (argmax is already the label map)."""
        return all(lab.value == c for c, lab in enumerate(self._labels))

    def value_of(self, name: str) -> int:
        key = canonical_name(name)
        for lab in self._labels:
            if canonical_name(lab.name) == key:
                return lab.value
        raise KeyError(f"no class named {name!r}; classes: {', '.join(self.names)}")

    def name_of(self, value: int) -> str:
        for lab in self._labels:
            if lab.value == int(value):
                return lab.name
        raise KeyError(f"no class with value {value}")

    def channel_of(self, value: int) -> int:
        for channel, lab in enumerate(self._labels):
            if lab.value == int(value):
                return channel
        raise KeyError(f"no class with value {value}")

    def colours(self) -> dict[int, tuple[float, float, float, float]]:
        """value -> RGBA (0..1), background transparent; for napari label layers and plots."""
        out = {}
        for lab in self._labels:
            r, g, b = label_colour(lab.name)
            out[lab.value] = (r, g, b, 0.0 if lab.value == 0 else 1.0)
        return out

    # --- changes ------------------------------------------------------------------------------
    def extended(self, names: Iterable[str]) -> LabelSet:
        """Add classes whose names are new, with values after the current maximum.

        Existing classes keep their values and channels: this is how fine-tuning on data with
        extra classes keeps a model's label values.
        """
        known = {canonical_name(n) for n in self.names}
        items = list(self._labels)
        next_value = max(self.values) + 1
        for name in names:
            if canonical_name(name) not in known:
                items.append(Label(next_value, name))
                known.add(canonical_name(name))
                next_value += 1
        return LabelSet(items)

    # --- plain data ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, str]:
        """``{"0": "background", ...}`` in channel order (JSON keys are strings)."""
        return {str(lab.value): lab.name for lab in self._labels}

    def to_list(self) -> list[dict]:
        return [{"channel": c, "value": lab.value, "name": lab.name} for c, lab in enumerate(self._labels)]

    @classmethod
    def from_data(cls, data: Mapping | list) -> LabelSet:
        """Read :meth:`to_dict` or :meth:`to_list` output (also ``labels.json`` files)."""
        if isinstance(data, Mapping):
            return cls({int(k): str(v) for k, v in data.items()})
        return cls([Label(int(d["value"]), str(d["name"])) for d in sorted(data, key=lambda d: d["channel"])])


#: Classes of medseg's shipped default organ model (values = channels).
DEFAULT_ORGANS = LabelSet({
    0: "background",
    1: "liver",
    2: "spleen",
    3: "kidney_right",
    4: "kidney_left",
    5: "stomach",
    6: "pancreas",
    7: "aorta",
    8: "lung_right",
    9: "lung_left",
    10: "bone",
})
