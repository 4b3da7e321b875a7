"""Viewer colour tables beside a label map, so 3D Slicer and ITK-SNAP show its names and colours.

A label file alone holds numbers; medseg keeps names in ``X.json`` beside ``X.nii.gz``
(:func:`medseg.labels.write_label_table`). Viewers read neither, so a label map also gets:

* ``X.ctbl``: a 3D Slicer colour table (Slicer's "Color table file" text format: one line per
  value, ``value name R G B A`` with 0-255 components and spaces in names written as ``_``).
  Load it in Slicer (Add Data) and choose it as the label map's lookup table in the Volumes
  module, or convert the label map to a segmentation: segments take its names and colours.
* ``X.itksnap.txt``: an ITK-SNAP label description file (``IDX R G B A VIS MSH "LABEL"``, A in
  0..1). Load it with Segmentation > Import Label Descriptions.

Colours are :func:`medseg.labels.label_colour`, the same as napari layers, plots and the DICOM
SEG's recommended display colours, so a class looks the same in every viewer.

>>> from medseg.labels import LabelSet
>>> print(slicer_colour_table(LabelSet({0: "background", 1: "liver"})).splitlines()[-1])
1 liver 219 140 102 255
"""

from __future__ import annotations

import os
from pathlib import Path

from medseg.labels import LabelSet, label_colour

__all__ = [
    "colour_table_paths",
    "itksnap_label_descriptions",
    "lesion_label_set",
    "rgb255",
    "slicer_colour_table",
    "write_colour_tables",
]

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")


def rgb255(name: str) -> tuple[int, int, int]:
    """:func:`medseg.labels.label_colour` of a class name as 0-255 integers."""
    return tuple(round(c * 255) for c in label_colour(name))  # type: ignore[return-value]


def _slicer_name(name: str) -> str:
    # Slicer splits the line at spaces: its own writer replaces spaces by underscores.
    return "_".join(name.split()) or "unnamed"


def slicer_colour_table(label_set: LabelSet, *, title: str = "") -> str:
    """3D Slicer colour table text (``.ctbl``) for ``label_set``; background is transparent."""
    lines = [f"# Color table file {title or 'written by medseg'}", f"# {len(label_set)} values"]
    for label in label_set:
        r, g, b = (0, 0, 0) if label.value == 0 else rgb255(label.name)
        alpha = 0 if label.value == 0 else 255
        lines.append(f"{label.value} {_slicer_name(label.name)} {r} {g} {b} {alpha}")
    return "\n".join(lines) + "\n"


_ITKSNAP_HEADER = """\
################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
# Written by medseg.
################################################
"""


def itksnap_label_descriptions(label_set: LabelSet) -> str:
    """ITK-SNAP label description text for ``label_set`` (value 0 is ITK-SNAP's "Clear Label")."""
    lines = [_ITKSNAP_HEADER.rstrip("\n")]
    for label in label_set:
        if label.value == 0:
            lines.append(f'{0:5d} {0:5d} {0:4d} {0:4d} {0:8.2f} {0:2d} {0:2d}    "Clear Label"')
            continue
        r, g, b = rgb255(label.name)
        # The label is read up to the next double quote: a quote inside a name would end it.
        text = label.name.replace('"', "'")
        lines.append(f'{label.value:5d} {r:5d} {g:4d} {b:4d} {1:8.2f} {1:2d} {1:2d}    "{text}"')
    return "\n".join(lines) + "\n"


def colour_table_paths(label_path: str | os.PathLike) -> dict[str, Path]:
    """Where the tables of a label map go: ``X.nii.gz`` -> ``X.ctbl`` and ``X.itksnap.txt``."""
    path = Path(label_path)
    name = path.name
    stem = next((name[: -len(s)] for s in sorted(_SUFFIXES, key=len, reverse=True)
                 if name.lower().endswith(s)), name)
    return {"slicer": path.with_name(stem + ".ctbl"), "itksnap": path.with_name(stem + ".itksnap.txt")}


def write_colour_tables(label_set: LabelSet, label_path: str | os.PathLike, *,
                        inputs: tuple[str | os.PathLike, ...] = ()) -> list[Path]:
    """Write the 3D Slicer and ITK-SNAP tables of ``label_set`` beside ``label_path``.

    Each file is written atomically and never over one of ``inputs``. Returns the written paths.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from medseg.labels import DEFAULT_ORGANS
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> [p.name for p in write_colour_tables(DEFAULT_ORGANS, folder / "labels.nii.gz")]
    ['labels.ctbl', 'labels.itksnap.txt']
    """
    from medseg.io import refuse_overwriting_inputs, write_text_atomic

    paths = colour_table_paths(label_path)
    texts = {"slicer": slicer_colour_table(label_set, title=paths["slicer"].name),
             "itksnap": itksnap_label_descriptions(label_set)}
    for kind, path in paths.items():
        refuse_overwriting_inputs(path, inputs)
        write_text_atomic(path, texts[kind])
    return list(paths.values())


def lesion_label_set(ids) -> LabelSet:
    """Names for an instance map: ``{0: "background", n: "lesion n"}``, for tables beside it."""
    return LabelSet({0: "background", **{int(i): f"lesion {int(i)}" for i in sorted(set(ids)) if int(i) > 0}})
