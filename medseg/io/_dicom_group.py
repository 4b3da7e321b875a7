"""Frames -> series -> 3D volumes: group by SeriesInstanceUID, then split what cannot be one volume.

A SeriesInstanceUID may hold several volumes: several SeriesNumbers (one image saved again under
new numbers), enhanced stacks, image types (magnitude and phase), echoes, orientations, and
repeated positions (time points). Each is split off in that order, only where the values really
differ, and gets a key ``UID#name=value#...`` (``#series=3``, ``#stack=1``, ``#type=P``,
``#echo=2``, ``#orient=2``, ``#vol=3``; numbers are 1-based). A series with empty
SeriesInstanceUID is grouped by folder and SeriesNumber instead.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from medseg.io._dicom_frames import Frame
from medseg.io._dicom_geometry import POSITION_TOLERANCE_MM, StackGeometry, stack_geometry

__all__ = ["VolumePlan", "plan_volumes"]


@dataclass
class VolumePlan:
    """One readable (or not) 3D volume: its frames in ``k`` order and its geometry."""

    key: str
    series_uid: str
    split: dict[str, object]
    geometry: StackGeometry
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def frames(self) -> list[Frame]:
        return self.geometry.frames

    @property
    def files(self) -> list[str]:
        return sorted({f.path for f in self.frames})


def _clean(value: object) -> str:
    text = str(value).strip().replace(" ", "_").replace("#", "").replace("=", "-")
    return text or "none"


def _sort_key(value: object) -> tuple:
    """Order split values of mixed kinds (None, numbers, strings, tuples of them) safely."""
    if isinstance(value, tuple):
        return (3, tuple(_sort_key(v) for v in value))
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, float(value))
    return (2, str(value))


def _partition(frames: list[Frame], label) -> dict:
    groups: dict = defaultdict(list)
    for f in frames:
        groups[label(f)].append(f)
    return groups


def _type_names(types: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Name each ImageType by its last value that differs between them (M/P, M/FIELD_MAP...)."""
    width = max(len(t) for t in types)
    padded = {t: t + ("",) * (width - len(t)) for t in types}
    differing = [i for i in range(width) if len({p[i] for p in padded.values()}) > 1]
    names = {t: _clean(padded[t][differing[-1]]) for t in types}
    if len(set(names.values())) < len(names):
        names = {t: "-".join(_clean(padded[t][i]) for i in differing) for t in types}
    return names


def _same_plane(a: Frame, b: Frame) -> bool:
    if (a.rows, a.cols) != (b.rows, b.cols):
        return False
    if (a.iop is None) != (b.iop is None):
        return False
    if a.iop is not None and np.max(np.abs(a.iop - b.iop)) > 1e-3:
        return False
    if (a.pixel_spacing is None) != (b.pixel_spacing is None):
        return False
    return a.pixel_spacing is None or np.allclose(a.pixel_spacing, b.pixel_spacing, atol=1e-3)


def _split_plane(frames: list[Frame]) -> list[list[Frame]]:
    clusters: list[list[Frame]] = []
    for f in frames:
        for cluster in clusters:
            if _same_plane(cluster[0], f):
                cluster.append(f)
                break
        else:
            clusters.append([f])
    return clusters


def _splits(frames: list[Frame]) -> list[tuple[dict, list[Frame]]]:
    """Split one series into parts that share number, stack, type, echo and plane."""
    parts: list[tuple[dict, list[Frame]]] = [({}, frames)]

    def refine(name: str, label, naming=None):
        nonlocal parts
        result = []
        for split, group in parts:
            groups = _partition(group, label)
            if len(groups) == 1:
                result.append((split, group))
                continue
            names = naming(list(groups)) if naming else {k: k for k in groups}
            for value in sorted(groups, key=_sort_key):
                result.append(({**split, name: names[value]}, groups[value]))
        parts = result

    refine("series", lambda f: f.meta.series_number if f.meta.series_number is not None else -1)
    refine("stack", lambda f: f.stack_id)
    refine("type", lambda f: f.image_type, _type_names)

    def echo_names(keys):
        numbers = [k[0] for k in keys]
        if None not in numbers and len(set(numbers)) == len(numbers):
            return {k: k[0] for k in keys}
        ranked = sorted(keys, key=lambda k: (k[1] is None, k[1] or 0.0, k[0] or 0))
        return {k: i + 1 for i, k in enumerate(ranked)}

    refine("echo", lambda f: (f.echo_number, None if f.echo_time is None else round(f.echo_time, 3)),
           echo_names)
    result = []
    for split, group in parts:
        planes = _split_plane(group)
        if len(planes) == 1:
            result.append((split, group))
        else:
            result.extend(({**split, "orient": i + 1}, plane) for i, plane in enumerate(planes))
    return result


def _split_time(frames: list[Frame]) -> tuple[list[list[Frame]], str | None]:
    """Split frames that repeat positions into volumes (time points), in temporal order.

    Returns ``(volumes, problem)``; one volume when no position repeats.
    """
    if any(f.ipp is None or f.iop is None for f in frames):
        return [frames], None
    normal = np.cross(frames[0].iop[:3], frames[0].iop[3:])
    d = np.array([float(np.dot(f.ipp, normal)) for f in frames])
    order = np.argsort(d, kind="stable")
    slots: list[list[Frame]] = []
    last = None
    for i in order:
        if last is None or d[i] - last > POSITION_TOLERANCE_MM:
            slots.append([])
        slots[-1].append(frames[i])
        last = d[i]
    counts = sorted({len(s) for s in slots})
    if counts == [1]:
        return [frames], None
    if len(counts) > 1:
        histogram = ", ".join(f"{sum(len(s) == c for s in slots)} hold {c}" for c in counts)
        return [frames], (f"slice positions repeat unequally ({len(slots)} positions: {histogram}); "
                          "an incomplete time series or stray files")
    volumes: list[list[Frame]] = [[] for _ in range(counts[0])]
    for slot in slots:
        for v, f in enumerate(sorted(slot, key=lambda f: (f.temporal, f.path, f.index_in_file))):
            volumes[v].append(f)
    return volumes, None


def _drop_duplicates(frames: list[Frame]) -> tuple[list[Frame], list[str]]:
    """The same SOP instance found in two files (a copy) is one image: keep the first file's."""
    seen: dict[tuple[str, int], str] = {}
    kept, notes = [], []
    # Readable copies first, so a damaged duplicate is the one dropped.
    for f in sorted(frames, key=lambda f: bool(f.damaged)):
        ident = (f.meta.sop_instance_uid, f.index_in_file)
        if f.meta.sop_instance_uid and ident in seen and seen[ident] != f.path:
            if f.index_in_file == 0:
                notes.append(f"{f.path}: same SOPInstanceUID as {seen[ident]} (a copy); ignored")
            continue
        seen.setdefault(ident, f.path)
        kept.append(f)
    return kept, notes


def _drop_damaged(plan: VolumePlan) -> None:
    """Damaged frames placed the grid; now they leave it, and their slices count as missing."""
    geo = plan.geometry
    damaged = [(f, k) for f, k in zip(geo.frames, geo.grid_k) if f.damaged]
    if not damaged:
        return
    kept = [(f, k) for f, k in zip(geo.frames, geo.grid_k) if not f.damaged]
    geo.frames, geo.grid_k = [f for f, _ in kept], [k for _, k in kept]
    where = ", ".join(str(k) for _, k in damaged[:10]) + ("..." if len(damaged) > 10 else "")
    text = f"{len(damaged)} slice(s) cannot be read (k = {where}): {damaged[0][0].damaged}"
    plan.problems.append(("gaps" if kept else "blocking", text))


def _series_identity(f: Frame) -> tuple:
    if f.meta.series_uid:
        return (f.meta.series_uid,)
    return ("", os.path.dirname(f.path), f.meta.series_number)


def _base_key(identity: tuple, root: str) -> str:
    if identity[0]:
        return identity[0]
    folder = os.path.relpath(identity[1], root) if root else identity[1]
    if folder == ".":
        folder = os.path.basename(os.path.normpath(identity[1]))
    return f"noUID:{folder}" + (f"#series={identity[2]}" if identity[2] is not None else "")


def plan_volumes(frames: list[Frame], *, root: str = "") -> list[VolumePlan]:
    """Group ``frames`` into series and split them into 3D volumes with their geometry."""
    by_series: dict[tuple, list[Frame]] = defaultdict(list)
    for f in frames:
        by_series[_series_identity(f)].append(f)
    plans = []
    for identity, series_frames in by_series.items():
        base = _base_key(identity, root)
        series_frames, notes = _drop_duplicates(series_frames)
        for split, part in _splits(series_frames):
            volumes, problem = _split_time(part)
            for v, volume_frames in enumerate(volumes):
                this_split = dict(split)
                if len(volumes) > 1:
                    this_split["vol"] = v + 1
                key = base + "".join(f"#{k}={_clean(val)}" for k, val in this_split.items())
                geometry = stack_geometry(volume_frames)
                plan = VolumePlan(key, identity[0], this_split, geometry,
                                  list(geometry.problems), list(notes) + list(geometry.warnings))
                _drop_damaged(plan)
                if problem:
                    # First: it explains the generic geometry problems that follow from it ("several
                    # slices share one position"), and an error shows the first problem only.
                    plan.problems.insert(0, ("blocking", problem))
                if len(volumes) > 1:
                    plan.warnings.append(f"volume {v + 1} of {len(volumes)} at the same slice positions "
                                         "(a time series); each is read as its own 3D volume")
                plans.append(plan)
    return plans
