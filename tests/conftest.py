"""Shared fixtures: where the real data lives, and data the project generates itself.

Real scanner data is read from ``../shared/data`` beside the repository (override with the
environment variable ``MEDSEG_SHARED_DATA``); it is never copied into the repository. Tests
that need it carry ``@pytest.mark.shared_data`` and are skipped only when that folder is absent.

Everything else is generated: the shipped phantom (``sample_data/phantom``: a CT DICOM series
and NIfTI with exact organ and lesion truth), the phantom at other sizes and spacings, and DICOM
series written from it by ``medseg.io._dicom_write`` in other orientations and transfer syntaxes
(see :func:`write_series`, :func:`transcode`). A test that checks something no particular scanner
is needed for runs on generated data, beside the real-data test where there is one (parametrize
over both with :data:`DATA_KINDS` or :func:`real_and_generated`).
"""

from __future__ import annotations

import datetime
import itertools
import os
import tempfile
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
#: The shipped synthetic CT phantom (seed 0): ct_dicom/ (RLE, 70 slices, LPS), ct/organs/lesions .nii.gz.
SAMPLE = REPO / "sample_data" / "phantom"
DCM2NIIX = Path(sys.executable).with_name("dcm2niix")

#: Every way to store a 3D array: 6 axis orders x 8 directions, as nibabel axcodes (RAS+ labels).
ALL_AXCODES = tuple("".join(codes) for order in itertools.permutations(("RL", "AP", "SI"))
                    for codes in itertools.product(*order))
#: Fixture parameters for "the real file, and the phantom": the real one needs ../shared/data.
DATA_KINDS = [pytest.param("real", marks=pytest.mark.shared_data), "phantom"]
#: Fixed DICOM dates and UID seed in generated series: the same test writes the same bytes.
STUDY_DATETIME = datetime.datetime(2001, 2, 3, 4, 5, 6)

# Two cores in CI: keep torch from oversubscribing when tests run model code.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Exported networks of the CPU back-ends go to a cache of the test run, not the user's.
os.environ.setdefault("MEDSEG_CACHE_DIR", str(Path(tempfile.gettempdir()) / "medseg-test-cache"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "shared_data: reads real scanner data from ../shared/data")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SHARED_DATA.is_dir():
        return
    absent = pytest.mark.skipif(True, reason=f"real data folder {SHARED_DATA} is absent")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(absent)


def real_and_generated(real: object, generated: object, *, ids: tuple[str, str] = ("real", "generated")) -> list:
    """Two parameter sets for one test: the real-data one (marked ``shared_data``) and a generated one."""
    return [pytest.param(real, marks=pytest.mark.shared_data, id=ids[0]), pytest.param(generated, id=ids[1])]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data collection (``../shared/data``)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def phantom_ct():
    """The shipped phantom CT (200 x 170 x 70, 2 x 2 x 3 mm, LPS, int16 HU) as a Volume."""
    from medseg.io import load_volume

    return load_volume(SAMPLE / "ct.nii.gz")


@pytest.fixture(scope="session")
def small_phantom():
    """A phantom (seed 5) whose three axes differ in size and spacing, so a swapped axis shows.

    30 x 24 x 14 voxels of 12 x 14.5 x 21 mm: the whole body, coarsely, in 10 080 voxels.
    """
    from medseg.phantom import make_phantom

    return make_phantom(seed=5, shape=(30, 24, 14), spacing_mm=(12.0, 14.5, 21.0))


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Callable[[str, Callable[[Path], object]], Path]:
    """``generated(name, build)``: the path ``build(path)`` wrote, built once per session.

    Generated files are shared between tests: copy them before changing anything.
    """
    root = tmp_path_factory.mktemp("generated")
    made: dict[str, Path] = {}

    def get(name: str, build: Callable[[Path], object]) -> Path:
        if name not in made:
            path = root / name
            build(path)
            made[name] = path
        return made[name]

    return get


@pytest.fixture
def make_volume():
    """Factory for a small Volume with a given shape, spacing, axis codes and origin."""
    from medseg.volume import Volume

    def _make(array=None, *, shape=(8, 9, 10), spacing=(1.0, 1.0, 1.0), axcodes="RAS",
              origin=(0.0, 0.0, 0.0), modality="CT", dtype=np.int16):
        if array is None:
            array = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).astype(dtype)
        return Volume(np.asarray(array), affine_for(axcodes, spacing, origin), modality)

    return _make


def affine_for(axcodes: str, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """RAS affine whose array axes point where ``axcodes`` say, scaled by ``spacing``, voxel 0 at ``origin``."""
    from nibabel.orientations import axcodes2ornt

    affine = np.zeros((4, 4))
    for axis, (world_axis, sign) in enumerate(axcodes2ornt(tuple(axcodes))):
        affine[int(world_axis), axis] = sign * spacing[axis]
    affine[:3, 3] = origin
    affine[3, 3] = 1.0
    return affine


# --- generated DICOM ----------------------------------------------------------------------------

def write_series(volume, folder: Path, **options) -> Path:
    """``volume`` as a DICOM series in ``folder`` (medseg's writer), with fixed dates and UIDs."""
    from medseg.io._dicom_write import write_dicom_series

    options.setdefault("uid_seed", f"medseg tests {Path(folder).name}")
    options.setdefault("study_datetime", STUDY_DATETIME)
    write_dicom_series(volume, folder, **options)
    return Path(folder)


@pytest.fixture(scope="session")
def generated_ct3(generated, phantom_ct) -> Path:
    """Three axial CT slices 1 mm apart named ``01.dcm``..``03.dcm`` in k order (the layout of the
    real ``dicom_seg/dcmqi/ct-3slice``): 80 x 64 phantom voxels of 0.75 mm, uncompressed, uint16
    with RescaleIntercept -1024. Shared: copy the folder before changing it."""
    from medseg.volume import Volume, affine_from_lps

    part = phantom_ct.crop((slice(50, 130), slice(40, 104), slice(30, 33)))
    vol = Volume(part.array, affine_from_lps((0.75, 0.75, 1.0), (-30.0, -24.0, -128.5), np.eye(3)), "CT")

    def build(folder: Path) -> None:
        write_series(vol, folder, patient_id="CT3", series_description="three slices")
        for k, path in enumerate(sorted(folder.iterdir())):
            path.rename(folder / f"{k + 1:02d}.dcm")

    return generated("ct3", build)


@pytest.fixture(scope="session")
def oriented_series(generated, small_phantom) -> Callable[[str], Path]:
    """``oriented_series(axcodes)``: the small phantom's CT stored in ``axcodes`` order (``Volume.reoriented``:
    the same patient, no resampling) and written as a DICOM series; e.g. "PIR" is sagittal, "LIP" coronal.
    Built once per session; read only."""
    def get(axcodes: str) -> Path:
        return generated(f"oriented_{axcodes}", lambda p: write_series(small_phantom.ct.reoriented(axcodes), p))

    return get


#: Transfer syntaxes pydicom writes here (encoders: pydicom's RLE, pyjpegls, pylibjpeg-openjpeg).
#: JPEG Lossless (.4.70) and JPEG baseline have no encoder in this environment.
TRANSFER_SYNTAXES = {
    "explicit_le": "1.2.840.10008.1.2.1",
    "implicit_le": "1.2.840.10008.1.2",
    "explicit_be": "1.2.840.10008.1.2.2",
    "deflated": "1.2.840.10008.1.2.1.99",
    "rle": "1.2.840.10008.1.2.5",
    "jpeg_ls": "1.2.840.10008.1.2.4.80",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
}


def transcode(src: Path, dst: Path, syntax: str) -> Path:
    """Every file of the series ``src`` saved again in ``dst`` with transfer syntax ``syntax``.

    The pixel values stay the same (all syntaxes are lossless); compressed ones are encoded by
    pydicom's encoders, the byte orders and deflate by pydicom's writer.
    """
    import pydicom
    from pydicom.uid import UID

    uid = UID(TRANSFER_SYNTAXES.get(syntax, syntax))
    dst.mkdir(parents=True)
    for path in sorted(src.iterdir()):
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress(generate_instance_uid=False)
        if uid.is_compressed:
            ds.compress(uid, pixels, generate_instance_uid=False)
        elif not uid.is_little_endian:
            # pydicom writes Pixel Data (OW) as the bytes it holds: swap them for big endian.
            ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()
        ds.file_meta.TransferSyntaxUID = uid
        pydicom.dcmwrite(dst / path.name, ds, implicit_vr=uid.is_implicit_VR, little_endian=uid.is_little_endian,
                         enforce_file_format=True)
    return dst


def run_dcm2niix(folder: Path, out: Path, *extra: str) -> list[Path]:
    """Convert ``folder`` with dcm2niix (the reference DICOM reader); the NIfTI files it wrote."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(DCM2NIIX), "-z", "n", "-f", "%s_%p", *extra, "-o", str(out), str(folder)],
                   check=True, capture_output=True)
    return sorted(out.glob("*.nii"))


def sitk_series(folder: Path):
    """SimpleITK's (GDCM's) reading of the DICOM series in ``folder``: the reference reader."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_matches_dcm2niix(vol, ref) -> None:
    """The same voxels at the same world positions (within 1e-3 mm), whatever the axis order.

    dcm2niix stores rows flipped and may order axes differently; its voxel grid must map onto
    medseg's by a signed permutation of axes (no resampling), and every voxel must then agree.
    """
    to_ours = np.linalg.solve(vol.affine, ref.affine)  # dcm2niix voxel index -> medseg voxel index
    axes, shift = np.rint(to_ours[:3, :3]), np.rint(to_ours[:3, 3])
    np.testing.assert_allclose(to_ours[:3, :3], axes, rtol=0, atol=1e-4)
    np.testing.assert_allclose((to_ours[:3, 3] - shift) * vol.spacing, 0.0, atol=1e-3)
    assert sorted(np.abs(axes).sum(axis=0)) == [1, 1, 1] and sorted(np.abs(axes).sum(axis=1)) == [1, 1, 1]
    assert sorted(vol.shape) == sorted(ref.shape)
    ijk = (axes @ np.indices(ref.shape).reshape(3, -1) + shift[:, None]).astype(np.int64)
    assert all((ijk[a] >= 0).all() and (ijk[a] < vol.shape[a]).all() for a in range(3))
    np.testing.assert_array_equal(vol.array[tuple(ijk)].astype(np.int32).reshape(ref.shape), ref.array)


def assert_native_read_equals_pydicom(path: Path) -> None:
    """medseg reads uncompressed pixel data from its file offset; it must equal pydicom's decoding."""
    import pydicom

    from medseg.io._dicom_frames import frames_from_header
    from medseg.io._dicom_pixels import _native_ok, _read_native
    from medseg.io._dicom_scan import _read_header

    ds, offset, _ = _read_header(path)
    meta, _ = frames_from_header(ds, str(path), pixel_offset=offset)
    assert isinstance(offset, int) and _native_ok(meta)
    expected = pydicom.dcmread(path).pixel_array.reshape(-1, meta.rows, meta.cols)
    assert meta.n_frames == expected.shape[0]
    with open(path, "rb") as fh:
        for index in range(meta.n_frames):
            ours = _read_native(fh, meta, index)
            assert ours.dtype.kind == expected.dtype.kind and ours.dtype.isnative
            np.testing.assert_array_equal(ours, expected[index])


# --- generated MONAI bundles ---------------------------------------------------------------------

#: Bundles written by :func:`write_monai_bundle`, one per network MONAI's zoo ships for 3D CT, each in
#: the layout and with the config features of its zoo counterpart (which ../shared/data holds):
#: name -> (network, zoo bundle it mirrors, weights file, classes).
GENERATED_BUNDLES = {
    "unet": ("UNet", "spleen_ct_segmentation", "model.pt", ("background", "spleen")),
    "swinunetr": ("SwinUNETR", "swin_unetr_btcv_segmentation", "model.pt",
                  ("background", "spleen", "kidney_right", "kidney_left", "liver")),
    "segresnet": ("SegResNet", "wholeBody_ct_segmentation", "model.pt",
                  ("background", "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "aorta")),
    "dynunet": ("DynUNet", "pediatric_abdominal_ct_segmentation", "dynunet_FT.pt",
                ("background", "liver", "spleen", "pancreas")),
}


def write_monai_bundle(folder: Path, arch: str) -> Path:
    """A MONAI bundle for 3D CT segmentation, scaffolded by MONAI's own ``init_bundle`` and filled in
    as the model zoo's bundles are (no weights: tests add them). Small networks, so they run fast.

    * ``unet``: JSON, UNet, ScaleIntensityRanged window, SlidingWindowInferer, CheckpointLoader handler;
    * ``swinunetr``: JSON, SwinUNETR with the ``img_size`` MONAI 1.6 dropped, ITKReader;
    * ``segresnet``: JSON, SegResNet, spacing chosen by an expression, z-score over non-zero voxels
      then ScaleIntensityd to [-1, 1], Gaussian blending with replicate padding;
    * ``dynunet``: YAML, DynUNet with ``$len(@spatial_size)``, class names in the config, CropForegroundd,
      CastToTyped, ``import scripts.monai_utils`` (bundle code that is not shipped), weights named
      ``dynunet_FT.pt``.
    """
    import json

    import yaml
    from monai.bundle import init_bundle

    network, _, weights, classes = GENERATED_BUNDLES[arch]
    folder.parent.mkdir(parents=True, exist_ok=True)
    init_bundle(str(folder))
    (folder / "models").rmdir()  # as in the zoo's repository: weights are downloaded, not shipped
    configs = folder / "configs"
    config = json.loads((configs / "inference.json").read_text())
    meta = json.loads((configs / "metadata.json").read_text())
    n = len(classes)
    key = "@image_key"
    load = {"_target_": "LoadImaged", "keys": key}
    orientation = {"_target_": "Orientationd", "keys": key, "axcodes": "RAS"}
    window = {"_target_": "ScaleIntensityRanged", "keys": key, "a_min": -57, "a_max": 164, "b_min": 0.0,
              "b_max": 1.0, "clip": True}
    config.update({"bundle_root": ".", "image_key": "image", "dataset_dir": "/workspace/data/Task09_Spleen",
                   "imports": ["$import glob", "$import os"]})
    config["inferer"] = {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 4,
                         "overlap": 0.5}
    transforms = [load, {"_target_": "EnsureChannelFirstd", "keys": key}, orientation,
                  {"_target_": "Spacingd", "keys": key, "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
                  window, {"_target_": "EnsureTyped", "keys": key}]
    if arch == "unet":
        config["network_def"] = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": n,
                                 "channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 2,
                                 "norm": "batch"}
    elif arch == "swinunetr":
        load["reader"] = "ITKReader"
        window.update(a_min=-175, a_max=250)
        config["network_def"] = {"_target_": "SwinUNETR", "spatial_dims": 3, "img_size": 96, "in_channels": 1,
                                 "out_channels": n, "feature_size": 12, "use_checkpoint": False}
    elif arch == "segresnet":
        config["displayable_configs"] = {"highres": True, "sw_overlap": 0.25, "sw_batch_size": 1}
        config["pixdim"] = "$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]"
        transforms = [load, {"_target_": "EnsureTyped", "keys": key}, {"_target_": "EnsureChannelFirstd", "keys": key},
                      orientation, {"_target_": "Spacingd", "keys": key, "pixdim": "@pixdim", "mode": "bilinear"},
                      {"_target_": "NormalizeIntensityd", "keys": key, "nonzero": True},
                      {"_target_": "ScaleIntensityd", "keys": key, "minv": -1.0, "maxv": 1.0}]
        config["network_def"] = {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": n,
                                 "init_filters": 8, "blocks_down": [1, 2, 2], "blocks_up": [1, 1],
                                 "dropout_prob": 0.2}
        config["inferer"].update({"sw_batch_size": "@displayable_configs#sw_batch_size",
                                  "overlap": "@displayable_configs#sw_overlap", "padding_mode": "replicate",
                                  "mode": "gaussian"})
    elif arch == "dynunet":
        load["reader"] = "ITKReader"
        window.update(a_min=-250, a_max=400)
        transforms = [load, {"_target_": "EnsureChannelFirstd", "keys": key}, orientation,
                      {"_target_": "Spacingd", "keys": [key], "pixdim": [1.5, 1.5, 3.0], "mode": ["bilinear"]},
                      window, {"_target_": "CropForegroundd", "keys": [key], "source_key": key, "mode": ["minimum"]},
                      {"_target_": "EnsureTyped", "keys": "image"},
                      {"_target_": "CastToTyped", "keys": key, "dtype": "$torch.float32"}]
        config["imports"].append("$import scripts.monai_utils")
        config.update({"spatial_size": [96, 96, 96], "spatial_dims": "$len(@spatial_size)",
                       "output_channels": n, "labels": {name: value for value, name in enumerate(classes)}})
        config["network_def"] = {"_target_": "monai.networks.nets.DynUNet", "spatial_dims": "@spatial_dims",
                                 "in_channels": 1, "out_channels": "@output_channels", "kernel_size": [3, 3, 3, 3],
                                 "strides": [1, 2, 2, [2, 2, 1]], "upsample_kernel_size": [2, 2, [2, 2, 1]],
                                 "norm_name": "instance", "deep_supervision": False, "res_block": True}
    config["preprocessing"] = {"_target_": "Compose", "transforms": transforms}
    config["postprocessing"] = {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": key,
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}]}
    config["ckpt_path"] = f"$@bundle_root + '/models/{weights}'"
    meta.update({"version": "0.3.1", "name": f"generated {network} bundle",
                 "task": f"{n - 1}-class abdominal CT segmentation (generated for medseg's tests)"})
    meta["network_data_format"] = {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                             "spatial_shape": [96, 96, 96], "dtype": "float32", "value_range": [0, 1],
                             "is_patch_data": True, "channel_def": {"0": "image"}}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": n,
                             "spatial_shape": [96, 96, 96], "dtype": "float32", "value_range": [0, 1],
                             "is_patch_data": True}}}
    if arch != "dynunet":  # the pediatric bundle names its classes in the config ("labels") instead
        meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {str(v): c for v, c in enumerate(classes)}
    (configs / "metadata.json").write_text(json.dumps(meta, indent=4))
    if arch == "dynunet":
        (configs / "inference.json").unlink()
        (configs / "inference.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    else:
        (configs / "inference.json").write_text(json.dumps(config, indent=4))
    (folder / "large_files.yml").write_text(
        f"large_files:\n- path: models/{weights}\n  url: https://example.invalid/{arch}/{weights}\n"
        "  hash_val: ''\n  hash_type: md5\n")
    return folder


# --- training pairs ------------------------------------------------------------------------------

def write_ct_pairs(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, out: Path, names: dict[int, str],
                   slabs: dict[str, int], *, i0: int, j0: int, size_ij: tuple[int, int], depth: int) -> Path:
    """Slabs of one CT (``image``, ``labels`` on its grid) as image/label pairs plus ``labels.json``.

    ``slabs`` maps a case name to its first k. Each slab keeps the CT's exact geometry (origin
    moved to the crop's corner).
    """
    import json

    import nibabel as nib

    for name, k0 in slabs.items():
        box = (slice(i0, i0 + size_ij[0]), slice(j0, j0 + size_ij[1]), slice(k0, k0 + depth))
        corner = affine.copy()
        corner[:3, 3] = affine[:3, :3] @ [i0, j0, k0] + affine[:3, 3]
        nib.save(nib.Nifti1Image(np.ascontiguousarray(image[box]), corner), str(out / f"{name}_image.nii.gz"))
        nib.save(nib.Nifti1Image(np.ascontiguousarray(labels[box]), corner), str(out / f"{name}_label.nii.gz"))
    (out / "labels.json").write_text(json.dumps({"0": "background", **{str(k): v for k, v in names.items()}}))
    return out


def write_real_ct_pairs(shared_data: Path, out: Path, classes: dict[int, int], names: dict[int, str],
                        slabs: dict[str, int], *, i0: int, j0: int, size_ij: tuple[int, int], depth: int) -> Path:
    """Slabs of the real 3 mm CT (``totalsegmentator/example_ct``) as image/label pairs for training.

    ``classes`` maps TotalSegmentator ids to the label values written; ``slabs`` maps a case name to
    its first k.
    """
    import nibabel as nib

    root = shared_data / "totalsegmentator"
    ct = nib.load(str(root / "example_ct.nii.gz"))
    seg = np.asarray(nib.load(str(root / "example_seg_fast_force_split.nii.gz")).dataobj)
    labels = np.zeros(seg.shape, np.uint8)
    for ts_id, value in classes.items():
        labels[seg == ts_id] = value
    return write_ct_pairs(np.asarray(ct.dataobj).astype(np.int16), labels, ct.affine, out, names, slabs,
                          i0=i0, j0=j0, size_ij=size_ij, depth=depth)


def write_phantom_ct_pairs(out: Path, classes: dict[int, int], names: dict[int, str], slabs: dict[str, int], *,
                           i0: int, j0: int, size_ij: tuple[int, int], depth: int) -> Path:
    """The same as :func:`write_real_ct_pairs` from the shipped phantom (2 x 2 x 3 mm, LPS).

    ``classes`` maps the phantom's organ values (``organs.json``) to the label values written.
    """
    import nibabel as nib

    ct = nib.load(str(SAMPLE / "ct.nii.gz"))
    organs = np.asarray(nib.load(str(SAMPLE / "organs.nii.gz")).dataobj)
    labels = np.zeros(organs.shape, np.uint8)
    for value, new in classes.items():
        labels[organs == value] = new
    return write_ct_pairs(np.asarray(ct.dataobj), labels, ct.affine, out, names, slabs,
                          i0=i0, j0=j0, size_ij=size_ij, depth=depth)


@pytest.fixture
def notes():
    """napari notifications shown during the test: list of (severity, message) (GUI tests)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def collect(notification):
        seen.append((str(notification.severity), str(notification.message)))

    notification_manager.notification_ready.connect(collect)
    yield seen
    notification_manager.notification_ready.disconnect(collect)
