"""The out-of-distribution guard: warnings when a scan or a result is unlike what a CT model learned.

A segmentation network answers every input, a blank volume included (the shipped v1 model drew
nine organs and a lesion in air). The guard looks at the scan and at the labels drawn, cheaply
(a strided view of about 3 mm, numpy, cc3d and scipy; no torch), and says in one line each what
a careful reader would check first:

scan
    no body at all (blank, or not CT in HU); a field of view shorter along the patient axis than
    the model was trained on; slices thicker than training simulated; a body far wider or narrower
    than an adult trunk; no tissue denser than 100 HU (a windowed or rescaled export).
result
    lung-like air in the body that is not labelled lung (the lungs are missed); liver drawn above
    the slice where the aerated lungs are widest (a heart or mediastinum taken for liver); organs
    drawn in the air outside the body; an organ
    larger than adults have; right and left organs on the wrong sides (a flipped header); organs
    broken into large separate pieces (the clean-up removed much of them); contrast brighter than
    training in the aorta; none of the model's organs in a scan that has a body.

Thresholds are stated below with where they come from. A model may narrow or widen them with a
``training_envelope`` dictionary in its spec's provenance (keys of :class:`TrainingEnvelope`).
Warnings, never errors: a tight crop, a child or a post-operative body is legitimate input, and
the reader decides. ``segment()`` adds them to its ``warnings`` (CLI ``warning:`` lines, case
provenance, napari notifications).

>>> import numpy as np
>>> from medseg.volume import Volume
>>> from medseg.labels import DEFAULT_ORGANS
>>> air = Volume(np.full((40, 40, 40), -1000, np.int16), np.diag([3.0, 3.0, 3.0, 1.0]), modality="CT")
>>> drawn = air.with_array(np.zeros((40, 40, 40), np.uint8), label_set=DEFAULT_ORGANS)
>>> guard_warnings(air, drawn, None)[0][:48]
'the input holds no body: no voxel above -500 HU '
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TrainingEnvelope", "ScanSummary", "summarize_scan", "scan_warnings", "label_warnings", "guard_warnings",
           "ADULT_MAX_ML"]

#: Above these volumes (mL) an adult organ is implausible; generous on purpose (hepatomegaly,
#: splenomegaly: the training map s0004's spleen is 1.1 L). Liver 2-4 L even when enlarged,
#: spleen rarely above 1.5 L, a kidney 100-300 mL, each lung at most ~4.5 L at full inspiration.
ADULT_MAX_ML = {"liver": 4500.0, "spleen": 2000.0, "kidney_right": 500.0, "kidney_left": 500.0,
                "stomach": 3000.0, "pancreas": 250.0, "aorta": 600.0, "lung_right": 5500.0, "lung_left": 5000.0}

#: HU thresholds of the scan summary: body above -500 HU (fat is -100); aerated lung below -400 HU
#: with a median between -950 and -600 HU (measured on the chest CTs in shared/data: -870 to -786 HU,
#: whereas bowel gas and outside air sit at -1000 to -950).
BODY_HU, AIR_HU, LUNG_MEDIAN_HU = -500.0, -400.0, (-950.0, -600.0)
#: An organ is "drawn in pieces" when the clean-up removed more than this many mL away from its
#: largest piece, and more than this share of what it kept (a few stray mL are common and harmless).
FRAGMENT_ML, FRAGMENT_SHARE = 30.0, 0.5
#: More than this (mL) of an organ in the air outside the body is a failure, not partial volume.
OUTSIDE_ML = 5.0


@dataclass(frozen=True)
class TrainingEnvelope:
    """What the model was trained on, as far as the guard checks it (defaults: medseg's CT models).

    Attributes
    ----------
    min_extent_mm : a scan shorter along the patient axis gives the network little context
        (recipe v2 trained on fields of view from 30 mm slabs to 650 mm; the 40 mm DICOM slab
        lost most organs under v1).
    max_slice_mm : thicker slices than training simulated (3 mm grid, thick-slice factor to 2.5).
    body_width_mm : the widest left-right extent of the body, adult trunks in the training maps.
    max_aorta_hu : mean HU in the drawn aorta above the brightest contrast phase simulated.
    min_body_ml : less than this above -500 HU is not a body.
    """

    min_extent_mm: float = 60.0
    max_slice_mm: float = 7.5
    body_width_mm: tuple[float, float] = (180.0, 650.0)
    max_aorta_hu: float = 750.0
    min_body_ml: float = 50.0

    @classmethod
    def of(cls, model: Any) -> TrainingEnvelope:
        spec = getattr(model, "spec", None)
        given = (getattr(spec, "provenance", None) or {}).get("training_envelope") or {}
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items() if k in known}
        return cls(**values)


@dataclass
class ScanSummary:
    """The scan seen at about 3 mm: the body, the lung-like air, extents (RAS, strided view)."""

    hu: np.ndarray
    body: np.ndarray
    lung_air: np.ndarray
    step: tuple[int, int, int]
    spacing_mm: np.ndarray
    body_ml: float
    extent_mm: float
    width_mm: float
    p999_hu: float


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    out = np.empty_like(mask)
    for k in range(mask.shape[2]):
        out[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k]) if mask[:, :, k].any() else False
    return out


def summarize_scan(volume, *, target_mm: float = 3.0) -> ScanSummary:
    """Body and lung-like air of ``volume`` (HU) on a strided view of about ``target_mm`` voxels."""
    import cc3d

    ras = volume.reoriented("RAS") if volume.orientation != "RAS" else volume
    spacing = np.asarray(ras.spacing, dtype=np.float64)
    step = tuple(max(1, int(round(target_mm / s))) for s in spacing)
    hu = np.asarray(ras.array[::step[0], ::step[1], ::step[2]], dtype=np.float32)
    vox = spacing * np.asarray(step)
    voxel_ml = float(np.prod(vox)) / 1000.0
    above = hu > BODY_HU
    body = np.zeros(hu.shape, dtype=bool)
    if above.any():
        comps = cc3d.connected_components(above, connectivity=26)
        counts = np.bincount(comps.ravel())
        counts[0] = 0
        body = _fill_slices(comps == int(np.argmax(counts)))
    lung_air = np.zeros(hu.shape, dtype=bool)
    air = (hu < AIR_HU) & body
    if air.any():
        comps = cc3d.connected_components(air, connectivity=26)
        counts = np.bincount(comps.ravel())
        for index in np.flatnonzero(counts[1:] * voxel_ml >= 150.0) + 1:
            part = comps == index
            median = float(np.median(hu[part]))
            if LUNG_MEDIAN_HU[0] <= median <= LUNG_MEDIAN_HU[1]:
                lung_air |= part
    has_body = body.any()
    k_idx = np.flatnonzero(body.any(axis=(0, 1)))
    i_idx = np.flatnonzero(body.any(axis=(1, 2)))
    extent = float(ras.shape[2] * spacing[2]) if not has_body else float((k_idx[-1] - k_idx[0] + 1) * vox[2])
    width = float((i_idx[-1] - i_idx[0] + 1) * vox[0]) if has_body else 0.0
    sample = hu[::2, ::2, ::2] if hu.size > 4_000_000 else hu
    return ScanSummary(hu, body, lung_air, step, vox, float(body.sum() * voxel_ml), extent, width,
                       float(np.percentile(sample, 99.9)) if sample.size else 0.0)


def scan_warnings(volume, model: Any = None, *, summary: ScanSummary | None = None) -> list[str]:
    """Warnings about the scan itself (CT models only; see the module docstring)."""
    if model is not None and (getattr(model, "modality", "CT") or "CT").upper() != "CT":
        return []
    env = TrainingEnvelope.of(model)
    s = summary or summarize_scan(volume)
    where = volume.source.path or "the input"
    if s.body_ml < env.min_body_ml:
        return [f"{where} holds no body: no voxel above -500 HU in a connected region of {env.min_body_ml:.0f} mL "
                f"or more (blank, cropped to air, or not CT in HU); whatever is drawn is not anatomy"]
    out = []
    if s.extent_mm < env.min_extent_mm:
        out.append(f"{where} covers only {s.extent_mm:.0f} mm along the patient axis (less than the "
                   f"{env.min_extent_mm:.0f} mm the model needs for context): organs are often missed or mislabelled")
    thickest = float(np.asarray(volume.spacing).max())
    if thickest > env.max_slice_mm:
        out.append(f"{where} has {thickest:.1f} mm between slices (trained up to {env.max_slice_mm:.1f} mm): "
                   f"small organs and borders will be coarse")
    low, high = env.body_width_mm
    if not low <= s.width_mm <= high:
        out.append(f"{where}: the body is {s.width_mm:.0f} mm wide (trained on adult trunks of {low:.0f}-{high:.0f} "
                   f"mm): a child, a limb, a head or a cut field of view gives unreliable organs")
    if s.p999_hu < 100.0:
        out.append(f"{where} has nothing denser than {s.p999_hu:.0f} HU (no bone): a windowed or rescaled "
                   f"export? The model expects CT in HU")
    return out


def _side(name: str) -> tuple[str, str]:
    """(organ, side) of a class name: ``lung_upper_lobe_right`` -> ("lung", "right")."""
    from medseg.labels import canonical_name

    key = canonical_name(name)
    parts = key.split("_")
    side = "right" if "right" in parts else "left" if "left" in parts else ""
    organ = parts[0] if parts[0] not in ("right", "left") else parts[-1]
    return organ, side


def label_warnings(volume, labels, model: Any = None, *, summary: ScanSummary | None = None,
                   removed_voxels: dict[str, int] | None = None) -> list[str]:
    """Warnings about the labels drawn (see the module docstring). ``labels`` is on ``volume``'s grid."""
    label_set = labels.label_set
    if label_set is None:
        return []
    is_ct = model is None or (getattr(model, "modality", "CT") or "CT").upper() == "CT"
    env = TrainingEnvelope.of(model)
    s = summary or summarize_scan(volume)
    ras = labels.reoriented("RAS") if labels.orientation != "RAS" else labels
    lab = np.asarray(ras.array[::s.step[0], ::s.step[1], ::s.step[2]])
    lab = lab[: s.hu.shape[0], : s.hu.shape[1], : s.hu.shape[2]]
    voxel_ml = float(np.prod(s.spacing_mm)) / 1000.0
    counts = np.bincount(lab.ravel().astype(np.int64), minlength=max(label_set.values) + 1)
    organs = {lb.name: lb.value for lb in label_set.foreground}
    ml = {name: float(counts[v] * voxel_ml) for name, v in organs.items() if v < len(counts)}
    where = volume.source.path or "the input"
    out: list[str] = []
    if is_ct and s.body_ml < env.min_body_ml:
        return out  # scan_warnings already said that nothing here is anatomy
    lung_values = [v for n, v in organs.items() if _side(n)[0] == "lung"]
    lungs_ml = sum(ml.get(n, 0.0) for n in organs if _side(n)[0] == "lung")
    air_ml = float(s.lung_air.sum() * voxel_ml)
    if is_ct and lung_values and air_ml >= 300.0 and lungs_ml < 0.3 * air_ml:
        out.append(f"{where}: {air_ml:.0f} mL of lung-like air in the body but only {lungs_ml:.0f} mL labelled "
                   f"lung: the lungs are missed (a field of view or contrast unlike training?)")
    if is_ct and "liver" in organs and s.lung_air.any():
        area = s.lung_air.sum(axis=(0, 1))
        widest = int(np.argmax(area))
        above = float((lab[:, :, widest + 1:] == organs["liver"]).sum() * voxel_ml)
        if above > 50.0:
            out.append(f"{where}: {above:.0f} mL of liver drawn above the slice where the lungs are widest, where "
                       f"a liver cannot be (heart or mediastinum taken for liver?)")
    if is_ct:
        outside = np.bincount(lab[~s.body].ravel().astype(np.int64), minlength=len(counts))
        for name, value in organs.items():
            out_ml = float(outside[value] * voxel_ml) if value < len(outside) else 0.0
            if out_ml > OUTSIDE_ML and _side(name)[0] not in ("bone",):
                out.append(f"{where}: {out_ml:.0f} mL of {name} drawn outside the body (in the air around it), "
                           f"which no organ can be")
    for name, limit in ADULT_MAX_ML.items():
        if ml.get(name, 0.0) > limit:
            out.append(f"{where}: {name} {ml[name]:.0f} mL is larger than an adult {name} (at most ~{limit:.0f} mL)")
    out += _side_warnings(where, lab, organs, ml)
    for name, removed in (removed_voxels or {}).items():
        kept = ml.get(name, 0.0)
        removed_ml = removed * float(np.prod(np.asarray(volume.spacing))) / 1000.0
        if removed_ml > FRAGMENT_ML and removed_ml > FRAGMENT_SHARE * max(kept, 1e-6):
            out.append(f"{where}: {name} was drawn in several large pieces; {removed_ml:.0f} mL away from the "
                       f"largest ({kept:.0f} mL) were removed by the clean-up: the model was unsure there")
    if is_ct and "aorta" in organs and ml.get("aorta", 0.0) >= 5.0:
        mean_hu = float(s.hu[lab == organs["aorta"]].mean())
        if mean_hu > env.max_aorta_hu:
            out.append(f"{where}: the aorta averages {mean_hu:.0f} HU, brighter than any contrast phase in training "
                       f"(to {env.max_aorta_hu:.0f} HU)")
    main_organs = [n for n in organs if _side(n)[0] not in ("bone", "lesion", "tumor", "tumour")]
    if main_organs and sum(ml.get(n, 0.0) for n in main_organs) < 5.0:
        out.append(f"{where}: none of the model's organs ({', '.join(main_organs[:6])}"
                   f"{', ...' if len(main_organs) > 6 else ''}) found: a head, neck, limb or pelvis-only scan?")
    return out


def _side_warnings(where: str, lab: np.ndarray, organs: dict[str, int], ml: dict[str, float]) -> list[str]:
    """Right-side organs at smaller RAS x than their left partners (the strided view is RAS)."""
    i_index = np.arange(lab.shape[0], dtype=np.float64)
    centre = {}
    for name, value in organs.items():
        if ml.get(name, 0.0) >= 20.0:
            per_i = (lab == value).sum(axis=(1, 2))
            centre[name] = float((per_i * i_index).sum() / per_i.sum())
    pairs = [(name, other) for name in centre for other in centre
             if _side(name)[1] == "right" and _side(other) == (_side(name)[0], "left")]
    if "liver" in centre and "spleen" in centre:
        pairs.append(("liver", "spleen"))
    for right, left in pairs:
        if centre[right] < centre[left]:  # RAS: i grows towards the patient's right
            return [f"{where}: {right} lies on the patient's left of {left}: the image's orientation may be "
                    f"flipped (check its header) or the model confused the sides"]
    return []


def guard_warnings(volume, labels, model: Any = None, *, removed_voxels: dict[str, int] | None = None) -> list[str]:
    """Scan and result warnings together (what ``segment()`` adds to its warnings)."""
    summary = summarize_scan(volume)
    return scan_warnings(volume, model, summary=summary) + label_warnings(
        volume, labels, model, summary=summary, removed_voxels=removed_voxels)
