"""Device configs as files ops keep in version control: chain defaults, store and device overrides.

Layout of a config directory::

    chain.toml                    defaults for every device of the chain
    stores/<store>.toml           overrides for every device of one store (optional)
    devices/<store>/<device>.toml one file per device: its overrides (may be empty)

Each file may be ``.toml`` or ``.json``. The layers are deep-merged in that order: tables merge key
by key, everything else (numbers, strings, lists) is replaced by the later layer, so a store that
sets ``cameras`` replaces the chain's list rather than appending to it. ``store`` and ``device``
come from the device file's path; a file that states different ones is an error.

Validation reports every error as ``file: field.path: message``, naming the layer that set the
offending value (or the device file, for a value that is missing).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from device_configs.device import DeviceConfig
from device_configs.loader import ConfigError, read_document
from device_configs.migrations import MigrationError, migrate

SUFFIXES = (".toml", ".json")
DeviceKey = tuple[str, str]  # (store, device)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``override`` on top of ``base``, tables merged recursively, the rest replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Layer:
    path: Path
    doc: dict[str, Any]


@dataclass
class DeviceFiles:
    store: str
    device: str
    layers: list[Layer]  # merge order: chain, store, device

    @property
    def key(self) -> DeviceKey:
        return (self.store, self.device)

    @property
    def device_file(self) -> Path:
        return self.layers[-1].path

    def merged(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for layer in self.layers:
            doc = deep_merge(doc, layer.doc)
        for name, value in (("store", self.store), ("device", self.device)):
            stated = doc.get(name)
            if stated is not None and stated != value:
                raise ConfigError(
                    f"{self._who_set((name,))}: {name}: says {stated!r} but the file is for "
                    f"{self.store}/{self.device}"
                )
            doc[name] = value
        return doc

    def _who_set(self, loc: tuple[str | int, ...]) -> Path:
        """The layer that set the deepest part of ``loc`` (the later one on a tie)."""
        best, best_depth = self.device_file, 0
        for layer in self.layers:
            depth = _defined_depth(layer.doc, loc)
            if depth and depth >= best_depth:
                best, best_depth = layer.path, depth
        return best


def _defined_depth(doc: Any, loc: tuple[str | int, ...]) -> int:
    depth = 0
    node = doc
    for part in loc:
        if isinstance(node, dict) and part in node:  # noqa: SIM114 - merged, mypy cannot narrow the index
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
        depth += 1
    return depth


@dataclass
class RepoResult:
    configs: dict[DeviceKey, DeviceConfig] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    files: dict[DeviceKey, DeviceFiles] = field(default_factory=dict)


def _find(directory: Path, stem: str) -> Path | None:
    found = [directory / f"{stem}{s}" for s in SUFFIXES if (directory / f"{stem}{s}").is_file()]
    if len(found) > 1:
        raise ConfigError(f"{found[0]}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0] if found else None


def discover(root: Path, errors: list[str]) -> list[DeviceFiles]:
    """Every device under ``root`` with its layers; unreadable files are added to ``errors``."""
    devices_dir = root / "devices"
    if not devices_dir.is_dir():
        errors.append(f"{devices_dir}: missing (one file per device: devices/<store>/<device>.toml)")
        return []

    def read(path: Path | None) -> Layer | None:
        if path is None:
            return None
        try:
            return Layer(path, read_document(path))
        except ConfigError as exc:
            errors.append(str(exc))
            return None

    try:
        chain = read(_find(root, "chain"))
    except ConfigError as exc:
        errors.append(str(exc))
        chain = None
    store_layers: dict[str, Layer | None] = {}
    out: list[DeviceFiles] = []
    for path in sorted(devices_dir.glob("*/*")):
        if path.suffix not in SUFFIXES or not path.is_file():
            continue
        store, device = path.parent.name, path.stem
        if store not in store_layers:
            try:
                store_layers[store] = read(_find(root / "stores", store))
            except ConfigError as exc:
                errors.append(str(exc))
                store_layers[store] = None
        dev = read(path)
        if dev is None:
            continue
        layers = [x for x in (chain, store_layers[store], dev) if x is not None]
        out.append(DeviceFiles(store, device, layers))
    return out


def load_repo(root: str | Path, only: set[DeviceKey] | None = None) -> RepoResult:
    """Merge and validate every device config under ``root`` (or the ``only`` ones)."""
    result = RepoResult()
    for files in discover(Path(root), result.errors):
        if only is not None and files.key not in only:
            continue
        result.files[files.key] = files
        try:
            doc = files.merged()
            result.configs[files.key] = DeviceConfig.model_validate(migrate(doc))
        except ConfigError as exc:
            result.errors.append(str(exc))
        except MigrationError as exc:
            result.errors.append(f"{files._who_set(('schema_version',))}: schema_version: {exc}")
        except ValidationError as exc:
            for e in exc.errors(include_url=False):
                loc = tuple(e["loc"])
                path = ".".join(str(x) for x in loc) or "(top level)"
                result.errors.append(
                    f"{files._who_set(loc)}: {path}: {e['msg']} [device {files.store}/{files.device}]"
                )
    return result
