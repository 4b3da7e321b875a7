"""Lesion masks: counts, volumes, centroids, intensities and diameters against SimpleITK's label
statistics and an independent mesh/contour computation in this file.

Real masks from ../shared/data/lesions, and the shipped phantom's lesions and organs, whose
truth.json gives a second, exact reference (voxel counts, volumes, centroids, diameters, HU).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SAMPLE

from medseg.io import load_volume
from medseg.lesions import find_instances, lesion_table

PYRAD = "lesions/pyradiomics"
MS = "lesions/ms_lesions_ljubljana"


def sitk_components(path, connectivity: int):
    """Per component (largest first): voxel count, physical size (mm^3), centroid (LPS), Feret (mm)."""
    import SimpleITK as sitk

    label = sitk.ReadImage(str(path))
    components = sitk.ConnectedComponent(label != 0, connectivity == 26)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.ComputeFeretDiameterOn()
    stats.Execute(components)
    rows = [(stats.GetNumberOfPixels(lab), stats.GetPhysicalSize(lab), np.array(stats.GetCentroid(lab)),
             stats.GetFeretDiameter(lab), lab) for lab in stats.GetLabels()]
    # medseg's id rule: largest first, ties superior, then anterior, then right first (RAS);
    # in LPS that is -z, +y, +x.
    return sorted(rows, key=lambda r: (-r[0], -r[2][2], r[2][1], r[2][0])), components


def sitk_intensities(image_path, components):
    import SimpleITK as sitk

    stats = sitk.LabelIntensityStatisticsImageFilter()
    stats.Execute(components, sitk.ReadImage(str(image_path)))
    return stats


def independent_diameters(mask: np.ndarray, affine: np.ndarray, slice_axis: int = 2):
    """Max 3D diameter between skimage marching-cubes vertices and the largest in-plane diameter
    between find_contours vertices of each 8-connected cross-section, all through the affine."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist
    from skimage.measure import find_contours, marching_cubes

    def diameter(points):
        if len(points) > 20:
            points = points[ConvexHull(points, qhull_options="QJ").vertices]
        return pdist(points).max() if len(points) > 1 else 0.0

    padded = np.pad(mask, 1).astype(np.float32)
    verts = marching_cubes(padded, 0.5)[0] - 1
    d3 = diameter(verts @ affine[:3, :3].T)
    d2 = 0.0
    for k in np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != slice_axis))):
        plane = np.take(mask, k, axis=slice_axis)
        pieces, n = ndimage.label(plane, np.ones((3, 3)))
        for p in range(1, n + 1):
            for contour in find_contours(np.pad(pieces == p, 1).astype(np.float32), 0.5):
                ij = contour - 1
                ijk = np.insert(ij, slice_axis, k, axis=1)
                d2 = max(d2, diameter(ijk @ affine[:3, :3].T))
    return d3, d2


def check_against_sitk(shared_data, label_file, *, connectivity=26, image_file=None, diameters=True):
    """``label_file``/``image_file`` are relative to ``shared_data``, or absolute paths."""
    labels = load_volume(shared_data / label_file)
    image = load_volume(shared_data / image_file) if image_file else None
    found = find_instances(labels, connectivity=connectivity)
    table = lesion_table(found, image=image)
    reference, components = sitk_components(shared_data / label_file, connectivity)
    assert len(table) == len(reference)
    intensities = sitk_intensities(shared_data / image_file, components) if image_file else None
    voxel_ml = labels.voxel_volume_ml
    for row, (count, size_mm3, centroid_lps, feret, sitk_label) in zip(table.rows, reference):
        assert row.voxel_count == count
        assert row.volume_ml == pytest.approx(size_mm3 / 1000, rel=1e-6)
        assert row.volume_ml == pytest.approx(count * voxel_ml, rel=1e-12)
        np.testing.assert_allclose(row.centroid_lps_mm, centroid_lps, atol=1e-4)
        # ITK's Feret diameter joins voxel centres; ours joins boundary midpoints (IBSI mesh vertices).
        assert feret - 1e-6 <= row.max_3d_diameter_mm <= feret + np.linalg.norm(labels.spacing) + 1e-6
        if intensities is not None:
            assert row.intensity_mean == pytest.approx(intensities.GetMean(sitk_label), rel=1e-6, abs=1e-6)
            assert row.intensity_min == pytest.approx(intensities.GetMinimum(sitk_label))
            assert row.intensity_max == pytest.approx(intensities.GetMaximum(sitk_label))
            if count > 1:  # ITK's standard deviation is the sample one (n - 1)
                sample_std = row.intensity_std * np.sqrt(count / (count - 1))
                assert sample_std == pytest.approx(intensities.GetStandardDeviation(sitk_label), rel=1e-5)
    if diameters:
        for row in table.rows:
            mask = found.labels.array == row.id
            d3, d2 = independent_diameters(mask, labels.affine, table.slice_axis)
            assert row.max_3d_diameter_mm == pytest.approx(d3, rel=1e-9, abs=1e-9)
            assert row.axial_long_axis_mm == pytest.approx(d2, rel=1e-9, abs=1e-9)
    return table


@pytest.mark.shared_data
def test_brain_mr_with_two_tumour_parts(shared_data):
    table = check_against_sitk(shared_data, f"{PYRAD}/brain1_label.nrrd", image_file=f"{PYRAD}/brain1_image.nrrd")
    assert [r.voxel_count for r in table.rows] == [3524, 613]
    assert [round(r.volume_ml, 2) for r in table.rows] == [13.98, 2.43]
    assert table.slice_axis == 2 and table.instances.labels.orientation == "LAS"
    # Enhancing tumour: brighter than the brain around it (README: 825 inside vs 386 overall).
    assert table.rows[0].intensity_mean > 700


@pytest.mark.shared_data
@pytest.mark.parametrize("case, voxels, volume_ml, mean_hu", [
    ("lung1", 837, 1.36, -63.9), ("lung2", 24644, 48.43, 7.6)])
def test_lung_ct_tumours_in_hu(shared_data, case, voxels, volume_ml, mean_hu):
    table = check_against_sitk(shared_data, f"{PYRAD}/{case}_label.nrrd", image_file=f"{PYRAD}/{case}_image.nrrd",
                               diameters=case == "lung1")
    (row,) = table.rows
    assert row.voxel_count == voxels and round(row.volume_ml, 2) == volume_ml
    assert row.intensity_mean == pytest.approx(mean_hu, abs=0.05)
    # 5 mm slices: the long axis is found on one of them and is at most the 3D diameter.
    assert row.axial_long_axis_mm <= row.max_3d_diameter_mm
    assert row.axial_short_axis_mm <= row.axial_long_axis_mm


@pytest.mark.slow
@pytest.mark.shared_data
def test_ms_flair_19_lesions(shared_data):
    table = check_against_sitk(shared_data, f"{MS}/patient26_lesions_mni.nii.gz",
                               image_file=f"{MS}/patient26_flair_mni.nii.gz")
    assert [r.voxel_count for r in table.rows] == [2724, 1322, 1172, 830, 616, 534, 351, 227, 187, 118, 81, 16,
                                                   15, 10, 8, 6, 4, 3, 3]
    assert table.total_volume_ml == pytest.approx(8.227)
    six = find_instances(load_volume(shared_data / f"{MS}/patient26_lesions_mni.nii.gz"), connectivity=6)
    assert len(six) == 27


@pytest.mark.shared_data
@pytest.mark.parametrize("case, n26, n6, largest", [
    ("patient07", 37, 49, 210), pytest.param("patient19", 98, 140, 46870, marks=pytest.mark.slow)])
def test_ms_masks_many_lesions(shared_data, case, n26, n6, largest):
    path = f"{MS}/{case}_lesions_mni_maskonly.nii.gz"
    table = check_against_sitk(shared_data, path, diameters=False)
    assert len(table) == n26 and table.rows[0].voxel_count == largest
    check_against_sitk(shared_data, path, connectivity=6, diameters=False)
    assert len(find_instances(load_volume(shared_data / path), connectivity=6)) == n6


@pytest.mark.shared_data
def test_ms_dust_removal_and_split(shared_data):
    labels = load_volume(shared_data / f"{MS}/patient19_lesions_mni_maskonly.nii.gz")
    all_lesions = find_instances(labels)
    kept = find_instances(labels, min_volume_mm3=10.0)  # 1 mm^3 voxels: lesions of 10 voxels and more
    assert len(kept) == int(np.count_nonzero(all_lesions.voxel_counts >= 10))
    assert kept.n_dust == len(all_lesions) - len(kept)
    assert kept.dust_volume_ml == pytest.approx(all_lesions.voxel_counts[all_lesions.voxel_counts < 10].sum() / 1000)
    # The confluent 46.9 mL periventricular lesion falls apart into several at its necks; no voxel is lost.
    split = find_instances(labels, split_h_mm=2.0)
    assert len(split) > len(all_lesions) and split.n_split >= 1
    assert split.voxel_counts.sum() == all_lesions.voxel_counts.sum()


# --- the shipped phantom: exact truth -----------------------------------------------------------

TRUTH = json.loads((SAMPLE / "truth.json").read_text())


@pytest.fixture(scope="module")
def phantom_masks(generated):
    """The phantom's lesions as one binary mask, and each organ as its own mask (NIfTI, CT grid)."""
    import nibabel as nib

    def build(folder):
        folder.mkdir()
        ct = nib.load(str(SAMPLE / "ct.nii.gz"))
        lesions = np.asarray(nib.load(str(SAMPLE / "lesions.nii.gz")).dataobj)
        organs = np.asarray(nib.load(str(SAMPLE / "organs.nii.gz")).dataobj)
        nib.save(nib.Nifti1Image((lesions > 0).astype(np.uint8), ct.affine), str(folder / "lesions_mask.nii.gz"))
        for name, row in TRUTH["organs"].items():
            mask = (organs == row["value"]).astype(np.uint8)
            nib.save(nib.Nifti1Image(mask, ct.affine), str(folder / f"{name}_mask.nii.gz"))

    return generated("phantom_masks", build)


@pytest.mark.parametrize("connectivity", [26, 6])
def test_phantom_lesions_against_sitk_and_truth(shared_data, phantom_masks, connectivity):
    table = check_against_sitk(shared_data, phantom_masks / "lesions_mask.nii.gz", connectivity=connectivity,
                               image_file=SAMPLE / "ct.nii.gz")
    rows = {row["id"]: row for row in TRUTH["lesions"]}
    # Lesions 2 and 3 touch: one connected component (at 26- and at 6-connectivity).
    assert len(table) == TRUTH["lesion_components_26"] == 5
    merged = rows[2]["voxels"] + rows[3]["voxels"]
    expected = sorted([merged] + [r["voxels"] for i, r in rows.items() if i not in (2, 3)], reverse=True)
    assert [r.voxel_count for r in table.rows] == expected
    by_size = {r["voxels"]: r for i, r in rows.items() if i not in (2, 3)}  # sizes differ in this phantom
    for row in table.rows:
        truth = by_size.get(row.voxel_count)
        if truth is None:
            continue  # the merged pair: checked against SimpleITK above
        assert row.volume_ml == pytest.approx(truth["volume_ml"], abs=1e-9)
        np.testing.assert_allclose(row.centroid_lps_mm, truth["centroid_lps_mm"], atol=1e-3)
        assert row.intensity_mean == pytest.approx(truth["mean_hu"], abs=0.05)
        # truth joins voxel centres; medseg joins boundary points (IBSI mesh): at most a voxel diagonal more.
        assert truth["longest_diameter_mm"] - 1e-3 <= row.max_3d_diameter_mm
        assert row.max_3d_diameter_mm <= truth["longest_diameter_mm"] + np.linalg.norm([2.0, 2.0, 3.0]) + 1e-3


@pytest.mark.parametrize("organ", ["spleen", "kidney_right", "kidney_left", "pancreas", "aorta", "bone"])
def test_phantom_organs_as_masks_against_sitk(shared_data, phantom_masks, organ):
    """Large and branching structures (bone is many pieces) through the same table."""
    table = check_against_sitk(shared_data, phantom_masks / f"{organ}_mask.nii.gz", image_file=SAMPLE / "ct.nii.gz",
                               diameters=organ != "bone")
    assert sum(r.voxel_count for r in table.rows) == TRUTH["organs"][organ]["voxels"]
    mean = sum(r.intensity_mean * r.voxel_count for r in table.rows) / TRUTH["organs"][organ]["voxels"]
    assert mean == pytest.approx(TRUTH["organs"][organ]["mean_hu"], abs=0.05)


def test_phantom_dust_removal_and_split():
    mask = load_volume(SAMPLE / "lesions.nii.gz")
    mask = mask.with_array((mask.array > 0).astype(np.uint8))
    all_lesions = find_instances(mask)
    rows = {row["id"]: row for row in TRUTH["lesions"]}
    # 45 voxels x 12 mm^3 = 540 mm^3: lesion 4 is the only one under 600 mm^3.
    kept = find_instances(mask, min_volume_mm3=600.0)
    assert len(kept) == len(all_lesions) - 1 and kept.n_dust == 1
    assert kept.dust_volume_ml == pytest.approx(rows[4]["volume_ml"])
    # The touching pair falls apart at its neck; no voxel is lost.
    split = find_instances(mask, split_h_mm=1.0)
    assert len(split) == TRUTH["lesion_count"] == 6 and split.n_split == 1
    assert split.voxel_counts.sum() == all_lesions.voxel_counts.sum() == sum(r["voxels"] for r in rows.values())
