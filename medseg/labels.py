"""Class labels as pure data, and the one ``labels.json`` reader and writer.

Imports no torch, so the CLI, reports and the napari plugin can name classes without loading
a network. A :class:`LabelSet` is ordered: entry ``c`` is the meaning of output channel ``c``,
and its ``value`` is the voxel value written to the label map (usually ``c`` itself, but a
fine-tuned model keeps the values of the model it came from, and data sets may skip values).

Names travel with label maps as geometry does: a label map ``X.nii.gz`` has its value -> name
table in ``X.json`` beside it (``labels.nii.gz`` -> ``labels.json``), read by
:func:`read_label_table` and written by :func:`write_label_table`; :func:`medseg.io.load_volume`
attaches it to the volume (``Volume.label_set``) and :func:`medseg.io.save_volume` writes it back.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Label", "LabelSet", "canonical_name", "label_colour", "DEFAULT_ORGANS", "LESION_NAMES",
           "parse_label_table", "read_label_table", "write_label_table", "label_table_path",
           "find_label_table"]


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

    def lesion_values(self) -> tuple[int, ...]:
        """Values of the classes whose name means a lesion (:data:`LESION_NAMES`), e.g. ``(11,)``."""
        return tuple(lab.value for lab in self._labels[1:] if canonical_name(lab.name) in LESION_NAMES)

    def organs(self) -> LabelSet:
        """The same set without its lesion classes: what an organ map's values mean."""
        lesions = set(self.lesion_values())
        return LabelSet([lab for lab in self._labels if lab.value not in lesions])

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


#: Class names that mean "lesion" when a label map is searched for its lesion class by name.
LESION_NAMES = ("lesion", "lesions", "tumor", "tumour", "tumors", "tumours", "metastasis", "metastases",
                "liver_tumor", "liver_tumour", "lung_tumor", "lung_tumour", "kidney_tumor", "kidney_tumour",
                "gtv", "nodule", "nodules", "lesion_class")


# --- labels.json: the one reader and writer -----------------------------------------------------
def parse_label_table(data: object, where: str | os.PathLike = "label table") -> LabelSet:
    """A :class:`LabelSet` from the JSON forms medseg meets, whichever tool wrote them.

    Accepted: ``{"0": "background", "1": "liver"}`` (medseg, MSD ``dataset.json``), ``{"background":
    0, "liver": 1}`` (nnU-Net v2), either under a ``"labels"`` key, and ``[{"value": 1, "name":
    "liver"}, ...]`` (with an optional ``"channel"`` giving the order). Background (value 0) is added
    when missing. Raises :class:`medseg.errors.InputError` naming ``where`` for anything else,
    including an nnU-Net region (a list of values), which is not one class.

    Examples
    --------
    >>> parse_label_table({"labels": {"background": 0, "Liver": 1}}).to_dict()
    {'0': 'background', '1': 'Liver'}
    """
    from medseg.errors import InputError

    hint = 'write it as {"0": "background", "1": "liver", ...}'
    if isinstance(data, Mapping) and isinstance(data.get("labels"), (Mapping, list)):
        data = data["labels"]
    table: dict[int, str] = {}
    order: list[int] | None = None
    try:
        if isinstance(data, list):
            if all(isinstance(d, Mapping) and "channel" in d for d in data):
                data = sorted(data, key=lambda d: int(d["channel"]))
                order = [int(d["value"]) for d in data]
            table = {int(d["value"]): str(d["name"]) for d in data}
        elif isinstance(data, Mapping) and data and all(re.fullmatch(r"-?\d+", str(k).strip()) for k in data):
            table = {int(k): str(v) for k, v in data.items()}
        elif isinstance(data, Mapping) and data:
            for name, value in data.items():
                if isinstance(value, (list, tuple)):
                    raise InputError(where, f"class {name!r} is a region ({list(value)}), not one label value",
                                     "medseg reads one class per label value; merge regions first")
                if isinstance(value, bool) or not isinstance(value, (int, float, str)) \
                        or not re.fullmatch(r"-?\d+(\.0*)?", str(value).strip()):
                    raise ValueError(f"{name!r}: {value!r} is not a label value")
                table[int(float(value))] = str(name)
        else:
            raise ValueError("no classes")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(where, f"is not a value -> name table ({exc})", hint) from exc
    if any(v < 0 for v in table):
        raise InputError(where, f"has negative label values {sorted(v for v in table if v < 0)}",
                         "label values are 0 (background) or more")
    table.setdefault(0, "background")
    try:
        if order is not None and order[0] == 0:
            return LabelSet([Label(v, table[v]) for v in order])
        return LabelSet(table)
    except ValueError as exc:
        raise InputError(where, str(exc), "give every value one distinct name") from exc


def read_label_table(path: str | os.PathLike) -> LabelSet:
    """Read a ``labels.json`` (or MSD/nnU-Net ``dataset.json``) into a :class:`LabelSet`."""
    from medseg.errors import InputError

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(path, "does not exist", "give the label-name table (labels.json)") from exc
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot be read as JSON ({exc})", "fix the file") from exc
    return parse_label_table(data, path)


def write_label_table(label_set: LabelSet, path: str | os.PathLike) -> Path:
    """Write ``{"0": "background", "1": "liver", ...}`` atomically (the form every reader takes)."""
    from medseg.io._atomic import write_text_atomic

    return write_text_atomic(path, json.dumps(label_set.to_dict(), indent=2) + "\n")


_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def label_table_path(image_path: str | os.PathLike) -> Path:
    """The sidecar that names the values of a label map: ``X.nii.gz`` -> ``X.json``."""
    path = Path(image_path)
    name = path.name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_name(name + ".json")


def find_label_table(image_path: str | os.PathLike) -> LabelSet | None:
    """The label table beside ``image_path`` when there is one, else ``None``.

    A sidecar of another kind (dcm2niix's BIDS JSON, a lesion table document) is not a label
    table and gives ``None``, not an error.
    """
    from medseg.errors import InputError

    candidate = label_table_path(image_path)
    if not candidate.is_file():
        return None
    try:
        data = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, Mapping) and ("schema" in data or "Modality" in data) and "labels" not in data:
        return None  # a medseg report document or a BIDS sidecar
    try:
        return parse_label_table(data, candidate)
    except InputError:
        return None
