"""The per-lesion table on hand-made volumes with known answers (docs/lesions.md states the tolerances)."""

from __future__ import annotations

import numpy as np
import pytest

from medseg import Volume
from medseg.errors import InputError
from medseg.lesions import find_instances, lesion_table, slice_axis
from medseg.lesions.mesh import mesh_area_volume
from medseg.lesions.shape import farthest_pair


def rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    r = np.eye(3)
    a, b = [x for x in range(3) if x != axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return r


def centred_affine(spacing, shape, direction=None) -> np.ndarray:
    """Affine with the given direction (default identity) whose array centre sits at world (0, 0, 0)."""
    a = np.eye(4)
    a[:3, :3] = (np.eye(3) if direction is None else np.asarray(direction)) @ np.diag(spacing)
    a[:3, 3] = -a[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return a


def world_ellipsoid(shape, affine, semi_axes, axes=None, centre=(0, 0, 0)) -> np.ndarray:
    """Voxels whose centre lies in the ellipsoid (semi-axes in mm along the columns of ``axes``)."""
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    local = (xyz - np.asarray(centre)) @ (np.eye(3) if axes is None else np.asarray(axes))
    return (np.sum((local / np.asarray(semi_axes, float)) ** 2, axis=1) <= 1).reshape(shape)


def measure(mask, affine, **kwargs):
    table = lesion_table(find_instances(Volume(mask, affine)), **kwargs)
    assert len(table) == 1
    return table.rows[0], table


def voxel_diagonal(spacing) -> float:
    return float(np.linalg.norm(spacing))


@pytest.mark.parametrize("direction", [np.eye(3), rotation(0, 20) @ rotation(2, 30)], ids=["axial", "oblique"])
def test_sphere_at_anisotropic_spacing(direction):
    spacing, shape, r = (0.7, 0.8, 2.5), (80, 80, 30), 12.0
    affine = centred_affine(spacing, shape, direction)
    row, table = measure(world_ellipsoid(shape, affine, (r, r, r)), affine)
    assert row.volume_ml == pytest.approx(4 / 3 * np.pi * r ** 3 / 1000, rel=0.01)
    assert row.voxel_count * np.prod(spacing) / 1000 == pytest.approx(row.volume_ml)
    assert abs(row.axial_long_axis_mm - 2 * r) <= max(spacing[:2])
    assert abs(row.axial_short_axis_mm - 2 * r) <= max(spacing[:2])
    assert row.axial_short_axis_mm <= row.axial_long_axis_mm
    assert 2 * r - max(spacing[:2]) <= row.max_3d_diameter_mm <= 2 * r + voxel_diagonal(spacing)
    np.testing.assert_allclose(row.centroid_ras_mm, (0, 0, 0), atol=1e-9)
    # Binary-mask meshes overestimate a sphere's area (terraces); IBSI sphericity follows.
    assert 1.0 <= row.surface_area_mm2 / (4 * np.pi * r ** 2) <= 1.2
    assert 0.8 <= row.sphericity <= 0.95
    assert row.mesh_volume_ml == pytest.approx(row.volume_ml, rel=0.01)
    assert table.slice_axis == 2
    # The RECIST lines: long axis end points lie on the measured slice, the short axis is perpendicular.
    long_axis = np.subtract(*row.long_axis_ras_mm)
    short_axis = np.subtract(*row.short_axis_ras_mm)
    assert np.linalg.norm(long_axis) == pytest.approx(row.axial_long_axis_mm)
    assert np.linalg.norm(short_axis) == pytest.approx(row.axial_short_axis_mm)
    assert abs(long_axis @ short_axis) < 1e-9
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    assert abs(long_axis @ normal) < 1e-9 and abs(short_axis @ normal) < 1e-9


@pytest.mark.parametrize("direction", [np.eye(3), rotation(2, 35)], ids=["aligned", "grid-rotated-35"])
def test_ellipsoid_diameters(direction):
    spacing, shape, semi = (0.6, 0.8, 2.0), (80, 80, 30), (15.0, 8.0, 10.0)
    affine = centred_affine(spacing, shape, direction)
    row, _ = measure(world_ellipsoid(shape, affine, semi), affine)
    assert row.volume_ml == pytest.approx(4 / 3 * np.pi * np.prod(semi) / 1000, rel=0.015)
    assert abs(row.axial_long_axis_mm - 30.0) <= 0.8
    assert abs(row.axial_short_axis_mm - 16.0) <= 0.8
    assert 30.0 - 0.8 <= row.max_3d_diameter_mm <= 30.0 + voxel_diagonal(spacing)
    # The long axis runs along world x (the 15 mm semi-axis), the short one along y.
    direction_long = np.subtract(*row.long_axis_ras_mm) / row.axial_long_axis_mm
    assert abs(direction_long[0]) > 0.99
    assert 0.7 <= row.sphericity <= 0.9


def test_ellipsoid_rotated_in_the_patient():
    spacing, shape, semi = (0.6, 0.8, 2.0), (80, 80, 30), (15.0, 8.0, 10.0)
    affine = centred_affine(spacing, shape)
    row, _ = measure(world_ellipsoid(shape, affine, semi, axes=rotation(2, 35)), affine)
    assert abs(row.axial_long_axis_mm - 30.0) <= 0.8
    assert abs(row.axial_short_axis_mm - 16.0) <= 0.8
    direction_long = np.subtract(*row.long_axis_ras_mm) / row.axial_long_axis_mm
    assert abs(abs(direction_long @ [np.cos(np.radians(35)), np.sin(np.radians(35)), 0]) - 1) < 0.01


def test_sagittal_acquisition_measures_axial_planes():
    # i -> anterior, j -> inferior (rows run down the body), k -> right; 3 mm sagittal slices.
    spacing, shape = (0.7, 0.8, 3.0), (60, 50, 16)
    direction = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float)
    affine = centred_affine(spacing, shape, direction)
    volume = Volume(np.zeros(shape, np.uint8), affine)
    assert volume.orientation == "AIR" and slice_axis(affine) == 1
    semi = (8.0, 14.0, 10.0)  # x, y, z in mm
    row, table = measure(world_ellipsoid(shape, affine, semi), affine)
    assert table.slice_axis == 1 and table.slice_axis_description() == "j (I)"
    assert abs(row.axial_long_axis_mm - 28.0) <= 0.7  # along y, sampled at 0.7 mm
    assert abs(row.axial_short_axis_mm - 16.0) <= 3.0  # along x, sampled at 3 mm
    assert abs(np.subtract(*row.long_axis_ras_mm)[1]) / row.axial_long_axis_mm > 0.98  # along y
    # The long axis lies in an axial plane: both ends at the same z.
    assert row.long_axis_ras_mm[0][2] == pytest.approx(row.long_axis_ras_mm[1][2])
    assert 0 <= row.axial_slice < shape[1]


@pytest.mark.parametrize("axcodes", ["LPS", "SAR", "PIL", "ILA"])
def test_measurements_do_not_depend_on_storage_orientation(axcodes):
    spacing, shape = (0.7, 0.9, 2.0), (40, 36, 16)
    affine = centred_affine(spacing, shape)
    mask = world_ellipsoid(shape, affine, (9.0, 6.0, 7.0), axes=rotation(2, 25), centre=(1.3, -2.0, 0.5))
    reference, _ = measure(mask, affine)
    moved = Volume(mask, affine).reoriented(axcodes)
    row, _ = measure(moved.array, moved.affine)
    for name in ("voxel_count", "volume_ml", "axial_long_axis_mm", "axial_short_axis_mm",
                 "max_3d_diameter_mm", "surface_area_mm2", "mesh_volume_ml", "sphericity"):
        assert getattr(row, name) == pytest.approx(getattr(reference, name), rel=1e-9), name
    np.testing.assert_allclose(row.centroid_ras_mm, reference.centroid_ras_mm, atol=1e-9)


def test_single_voxel_is_an_octahedron():
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[2, 2, 2] = 1
    spacing = (0.7, 0.9, 2.5)
    affine = np.diag([*spacing, 1.0])
    row, _ = measure(mask, affine)
    a, b, c = np.array(spacing) / 2
    area = 4 * np.sqrt(a * a * b * b + b * b * c * c + c * c * a * a)
    volume_mm3 = 4 / 3 * a * b * c
    assert row.voxel_count == 1 and row.volume_ml == pytest.approx(np.prod(spacing) / 1000)
    assert row.surface_area_mm2 == pytest.approx(area, rel=1e-12)
    assert row.mesh_volume_ml * 1000 == pytest.approx(volume_mm3, rel=1e-12)
    assert row.sphericity == pytest.approx((36 * np.pi * volume_mm3 ** 2) ** (1 / 3) / area, rel=1e-12)
    assert row.axial_long_axis_mm == pytest.approx(0.9) and row.axial_short_axis_mm == pytest.approx(0.7)
    assert row.max_3d_diameter_mm == pytest.approx(2.5)
    assert row.bbox_start_ijk == (2, 2, 2) and row.bbox_stop_ijk == (3, 3, 3)
    assert row.centroid_ras_mm == pytest.approx((1.4, 1.8, 5.0))
    assert row.centroid_lps_mm == pytest.approx((-1.4, -1.8, 5.0))


def test_box_of_voxels_exact_numbers():
    mask = np.zeros((12, 12, 8), bool)
    mask[2:8, 3:7, 2:5] = True  # 6 x 4 x 3 voxels
    spacing = (0.5, 1.0, 2.0)
    row, _ = measure(mask, np.diag([*spacing, 1.0]))
    assert row.voxel_count == 72 and row.volume_ml == pytest.approx(72 * 1.0 / 1000)
    # In-plane outline: 3 x 4 mm rectangle with the corners cut at the voxel-edge midpoints.
    expected_long = max(np.hypot(3.0, 3.0), np.hypot(2.5, 4.0))
    assert row.axial_long_axis_mm == pytest.approx(expected_long)
    assert row.bbox_start_ijk == (2, 3, 2) and row.bbox_stop_ijk == (8, 7, 5)
    np.testing.assert_allclose(row.centroid_ijk, (4.5, 4.5, 3.0))


def test_mesh_matches_skimage_marching_cubes():
    from scipy import ndimage
    from skimage.measure import marching_cubes, mesh_surface_area

    rng = np.random.default_rng(7)
    linear = np.array([[0.8, 0.1, 0.0], [0.0, -0.7, 0.2], [0.0, 0.0, 2.5]])  # flipped and sheared
    blob = np.pad(ndimage.gaussian_filter(rng.random((24, 20, 10)), 1.5) > 0.52, 1)
    verts, faces, _, _ = marching_cubes(blob.astype(np.float32), 0.5)
    world = verts @ linear.T
    tri = world[faces]
    volume = abs(np.einsum("ij,ij->", tri[:, 0], np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))) / 6
    area, mesh_volume = mesh_area_volume(blob, linear)
    assert area == pytest.approx(mesh_surface_area(world, faces), rel=1e-12)
    assert mesh_volume == pytest.approx(volume, rel=1e-12)


@pytest.mark.parametrize("n, dim", [(2, 2), (50, 2), (3000, 2), (5, 3), (4000, 3)])
def test_farthest_pair_is_exact(n, dim):
    from scipy.spatial.distance import pdist

    rng = np.random.default_rng(n)
    for points in (rng.normal(size=(n, dim)) * np.arange(1, dim + 1),
                   np.round(rng.normal(size=(n, dim)) * 4) / 2):  # many ties on a grid
        d, i, j = farthest_pair(points)
        assert d == pytest.approx(pdist(points).max(), rel=1e-12)
        assert np.linalg.norm(points[i] - points[j]) == pytest.approx(d, rel=1e-12)


def test_intensity_statistics_in_hu():
    spacing, shape = (0.8, 0.8, 2.0), (30, 30, 12)
    affine = centred_affine(spacing, shape)
    mask = world_ellipsoid(shape, affine, (6.0, 5.0, 6.0))
    rng = np.random.default_rng(1)
    ct = rng.normal(40, 15, shape).round().astype(np.int16)
    row, table = measure(mask, affine, image=Volume(ct, affine, "CT"), percentiles=(5, 50, 95, 2.5))
    values = ct[mask].astype(float)
    assert table.intensity_unit == "HU"
    assert row.intensity_mean == pytest.approx(values.mean())
    assert row.intensity_std == pytest.approx(values.std())
    assert (row.intensity_min, row.intensity_max) == (values.min(), values.max())
    assert row.intensity_percentiles == pytest.approx(
        {"p05": np.percentile(values, 5), "p50": np.median(values), "p95": np.percentile(values, 95),
         "p2.5": np.percentile(values, 2.5)})
    mr_row, mr_table = measure(mask, affine, image=Volume(ct.astype(np.float32), affine, "MR"))
    assert mr_table.intensity_unit == "" and mr_row.intensity_mean == pytest.approx(values.mean())


def test_organ_by_overlap_and_by_border():
    shape = (20, 20, 10)
    organs = np.zeros(shape, np.uint8)
    organs[:, :10] = 3
    organs[:, 10:] = 5
    lesions = np.zeros(shape, np.uint8)
    lesions[2:6, 3:10, 2:4] = 1  # 7 columns in organ 3 ...
    lesions[2:6, 10:13, 2:4] = 1  # ... 3 in organ 5
    table = lesion_table(find_instances(Volume(lesions, np.eye(4))), organs=Volume(organs, np.eye(4)),
                         organ_names={3: "liver", 5: "spleen"})
    row = table.rows[0]
    assert (row.organ_value, row.organ, row.organ_source) == (3, "liver", "overlap")
    assert row.organ_fraction == pytest.approx(0.7)
    # A tumour cut out of the liver label of one semantic map: its organ comes from the shell.
    semantic = np.zeros(shape, np.uint8)
    semantic[2:15, 2:15, 1:9] = 1
    semantic[5:8, 5:8, 3:6] = 2
    volume = Volume(semantic, np.eye(4))
    table = lesion_table(find_instances(volume, label=2), organs=volume, ignore_organ_values=[2],
                         organ_names={1: "liver"})
    row = table.rows[0]
    assert (row.organ_value, row.organ, row.organ_source, row.organ_fraction) == (1, "liver", "border", 1.0)
    # No organ around: empty organ fields; unnamed values are named by their number.
    lonely = np.zeros(shape, np.uint8)
    lonely[17:19, 17:19, 7:9] = 1
    only_liver = Volume(np.where(organs == 3, 3, 0).astype(np.uint8), np.eye(4))
    table = lesion_table(find_instances(Volume(lonely + lesions, np.eye(4))), organs=only_liver)
    assert [(r.organ_value, r.organ) for r in table.rows] == [(3, "3"), (0, "")]


def test_grid_mismatch_names_both_volumes():
    mask = np.zeros((10, 10, 5), np.uint8)
    mask[2:4, 2:4, 2:4] = 1
    from medseg.volume import SourceInfo

    labels = Volume(mask, np.eye(4), source=SourceInfo(path="/data/mask.nii.gz"))
    found = find_instances(labels)
    other_shape = Volume(np.zeros((10, 10, 6)), np.eye(4), source=SourceInfo(path="/data/ct.nii.gz"))
    with pytest.raises(InputError, match=r"/data/ct.nii.gz: is not on the grid of .*10x10x6 voxels"):
        lesion_table(found, image=other_shape)
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    with pytest.raises(InputError, match="is not on the grid"):
        lesion_table(found, organs=Volume(np.zeros((10, 10, 5), np.uint8), shifted))
    with pytest.raises(InputError, match="non-integer"):
        lesion_table(found, organs=Volume(np.full((10, 10, 5), 0.5), np.eye(4)))


def test_empty_table():
    table = lesion_table(find_instances(Volume(np.zeros((8, 8, 8), np.uint8), np.eye(4))),
                         image=Volume(np.zeros((8, 8, 8)), np.eye(4), "CT"))
    assert len(table) == 0 and table.total_volume_ml == 0.0 and list(table) == []


def test_instance_map_volume_is_measured_with_its_ids():
    labels = np.zeros((12, 12, 6), np.uint16)
    labels[1:4, 1:4, 1:3] = 9
    labels[4:6, 1:4, 1:3] = 4
    table = lesion_table(Volume(labels, np.eye(4)))
    assert [r.id for r in table.rows] == [4, 9]
    assert [r.voxel_count for r in table.rows] == [12, 18]
    assert table.row(9).voxel_count == 18
    with pytest.raises(KeyError):
        table.row(1)


def test_outline_segments_match_skimage_find_contours():
    from scipy import ndimage
    from skimage.measure import find_contours

    from medseg.lesions.shape import outline_segments

    rng = np.random.default_rng(3)
    for _ in range(5):
        plane = np.pad(ndimage.gaussian_filter(rng.random((25, 30)), 1.2) > 0.5, 1)
        ours = {tuple(sorted(map(tuple, np.round(s, 6)))) for s in outline_segments(plane)}
        theirs = {tuple(sorted([tuple(np.round(a, 6)), tuple(np.round(b, 6))]))
                  for c in find_contours(plane.astype(float), 0.5, fully_connected="high")
                  for a, b in zip(c[:-1], c[1:])}
        assert ours == theirs


def test_lattice_extremes_keep_every_hull_vertex():
    from scipy import ndimage
    from scipy.spatial import ConvexHull

    from medseg.lesions.shape import boundary_points, lattice_extremes

    rng = np.random.default_rng(4)
    blob = np.pad(ndimage.gaussian_filter(rng.random((40, 35, 20)), 2) > 0.5, 1)
    points = boundary_points(blob)
    keep = lattice_extremes(points)
    linear = np.array([[0.8, 0.1, 0.0], [0.0, 0.7, 0.3], [0.1, 0.0, 2.5]])
    hull = set(ConvexHull(points @ linear.T).vertices)
    assert hull <= set(np.flatnonzero(keep)) and keep.sum() < 0.1 * len(points)


def test_long_axis_stays_within_one_cross_section():
    # On its widest slice the lesion shows two islands joined through the slice below: the long
    # axis is measured across one island, not from one island to the other.
    mask = np.zeros((40, 20, 6), bool)
    mask[5:15, 5:15, 2] = True
    mask[25:35, 5:15, 2] = True
    mask[5:35, 8:12, 1] = True  # the bridge, one slice lower
    row, _ = measure(mask, np.diag([1.0, 1.0, 3.0, 1.0]))
    assert row.axial_slice == 1  # the bridge slice: 30 x 4 voxels
    assert row.axial_long_axis_mm == pytest.approx(np.hypot(30.0, 3.0))
    islands_only = mask.copy()
    islands_only[5:35, 8:12, 1] = False
    islands_only[14:26, 9, 2] = True  # a one-voxel-wide 8-connected link on the same slice
    row, _ = measure(islands_only, np.diag([1.0, 1.0, 3.0, 1.0]))
    assert row.axial_long_axis_mm > 29  # now one cross-section spans both islands
