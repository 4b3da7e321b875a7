"""Segmentation models: medseg model folders, MONAI bundles, and the one resolver the CLI uses.

>>> from medseg.models import resolve_model                      # doctest: +SKIP
>>> model = resolve_model("default")                              # doctest: +SKIP
>>> model = resolve_model("models/spleen_ct_segmentation")        # a MONAI bundle, safe mode  # doctest: +SKIP

``resolve_model`` accepts ``"default"`` (the model shipped in ``medseg/models/default/``), a medseg
model folder (``medseg-model.json`` + safetensors), a MONAI bundle folder (or one of its
``configs/inference*.json|yaml`` files), or an already loaded model. Every form becomes a
:class:`SegmentationModel`: a network plus the plain-data description of its model space and
classes, which is all :func:`medseg.inference.segment` needs.

This package imports no torch at import time (labels and specs are pure data); networks are
built inside the loaders.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ModelError, option
from medseg.labels import DEFAULT_ORGANS, Label, LabelSet
from medseg.models.spec import IntensitySpec, ModelSpec, NetworkSpec, Preprocessing

__all__ = [
    "DEFAULT_ORGANS",
    "IntensitySpec",
    "Label",
    "LabelSet",
    "ModelSpec",
    "NetworkSpec",
    "Preprocessing",
    "SegmentationModel",
    "default_model_path",
    "resolve_model",
    "clear_model_cache",
]


def default_model_path() -> Path:
    """Where the shipped default model folder lives (``medseg/models/default/``)."""
    return Path(__file__).resolve().parent / "default"


@dataclass
class SegmentationModel:
    """A network ready for inference, with its model space and classes.

    Attributes
    ----------
    name, version : str
        From the spec or the bundle's metadata.
    network : torch.nn.Module or None
        In eval mode, on CPU (the engine moves it to the chosen device). ``None`` for a model
        folder resolved with ``lazy=True`` until :meth:`ensure_network` builds it.
    labels : LabelSet
        Output channel ``c`` is ``labels`` entry ``c``.
    preprocessing : Preprocessing
        Orientation, spacing (mm), intensity, window size and overlap of model space.
    blend_mode : str
        ``"gaussian"`` or ``"constant"`` window blending (a bundle keeps its inferer's).
    padding_mode : str
        How images smaller than the window are padded (``"constant"`` with 0, or ``"replicate"``).
    sw_batch_size : int or None
        Windows per forward pass the model asks for; ``None`` lets the engine choose by device.
    source : str
        ``"medseg-model"``, ``"monai-bundle"`` (safe mode) or ``"monai-bundle-trusted"``.
    path, weights_sha256 : str
        Where it was loaded from and the sha256 of its weights file.
    spec : ModelSpec or None
        The plain-data spec (``None`` only for a trusted bundle whose network medseg cannot describe).
    notes : tuple of str
        What loading decided that a user may want to know (e.g. an argument dropped for this
        MONAI version).
    """

    name: str
    network: Any
    labels: LabelSet
    preprocessing: Preprocessing
    version: str = "0.0.0"
    modality: str = "CT"
    blend_mode: str = "gaussian"
    padding_mode: str = "constant"
    sw_batch_size: int | None = None
    source: str = "medseg-model"
    path: str = ""
    weights_sha256: str = ""
    spec: ModelSpec | None = None
    notes: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_loaded(cls, loaded) -> SegmentationModel:
        """Wrap a :class:`medseg.models.store.LoadedModel` (a medseg model folder)."""
        spec = loaded.spec
        return cls(name=spec.name, version=spec.version, modality=spec.modality, network=loaded.network,
                   labels=spec.labels, preprocessing=spec.preprocessing, source="medseg-model",
                   path=str(loaded.path), weights_sha256=loaded.weights_sha256, spec=spec,
                   provenance=dict(spec.provenance))

    @classmethod
    def from_network(cls, spec: ModelSpec, network: Any, **kwargs: Any) -> SegmentationModel:
        """A model from a spec and a network in memory (e.g. right after training)."""
        network.eval()
        return cls(name=spec.name, version=spec.version, modality=spec.modality, network=network,
                   labels=spec.labels, preprocessing=spec.preprocessing, spec=spec,
                   provenance=dict(spec.provenance), **kwargs)

    def ensure_network(self) -> Any:
        """The torch network, built from the model folder on first need (``resolve_model(lazy=True)``):
        a run on a cached OpenVINO/ONNX Runtime export never needs it."""
        if self.network is None:
            from medseg.models.store import load_model

            if self.source != "medseg-model" or not self.path:
                raise ModelError(self.name, "has no network and no model folder to build it from",
                                 "resolve the model without lazy=True")
            loaded = load_model(self.path)
            if self.weights_sha256 and loaded.weights_sha256 != self.weights_sha256:
                raise ModelError(self.path, "the weights changed on disk while the model was in use",
                                 "load the model again")
            self.network = loaded.network
        return self.network

    def describe(self) -> dict[str, Any]:
        """Plain-data summary for provenance files."""
        pre = self.preprocessing
        return {"name": self.name, "version": self.version, "source": self.source, "path": self.path,
                "weights_sha256": self.weights_sha256, "modality": self.modality,
                "architecture": self.spec.network.arch if self.spec else type(self.network).__name__,
                "classes": len(self.labels), "orientation": pre.orientation,
                "spacing_mm": list(pre.spacing_mm), "roi_size": list(pre.roi_size), "overlap": pre.overlap,
                "blend_mode": self.blend_mode, "notes": list(self.notes)}


_LOADED: dict[tuple, SegmentationModel] = {}
_LOADED_LOCK = threading.Lock()
#: Models kept loaded per process (a napari session or a batch worker switches between few).
CACHE_SIZE = 2


def _cache_key(path: Path, trust_bundle: bool) -> tuple:
    """A loaded model is reused while its folder's files are unchanged (sizes and mtimes)."""
    root = path.parent.parent if path.is_file() and path.parent.name == "configs" else path
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files[:200])
    return (str(path.resolve()), bool(trust_bundle), stamp)


def clear_model_cache() -> None:
    """Forget every loaded model (e.g. after replacing a model folder in place)."""
    with _LOADED_LOCK:
        _LOADED.clear()


def resolve_model(model: Any = "default", *, trust_bundle: bool = False,
                  verify_sha256: bool = True, cache: bool = True, lazy: bool = False) -> SegmentationModel:
    """Turn ``"default"``, a model folder, a MONAI bundle or a loaded model into a SegmentationModel.

    Parameters
    ----------
    model : str, path-like, SegmentationModel or LoadedModel
        ``"default"``; a medseg model folder; a MONAI bundle folder, or a bundle config file
        (``configs/inference_segresnet.yaml``) to pick one of several inference configs.
    trust_bundle : bool
        Let a MONAI bundle run its own Python (``$`` expressions, ``_target_`` outside the
        allowlist, ``scripts/``) through ``monai.bundle.ConfigParser``. Off by default: a bundle
        is code, and safe mode builds only MONAI networks and known transforms from literal data.
    verify_sha256 : bool
        Check a medseg model's weights against the sha256 in its spec.
    cache : bool
        Reuse a model this process already loaded from the same, unchanged folder (the last
        :data:`CACHE_SIZE` are kept): ``segment(volume, "default")`` in a loop, a batch worker and
        napari load it once.
    lazy : bool
        For a medseg model folder: read the spec and check the weights' sha256, but build the torch
        network only when something needs it (:meth:`SegmentationModel.ensure_network`). A run on a
        cached OpenVINO/ONNX Runtime export never does, which saves importing MONAI (~3.5 s) and
        building the network. Bundles are loaded as usual.

    Raises
    ------
    ModelError
        One line naming the folder/file, what is wrong and what to do.
    """
    if isinstance(model, SegmentationModel):
        return model
    from medseg.models import store

    if isinstance(model, store.LoadedModel):
        return SegmentationModel.from_loaded(model)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be 'default', a path or a loaded model, not {type(model).__name__}")
    if str(model) == "default":
        folder = default_model_path()
        if not store.is_model_folder(folder):
            raise ModelError(option("model", "default"), f"the default model is not installed ({folder} has no "
                             f"{store.SPEC_FILE})", f"pass {option('model')} with a medseg model folder or a MONAI "
                             "bundle, or install a medseg build that ships the default model")
        path = folder
    else:
        path = Path(model).expanduser()
        if not path.exists():
            raise ModelError(option("model", str(model)), "does not exist",
                             "give 'default', a medseg model folder or a MONAI bundle folder")
        # Absolute from here on: a bundle's @bundle_root is joined to the paths its config computes.
        path = path.resolve()
    key = _cache_key(path, trust_bundle) if cache else None
    if key is not None:
        with _LOADED_LOCK:
            found = _LOADED.get(key)
        if found is not None:
            if not lazy:
                found.ensure_network()
            return found
    loaded = _load(path, trust_bundle=trust_bundle, verify_sha256=verify_sha256, lazy=lazy)
    if key is not None:
        with _LOADED_LOCK:
            _LOADED[key] = loaded
            while len(_LOADED) > CACHE_SIZE:
                _LOADED.pop(next(iter(_LOADED)))
    return loaded


def _load(path: Path, *, trust_bundle: bool, verify_sha256: bool, lazy: bool = False) -> SegmentationModel:
    from medseg.models import bundle, store

    if path.is_dir() and store.is_model_folder(path):
        if lazy:
            spec, weights = store.read_spec(path)
            _, digest = store.check_weights(path, weights, verify_sha256=verify_sha256)
            return SegmentationModel.from_loaded(store.LoadedModel(spec, None, str(path), digest))
        return SegmentationModel.from_loaded(store.load_model(path, verify_sha256=verify_sha256))
    if bundle.is_bundle(path):
        return bundle.load_bundle(path, trust=trust_bundle)
    raise ModelError(path, f"is neither a medseg model folder (no {store.SPEC_FILE}) nor a MONAI bundle "
                     "(no configs/metadata.json or configs/inference.json|yaml)",
                     "give 'default', a folder written by `medseg train`, or a MONAI bundle folder")
