"""MONAI bundles: the real configs in ../shared/data/monai_bundles load and run in safe mode; a
bundle's code runs only with trust.

No weights can be downloaded: each test builds the bundle's network from the safely parsed
config and saves its (seeded random) ``state_dict`` where the bundle's CheckpointLoader looks.
Every test also runs on bundles generated here (``conftest.write_monai_bundle``: MONAI's
``init_bundle`` filled in with the layout and config features of each zoo bundle), on a region
of the shipped phantom, so the loader is tested without ../shared/data too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GENERATED_BUNDLES, real_and_generated, write_monai_bundle

from medseg.errors import ModelError
from medseg.inference import segment
from medseg.io import load_volume
from medseg.models import resolve_model
from medseg.models.bundle import _read_data, _Translation, find_config
from medseg.models.bundle_config import SafeConfig
from medseg.models.networks import build_network

BUNDLES = {  # name: (weights file, window used in the test: the bundle's own where it is cheap)
    "spleen_ct_segmentation": ("model.pt", None),
    "swin_unetr_btcv_segmentation": ("model.pt", (64, 64, 64)),
    "wholeBody_ct_segmentation": ("model.pt", (64, 64, 64)),
    "pediatric_abdominal_ct_segmentation": ("dynunet_FT.pt", (64, 64, 32)),
}


#: Which generated bundle stands for which zoo bundle (conftest.GENERATED_BUNDLES).
GENERATED_FOR = {zoo: arch for arch, (_, zoo, _, _) in GENERATED_BUNDLES.items()}
SOURCES = real_and_generated("real", "generated")


def copy_bundle(shared_data: Path, name: str, tmp_path: Path, source: str = "real") -> Path:
    """The zoo bundle ``name`` (real) or the generated bundle that mirrors it, in ``tmp_path``."""
    dst = tmp_path / name
    if source == "real":
        shutil.copytree(shared_data / "monai_bundles" / name, dst)
    else:
        write_monai_bundle(dst, GENERATED_FOR[name])
    return dst


def add_weights(bundle: Path, file: str = "model.pt", seed: int = 0) -> torch.nn.Module:
    """Build the network the config describes (safely) and save its random weights."""
    root, config_file = find_config(bundle)
    meta = _read_data(root / "configs" / "metadata.json")
    net_spec, out_channels = _Translation(SafeConfig(_read_data(config_file), config_file,
                                                     {"bundle_root": str(root)}), meta, str(config_file)).network()
    torch.manual_seed(seed)
    net = build_network(net_spec, out_channels)
    (root / "models").mkdir(exist_ok=True)
    torch.save(net.state_dict(), root / "models" / file)
    return net


@pytest.fixture(scope="module")
def small_ct(shared_data, phantom_ct):
    """A CT region of 90 x 90 x 60 mm of the abdomen: one window for every bundle, so even
    SwinUNETR (feature size 48) and the 105-class SegResNet run in seconds. ``small_ct("real")``
    is cut from example_ct_sm, ``small_ct("generated")`` from the phantom's liver."""
    def region(source: str = "real"):
        if source == "real":
            ct = load_volume(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz")
            return ct.crop((slice(45, 75), slice(35, 65), slice(5, 25)))
        return phantom_ct.crop((slice(45, 90), slice(60, 105), slice(40, 60)))

    return region


@pytest.mark.shared_data
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith(("swin", "wholeBody")) else n
                                  for n in BUNDLES])
def test_real_bundle_configs_load_and_run_in_safe_mode(name, shared_data, tmp_path, small_ct):
    weights, roi = BUNDLES[name]
    check_loads_and_runs(copy_bundle(shared_data, name, tmp_path), weights, roi, small_ct("real"))


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a == "swinunetr" else a
                                  for a in GENERATED_BUNDLES])
def test_generated_bundles_load_and_run_in_safe_mode(arch, tmp_path, small_ct):
    weights = GENERATED_BUNDLES[arch][2]
    check_loads_and_runs(write_monai_bundle(tmp_path / arch, arch), weights, (64, 64, 32), small_ct("generated"))


def check_loads_and_runs(bundle: Path, weights: str, roi, small_ct) -> None:
    with pytest.raises(ModelError, match="is missing: the bundle has no weights.*large_files"):
        resolve_model(bundle)
    add_weights(bundle, weights)
    model = resolve_model(bundle)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert model.source == "monai-bundle" and model.version == meta["version"]
    assert len(model.labels) == meta["network_data_format"]["outputs"]["pred"]["num_channels"]
    result = segment(small_ct, model, device="cpu", roi_size=roi)
    assert result.labels.shape == small_ct.shape and np.array_equal(result.labels.affine, small_ct.affine)
    assert set(np.unique(result.labels.array)) <= set(model.labels.values)


@pytest.mark.shared_data
def test_what_safe_mode_reads_from_the_real_configs(shared_data, tmp_path):
    spleen = copy_bundle(shared_data, "spleen_ct_segmentation", tmp_path)
    add_weights(spleen)
    model = resolve_model(spleen)
    pre = model.preprocessing
    assert (pre.orientation, pre.spacing_mm, pre.roi_size, pre.overlap) == ("RAS", (1.5, 1.5, 2.0), (96, 96, 96), 0.5)
    assert (pre.intensity.kind, pre.intensity.a_min, pre.intensity.a_max, pre.intensity.clip) == ("window", -57, 164, True)
    assert model.labels.names == ("background", "spleen") and model.blend_mode == "constant"
    # wholeBody: "$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]" is data.
    whole = copy_bundle(shared_data, "wholeBody_ct_segmentation", tmp_path)
    add_weights(whole)
    model = resolve_model(whole)
    assert model.preprocessing.spacing_mm == (1.5, 1.5, 1.5) and model.blend_mode == "gaussian"
    intensity = model.preprocessing.intensity
    assert (intensity.kind, intensity.zscore_over, intensity.rescale_to) == ("zscore", "nonzero", (-1.0, 1.0))
    assert len(model.labels) == 105 and model.labels.name_of(7) == "aorta" and model.labels.name_of(10) == "pancreas"
    assert model.padding_mode == "replicate"
    # pediatric: "$len(@spatial_size)" is data; CropForegroundd keeps voxels above HU -250.
    ped = copy_bundle(shared_data, "pediatric_abdominal_ct_segmentation", tmp_path)
    add_weights(ped, "dynunet_FT.pt")
    model = resolve_model(ped)
    assert model.preprocessing.spacing_mm == (1.5, 1.5, 3.0) and model.preprocessing.foreground_threshold == -250.0
    assert model.labels.names == ("background", "liver", "spleen", "pancreas")
    # BTCV SwinUNETR: img_size no longer exists in this MONAI; dropped with a note.
    _, config_file = find_config(shared_data / "monai_bundles" / "swin_unetr_btcv_segmentation")
    translation = _Translation(SafeConfig(_read_data(config_file), config_file), {}, str(config_file))
    net_spec, out_channels = translation.network()
    assert net_spec.arch == "swinunetr" and out_channels == 14 and "img_size" not in net_spec.kwargs
    assert any("img_size" in note for note in translation.notes)


def test_what_safe_mode_reads_from_the_generated_configs(tmp_path):
    """The same translation as from the zoo configs, on bundles whose values this test chose."""
    unet = write_monai_bundle(tmp_path / "unet", "unet")
    add_weights(unet)
    model = resolve_model(unet)
    pre = model.preprocessing
    assert (pre.orientation, pre.spacing_mm, pre.roi_size, pre.overlap) == ("RAS", (1.5, 1.5, 2.0), (96, 96, 96), 0.5)
    intensity = pre.intensity
    assert (intensity.kind, intensity.a_min, intensity.a_max, intensity.clip) == ("window", -57, 164, True)
    assert model.labels.names == ("background", "spleen") and model.blend_mode == "constant"
    assert model.version == "0.3.1" and model.name == "generated UNet bundle"
    # segresnet: "$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]" is data.
    seg = write_monai_bundle(tmp_path / "segresnet", "segresnet")
    add_weights(seg)
    model = resolve_model(seg)
    assert model.preprocessing.spacing_mm == (1.5, 1.5, 1.5) and model.blend_mode == "gaussian"
    assert model.preprocessing.overlap == 0.25
    intensity = model.preprocessing.intensity
    assert (intensity.kind, intensity.zscore_over, intensity.rescale_to) == ("zscore", "nonzero", (-1.0, 1.0))
    assert len(model.labels) == 7 and model.labels.name_of(5) == "liver" and model.padding_mode == "replicate"
    # dynunet (YAML): "$len(@spatial_size)" is data; CropForegroundd keeps voxels above HU -250;
    # the class names come from the config's "labels", the weights from its CheckpointLoader path.
    dyn = write_monai_bundle(tmp_path / "dynunet", "dynunet")
    add_weights(dyn, "dynunet_FT.pt")
    model = resolve_model(dyn)
    assert model.preprocessing.spacing_mm == (1.5, 1.5, 3.0) and model.preprocessing.foreground_threshold == -250.0
    assert model.labels.names == ("background", "liver", "spleen", "pancreas")
    assert model.provenance["weights"].endswith("dynunet_FT.pt")
    # swinunetr: img_size no longer exists in this MONAI; dropped with a note.
    _, config_file = find_config(write_monai_bundle(tmp_path / "swin", "swinunetr"))
    translation = _Translation(SafeConfig(_read_data(config_file), config_file), {}, str(config_file))
    net_spec, out_channels = translation.network()
    assert net_spec.arch == "swinunetr" and out_channels == 5 and "img_size" not in net_spec.kwargs
    assert any("img_size" in note for note in translation.notes)


@pytest.mark.parametrize("source", SOURCES)
def test_pediatric_bundle_needs_its_scripts_only_when_trusted(shared_data, tmp_path, source):
    bundle = copy_bundle(shared_data, "pediatric_abdominal_ct_segmentation", tmp_path, source)
    add_weights(bundle, "dynunet_FT.pt")
    assert resolve_model(bundle).source == "monai-bundle"  # safe mode never imports scripts
    with pytest.raises(ModelError, match=r"scripts: is missing: the bundle's configs import scripts\.monai_utils"):
        resolve_model(bundle, trust_bundle=True)


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_trusted_mode_builds_the_bundle_network_with_monai(shared_data, tmp_path, small_ct, source):
    small_ct = small_ct(source)
    bundle = copy_bundle(shared_data, "spleen_ct_segmentation", tmp_path, source)
    reference = add_weights(bundle)
    model = resolve_model(bundle, trust_bundle=True)
    assert model.source == "monai-bundle-trusted"
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.network.state_dict()[key], value)
    safe = resolve_model(bundle)
    np.testing.assert_array_equal(segment(small_ct, model, device="cpu").labels.array,
                                  segment(small_ct, safe, device="cpu").labels.array)


def _write_config(bundle: Path, config: dict) -> None:
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))


@pytest.mark.parametrize("where,payload,expected", [
    ("network_def#channels", "$__import__('os').system('touch {marker}') or [8, 16]",
     r"network_def#channels: needs Python code.*__import__.*trust_bundle=True"),
    ("network_def#_target_", "os.system", r"network_def#_target_: network os.system is outside what safe mode builds"),
    ("preprocessing#transforms#1#_target_", "scripts.transforms.Evil", r"is the bundle's own code \(scripts/\)"),
    ("inferer#roi_size", "$(lambda: __import__('os').system('touch {marker}'))()", r"needs Python code"),
    ("preprocessing#transforms#3#pixdim", "$open('/etc/passwd').read()", r"pixdim: needs Python code.*open"),
    ("preprocessing#transforms#3#pixdim", "$__builtins__", r"the name '__builtins__'"),
    ("preprocessing#transforms#3#pixdim", "$().__class__.__base__", r"attribute access"),
])
@pytest.mark.parametrize("source", SOURCES)
def test_safe_mode_runs_nothing_and_says_why(shared_data, tmp_path, where, payload, expected, source):
    bundle = copy_bundle(shared_data, "spleen_ct_segmentation", tmp_path, source)
    add_weights(bundle)
    marker = tmp_path / "pwned"
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    node = config
    keys = where.split("#")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    node[keys[-1]] = payload.format(marker=marker)
    _write_config(bundle, config)
    with pytest.raises(ModelError, match=expected):
        resolve_model(bundle)
    assert not marker.exists()


@pytest.mark.parametrize("source", SOURCES)
def test_trust_is_what_lets_bundle_code_run(shared_data, tmp_path, source):
    bundle = copy_bundle(shared_data, "spleen_ct_segmentation", tmp_path, source)
    add_weights(bundle)
    marker = tmp_path / "ran"
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["network_def"]["num_res_units"] = f"$__import__('pathlib').Path('{marker}').touch() or 2"
    _write_config(bundle, config)
    with pytest.raises(ModelError, match="needs Python code"):
        resolve_model(bundle)
    assert not marker.exists()
    assert resolve_model(bundle, trust_bundle=True).source == "monai-bundle-trusted"
    assert marker.exists()


@pytest.mark.parametrize("source", SOURCES)
def test_bundle_problems_are_one_clear_line(shared_data, tmp_path, source):
    bundle = copy_bundle(shared_data, "spleen_ct_segmentation", tmp_path, source)
    (bundle / "configs" / "inference.json").unlink()
    with pytest.raises(ModelError, match=r"configs: has no inference config \(inference.json or inference.yaml\)"):
        resolve_model(bundle)

    bundle = copy_bundle(shared_data, "spleen_ct_segmentation", tmp_path / "b", source)
    (bundle / "models").mkdir()
    torch.save({"model": {"conv.weight": torch.zeros(3)}}, bundle / "models" / "model.pt")
    with pytest.raises(ModelError, match="weights do not fit the network"):
        resolve_model(bundle)
    torch.save(torch.nn.Conv3d(1, 2, 3), bundle / "models" / "model.pt")  # a pickled module, not weights
    with pytest.raises(ModelError, match="cannot be loaded as plain weights"):
        resolve_model(bundle)
    (bundle / "models" / "model.pt").unlink()
    torch.jit.save(torch.jit.script(torch.nn.Conv3d(1, 2, 3)), bundle / "models" / "model.ts")
    with pytest.raises(ModelError, match="model.ts: is TorchScript, a program rather than weights"):
        resolve_model(bundle)


@pytest.mark.parametrize("source", SOURCES)
def test_state_dict_wrapped_or_from_dataparallel_is_accepted(shared_data, tmp_path, source):
    bundle = copy_bundle(shared_data, "spleen_ct_segmentation", tmp_path, source)
    net = add_weights(bundle)
    wrapped = {"model": {f"module.{k}": v for k, v in net.state_dict().items()}}
    torch.save(wrapped, bundle / "models" / "model.pt")
    loaded = resolve_model(bundle).network.state_dict()
    torch.testing.assert_close(loaded["model.0.conv.unit0.conv.weight"], net.state_dict()["model.0.conv.unit0.conv.weight"])


def test_safe_expression_subset():
    config = {"bundle_root": "/b", "flags": {"highres": False, "n": 3}, "size": [96, 96, 64],
              "a": "$@bundle_root + '/models/' + ('model.pt' if @flags#highres else 'model_lowres.pt')",
              "b": "$[1.5] * 3 if @flags#highres else [3.0, 3.0, 3.0]", "c": "$len(@size)", "d": "$@size[2] // 2",
              "e": "$max(@size) - min(@size) + @flags::n", "f": "$torch.float32", "g": "@flags#n",
              "h": "$not @flags#highres and 2 > 1", "loop": "@loop", "i": "$'x' * 10**9"}
    safe = SafeConfig(config, "inference.json")
    assert safe.value("a") == "/b/models/model_lowres.pt"
    assert safe.value("b") == [3.0, 3.0, 3.0] and safe.value("c") == 3 and safe.value("d") == 32
    assert safe.value("e") == 35 and safe.value("f") == "float32" and safe.value("g") == 3 and safe.value("h") is True
    with pytest.raises(ModelError, match="refers to itself"):
        safe.value("loop")
    with pytest.raises(ModelError, match="needs Python code"):
        safe.value("i")  # no string repetition, no power: no memory bombs
    with pytest.raises(ModelError, match="is not defined"):
        safe.value("missing#key")
