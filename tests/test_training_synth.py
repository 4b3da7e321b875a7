"""Synthetic CT from label maps: HU per tissue, body outline, lesions with exact masks, class maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.training.class_maps import STRUCTURES, default_class_of, tissue_of
from medseg.training.synth import (LESION_BASE, TISSUES, SynthesisSettings, hull_distance_mm, insert_lesions,
                                   smooth_field, synthesize_ct)

#: Scanner effects off, so every voxel shows its drawn mean plus texture only.
CLEAN = SynthesisSettings(noise_hu=(0.0, 0.0), bias_hu=(0.0, 0.0), blur_voxels=(0.0, 0.0),
                          thick_slice_probability=0.0, table_probability=0.0, fat_layer_mm=(5.0, 10.0),
                          phase_probabilities=(1.0, 0.0, 0.0))


def _phantom_map() -> tuple[np.ndarray, dict[int, str]]:
    """A 40^3 label map: a liver block, a kidney ball, a vertebra, air-free lungs; 3 mm voxels."""
    gen = np.zeros((40, 40, 40), dtype=np.int32)
    gen[8:24, 10:30, 10:30] = 5  # liver
    zz, yy, xx = np.mgrid[:40, :40, :40]
    gen[(xx - 30) ** 2 + (yy - 20) ** 2 + (zz - 30) ** 2 <= 25] = 2  # kidney ball
    gen[26:34, 4:10, 5:35] = 30  # a vertebra
    return gen, {5: "liver", 2: "kidney", 30: "bone"}


def test_tissue_means_follow_the_native_phase_ranges():
    gen, tissues = _phantom_map()
    hull = hull_distance_mm(gen > 0, (3.0, 3.0, 3.0))
    image = synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(1), settings=CLEAN)
    liver = np.median(image[gen == 5])
    kidney = np.median(image[gen == 2])
    lo, hi = TISSUES["liver"]["hu"]["native"]
    assert lo - 10 <= liver <= hi + 10
    lo, hi = TISSUES["kidney"]["hu"]["native"]
    assert lo - 10 <= kidney <= hi + 10
    # Cortical rim of the vertebra is denser than its inside.
    bone = gen == 30
    from scipy import ndimage

    inner = ndimage.binary_erosion(bone, iterations=1)
    assert image[bone & ~inner].mean() > image[inner].mean() + 100
    # Far from the body: air.
    assert np.all(hull[0, 0, 0] > 0) and image[0, 0, 0] < -900
    assert image.dtype == np.float32 and image.min() >= -1024 and image.max() <= 3071


def test_synthesis_is_deterministic_for_a_seed_and_varies_between_seeds():
    gen, tissues = _phantom_map()
    hull = hull_distance_mm(gen > 0, (3.0, 3.0, 3.0))
    a = synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(7))
    b = synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(7))
    c = synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 5.0


def test_random_intensity_mode_draws_means_outside_tissue_ranges():
    gen, tissues = _phantom_map()
    hull = hull_distance_mm(gen > 0, (3.0, 3.0, 3.0))
    settings = SynthesisSettings(random_intensity_probability=1.0, noise_hu=(0.0, 0.0), blur_voxels=(0.0, 0.0),
                                 bias_hu=(0.0, 0.0), thick_slice_probability=0.0)
    livers = [np.median(synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(s), settings=settings)[gen == 5])
              for s in range(12)]
    assert np.ptp(livers) > 500  # SynthSeg-style: anything from air to bone


def test_hull_distance_is_zero_inside_and_grows_in_mm():
    mask = np.zeros((30, 30, 5), dtype=bool)
    mask[10:20, 10:20, :] = True
    mask[12:18, 12:18, 2] = False  # a hole inside the hull stays at distance 0
    dist = hull_distance_mm(mask, (2.0, 2.0, 3.0))
    assert dist[15, 15, 2] == 0.0
    assert dist[25, 15, 2] == pytest.approx(12.0)  # 6 voxels of 2 mm outside the hull's edge at i=19
    assert dist[15, 15, :].max() == 0.0


def test_smooth_field_has_unit_std():
    field = smooth_field((32, 30, 20), 4.0, np.random.default_rng(0))
    assert field.shape == (32, 30, 20)
    assert abs(field.mean()) < 1e-5 and abs(field.std() - 1.0) < 1e-4


def test_lesions_lie_inside_their_host_and_masks_are_exact():
    gen, _ = _phantom_map()
    target = (gen == 5).astype(np.int16)  # channel 1 = liver
    new_gen, new_target = insert_lesions(gen, target, host_values=[5], lesion_channel=11,
                                         rng=np.random.default_rng(3), count=(2, 2), radius_mm=(6.0, 9.0))
    lesion = new_target == 11
    assert lesion.sum() > 10
    assert np.all(gen[lesion] == 5)  # only liver voxels became lesion
    np.testing.assert_array_equal(new_gen == LESION_BASE + 5, lesion)
    np.testing.assert_array_equal(new_target[~lesion], target[~lesion])
    np.testing.assert_array_equal(gen, _phantom_map()[0])  # inputs untouched


def test_lesions_are_hypodense_in_the_image():
    gen, tissues = _phantom_map()
    target = np.zeros_like(gen, dtype=np.int16)
    gen2, target2 = insert_lesions(gen, target, host_values=[5], lesion_channel=11,
                                   rng=np.random.default_rng(5), count=(1, 1), radius_mm=(9.0, 9.0))
    hull = hull_distance_mm(gen2 > 0, (3.0, 3.0, 3.0))
    darker = 0
    for seed in range(6):
        image = synthesize_ct(gen2, tissues, hull, rng=np.random.default_rng(seed), settings=CLEAN)
        darker += np.median(image[target2 == 11]) < np.median(image[gen2 == 5]) - 10
    assert darker >= 5


@pytest.mark.shared_data
def test_class_map_covers_every_totalsegmentator_and_amos_class(shared_data):
    labels_only = shared_data / "train" / "labels_only"
    from medseg.labels import DEFAULT_ORGANS, canonical_name

    total = json.loads((labels_only / "totalseg_total_classes.json").read_text())
    for value, name in total.items():
        if value != "0":
            assert canonical_name(name) in STRUCTURES, name
    mapped = {default_class_of(n) for n in total.values()} - {None}
    assert mapped == set(DEFAULT_ORGANS.names[1:])  # every default organ is reachable
    assert default_class_of("lung_middle_lobe_right") == "lung_right"
    assert default_class_of("vertebrae_L3") == "bone" and default_class_of("rib_left_12") == "bone"
    assert default_class_of("costal_cartilages") is None
    amos = json.loads((labels_only / "amos_labels.json").read_text())
    assert {n: default_class_of(n) for n in amos.values() if default_class_of(n)} == {
        "spleen": "spleen", "right kidney": "kidney_right", "left kidney": "kidney_left", "liver": "liver",
        "stomach": "stomach", "aorta": "aorta", "pancreas": "pancreas"}
    assert tissue_of("postcava (inferior vena cava)") == "vein"



def _lung_map() -> tuple[np.ndarray, dict[int, str]]:
    """Two lungs, a heart and an aorta between them, a vertebra: 3 mm voxels."""
    gen = np.zeros((48, 40, 30), dtype=np.int32)
    gen[4:20, 6:34, 2:28] = 14   # lung_lower_lobe_right (TotalSegmentator id)
    gen[28:44, 6:34, 2:28] = 11  # lung_lower_lobe_left
    gen[20:28, 20:32, 6:24] = 51  # heart
    gen[22:26, 12:16, :] = 52    # aorta
    gen[21:27, 2:8, :] = 30      # a vertebra
    return gen, {14: "lung", 11: "lung", 51: "heart", 52: "artery", 30: "bone"}


def test_lung_vessels_take_the_share_drawn_and_gravity_darkens_the_front():
    gen, tissues = _lung_map()
    hull = hull_distance_mm(gen > 0, (3.0, 3.0, 3.0))
    lung = np.isin(gen, [14, 11])
    flat = synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(2), settings=CLEAN)
    vessels = SynthesisSettings(**{**CLEAN.__dict__, "lung_vessel_fraction": (0.05, 0.05)})
    image = synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(2), settings=vessels)
    # A flat synthetic lung has no voxel above -500 HU; real lung at 3 mm has 2-5 % (vessels).
    assert (flat[lung] > -500).mean() == 0.0
    assert 0.02 <= (image[lung] > -500).mean() <= 0.051  # the vessels drawn, less the faintest
    assert np.median(image[lung]) == pytest.approx(np.median(flat[lung]), abs=15)
    heavy = SynthesisSettings(**{**CLEAN.__dict__, "lung_gradient_hu": (80.0, 80.0)})
    tilted = synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(2), settings=heavy)
    back, front = tilted[4:20, 6:10, 10].mean(), tilted[4:20, 30:34, 10].mean()
    # RAS j grows anterior: the posterior (dependent) lung is denser, by about 0.6 x 80 HU.
    assert back - front > 35


def test_angio_phase_makes_arteries_brighter_than_any_abdominal_phase():
    gen, tissues = _lung_map()
    hull = hull_distance_mm(gen > 0, (3.0, 3.0, 3.0))
    angio = SynthesisSettings(**{**CLEAN.__dict__, "phase_probabilities": (0.0, 0.0, 0.0, 1.0)})
    aorta = [np.median(synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(s), settings=angio)[gen == 52])
             for s in range(6)]
    low, high = TISSUES["artery"]["hu"]["angio"]
    assert all(low - 15 <= a <= high + 15 for a in aorta) and max(aorta) > TISSUES["artery"]["hu"]["arterial"][1]
    # Tissues without an angio range use their arterial one (a kidney enhances as in the arterial phase).
    from medseg.training.synth import _draw_mean

    assert TISSUES["kidney"]["hu"]["arterial"][0] <= _draw_mean("kidney", "angio", np.random.default_rng(0)) \
        <= TISSUES["kidney"]["hu"]["arterial"][1]


def test_streaks_cross_a_band_of_slices_around_a_bone():
    gen, tissues = _lung_map()
    hull = hull_distance_mm(gen > 0, (3.0, 3.0, 3.0))
    plain = synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(4), settings=CLEAN)
    streaky = SynthesisSettings(**{**CLEAN.__dict__, "streak_probability": 1.0, "streak_hu": (60.0, 60.0)})
    image = synthesize_ct(gen, tissues, hull, rng=np.random.default_rng(4), settings=streaky)
    changed = np.abs(image - plain).max(axis=(0, 1)) > 1.0
    assert 5 <= changed.sum() <= 25  # a band of 5-25 axial slices, not the whole volume
    assert np.abs(image - plain).max() <= 60.0 * 6 + 1  # at most a few rays of 60 HU on top of each other


def test_recipe_v2_settings_switch_every_new_effect_on():
    from medseg.training.synth import SETTINGS_V2

    assert SETTINGS_V2.phase_probabilities[3] > 0 and SETTINGS_V2.lung_vessel_fraction[1] > 0
    assert SETTINGS_V2.streak_probability > 0 and SETTINGS_V2.outline_wobble < SynthesisSettings().outline_wobble
    # The defaults keep v1's synthesis: no angio, no vessels, no streaks.
    default = SynthesisSettings()
    assert default.phase_probabilities[3] == 0 and default.lung_vessel_fraction == (0.0, 0.0)
    assert default.streak_probability == 0.0
