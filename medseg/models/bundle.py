"""MONAI bundles as medseg models, safe by default.

A bundle folder holds ``configs/inference.json|yaml`` (a program for ``monai.bundle``),
``configs/metadata.json`` (classes, version) and ``models/model.pt`` (a state_dict) or
``models/model.ts`` (TorchScript). A bundle is code: its ``$`` expressions and ``_target_``
entries can run anything, so medseg has two modes.

**Safe mode** (default). Nothing from the bundle runs. The config is read as data
(:class:`~medseg.models.bundle_config.SafeConfig`) and translated into a medseg
:class:`~medseg.models.spec.ModelSpec`: the network (``network_def``) must be one of MONAI's
UNet, SegResNet, SwinUNETR or DynUNet with literal arguments; ``preprocessing`` may use only
the transforms medseg reproduces and inverts (below); the window comes from the
``SlidingWindowInferer``; classes from ``metadata.json``. Weights are read with
``torch.load(weights_only=True)``; TorchScript is refused (it is a program).

**Trusted mode** (``--trust-bundle``). ``monai.bundle.ConfigParser`` evaluates the bundle's
imports and builds its own network (custom networks from its ``scripts/`` included); the
preprocessing is still translated to medseg's invertible pipeline, with ``$`` values evaluated
by MONAI; ``model.ts`` is accepted.

Transforms understood: LoadImage(d), EnsureChannelFirst(d), EnsureType(d), ToTensor(d),
CastToType(d) to float32, Identity(d) (no-ops here); Orientation(d); Spacing(d) with bilinear
interpolation; ScaleIntensityRange(d); NormalizeIntensity(d); ScaleIntensity(d);
CropForeground(d) (as medseg's foreground crop).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from medseg.errors import ModelError, option
from medseg.models.bundle_config import TRUST_HINT, SafeConfig
from medseg.labels import LabelSet
from medseg.models.spec import IntensitySpec, ModelSpec, NetworkSpec, Preprocessing

__all__ = ["CONFIG_NAMES", "find_config", "is_bundle", "load_bundle"]

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
_NETWORKS = {"unet": "unet", "segresnet": "segresnet", "swinunetr": "swinunetr", "dynunet": "dynunet"}
_NOOP = {"loadimage", "ensurechannelfirst", "addchannel", "ensuretype", "totensor", "identity",
         "casttotype", "tometatensor"}


def is_bundle(path: str | Path) -> bool:
    """True for a bundle folder, or a config file inside a bundle's ``configs/`` folder."""
    p = Path(path)
    if p.is_file():
        return p.parent.name == "configs" and p.suffix.lower() in (".json", ".yaml", ".yml")
    configs = p / "configs"
    return configs.is_dir() and ((configs / "metadata.json").is_file()
                                 or any((configs / n).is_file() for n in CONFIG_NAMES))


def find_config(path: str | Path) -> tuple[Path, Path]:
    """``(bundle_root, inference_config)`` for a bundle folder or one of its config files."""
    p = Path(path)
    if p.is_file():
        return p.parent.parent, p
    for name in CONFIG_NAMES:
        if (p / "configs" / name).is_file():
            return p, p / "configs" / name
    raise ModelError(p / "configs", "has no inference config (inference.json or inference.yaml)",
                     "medseg runs a bundle's inference config; give a bundle made for inference, or "
                     f"point {option('model')} at the config file to use")


def _read_data(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ModelError(path, f"cannot be read as {path.suffix[1:].upper()} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]})", "the bundle file is damaged") from exc


def _target_name(target: Any, where: str, kind: str) -> str:
    """``"monai.networks.nets.UNet"`` -> ``"unet"``; refuses bundle code and other modules."""
    if not isinstance(target, str) or target.startswith(("$", "@", "%")):
        raise ModelError(where, f"names its {kind} with an expression ({target!r})", TRUST_HINT)
    if target.split(".", 1)[0] == "scripts":
        raise ModelError(where, f"{kind} {target} is the bundle's own code (scripts/)",
                         f"{option('trust_bundle', True)} runs it, if the bundle ships its scripts/ folder")
    name = target
    for prefix in ("monai.networks.nets.", "monai.transforms."):
        name = name.removeprefix(prefix)
    if "." in name:
        raise ModelError(where, f"{kind} {target} is outside what safe mode builds (MONAI networks "
                         "and transforms only)", TRUST_HINT)
    return name.lower()


class _Translation:
    """The parts of a bundle config medseg uses, as plain data."""

    def __init__(self, source: Any, meta: dict, where: str) -> None:
        self.source, self.meta, self.where = source, meta, where
        self.notes: list[str] = []

    def at(self, config_id: str) -> str:
        return f"{self.where}#{config_id}"

    # --- network ---------------------------------------------------------------------------------
    def network_id(self) -> str:
        for key in ("network_def", "network"):
            if self.source.has(key) and isinstance(self.source.raw(key), dict):
                return key
        raise ModelError(self.where, "defines no network (no 'network_def' entry)",
                         "medseg needs the bundle's network definition")

    def network(self) -> tuple[NetworkSpec, int]:
        net_id = self.network_id()
        raw = self.source.raw(net_id)
        arch = _NETWORKS.get(_target_name(raw.get("_target_"), self.at(f"{net_id}#_target_"), "network"))
        if arch is None:
            raise ModelError(self.at(f"{net_id}#_target_"), f"network {raw.get('_target_')} is not one "
                             "medseg builds in safe mode (UNet, SegResNet, SwinUNETR, DynUNet)", TRUST_HINT)
        kwargs = {k: self.source.value(f"{net_id}#{k}") for k in raw if not k.startswith("_")}
        dims = kwargs.pop("spatial_dims", kwargs.pop("dimensions", 3))
        if dims != 3:
            raise ModelError(self.at(f"{net_id}#spatial_dims"), f"is {dims}; medseg runs 3D networks", "")
        in_channels = int(kwargs.pop("in_channels", 1))
        out_channels = int(kwargs.pop("out_channels"))
        if arch == "swinunetr" and "img_size" in kwargs and not _accepts("SwinUNETR", "img_size"):
            kwargs.pop("img_size")
            self.notes.append("SwinUNETR img_size dropped: this MONAI version infers it from the input")
        return NetworkSpec(arch, kwargs, in_channels), out_channels

    # --- preprocessing ---------------------------------------------------------------------------
    def preprocessing(self, modality: str) -> Preprocessing:
        if not self.source.has("preprocessing"):
            raise ModelError(self.where, "has no 'preprocessing' entry", "medseg needs the bundle's "
                             "preprocessing to know the model's orientation, spacing and intensity")
        transforms = self.source.raw("preprocessing").get("transforms")
        if not isinstance(transforms, list):
            raise ModelError(self.at("preprocessing"), "is not a Compose with a list of transforms", TRUST_HINT)
        state: dict[str, Any] = {"orientation": None, "spacing": None, "intensity": None, "crop": None}
        for index, item in enumerate(transforms):
            self._transform(f"preprocessing#transforms#{index}", item, state)
        if state["spacing"] is None:
            raise ModelError(self.at("preprocessing"), "has no Spacingd: the model works at each image's "
                             "own spacing, which medseg cannot plan for", "add a Spacingd to the bundle")
        if state["orientation"] is None:
            self.notes.append("no Orientationd: RAS assumed")
        sliding = self._inferer()
        crop = state["crop"]
        return Preprocessing(
            orientation=state["orientation"] or "RAS", spacing_mm=state["spacing"],
            intensity=state["intensity"] or IntensitySpec(kind="none"), roi_size=sliding["roi_size"],
            overlap=sliding["overlap"], crop_foreground=crop is not None or modality == "CT",
            foreground_threshold=crop["threshold"] if crop else (-500.0 if modality == "CT" else None),
            crop_margin_mm=crop["margin_mm"] if crop else 10.0)

    def _transform(self, tid: str, item: Any, state: dict) -> None:
        if not isinstance(item, dict) or "_target_" not in item:
            raise ModelError(self.at(tid), "is not a transform (no _target_)", TRUST_HINT)
        if item.get("_disabled_") and self.source.value(f"{tid}#_disabled_"):
            return
        name = _target_name(item["_target_"], self.at(f"{tid}#_target_"), "transform")
        base = name[:-1] if name.endswith("d") and name[:-1] in _KNOWN_BASES else name
        arg = lambda key, default=None: self.source.value(f"{tid}#{key}") if key in item else default
        if base in _NOOP:
            dtype = arg("dtype")
            if base == "casttotype" and dtype not in (None, "float32") and str(dtype) != "float32":
                raise ModelError(self.at(f"{tid}#dtype"), f"casts the image to {dtype}; medseg feeds float32", "")
        elif base == "orientation":
            axcodes = str(arg("axcodes", "")).upper()
            if len(axcodes) != 3:
                raise ModelError(self.at(f"{tid}#axcodes"), f"is {axcodes!r}, not 3 axis codes", "")
            state["orientation"] = axcodes
        elif base == "spacing":
            state["spacing"] = self._spacing(tid, arg("pixdim"), arg("mode", "bilinear"))
        elif base == "scaleintensityrange":
            state["intensity"] = self._merge(tid, state["intensity"], IntensitySpec(
                kind="window", a_min=float(arg("a_min")), a_max=float(arg("a_max")),
                b_min=float(arg("b_min", 0.0)), b_max=float(arg("b_max", 1.0)), clip=bool(arg("clip", False))))
        elif base == "normalizeintensity":
            if arg("subtrahend") is not None or arg("divisor") is not None:
                raise ModelError(self.at(tid), "normalises with fixed subtrahend/divisor", "not supported")
            state["intensity"] = self._merge(tid, state["intensity"], IntensitySpec(
                kind="zscore", zscore_over="nonzero" if arg("nonzero", False) else "all"))
        elif base == "scaleintensity":
            lo, hi = arg("minv", 0.0), arg("maxv", 1.0)
            if lo is None or hi is None or arg("factor") is not None:
                raise ModelError(self.at(tid), "scales by a factor", "not supported by medseg")
            current = state["intensity"] or IntensitySpec(kind="none")
            state["intensity"] = _replace(current, rescale_to=(float(lo), float(hi)))
        elif base == "cropforeground":
            if "select_fn" in item:
                raise ModelError(self.at(f"{tid}#select_fn"), "selects the foreground with Python code", TRUST_HINT)
            margin = arg("margin", 0)
            margin = max(margin) if isinstance(margin, (list, tuple)) else margin
            spacing = min(state["spacing"] or (1.0,))
            state["crop"] = {"threshold": _threshold_for_positive(state["intensity"]),
                             "margin_mm": float(margin) * spacing}
        else:
            raise ModelError(self.at(f"{tid}#_target_"), f"transform {item['_target_']} is not one medseg can "
                             "reproduce and invert", "safe mode understands Orientationd, Spacingd, "
                             "ScaleIntensityRanged, NormalizeIntensityd, ScaleIntensityd, CropForegroundd "
                             "and type/channel transforms")

    def _spacing(self, tid: str, pixdim: Any, mode: Any) -> tuple[float, float, float]:
        values = [pixdim] * 3 if isinstance(pixdim, (int, float)) else list(pixdim or [])
        if len(values) != 3 or any(not isinstance(v, (int, float)) or v <= 0 for v in values):
            raise ModelError(self.at(f"{tid}#pixdim"), f"is {pixdim!r}; medseg needs 3 positive spacings in mm", "")
        modes = mode if isinstance(mode, (list, tuple)) else [mode]
        if any(str(m).lower() not in ("bilinear", "trilinear", "1") for m in modes):
            raise ModelError(self.at(f"{tid}#mode"), f"resamples the image with {mode!r}",
                             "medseg resamples images trilinearly (bilinear)")
        return tuple(float(v) for v in values)

    def _merge(self, tid: str, current: IntensitySpec | None, new: IntensitySpec) -> IntensitySpec:
        if current is not None and current.kind != "none":
            raise ModelError(self.at(tid), f"is a second intensity step after {current.kind}",
                             "medseg represents one window or z-score step (plus ScaleIntensityd)")
        if current is not None and current.rescale_to is not None:
            raise ModelError(self.at(tid), "comes after ScaleIntensityd", "not supported by medseg")
        return new

    def _inferer(self) -> dict[str, Any]:
        out = {"roi_size": None, "overlap": 0.25, "mode": "constant", "padding_mode": "constant",
               "sw_batch_size": None}
        if self.source.has("inferer"):
            raw = self.source.raw("inferer")
            name = _target_name(raw.get("_target_") if isinstance(raw, dict) else None, self.at("inferer"), "inferer")
            if name not in ("slidingwindowinferer", "slidingwindowinfereradapt"):
                raise ModelError(self.at("inferer"), f"uses {raw.get('_target_')}", "medseg runs sliding windows only")
            for key in ("roi_size", "overlap", "mode", "padding_mode", "sw_batch_size"):
                if key in raw:
                    out[key] = self.source.value(f"inferer#{key}")
            if "sigma_scale" in raw and self.source.value("inferer#sigma_scale") != 0.125:
                self.notes.append("inferer sigma_scale differs from 0.125; medseg uses 0.125")
        if out["roi_size"] is None:
            shape = (((self.meta.get("network_data_format") or {}).get("inputs") or {}).get("image") or {}) \
                .get("spatial_shape")
            out["roi_size"] = shape
        roi = out["roi_size"]
        if not isinstance(roi, (list, tuple)) or len(roi) != 3 or any(not isinstance(r, int) or r <= 0 for r in roi):
            raise ModelError(self.at("inferer#roi_size"), f"is {roi!r}; medseg needs 3 positive window sizes", "")
        out["mode"] = str(out["mode"]).lower()
        out["padding_mode"] = str(out["padding_mode"]).lower()
        if out["mode"] not in ("gaussian", "constant") or out["padding_mode"] not in ("constant", "replicate", "reflect"):
            raise ModelError(self.at("inferer"), f"blends with {out['mode']!r}/pads with {out['padding_mode']!r}", "")
        self.sliding = out
        return out

    # --- classes -----------------------------------------------------------------------------------
    def labels(self, out_channels: int) -> LabelSet:
        pred = ((self.meta.get("network_data_format") or {}).get("outputs") or {}).get("pred") or {}
        names = pred.get("channel_def") or pred.get("label_def")
        if not names and self.source.has("labels"):  # e.g. {"background": 0, "liver": 1}
            raw = self.source.value("labels")
            if isinstance(raw, dict):
                names = {str(v): k for k, v in raw.items()}
        if not names:
            self.notes.append("metadata names no classes: generic names used")
            names = {str(c): ("background" if c == 0 else f"class_{c}") for c in range(out_channels)}
        try:
            labels = LabelSet({int(k): str(v) for k, v in names.items()})
        except ValueError as exc:
            raise ModelError(f"{self.where} / metadata.json", f"class names are not usable ({exc})", "") from exc
        if len(labels) != out_channels or labels.values != tuple(range(out_channels)):
            raise ModelError(f"{self.where} / metadata.json", f"names {len(labels)} classes "
                             f"({labels.values[:5]}...) but the network has {out_channels} output channels",
                             "the metadata does not belong to this network")
        return labels


_KNOWN_BASES = _NOOP | {"orientation", "spacing", "scaleintensityrange", "normalizeintensity",
                        "scaleintensity", "cropforeground"}


def _replace(spec: IntensitySpec, **changes: Any) -> IntensitySpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def _threshold_for_positive(intensity: IntensitySpec | None) -> float | None:
    """The raw value (HU) above which CropForeground's default ``x > 0`` holds after ``intensity``."""
    if intensity is None or intensity.kind == "none":
        return 0.0
    if intensity.kind == "window":
        scale = (intensity.a_max - intensity.a_min) / (intensity.b_max - intensity.b_min)
        return intensity.a_min + (0.0 - intensity.b_min) * scale
    return None


def _accepts(network: str, argument: str) -> bool:
    import inspect

    from monai.networks import nets

    return argument in inspect.signature(getattr(nets, network)).parameters


def load_bundle(path: str | Path, *, trust: bool = False):
    """Load a MONAI bundle (folder or config file) as a :class:`~medseg.models.SegmentationModel`.

    Raises
    ------
    ModelError
        No inference config; anything safe mode would have to execute (named by key, with the
        hint to use ``--trust-bundle``); missing or mismatched weights; missing ``scripts/``.
    """
    from medseg.models.bundle_trusted import load_trusted
    from medseg.models.bundle_weights import load_weights_into, weights_path
    from medseg.models.networks import build_network

    root, config_file = find_config(path)
    config = _read_data(config_file)
    meta_file = root / "configs" / "metadata.json"
    meta = _read_data(meta_file) if meta_file.is_file() else {}
    if not isinstance(config, dict):
        raise ModelError(config_file, "is not a bundle config (no mapping at the top)", "")
    if trust:
        return load_trusted(root, config_file, config, meta)
    source = SafeConfig(config, config_file, {"bundle_root": str(root)})
    tr = _Translation(source, meta if isinstance(meta, dict) else {}, str(config_file))
    net_spec, out_channels = tr.network()
    modality = _modality(tr.meta)
    spec = ModelSpec(name=str(tr.meta.get("name") or root.name), network=net_spec, labels=tr.labels(out_channels),
                     preprocessing=tr.preprocessing(modality), version=str(tr.meta.get("version", "0.0.0")),
                     modality=modality, description=str(tr.meta.get("description", "")),
                     provenance={"monai_bundle": str(root), "config": config_file.name})
    weights = weights_path(source, root, config_file, trust=False)
    try:
        network = build_network(spec.network, out_channels)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ModelError(tr.at(tr.network_id()), f"{net_spec.arch} cannot be built with these arguments "
                         f"({type(exc).__name__}: {exc})", "the bundle was written for another MONAI version") from exc
    digest = load_weights_into(network, weights, source)
    return _model(spec, network, tr, root, weights, digest, "monai-bundle")


def _modality(meta: dict) -> str:
    image = (((meta.get("network_data_format") or {}).get("inputs") or {}).get("image") or {})
    return str(image.get("modality") or "CT").upper()


def _model(spec, network, tr: _Translation, root: Path, weights: Path, digest: str, source: str):
    from medseg.models import SegmentationModel

    sliding = tr.sliding
    return SegmentationModel(
        name=spec.name, version=spec.version, modality=spec.modality, network=network, labels=spec.labels,
        preprocessing=spec.preprocessing, blend_mode=sliding["mode"], padding_mode=sliding["padding_mode"],
        sw_batch_size=None, source=source, path=str(root), weights_sha256=digest, spec=spec,
        notes=tuple(tr.notes), provenance={"weights": str(weights), **spec.provenance})


def translation_for(source: Any, meta: dict, where: str) -> _Translation:
    """The translator over any config source with ``has/raw/value`` (used by trusted mode)."""
    return _Translation(source, meta, where)


def ensure_importable(root: Path) -> None:
    """Let ``import scripts...`` find the bundle's own code (trusted mode only)."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
