"""3D Slicer and ITK-SNAP tables beside a label map parse back to the same names and colours.

The parsers below follow the formats' own documentation, not medseg's writer:

* Slicer "Color table file" (.ctbl/.txt, Slicer docs, developer_guide/modules/colors): lines
  starting with ``#`` are header; each other line is ``index name R G B A``, space-separated,
  0-255 integers, spaces in names replaced by underscores.
* ITK-SNAP label description file (the header ITK-SNAP itself writes): ``IDX R G B A VIS MSH
  "LABEL"``, A a float in 0..1, the label in double quotes.
"""

from __future__ import annotations

import re

import pytest

from medseg.errors import InputError
from medseg.export.colour_tables import (
    colour_table_paths,
    itksnap_label_descriptions,
    lesion_label_set,
    slicer_colour_table,
    write_colour_tables,
)
from medseg.labels import DEFAULT_ORGANS, LabelSet, label_colour


def parse_slicer(text: str) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    assert text.startswith("# Color table file")
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        assert len(fields) == 6, line
        out[int(fields[0])] = (fields[1], tuple(int(f) for f in fields[2:]))
    return out


_ITKSNAP_LINE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9.]+)\s+([01])\s+([01])\s+"([^"]*)"\s*$')


def parse_itksnap(text: str) -> dict[int, tuple[str, tuple[int, int, int], float, int, int]]:
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ITKSNAP_LINE.match(line)
        assert match, line
        idx, r, g, b, a, vis, msh, label = match.groups()
        out[int(idx)] = (label, (int(r), int(g), int(b)), float(a), int(vis), int(msh))
    return out


def _rgb255(name: str) -> tuple[int, int, int]:
    return tuple(round(c * 255) for c in label_colour(name))


NAMES = LabelSet({0: "background", 1: "liver", 5: "Right Kidney", 117: "costal_cartilages", 200: 'odd "quoted" name'})


@pytest.mark.parametrize("label_set", [DEFAULT_ORGANS, NAMES])
def test_slicer_table_parses_back_to_names_and_colours(label_set):
    table = parse_slicer(slicer_colour_table(label_set))
    assert sorted(table) == sorted(label_set.values)
    assert table[0] == ("background", (0, 0, 0, 0))
    for label in label_set.foreground:
        name, rgba = table[label.value]
        assert name == label.name.replace(" ", "_")
        assert rgba == (*_rgb255(label.name), 255)


@pytest.mark.parametrize("label_set", [DEFAULT_ORGANS, NAMES])
def test_itksnap_file_parses_back_to_names_and_colours(label_set):
    table = parse_itksnap(itksnap_label_descriptions(label_set))
    assert sorted(table) == sorted(label_set.values)
    assert table[0] == ("Clear Label", (0, 0, 0), 0.0, 0, 0)
    for label in label_set.foreground:
        name, rgb, alpha, visible, mesh = table[label.value]
        assert name == label.name.replace('"', "'") and rgb == _rgb255(label.name)
        assert (alpha, visible, mesh) == (1.0, 1, 1)


def test_same_colours_as_napari_and_the_seg():
    """One colour per class everywhere: LabelSet.colours (napari) and the tables agree."""
    table = parse_slicer(slicer_colour_table(DEFAULT_ORGANS))
    for value, rgba in DEFAULT_ORGANS.colours().items():
        if value:
            assert table[value][1][:3] == tuple(round(c * 255) for c in rgba[:3])


def test_written_beside_the_label_map_atomically_and_never_over_an_input(tmp_path):
    labels = tmp_path / "labels.nii.gz"
    paths = write_colour_tables(DEFAULT_ORGANS, labels)
    assert [p.name for p in paths] == ["labels.ctbl", "labels.itksnap.txt"]
    assert parse_slicer(paths[0].read_text())[1][0] == "liver"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.ctbl", "labels.itksnap.txt"]  # no temporaries
    assert colour_table_paths("x/seg.nrrd")["slicer"].name == "seg.ctbl"
    with pytest.raises(InputError, match="is the input file"):
        write_colour_tables(DEFAULT_ORGANS, labels, inputs=(tmp_path / "labels.ctbl",))


def test_lesion_instances_get_numbered_names():
    table = parse_itksnap(itksnap_label_descriptions(lesion_label_set([3, 1, 1, 0])))
    assert [table[v][0] for v in sorted(table)] == ["Clear Label", "lesion 1", "lesion 3"]
