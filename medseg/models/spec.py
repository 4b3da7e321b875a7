"""A model described as data: network architecture, classes and the preprocessing to model space.

A :class:`ModelSpec` is what ``medseg-model.json`` holds. It is plain data (JSON), never code:
the architecture is a name from a fixed set and its arguments are literals. Imports no torch.

Example ``medseg-model.json``::

    {
      "format": "medseg-model", "format_version": 1,
      "name": "medseg-abdomen-ct", "version": "1.0.0", "modality": "CT",
      "network": {"arch": "unet", "kwargs": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2]}},
      "labels": {"0": "background", "1": "liver"},
      "preprocessing": {"orientation": "RAS", "spacing_mm": [3, 3, 3],
                        "intensity": {"kind": "window", "a_min": -1000, "a_max": 1000},
                        "roi_size": [96, 96, 96], "overlap": 0.25, "crop_foreground": true,
                        "foreground_threshold": -500},
      "weights": {"file": "weights.safetensors", "sha256": "..."}
    }
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medseg.labels import LabelSet

__all__ = ["ARCHITECTURES", "IntensitySpec", "Preprocessing", "NetworkSpec", "ModelSpec", "FORMAT_NAME"]

FORMAT_NAME = "medseg-model"
FORMAT_VERSION = 1

#: Architecture names a spec may use, and the MONAI class each builds (see networks.py).
ARCHITECTURES = ("unet", "segresnet", "swinunetr", "dynunet")


def _tuple3(value: Any, what: str) -> tuple:
    if isinstance(value, (int, float)):
        return (value,) * 3
    items = tuple(value)
    if len(items) != 3:
        raise ValueError(f"{what} needs 3 values (i, j, k), got {list(items)}")
    return items


@dataclass(frozen=True)
class IntensitySpec:
    """How voxel values become network input.

    ``kind``:
        ``"window"``: clip to ``[a_min, a_max]`` and scale linearly to ``[b_min, b_max]``
        (MONAI ScaleIntensityRange with clip; the usual CT recipe in HU).
        ``"zscore"``: subtract mean and divide by std over voxels above ``nonzero_threshold``
        (MONAI NormalizeIntensity(nonzero=True); the usual MR recipe).
        ``"none"``: pass values through.

    ``zscore_over`` says which voxels give the mean/std and are normalised: ``"above"`` (voxels
    above ``nonzero_threshold``), ``"nonzero"`` (voxels != 0, exactly MONAI's ``nonzero=True``,
    which on CT in HU is almost every voxel) or ``"all"`` (``nonzero=False``); voxels outside the
    mask are set to 0. ``rescale_to`` (optional) then maps the image's min..max linearly onto
    that range (MONAI ScaleIntensity(minv, maxv), used after z-score by MONAI's wholeBody bundle).
    """

    kind: str = "window"
    a_min: float = -1000.0
    a_max: float = 1000.0
    b_min: float = 0.0
    b_max: float = 1.0
    clip: bool = True
    nonzero_threshold: float = 0.0
    zscore_over: str = "above"
    rescale_to: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("window", "zscore", "none"):
            raise ValueError(f"intensity kind must be window, zscore or none, got {self.kind!r}")
        if self.zscore_over not in ("above", "nonzero", "all"):
            raise ValueError(f"zscore_over must be above, nonzero or all, got {self.zscore_over!r}")
        if self.rescale_to is not None:
            lo, hi = (float(v) for v in self.rescale_to)
            if not hi > lo:
                raise ValueError(f"rescale_to needs max > min, got {self.rescale_to}")
            object.__setattr__(self, "rescale_to", (lo, hi))
        if self.kind == "window" and not self.a_max > self.a_min:
            raise ValueError(f"intensity window needs a_max > a_min, got {self.a_min}..{self.a_max}")


@dataclass(frozen=True)
class Preprocessing:
    """Where model space is: orientation, voxel spacing, intensity, and how windows tile it."""

    orientation: str = "RAS"
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    intensity: IntensitySpec = field(default_factory=IntensitySpec)
    roi_size: tuple[int, int, int] = (96, 96, 96)
    overlap: float = 0.25
    #: Crop to the bounding box of voxels above ``foreground_threshold`` (the body) before
    #: inference, so air is not computed. ``None`` threshold: the minimum value is background.
    crop_foreground: bool = True
    foreground_threshold: float | None = -500.0
    #: Margin in mm kept around the foreground box.
    crop_margin_mm: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in _tuple3(self.spacing_mm, "spacing_mm")))
        object.__setattr__(self, "roi_size", tuple(int(s) for s in _tuple3(self.roi_size, "roi_size")))
        if isinstance(self.intensity, Mapping):
            object.__setattr__(self, "intensity", IntensitySpec(**self.intensity))
        if len(self.orientation) != 3 or set(self.orientation.upper()) - set("LRAPSI"):
            raise ValueError(f"orientation must be 3 axis codes like 'RAS', got {self.orientation!r}")
        if any(s <= 0 for s in self.spacing_mm):
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")
        if any(s < 8 for s in self.roi_size):
            raise ValueError(f"roi_size must be at least 8 voxels per axis, got {self.roi_size}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")


@dataclass(frozen=True)
class NetworkSpec:
    """A MONAI network by name and literal keyword arguments.

    ``kwargs`` are passed to the MONAI class; ``in_channels``, ``out_channels`` and
    ``spatial_dims`` are filled from the spec and must not be given here.
    """

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 1

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        reserved = {"in_channels", "out_channels", "spatial_dims"} & set(self.kwargs)
        if reserved:
            raise ValueError(f"network kwargs must not set {sorted(reserved)}; the spec sets them")
        _require_literal(self.kwargs, f"network.kwargs of {self.arch}")


def _require_literal(value: Any, where: str) -> None:
    """Configs are data: only JSON literals (no callables, no '$' expressions) are accepted."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _require_literal(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _require_literal(v, where)
    elif isinstance(value, str):
        if value.startswith("$") or value.startswith("@"):
            raise ValueError(f"{where}: expressions like {value!r} are not allowed in a medseg model spec")
    elif not (value is None or isinstance(value, (bool, int, float))):
        raise ValueError(f"{where}: {type(value).__name__} is not plain data")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model and use it, as plain data."""

    name: str
    network: NetworkSpec
    labels: LabelSet
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    version: str = "0.0.0"
    modality: str = "CT"
    description: str = ""
    #: Provenance: training data, epochs, metrics, parent model... (plain data).
    provenance: dict[str, Any] = field(default_factory=dict)
    #: Class names that are one connected organ each: inference keeps only their largest
    #: component (see :mod:`medseg.inference.postprocess`).
    keep_largest: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_largest", tuple(str(n) for n in self.keep_largest))
        unknown = [n for n in self.keep_largest if n not in self.labels.names]
        if unknown:
            raise ValueError(f"postprocessing.keep_largest_component names {unknown}, which are not "
                             f"classes of the model ({', '.join(self.labels.names)})")

    @property
    def out_channels(self) -> int:
        return len(self.labels)

    def replace(self, **changes: Any) -> ModelSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        pre = dataclasses.asdict(self.preprocessing)
        pre["spacing_mm"] = list(self.preprocessing.spacing_mm)
        pre["roi_size"] = list(self.preprocessing.roi_size)
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "modality": self.modality,
            "description": self.description,
            "network": {"arch": self.network.arch, "in_channels": self.network.in_channels,
                        "kwargs": _jsonable(self.network.kwargs)},
            "labels": self.labels.to_list(),
            "preprocessing": pre,
            "postprocessing": {"keep_largest_component": list(self.keep_largest)},
            "provenance": _jsonable(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Build from :meth:`to_dict` output; raises ValueError/KeyError naming the bad field."""
        if data.get("format", FORMAT_NAME) != FORMAT_NAME:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT_NAME!r}")
        if int(data.get("format_version", 1)) > FORMAT_VERSION:
            raise ValueError(f"format_version {data['format_version']} is newer than this medseg "
                             f"understands ({FORMAT_VERSION}); upgrade medseg")
        net = data["network"]
        pre = dict(data.get("preprocessing", {}))
        if "intensity" in pre:
            pre["intensity"] = IntensitySpec(**pre["intensity"])
        return cls(
            name=str(data["name"]),
            version=str(data.get("version", "0.0.0")),
            modality=str(data.get("modality", "CT")),
            description=str(data.get("description", "")),
            network=NetworkSpec(arch=str(net["arch"]), kwargs=dict(net.get("kwargs", {})),
                                in_channels=int(net.get("in_channels", 1))),
            labels=LabelSet.from_data(data["labels"]),
            preprocessing=Preprocessing(**pre),
            provenance=dict(data.get("provenance", {})),
            keep_largest=tuple((data.get("postprocessing") or {}).get("keep_largest_component", ())),
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value
