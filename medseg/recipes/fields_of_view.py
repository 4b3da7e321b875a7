"""Fields of view cut from whole label maps, as real scans are cut: chest-only, abdomen, pelvis...

A label map of a whole trunk teaches a network organs in context; real scans end at a random
height (a chest CT stops somewhere around the diaphragm, an abdomen CT starts at the liver dome),
and a window at a scan's end sees padding where the anatomy continues. Each map yields its own
crops, placed from its anatomy (the default classes found by name, through
:mod:`medseg.training.class_maps`) with random margins drawn from a seed, so the set is fixed and
reproducible:

========================  =====================================================================
field of view             superior .. inferior cut (RAS ``k``, mm; margins uniform in the range)
========================  =====================================================================
``chest``                 lung apex + 0..60 .. lung base - 40..+30 (through the liver dome or below it)
``abdomen``               liver dome - 40..+20 .. lowest kidney - 40..+40
``pelvis``                iliac crest + 0..80 .. the map's end
``thorax_abdomen``        lung apex + 0..40 .. lowest kidney - 0..50
``slab``                  40-150 mm anywhere over the labelled organs (a short series, a slab)
``neck_chest``            the map's top (head or neck) .. lung apex - 20..120 (a head-neck scan
                          that ends in the upper chest; recipe v2 stage 2)
========================  =====================================================================

A crop is kept only when the map holds the anatomy it is placed from and the crop is at least
30 mm tall. numpy only; the crops are written as NIfTI label maps beside the training run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FIELDS_OF_VIEW", "EXTRA_FIELDS_OF_VIEW", "FieldOfView", "plan_fields_of_view", "write_fields_of_view"]

FIELDS_OF_VIEW = ("chest", "abdomen", "pelvis", "thorax_abdomen", "slab")
#: Drawn after the others (their random margins stay the same whether it is asked for or not).
EXTRA_FIELDS_OF_VIEW = ("neck_chest",)


@dataclass(frozen=True)
class FieldOfView:
    """One crop of a map: its name and the RAS ``k`` slice range kept (``stop`` exclusive)."""

    name: str
    start: int
    stop: int


def _extent(mask_per_k: np.ndarray) -> tuple[int, int] | None:
    idx = np.flatnonzero(mask_per_k)
    return (int(idx[0]), int(idx[-1])) if idx.size else None


def plan_fields_of_view(array: np.ndarray, names: dict[int, str], spacing_k_mm: float, seed: int,
                        kinds=FIELDS_OF_VIEW) -> list[FieldOfView]:
    """Crops of a RAS label map ``array`` (structure values, ``names`` value -> structure name)."""
    from medseg.labels import canonical_name
    from medseg.training.class_maps import default_class_of

    rng = np.random.default_rng(seed)
    n_k = array.shape[2]
    present = np.unique(array)
    by_class: dict[str, list[int]] = {}
    for value in present.tolist():
        if value == 0 or value not in names:
            continue
        key = default_class_of(names[value]) or canonical_name(names[value])
        by_class.setdefault(key, []).append(value)
        if canonical_name(names[value]) in ("hip_left", "hip_right", "urinary_bladder", "bladder"):
            by_class.setdefault("pelvis", []).append(value)
    # Which values each axial slice holds: one pass over the map (an isin per class would be 60 passes).
    in_slice = [set(np.unique(array[:, :, k]).tolist()) for k in range(n_k)]
    per_k = {key: np.array([bool(slice_values.intersection(values)) for slice_values in in_slice])
             for key, values in by_class.items()}

    def ext(*keys: str):
        masks = [per_k[k] for k in keys if k in per_k]
        return _extent(np.logical_or.reduce(masks)) if masks else None

    mm = lambda value: int(round(value / spacing_k_mm))  # noqa: E731
    out: list[FieldOfView] = []

    def add(name: str, top: int, bottom: int) -> None:
        start, stop = max(0, bottom), min(n_k, top + 1)
        if (stop - start) * spacing_k_mm >= 30.0:
            out.append(FieldOfView(name, start, stop))

    lungs, liver, kidneys, pelvis = ext("lung_right", "lung_left"), ext("liver"), ext("kidney_right", "kidney_left"), \
        ext("pelvis")
    if lungs:
        add("chest", lungs[1] + mm(rng.uniform(0, 60)), lungs[0] - mm(rng.uniform(-30, 40)))
    if liver and kidneys:
        add("abdomen", liver[1] + mm(rng.uniform(-40, 20)), kidneys[0] - mm(rng.uniform(-40, 40)))
    if pelvis:
        add("pelvis", pelvis[1] + mm(rng.uniform(0, 80)), 0)
    if lungs and kidneys:
        add("thorax_abdomen", lungs[1] + mm(rng.uniform(0, 40)), kidneys[0] - mm(rng.uniform(0, 50)))
    organs = ext(*[k for k in per_k if k in ("liver", "spleen", "kidney_right", "kidney_left", "stomach",
                                              "pancreas", "aorta", "lung_right", "lung_left")])
    if organs:
        height = mm(rng.uniform(40, 150))
        low, high = organs[0], max(organs[0], organs[1] - height)
        start = int(rng.integers(low, high + 1))
        add("slab", start + height - 1, start)
    if "neck_chest" in kinds and lungs and (n_k - 1 - lungs[1]) * spacing_k_mm >= 60.0:
        add("neck_chest", n_k - 1, lungs[1] - mm(rng.uniform(20, 120)))
    return [fov for fov in out if fov.name in kinds]


def write_fields_of_view(label_path: str | Path, names: dict[int, str], folder: str | Path, *, prefix: str,
                         seed: int, kinds=FIELDS_OF_VIEW) -> list[tuple[str, Path]]:
    """Write the crops of one label map (RAS) as ``<prefix>_<fov>_label.nii.gz``; skips existing files.

    Returns ``[(case name, path), ...]``.
    """
    from medseg.io import load_volume, save_volume

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    label = load_volume(label_path).reoriented("RAS")
    array = np.asarray(label.array)
    written = []
    for fov in plan_fields_of_view(array, names, float(label.spacing[2]), seed, kinds):
        path = folder / f"{prefix}_{fov.name}_label.nii.gz"
        if not path.is_file():
            crop = label.crop((slice(None), slice(None), slice(fov.start, fov.stop)))
            save_volume(crop.with_labels(None), path)
        written.append((f"{prefix}_{fov.name}", path))
    return written
