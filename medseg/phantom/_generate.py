"""``make_phantom``: one deterministic synthetic abdominal CT with organ and lesion truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.phantom._body import paint_body, paint_skeleton, paint_thorax, sample_body
from medseg.phantom._canvas import Canvas, sample_hu
from medseg.phantom._lesions import paint_lesions, plan_lesions
from medseg.phantom._organs import paint_organs
from medseg.phantom._random import Stream
from medseg.phantom._shapes import Grid
from medseg.phantom._truth import compute_truth
from medseg.volume import SourceInfo, Volume

__all__ = ["Phantom", "make_phantom", "GENERATOR_VERSION", "DEFAULT_SHAPE", "DEFAULT_SPACING_MM"]

#: Changes whenever the same seed and arguments would give different voxels.
GENERATOR_VERSION = "1"
DEFAULT_SHAPE = (200, 170, 70)
DEFAULT_SPACING_MM = (2.0, 2.0, 3.0)
#: World (RAS, mm) position of the centre of the field of view: the scanner's isocentre with
#: the table at a typical abdominal position, so coordinates look like a scanner's.
_FOV_CENTRE_RAS = np.array([0.0, 0.0, -300.0])

# Independent random streams, so changing one part leaves the others' numbers alone.
_ANATOMY, _TISSUE, _ORGANS, _LESIONS, _NOISE, _THORAX, _TEXTURE = range(7)


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic abdominal CT and its truth, all on one grid.

    Attributes
    ----------
    ct : Volume
        int16 HU, shape (I, J, K), LPS-oriented like a scanner's axial series (i towards the
        patient's left, j posterior, k superior).
    organs : Volume
        uint8 organ labels with the values of :data:`medseg.labels.DEFAULT_ORGANS`
        (1 liver ... 10 bone, 0 elsewhere). Lesion voxels keep their organ's label.
    lesions : Volume
        Lesion instance map (uint8): 0 background, 1..N one value per lesion.
    truth : dict
        JSON-serialisable known answers (see ``truth.json`` of a written phantom).
    """

    ct: Volume
    organs: Volume
    lesions: Volume
    truth: dict[str, Any]


def phantom_affine(shape: Sequence[int], spacing_mm: Sequence[float]) -> np.ndarray:
    """RAS affine of the phantom grid: LPS axes centred on the field-of-view centre."""
    s = np.asarray(spacing_mm, dtype=np.float64)
    n = np.asarray(shape, dtype=np.float64)
    affine = np.diag([-s[0], -s[1], s[2], 1.0])
    half = (n - 1.0) / 2.0 * s
    affine[:3, 3] = _FOV_CENTRE_RAS + np.array([half[0], half[1], -half[2]])
    return affine


def _noise(stream: Stream, shape: tuple[int, ...], sd_hu: float) -> np.ndarray:
    """Gaussian noise with CT-like texture: white noise blurred in the slice plane."""
    white = stream.normal(size=shape).astype(np.float32)
    field = ndimage.gaussian_filter(white, sigma=(0.7, 0.7, 0.0))
    return field * np.float32(sd_hu / float(field.std()))


def make_phantom(*, seed: int = 0, shape: Sequence[int] = DEFAULT_SHAPE,
                 spacing_mm: Sequence[float] = DEFAULT_SPACING_MM, variation: float = 1.0) -> Phantom:
    """Generate a synthetic portal-venous abdominal CT with organ labels and lesion instances.

    Parameters
    ----------
    seed : int
        Same seed and arguments give byte-identical arrays (on any platform and numpy
        version). ``seed=0`` is the shipped sample (``sample_data/phantom``).
    shape : (3,) int
        Voxels along i (patient right to left), j (anterior to posterior), k (inferior to
        superior). Default 200 x 170 x 70.
    spacing_mm : (3,) float
        mm between voxel centres along i, j, k. Default 2 x 2 x 3 mm (anisotropic, like a
        routine abdominal CT). The anatomy is defined in mm, so any grid samples the same body.
    variation : float
        How far a seed moves body size, fat, organ sizes and positions, tissue HU and noise
        level from the nominal anatomy, and whether extra liver lesions appear: 0 gives the
        nominal values (surface detail, bowel loops, noise and lesion positions still follow the
        seed), 1 (default) the full range.

    Returns
    -------
    Phantom
        ``ct`` (int16 HU), ``organs`` (uint8), ``lesions`` (uint8 instances 1..N) and ``truth``.

    Examples
    --------
    >>> ph = make_phantom(seed=3, shape=(96, 80, 40), spacing_mm=(4.0, 4.0, 5.0))  # doctest: +SKIP
    >>> ph.truth["lesion_count"] >= 4                                               # doctest: +SKIP
    True
    """
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if len(shape) != 3 or min(shape) < 1 or spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"shape must be 3 positive ints and spacing 3 positive mm, got {shape}, {spacing_mm}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    variation = float(variation)

    anatomy = Stream(seed, _ANATOMY)
    body = sample_body(anatomy, variation)
    hu = sample_hu(Stream(seed, _TISSUE), variation)
    noise_sd = 12.0 + anatomy.jitter(3.0, variation)

    affine = phantom_affine(shape, spacing)
    # Where the FOV centre lies in the anatomical frame: the body, a little above the table.
    fov_centre = np.array([anatomy.jitter(10.0, variation), body.centre_y - 12.0 + anatomy.jitter(8.0, variation),
                           anatomy.jitter(10.0, variation)])
    offset = _FOV_CENTRE_RAS - fov_centre  # anatomical mm + offset = world RAS mm
    idx = [np.arange(n, dtype=np.float64) for n in shape]
    grid = Grid(*(affine[a, a] * idx[a] + affine[a, 3] - offset[a] for a in range(3)))

    canvas = Canvas(grid, hu)
    paint_body(canvas, body)
    canvas.abdomen = canvas.cavity & body.below_diaphragm(grid.full()) & ~canvas.back_muscles
    paint_thorax(canvas, body, Stream(seed, _THORAX), variation)
    paint_organs(canvas, body, Stream(seed, _ORGANS), Stream(seed, _TEXTURE), variation)
    paint_skeleton(canvas, body)
    lesion_stream = Stream(seed, _LESIONS)
    instances, _ = paint_lesions(canvas, plan_lesions(lesion_stream, variation), lesion_stream, spacing)

    # Partial-volume blur (in-plane PSF, 3 mm slice profile), then noise, then integer HU.
    image = ndimage.gaussian_filter(canvas.hu, sigma=(0.55, 0.55, 0.4))
    image += _noise(Stream(seed, _NOISE), shape, noise_sd)
    ct_hu = np.clip(np.rint(image), -1024, 3071).astype(np.int16)

    description = f"medseg phantom seed {seed}"
    source = SourceInfo(format="memory", series_description=description,
                        extra={"generator": "medseg.phantom", "generator_version": GENERATOR_VERSION,
                               "seed": int(seed), "variation": variation})
    ct = Volume(ct_hu, affine, "CT", source)
    organs = Volume(canvas.organs, affine, "", source.replace(series_description=f"{description} organs"))
    lesions = Volume(instances, affine, "", source.replace(series_description=f"{description} lesions"))
    truth = compute_truth(ct, organs, lesions, seed=seed, variation=variation, version=GENERATOR_VERSION,
                          hu=hu, noise_sd_hu=noise_sd)
    return Phantom(ct, organs, lesions, truth)
