"""``--trust-bundle``: let ``monai.bundle.ConfigParser`` run a bundle's own code.

Only reached when the user said they trust the bundle. The parser evaluates the bundle's
``imports`` and builds its network (custom networks from ``scripts/`` included); the
preprocessing is still translated to medseg's invertible pipeline (its ``$`` values now evaluated
by MONAI), so labels come back on the input grid the same way as in safe mode. Weights are still
read with ``weights_only=True``; a ``model.ts`` without ``model.pt`` is loaded with
``torch.jit.load`` as the network.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

from medseg.errors import ModelError, option

__all__ = ["TrustedConfig", "load_trusted"]


class TrustedConfig:
    """The ``has/raw/value`` interface of :class:`~medseg.models.bundle_config.SafeConfig`, backed by
    MONAI's parser (so ``$`` expressions are evaluated)."""

    def __init__(self, parser: Any, config: dict, where: Path) -> None:
        self.parser, self.config, self.where = parser, config, str(where)

    def has(self, config_id: str) -> bool:
        return config_id in self.parser

    def raw(self, config_id: str) -> Any:
        return self.parser.get(config_id)

    def value(self, config_id: str) -> Any:
        try:
            return self.parser.get_parsed_content(config_id, instantiate=True)
        except Exception as exc:  # the bundle's own code can raise anything
            raise ModelError(f"{self.where}#{config_id}", f"the bundle's code failed ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''})",
                             "the bundle needs files or packages this machine does not have") from exc


def _imported_modules(config: dict) -> list[str]:
    names = []
    for statement in config.get("imports") or []:
        if not isinstance(statement, str) or not statement.startswith("$"):
            continue
        try:
            tree = ast.parse(statement[1:].strip())
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
    return names


def _check_imports(root: Path, config: dict, where: Path) -> None:
    """Fail clearly on the bundle's missing code instead of MONAI's silent optional-import stubs."""
    for module in _imported_modules(config):
        top = module.split(".", 1)[0]
        if top == "scripts" and not (root / "scripts").is_dir():
            raise ModelError(root / "scripts", f"is missing: the bundle's configs import {module}, the bundle's "
                             "own code, which is not in the bundle", "copy the complete bundle (with its "
                             f"scripts/ folder), or run without {option('trust_bundle', True)} to use safe mode")
        if importlib.util.find_spec(top) is None:
            raise ModelError(where, f"imports {module}, which is not installed", f"install {top} or use safe mode")
        importlib.import_module(module)


def load_trusted(root: Path, config_file: Path, config: dict, meta: dict):
    """Build a bundle with MONAI's parser (the caller has the user's trust)."""
    import torch
    from monai.bundle import ConfigParser

    from medseg.models.bundle import _modality, _model, ensure_importable, translation_for
    from medseg.models.bundle_weights import load_weights_into, weights_path
    from medseg.models.spec import ModelSpec

    ensure_importable(root)
    _check_imports(root, config, config_file)
    config = dict(config)
    notes = []
    net_key = "network_def" if isinstance(config.get("network_def"), dict) else "network"
    net_config = config.get(net_key)
    if isinstance(net_config, dict) and str(net_config.get("_target_", "")).split(".")[-1] == "SwinUNETR":
        from medseg.models.bundle import _accepts

        if "img_size" in net_config and not _accepts("SwinUNETR", "img_size"):
            config[net_key] = {k: v for k, v in net_config.items() if k != "img_size"}
            notes.append("SwinUNETR img_size dropped: this MONAI version infers it from the input")
    parser = ConfigParser()
    parser.read_config(config)
    if isinstance(meta, dict) and meta:
        parser.read_meta(meta)
    parser["bundle_root"] = str(root)
    source = TrustedConfig(parser, config, config_file)
    tr = translation_for(source, meta if isinstance(meta, dict) else {}, str(config_file))
    tr.notes.extend(notes)
    weights = weights_path(source, root, config_file, trust=True)
    if weights.suffix == ".ts":
        from medseg.models.store import sha256_file

        network, digest = torch.jit.load(str(weights), map_location="cpu").eval(), sha256_file(weights)
    else:
        network = source.value(net_key)
        if not isinstance(network, torch.nn.Module):
            raise ModelError(f"{config_file}#{net_key}", f"built a {type(network).__name__}, not a network", "")
        digest = load_weights_into(network, weights, source)
    out_channels = _out_channels(source, net_key, network)
    modality = _modality(tr.meta)
    try:
        net_spec, _ = tr.network()
    except ModelError:
        net_spec = None  # a network medseg cannot describe as data; it runs all the same
    labels = tr.labels(out_channels)
    pre = tr.preprocessing(modality)
    spec = None
    if net_spec is not None:
        spec = ModelSpec(name=str(tr.meta.get("name") or root.name), network=net_spec, labels=labels,
                         preprocessing=pre, version=str(tr.meta.get("version", "0.0.0")), modality=modality,
                         provenance={"monai_bundle": str(root), "config": config_file.name, "trusted": True})
    model = _model(spec or _Described(tr, root, labels, pre, modality), network, tr, root, weights, digest,
                   "monai-bundle-trusted")
    model.spec = spec
    return model


def _out_channels(source: TrustedConfig, net_key: str, network: Any) -> int:
    if source.has(f"{net_key}#out_channels"):
        return int(source.value(f"{net_key}#out_channels"))
    raise ModelError(f"{source.where}#{net_key}", "does not say its out_channels", "")


class _Described:
    """The few spec fields :func:`medseg.models.bundle._model` reads, for a network without a spec."""

    def __init__(self, tr, root: Path, labels, pre, modality: str) -> None:
        self.name = str(tr.meta.get("name") or root.name)
        self.version = str(tr.meta.get("version", "0.0.0"))
        self.modality, self.labels, self.preprocessing = modality, labels, pre
        self.provenance = {"monai_bundle": str(root), "trusted": True}
