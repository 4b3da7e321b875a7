"""CT-like images generated from label maps (the SynthSeg idea, adapted to Hounsfield units).

A training image is drawn from a *generation* label map: every structure of the source map
(117 TotalSegmentator classes, 15 AMOS organs, ...) gets a mean HU drawn around its tissue's
value for a random contrast phase, plus texture, a body outline (subcutaneous fat and skin
around the labelled structures), partial-volume blur, thick-slice simulation, a smooth bias
field and CT noise. The *target* label map (medseg classes) travels beside it untouched, so
the masks are exact. With ``random_intensity_probability`` a sample instead gets fully random
intensities per structure (Billot et al., "SynthSeg", Medical Image Analysis 2023), which
teaches shape over appearance.

All arrays are ``(i, j, k)`` in RAS (``k`` = superior), on the model grid, HU as float32.
numpy/scipy (torch only to interpolate smooth fields). The MONAI dictionary wrappers live in
:mod:`medseg.training.transforms`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.training.synth_artefacts import (
    draw_lung,
    draw_streaks,
    draw_table,
    simulate_thick_slices,
    smooth_field,
)

__all__ = [
    "LESION_BASE",
    "PHASES",
    "SETTINGS_V2",
    "TISSUES",
    "SynthesisSettings",
    "hull_distance_mm",
    "insert_lesions",
    "smooth_field",
    "synthesize_ct",
]

#: Contrast phases and how often each is drawn (portal venous is the usual abdominal CT).
#: ``angio`` is a CT angiography: arteries and the left heart far brighter than in an arterial
#: abdominal phase (the real CTA in ``shared/data``: aortic true lumen 487 HU mean); tissues
#: without an ``angio`` entry use their ``arterial`` range. Off by default (probability 0).
PHASES = ("native", "arterial", "venous", "angio")
_PHASE_P = (0.35, 0.15, 0.5, 0.0)

#: tissue -> {phase: (low, high) mean HU}, texture amplitude range (HU, std of a smooth field).
#: Ranges from the CT literature (e.g. Hounsfield values tabulated in Lamba et al.,
#: RadioGraphics 2014; organ enhancement in Bae, Radiology 2010), widened on purpose.
TISSUES: dict[str, dict] = {
    "lung": {"hu": {"*": (-900, -740)}, "texture": (15, 60)},
    "airway": {"hu": {"*": (-1000, -900)}, "texture": (0, 10)},
    "fat": {"hu": {"*": (-125, -75)}, "texture": (3, 15)},
    "muscle": {"hu": {"native": (35, 60), "*": (45, 75)}, "texture": (3, 12)},
    "soft": {"hu": {"native": (20, 55), "*": (30, 80)}, "texture": (3, 15)},
    "liver": {"hu": {"native": (40, 70), "arterial": (60, 95), "venous": (90, 140)}, "texture": (3, 12)},
    "spleen": {"hu": {"native": (35, 55), "arterial": (80, 160), "venous": (100, 145)}, "texture": (3, 15)},
    "kidney": {"hu": {"native": (25, 42), "arterial": (130, 250), "venous": (140, 220)}, "texture": (5, 25)},
    "pancreas": {"hu": {"native": (30, 50), "arterial": (90, 140), "venous": (70, 115)}, "texture": (4, 15)},
    "stomach": {"hu": {"*": (-20, 45)}, "texture": (5, 25), "gas": (0.0, 0.35)},
    "bowel": {"hu": {"*": (-30, 50)}, "texture": (5, 30), "gas": (0.0, 0.3)},
    "colon": {"hu": {"*": (-150, 40)}, "texture": (15, 60), "gas": (0.05, 0.5)},
    "esophagus": {"hu": {"*": (20, 55)}, "texture": (3, 12), "gas": (0.0, 0.15)},
    "fluid": {"hu": {"*": (-5, 22)}, "texture": (1, 6)},
    "artery": {"hu": {"native": (35, 55), "arterial": (250, 450), "venous": (130, 210), "angio": (350, 700)},
               "texture": (2, 10)},
    "vein": {"hu": {"native": (35, 55), "arterial": (50, 110), "venous": (120, 190), "angio": (60, 400)},
             "texture": (2, 10)},
    "portal": {"hu": {"native": (35, 55), "arterial": (60, 130), "venous": (130, 200)}, "texture": (2, 10)},
    "heart": {"hu": {"native": (35, 55), "arterial": (200, 400), "venous": (110, 180), "angio": (250, 650)},
              "texture": (5, 25)},
    "bone": {"hu": {"*": (130, 420)}, "texture": (20, 80), "cortex": (450, 1200)},
    "cartilage": {"hu": {"*": (70, 220)}, "texture": (5, 40)},
    "adrenal": {"hu": {"native": (15, 40), "*": (40, 80)}, "texture": (3, 12)},
    "cord": {"hu": {"*": (15, 45)}, "texture": (2, 8)},
    "brain": {"hu": {"*": (25, 42)}, "texture": (2, 6)},
    "thyroid": {"hu": {"native": (70, 120), "*": (110, 180)}, "texture": (3, 12)},
    "prostate": {"hu": {"native": (30, 50), "*": (45, 85)}, "texture": (3, 12)},
    # Drawn relative to its host organ (see synthesize_ct); the range is the contrast below it.
    "lesion": {"hu": {"*": (15, 70)}, "texture": (2, 10)},
}

#: Generation value of a lesion inserted into host structure ``v`` is ``LESION_BASE + v``.
LESION_BASE = 1000


@dataclass(frozen=True)
class SynthesisSettings:
    """Ranges that the generator draws from (uniformly unless said otherwise).

    Attributes
    ----------
    random_intensity_probability : probability of a SynthSeg-style sample, whose structures
        get means uniform in ``random_hu`` instead of their tissue's HU.
    noise_hu : CT noise standard deviation (HU).
    bias_hu : amplitude of a smooth multiplicative-free additive bias field (HU).
    blur_voxels : Gaussian partial-volume blur, sigma in voxels of the model grid.
    thick_slice_probability, thick_slice_factor : chance and factor of simulating thicker
        slices along one random axis (down- and up-sampling).
    fat_layer_mm : subcutaneous fat thickness around the labelled structures (mm).
    fat_fraction : share of fat among unlabelled voxels inside the body.
    table_probability : chance of a patient table (a curved plate below the back).
    phase_probabilities : chance of each of :data:`PHASES` (three values: no ``angio``).
    outline_wobble : relative variation of the fat layer's thickness around the body (a real
        body's outline is smooth: 0.35 gave v1 a star-shaped one).
    lung_vessel_fraction : share of lung voxels drawn as vessels (a random network of thin tubes at
        blood density); real aerated lung at 0.6-1.5 mm has 3-5 % of its voxels above -500 HU
        (measured on the chest CTs of ``shared/data``), which a flat synthetic lung lacks.
    lung_gradient_hu : the dependent (posterior) lung is denser by up to this much (gravity).
    streak_probability, streak_hu : chance and amplitude of beam-hardening-like streaks: thin dark
        and bright rays from a dense bone across a band of axial slices.
    """

    random_intensity_probability: float = 0.0
    random_hu: tuple[float, float] = (-1000.0, 1500.0)
    noise_hu: tuple[float, float] = (4.0, 30.0)
    bias_hu: tuple[float, float] = (0.0, 25.0)
    blur_voxels: tuple[float, float] = (0.2, 0.9)
    thick_slice_probability: float = 0.3
    thick_slice_factor: tuple[float, float] = (1.2, 2.5)
    fat_layer_mm: tuple[float, float] = (4.0, 40.0)
    fat_fraction: tuple[float, float] = (0.25, 0.8)
    table_probability: float = 0.6
    phase_probabilities: tuple[float, ...] = _PHASE_P
    outline_wobble: float = 0.35
    lung_vessel_fraction: tuple[float, float] = (0.0, 0.0)
    lung_gradient_hu: tuple[float, float] = (0.0, 0.0)
    streak_probability: float = 0.0
    streak_hu: tuple[float, float] = (10.0, 80.0)


#: Recipe v2's synthesis (``medseg.recipes.default_v2``): CT angiographies in 15 % of the images
#: (the real CTA's aorta at 487 HU was "bone" to the v1 model), lung vessels and gravity gradient
#: (measured: 3-5 % of real lung voxels above -500 HU; median lung -870 to -786 HU on the chest
#: CTs), streaks, thick slices in 40 %, SynthSeg-style random intensities in 10 %.
SETTINGS_V2 = SynthesisSettings(
    random_intensity_probability=0.1, thick_slice_probability=0.4, thick_slice_factor=(1.2, 2.0),
    phase_probabilities=(0.3, 0.15, 0.4, 0.15), lung_vessel_fraction=(0.015, 0.06), lung_gradient_hu=(0.0, 80.0),
    streak_probability=0.3, outline_wobble=0.12)




def hull_distance_mm(labelled: np.ndarray, spacing_mm, *, max_mm: float = 80.0) -> np.ndarray:
    """Distance (mm) from each voxel to the body core: the per-axial-slice convex hull of labels.

    ``labelled`` is a boolean ``(i, j, k)`` mask in RAS (``k`` = superior). Inside the hull
    the distance is 0. Synthesis puts subcutaneous fat and skin at a random distance.
    """
    from skimage.morphology import convex_hull_image

    hull = np.zeros(labelled.shape, dtype=bool)
    for k in np.flatnonzero(labelled.any(axis=(0, 1))):
        if labelled[:, :, k].sum() >= 3:
            hull[:, :, k] = convex_hull_image(labelled[:, :, k])
        else:
            hull[:, :, k] = labelled[:, :, k]
    if not hull.any():
        return np.full(labelled.shape, max_mm, dtype=np.float32)
    dist = ndimage.distance_transform_edt(~hull, sampling=[float(s) for s in spacing_mm])
    return np.minimum(dist, max_mm).astype(np.float32)


def _draw_mean(tissue: str, phase: str, rng: np.random.Generator) -> float:
    table = TISSUES.get(tissue, TISSUES["soft"])["hu"]
    fallback = table.get("arterial") if phase == "angio" else None
    low, high = table.get(phase) or fallback or table.get("*", (20.0, 60.0))
    return float(rng.uniform(low, high))


def _draw_phase(settings: SynthesisSettings, rng: np.random.Generator) -> str:
    p = np.zeros(len(PHASES))
    given = np.asarray(settings.phase_probabilities, dtype=np.float64)[: len(PHASES)]
    p[: len(given)] = given
    return str(rng.choice(PHASES, p=p / p.sum()))


def synthesize_ct(
    gen: np.ndarray,
    tissues: Mapping[int, str],
    hull_mm: np.ndarray,
    *,
    rng: np.random.Generator,
    settings: SynthesisSettings = SynthesisSettings(),
    spacing_mm=(3.0, 3.0, 3.0),
) -> np.ndarray:
    """Draw one CT-like image (HU) for the generation label map ``gen``.

    Parameters
    ----------
    gen : int ndarray, shape (I, J, K)
        Generation labels: source structure values, 0 where the map is silent; lesions as
        ``LESION_BASE + host value``.
    tissues : mapping value -> tissue name (keys of :data:`TISSUES`)
        Tissue of every nonzero value of ``gen`` (lesion values excepted).
    hull_mm : float ndarray, shape (I, J, K)
        From :func:`hull_distance_mm`, cropped/warped like ``gen``.
    rng : numpy Generator
    spacing_mm : voxel size of the grid (mm), for the body outline.

    Returns
    -------
    ndarray float32, shape (I, J, K): HU in [-1024, 3071].
    """
    shape = gen.shape
    random_mode = rng.random() < settings.random_intensity_probability
    phase = _draw_phase(settings, rng)

    def mean_for(tissue: str) -> float:
        if random_mode:
            return float(rng.uniform(*settings.random_hu))
        return _draw_mean(tissue, phase, rng)

    texture = smooth_field(shape, rng.uniform(1.0, 2.5), rng)
    image = np.empty(shape, dtype=np.float32)

    # Outside the body: air; then subcutaneous fat and a skin line at a wobbly distance.
    image[...] = mean_for("airway") if random_mode else rng.uniform(-1010, -990)
    thickness = rng.uniform(*settings.fat_layer_mm) * (
        1.0 + settings.outline_wobble * np.clip(smooth_field(shape, 12.0, rng), -2, 2))
    body = hull_mm <= np.maximum(thickness, 2.0)
    skin = body & ~ndimage.binary_erosion(body, iterations=1, border_value=1)
    image[body] = mean_for("fat")
    # The abdominal/thoracic wall: a muscle layer just outside the labelled structures.
    wall = (hull_mm > 0.0) & (hull_mm <= rng.uniform(2.0, 12.0)) & body
    image[wall] = mean_for("muscle")
    image[skin] = mean_for("soft")
    if not random_mode and rng.random() < settings.table_probability:
        draw_table(image, body, rng)
    # Unlabelled voxels inside the core: mesenteric/retroperitoneal fat mixed with soft tissue.
    core = (hull_mm <= 0.0) & (gen == 0)
    if core.any():
        mix = smooth_field(shape, rng.uniform(1.5, 4.0), rng)
        fat_share = rng.uniform(*settings.fat_fraction)
        is_fat = mix < np.quantile(mix[core], fat_share)
        fat_hu, soft_hu = mean_for("fat"), mean_for("muscle")
        image[core & is_fat] = fat_hu
        image[core & ~is_fat] = soft_hu
    amplitude = np.zeros(shape, dtype=np.float32)
    amplitude[body] = rng.uniform(2.0, 10.0)

    # Labelled structures: one mean and texture amplitude per value, applied through lookup tables.
    values = np.unique(gen)
    values = values[values != 0]
    organs = values[values < LESION_BASE]
    lut_size = int(values.max()) + 1 if len(values) else 1
    mean_lut = np.zeros(lut_size, dtype=np.float32)
    amp_lut = np.zeros(lut_size, dtype=np.float32)
    by_tissue: dict[str, list[int]] = {}
    for value in organs.tolist():
        tissue = tissues.get(value, "soft")
        by_tissue.setdefault(tissue, []).append(value)
        mean_lut[value] = mean_for(tissue)
        spec = TISSUES.get(tissue, TISSUES["soft"])
        amp_lut[value] = rng.uniform(*spec["texture"]) if not random_mode else rng.uniform(0.0, 50.0)
    for value in values[values >= LESION_BASE].tolist():
        host = float(mean_lut[value - LESION_BASE]) if value - LESION_BASE < lut_size else mean_for("liver")
        if random_mode:
            mean_lut[value] = mean_for("lesion")
        elif rng.random() < 0.3:  # cyst-like
            mean_lut[value] = rng.uniform(-5, 20)
        else:
            mean_lut[value] = host - rng.uniform(*TISSUES["lesion"]["hu"]["*"])
        amp_lut[value] = rng.uniform(*TISSUES["lesion"]["texture"])
    labelled = gen > 0
    image[labelled] = mean_lut[gen[labelled]]
    amplitude[labelled] = amp_lut[gen[labelled]]
    if not random_mode:
        for tissue, members in by_tissue.items():
            spec = TISSUES.get(tissue, TISSUES["soft"])
            if "gas" not in spec and "cortex" not in spec:
                continue
            mask = np.isin(gen, members)
            if "gas" in spec:  # air pockets in the bowel, stomach, oesophagus
                share = rng.uniform(*spec["gas"])
                if share > 0.01:
                    field = smooth_field(shape, rng.uniform(1.0, 3.0), rng)
                    pockets = mask & (field > np.quantile(field[mask], 1.0 - share))
                    image[pockets] = rng.uniform(-1000, -700)
            if "cortex" in spec:  # cortical bone: a dense rim around every bone
                rim = mask & ~ndimage.binary_erosion(mask, iterations=1, border_value=1)
                image[rim] = rng.uniform(*spec["cortex"])
    image += amplitude * texture
    lung_effects = max(settings.lung_vessel_fraction[1], settings.lung_gradient_hu[1]) > 0
    if not random_mode and by_tissue.get("lung") and lung_effects:
        draw_lung(image, np.isin(gen, by_tissue["lung"]), mean_for("vein"), settings, rng)

    # Scanner: partial-volume blur, thick slices, streaks, bias, correlated noise.
    sigma = [rng.uniform(*settings.blur_voxels) for _ in range(3)]
    image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    if not random_mode and by_tissue.get("bone") and rng.random() < settings.streak_probability:
        draw_streaks(image, np.isin(gen, by_tissue["bone"]), settings, rng)
    if rng.random() < settings.thick_slice_probability:
        axis = int(rng.integers(3)) if rng.random() < 0.3 else 2
        factor = rng.uniform(*settings.thick_slice_factor)
        image = simulate_thick_slices(image, axis, factor)
    bias = rng.uniform(*settings.bias_hu)
    if bias > 0:
        image += bias * smooth_field(shape, max(shape) / 2.0, rng)
    noise = rng.standard_normal(shape).astype(np.float32)
    noise_sigma = rng.uniform(0.4, 0.9)
    noise = ndimage.gaussian_filter(noise, noise_sigma)
    noise *= rng.uniform(*settings.noise_hu) / max(float(noise.std()), 1e-6)
    image += noise
    del spacing_mm  # the outline is already in mm through hull_mm
    return np.clip(image, -1024.0, 3071.0).astype(np.float32)


def insert_lesions(
    gen: np.ndarray,
    target: np.ndarray,
    *,
    host_values: list[int],
    lesion_channel: int,
    rng: np.random.Generator,
    spacing_mm=(3.0, 3.0, 3.0),
    count: tuple[int, int] = (1, 4),
    radius_mm: tuple[float, float] = (4.0, 22.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Insert blob-shaped lesions inside host structures, with exact masks.

    Parameters
    ----------
    gen, target : int ndarrays, shape (I, J, K)
        Generation labels and training target (channel indices); copies are returned.
    host_values : generation values that may hold a lesion (liver, spleen, kidneys).
    lesion_channel : target channel of the lesion class.
    radius_mm : range of the mean radius of a lesion (mm).

    Returns
    -------
    (gen, target) with lesion voxels set to ``LESION_BASE + host`` and ``lesion_channel``.
    """
    gen = gen.copy()
    target = target.copy()
    host_mask = np.isin(gen, host_values)
    candidates = np.argwhere(host_mask)
    if len(candidates) == 0:
        return gen, target
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        centre = candidates[int(rng.integers(len(candidates)))]
        radius = rng.uniform(*radius_mm) * rng.uniform(0.75, 1.3, size=3)
        half = np.ceil(radius * 1.4 / spacing).astype(int) + 1
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, gen.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grids = np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing)],
                            indexing="ij")
        radial = np.sqrt(sum((g / r) ** 2 for g, r in zip(grids, radius)))
        wobble = 0.15 * smooth_field(radial.shape, 3.0, rng) if min(radial.shape) > 1 else 0.0
        blob = (radial + wobble) <= 1.0
        host = int(gen[tuple(centre)])
        inside = blob & (gen[box] == host)
        gen[box][inside] = LESION_BASE + host
        target[box][inside] = lesion_channel
    return gen, target
