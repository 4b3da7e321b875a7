"""``medseg.inference.segment`` on CT: geometry, equivalence with plain MONAI, options.

Every test runs on the real CT ``totalsegmentator/example_ct.nii.gz`` (when ../shared/data is
there) and on the shipped phantom CT (``sample_data/phantom``: 200 x 170 x 70 voxels of
2 x 2 x 3 mm stored LPS, air, fat, soft tissue, enhanced organs and bone). Two networks, both
with label maps of several classes of real extent (so equality and Dice checks are not vacuous;
a mirrored map disagrees clearly, which is checked):

* ``unet``: a MONAI UNet fitted here for 30 steps to HU-interval "organ proxies" (air, fat, soft
  tissue, enhanced tissue, bone) on that CT, saved with ``save_model`` and loaded back; used
  against the plain MONAI pipeline;
* ``bands``: a deterministic 3x3x3 convolution whose logits are linear in the local mean
  intensity with slopes chosen so that its argmax is exactly the HU interval of the smoothed CT
  (no training, known answer); used where the right answer must be recognisable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA_KINDS, SAMPLE
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from medseg.errors import CancelledError, MedsegError, ModelError
from medseg.inference import resolve_device, segment, segment_ensemble
from medseg.io import load_volume, save_volume
from medseg.labels import LabelSet
from medseg.models import SegmentationModel, resolve_model
from medseg.models.networks import build_network, default_network
from medseg.models.spec import ModelSpec, NetworkSpec, Preprocessing
from medseg.models.store import save_model
from medseg.progress import CancelToken
from medseg.volume import Volume

#: HU edges of air | fat | soft tissue | enhanced | bone, per CT: the phantom's fat is -94 HU and its
#: muscle 55 HU (truth.json), so its fat/soft-tissue and soft-tissue/enhanced edges sit higher.
EDGES = {"real": [-500, -100, 30, 200], "phantom": [-500, -60, 70, 200]}
LABELS = LabelSet({0: "air", 1: "fat", 2: "soft_tissue", 3: "enhanced", 4: "bone"})
PROXY_PRE = Preprocessing(orientation="RAS", spacing_mm=(4.5, 4.0, 5.0), roi_size=(32, 32, 32), overlap=0.25)


def dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    x, y = a == value, b == value
    total = int(x.sum()) + int(y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


def stored_as(volume: Volume, axcodes: str) -> Volume:
    """The same image with its array stored in another axis order/direction (affine adjusted)."""
    transform = ornt_transform(io_orientation(volume.affine), axcodes2ornt(tuple(axcodes)))
    array = np.ascontiguousarray(apply_orientation(volume.array, transform))
    return Volume(array, volume.affine @ inv_ornt_aff(transform, volume.shape), volume.modality)


class HUBands(torch.nn.Module):
    """Logits ``l_c = s * (c * m - sum_{j<=c} t_j)`` of the 3x3x3 mean ``m`` of the window-normalised
    input: ``l_c > l_{c-1}`` exactly when ``m > t_c``, so the argmax is the HU interval of ``m``."""

    def __init__(self, edges_hu, a_min=-1000.0, a_max=1000.0, sharpness=400.0) -> None:
        super().__init__()
        t = [(e - a_min) / (a_max - a_min) for e in edges_hu]
        n = len(edges_hu) + 1
        self.conv = torch.nn.Conv3d(1, n, 3, padding=1, padding_mode="replicate")
        with torch.no_grad():
            for c in range(n):
                self.conv.weight[c].fill_(sharpness * c / 27.0)
                self.conv.bias[c] = -sharpness * sum(t[:c])

    def forward(self, x):
        return self.conv(x)


@pytest.fixture(scope="module", params=DATA_KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def ct(kind, shared_data, phantom_ct) -> Volume:
    if kind == "real":
        return load_volume(shared_data / "totalsegmentator" / "example_ct.nii.gz")
    return phantom_ct


@pytest.fixture(scope="module")
def edges(kind) -> list[int]:
    return EDGES[kind]


@pytest.fixture(scope="module")
def bands(edges) -> SegmentationModel:
    spec = ModelSpec("hu-bands", NetworkSpec("unet", {"channels": [4, 8], "strides": [2]}), LABELS, PROXY_PRE)
    return SegmentationModel.from_network(spec, HUBands(edges).eval())


@pytest.fixture(scope="module")
def unet(ct, edges, tmp_path_factory) -> SegmentationModel:
    """A UNet fitted (30 steps) to HU intervals on the real CT, saved as a model folder and reloaded."""
    from medseg.inference import to_model_space
    from medseg.inference.preprocess import resample_to_grid

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = ModelSpec("hu-proxy", NetworkSpec("unet", {"channels": [8, 16, 32], "strides": [2, 2],
                                                      "num_res_units": 0, "norm": "INSTANCE"}), LABELS, PROXY_PRE)
    net = build_network(spec.network, len(spec.labels))
    model_input = to_model_space(ct, PROXY_PRE, crop=False)
    image = torch.from_numpy(model_input.image)[None]
    target = torch.from_numpy(np.digitize(resample_to_grid(ct, model_input.grid), edges).astype(np.int64))
    net.train()
    opt = torch.optim.Adam(net.parameters(), 2e-2)
    weight = torch.tensor([0.5, 1.0, 0.6, 1.0, 2.5])
    for _ in range(30):
        regions = [tuple(slice(o, o + 24) for o in (rng.integers(0, n - 23) for n in image.shape[1:]))
                   for _ in range(2)]
        out = net(torch.stack([image[(slice(None), *r)] for r in regions]))
        loss = torch.nn.functional.cross_entropy(out, torch.stack([target[r] for r in regions]), weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = save_model(spec, net.eval(), tmp_path_factory.mktemp("models") / "hu-proxy")
    return resolve_model(folder)


@pytest.fixture(scope="module")
def ct_labels(ct, bands):
    return segment(ct, bands, device="cpu")


def test_labels_lie_on_the_input_grid_and_follow_the_anatomy(ct, edges, ct_labels):
    labels = ct_labels.labels
    assert labels.shape == ct.shape and np.array_equal(labels.affine, ct.affine)
    assert labels.array.dtype == np.uint8 and labels.modality == "SEG"
    counts = np.bincount(labels.array.ravel(), minlength=5)
    assert (counts / counts.sum() > 0.005).sum() >= 4, counts  # several classes of real extent
    proxy = np.digitize(ct.array, edges)

    def mean_dice(labels):
        return np.mean([dice(labels, proxy, c) for c in range(1, 5)])

    right = mean_dice(labels.array)
    mirrored = [mean_dice(np.flip(labels.array, axis)) for axis in range(3)]
    assert right > 0.5 and right > max(mirrored) + 0.1, (right, mirrored)
    assert set(ct_labels.present()) <= {1, 2, 3, 4}
    assert ct_labels.provenance["windows"] > 1 and ct_labels.timings["total"] > 0


def monai_reference(path, network, pre: Preprocessing) -> np.ndarray:
    """The plain MONAI pipeline: LoadImaged -> Orientationd -> Spacingd -> ScaleIntensityRanged ->
    sliding_window_inference -> softmax -> Invertd -> argmax."""
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        Activationsd,
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    it = pre.intensity
    transform = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS"),
                         Spacingd("image", pixdim=pre.spacing_mm, mode="bilinear"),
                         ScaleIntensityRanged("image", a_min=it.a_min, a_max=it.a_max, b_min=it.b_min,
                                              b_max=it.b_max, clip=it.clip)])
    data = transform({"image": str(path)})
    with torch.inference_mode():
        data["pred"] = sliding_window_inference(data["image"][None], pre.roi_size, 1, network,
                                                overlap=pre.overlap, mode="gaussian")[0]
    post = Compose([Activationsd("pred", softmax=True),
                    Invertd("pred", transform=transform, orig_keys="image", nearest_interp=False),
                    AsDiscreted("pred", argmax=True)])
    return post(data)["pred"][0].numpy().astype(np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("axcodes", ["RAS", "PIL"])
def test_agrees_with_the_plain_monai_pipeline(ct, unet, tmp_path, axcodes):
    volume = stored_as(ct, axcodes)
    path = save_volume(volume, tmp_path / f"ct_{axcodes}.nii.gz")
    volume = load_volume(path)
    reference = monai_reference(path, unet.network, unet.preprocessing)
    assert (np.bincount(reference.ravel(), minlength=5) > 0.005 * reference.size).sum() >= 4
    for crop in (False, True) if axcodes == "RAS" else (True,):
        labels = segment(volume, unet, device="cpu", crop=crop).labels.array
        assert labels.shape == reference.shape
        scores = {c: dice(labels, reference, c) for c in range(5)}
        assert min(scores.values()) >= 0.99, (crop, scores)
        if not crop:  # the same windows: equal up to float rounding at exact ties
            assert np.mean(labels == reference) > 0.99999


@pytest.mark.slow
def test_same_labels_in_world_space_whatever_the_storage(ct, unet):
    original = segment(ct, unet, device="cpu").labels
    for axcodes in ("LPS", "SRP", "AIL"):
        volume = stored_as(ct, axcodes)
        result = segment(volume, unet, device="cpu")
        assert result.labels.shape == volume.shape and np.array_equal(result.labels.affine, volume.affine)
        back = result.labels.reoriented(ct.orientation)
        np.testing.assert_allclose(back.affine, ct.affine, atol=1e-9)
        np.testing.assert_array_equal(back.array, original.array)


#: The DICOM series of each kind of CT: the real JPEG 2000 one, the phantom's RLE one.
DICOM_SERIES = {"real": ("totalsegmentator/example_ct_dicom", (512, 512, 20)),
                "phantom": (SAMPLE / "ct_dicom", (200, 170, 70))}


@pytest.mark.slow
def test_dicom_series_keeps_its_lps_grid(shared_data, kind, bands):
    where, shape = DICOM_SERIES[kind]
    series = load_volume(shared_data / where)  # an absolute path (the phantom) stays itself
    assert series.orientation == "LPS"
    result = segment(series, bands, device="cpu")
    assert result.labels.shape == shape and np.array_equal(result.labels.affine, series.affine)
    again = segment(series.reoriented("RAS"), bands, device="cpu").labels.reoriented("LPS")
    np.testing.assert_array_equal(again.array, result.labels.array)
    assert len(result.present()) >= 3


@pytest.mark.slow
def test_oblique_scan_keeps_its_affine(ct, bands):
    t = np.deg2rad(8.0)
    rotation = np.eye(4)
    rotation[:3, :3] = [[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]
    oblique = Volume(ct.array, rotation @ ct.affine, "CT")
    result = segment(oblique, bands, device="cpu")
    assert np.array_equal(result.labels.affine, oblique.affine) and result.labels.shape == ct.shape
    # Rotation is never resampled: the model grid follows the scan's own axes.
    assert np.mean(result.labels.array == segment(ct, bands, device="cpu").labels.array) > 0.999


@pytest.mark.parametrize("arch", ["unet", "segresnet", pytest.param("swinunetr", marks=pytest.mark.slow), "dynunet"])
def test_each_architecture_runs_end_to_end(arch, ct, tmp_path):
    torch.manual_seed(0)
    roi = 64 if arch == "swinunetr" else 32  # SwinUNETR's deepest stage needs 64 voxels
    spec = ModelSpec(f"tiny-{arch}", default_network(arch, size="tiny"),
                     LabelSet({0: "background", 1: "a", 2: "b"}),
                     Preprocessing(spacing_mm=(6.0, 6.0, 6.0), roi_size=(roi,) * 3, overlap=0.25))
    folder = save_model(spec, build_network(spec.network, 3), tmp_path / arch)
    part = ct.crop((slice(20, 80), slice(20, 70), slice(30, 90)))  # one or two windows: fast
    result = segment(part, resolve_model(folder), device="cpu")
    assert result.labels.shape == part.shape and np.array_equal(result.labels.affine, part.affine)
    assert result.provenance["models"][0]["architecture"] == arch
    assert set(np.unique(result.labels.array)) <= {0, 1, 2}


@pytest.mark.slow
def test_tta_ensemble_and_uncertainty(ct, ct_labels, bands):
    tta = segment(ct, bands, device="cpu", tta=True, uncertainty=True)
    assert tta.provenance["tta"] and np.mean(tta.labels.array == ct_labels.labels.array) > 0.9
    entropy = tta.entropy
    assert entropy.same_grid(ct) and entropy.array.dtype == np.float32
    assert 0.0 <= float(entropy.array.min()) and float(entropy.array.max()) <= 1.0
    lab = tta.labels.array
    border = np.zeros(lab.shape, bool)
    for axis in range(3):
        diff = np.diff(lab, axis=axis) != 0
        border[tuple(slice(0, -1) if a == axis else slice(None) for a in range(3))] |= diff
    assert entropy.array[border].mean() > 2 * entropy.array[~border].mean()
    twice = segment_ensemble(ct, [bands, bands], device="cpu")
    np.testing.assert_array_equal(twice.labels.array, ct_labels.labels.array)
    other = SegmentationModel.from_network(bands.spec.replace(
        preprocessing=Preprocessing(spacing_mm=(3.0, 3.0, 3.0), roi_size=(32, 32, 32))), bands.network)
    with pytest.raises(ModelError, match="works at RAS"):
        segment_ensemble(ct, [bands, other], device="cpu")


@pytest.mark.slow
def test_batch_of_windows_and_bf16(ct, ct_labels, bands, unet):
    batched = segment(ct, bands, device="cpu", sw_batch_size=3)
    assert np.mean(batched.labels.array == ct_labels.labels.array) > 0.99999
    part = ct.crop((slice(10, 110), slice(10, 90), slice(40, 100)))
    fp32 = segment(part, unet, device="cpu").labels.array
    bf16 = segment(part, unet, device="cpu", precision="bf16")
    assert bf16.provenance["precision"] == "bf16"
    assert min(dice(bf16.labels.array, fp32, c) for c in range(5)) > 0.95


def test_progress_and_cancel_between_windows(ct, bands):
    calls = []
    segment(ct, bands, device="cpu", progress=lambda done, total, message: calls.append((done, total, message)))
    windows = [(d, t) for d, t, m in calls if m.startswith("inference")]
    assert windows[-1][0] == windows[-1][1] > 1 and [d for d, _ in windows] == sorted(d for d, _ in windows)
    assert any(m.startswith("preprocess") for _, _, m in calls)
    token = CancelToken()

    def cancel_after_two(done, total, message):
        if message.startswith("inference") and done >= 2:
            token.cancel()

    with pytest.raises(CancelledError, match="cancelled"):
        segment(ct, bands, device="cpu", progress=cancel_after_two, cancel=token)


def test_device_and_option_errors_are_one_clear_line(ct, bands):
    if not torch.cuda.is_available():
        with pytest.raises(MedsegError, match="CUDA was asked for but is not available"):
            resolve_device("cuda")
        with pytest.raises(MedsegError, match="CUDA was asked for"):
            segment(ct, bands, device="cuda:0")
    with pytest.raises(MedsegError, match="is not a device"):
        resolve_device("tpu")
    with pytest.raises(MedsegError, match=r"outside \[0, 1\)"):
        segment(ct, bands, device="cpu", overlap=1.0)
    thin = Volume(ct.array[:, :, :3], ct.affine, "CT")
    with pytest.raises(MedsegError, match="too small for the model"):
        segment(thin, bands, device="cpu")


def test_a_window_the_network_cannot_take_is_a_model_error(ct):
    spec = ModelSpec("swin-odd-window", default_network("swinunetr", size="tiny"), LabelSet({0: "background", 1: "a"}),
                     Preprocessing(spacing_mm=(6.0, 6.0, 6.0), roi_size=(40, 40, 40)))
    model = SegmentationModel.from_network(spec, build_network(spec.network, 2))
    with pytest.raises(ModelError, match=r"the network fails on a \(40, 40, 40\) window.*roi_size"):
        segment(ct, model, device="cpu")
