"""The cache of exported networks, agreement verdicts and measured back-end choices.

Layout (under :func:`cache_root`, ``backends/``)::

    backends/
      onnxruntime-<key>/      one exported network: entry.json (what it was made from, the sha256
        entry.json            of every file) + the files (model.onnx; OpenVINO: model.xml/.bin)
        model.onnx            + verdict-<precision>.json (the agreement check, written later)
        verdict-fp32.json
      decisions/<key>.json    which back-end ``auto`` measured fastest for a set of models
      failures/<backend>-<key>.json   an export that failed, so it is not retried every run
      .locks/                 one lock file per entry being built

An entry's key is the sha256 of its recipe: the weights' sha256, the network spec (or, for a
network in memory, the hash of its state and its class), the window size, the back-end and its
version, the exporter (torch version, ONNX opset) and this format's version; any change makes a
new entry. Precision is not part of the files (the ONNX and OpenVINO files hold float32; OpenVINO's
precision is a compile setting), so verdicts are kept per precision inside the entry.

Safety:

* **atomic**: an entry is built in a hidden temporary folder (``TEMP_MARK``, so what a killed
  process left is removed by the next writer) and renamed into place complete; small JSON
  files are written with :func:`medseg.io.write_text_atomic`;
* **several processes**: builders of the same entry take a file lock (``filelock``, a torch
  dependency), so batch workers starting at once export once and the others wait and read it;
  without a lock (a file system that refuses them) both build and the first rename wins;
* **corruption**: every file's sha256 is checked on load; a damaged or partial entry is removed
  and rebuilt;
* **read-only**: when the cache folder cannot be written (a read-only install, a shared cache
  someone else owns), entries that are there are used, and new ones are built in a temporary
  folder of this process (removed at exit) and verdicts are kept in memory;
* **bounded**: after each new entry, the least recently used ones are removed while the exports
  take more than ``$MEDSEG_CACHE_MAX_MB`` (default 2048 MB; every model ever used would otherwise
  stay, e.g. each fine-tuning's weights). Loading an entry marks it used.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CACHE_ENV", "BackendCache", "Entry", "cache_root", "recipe_key"]

#: Environment variable that moves the cache (tests, clusters with a shared scratch space).
CACHE_ENV = "MEDSEG_CACHE_DIR"
FORMAT_VERSION = 1
_ENTRY_FILE = "entry.json"
_TEMP_MARK = ".medseg-tmp-"  # the same mark medseg.io's atomic writers use (stale ones are cleaned)
#: How long a builder waits for another process exporting the same entry (seconds).
LOCK_TIMEOUT_S = 900.0
#: Environment variable bounding the exports' size (MB); least recently used entries go first.
MAX_MB_ENV = "MEDSEG_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048


def cache_root() -> Path:
    """``$MEDSEG_CACHE_DIR``, else the user's cache folder for medseg (platformdirs:
    ``~/.cache/medseg`` on Linux, ``~/Library/Caches/medseg`` on macOS, ``%LOCALAPPDATA%`` on
    Windows)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:  # platformdirs is small but not (yet) a core dependency: the XDG rule
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "medseg"
    return Path(platformdirs.user_cache_dir("medseg", appauthor=False))


def recipe_key(fields: dict[str, Any]) -> str:
    """A short stable key for a recipe: sha256 of its canonical JSON (24 hex digits)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Entry:
    """One exported network in the cache (or in a process-private folder when the cache is read-only)."""

    backend: str
    key: str
    path: Path
    meta: dict[str, Any]
    persistent: bool = True
    verdicts: dict[str, dict] = field(default_factory=dict)  # in-memory ones (read-only cache)
    made: bool = False  # built by this process just now (not found in the cache)

    def file(self, name: str) -> Path:
        return self.path / name


class BackendCache:
    """Exported networks, verdicts and decisions under ``root / "backends"``.

    Parameters
    ----------
    root : path-like, optional
        Default :func:`cache_root`.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()
        self.folder = self.root / "backends"
        self._memory: dict[str, dict] = {}  # decisions/failures not writable to disk
        self._private: Path | None = None
        #: What was wrong with the last entry found damaged (for a note), else "".
        self.repaired: list[str] = []

    # --- where we may write ----------------------------------------------------------------------
    def writable(self) -> bool:
        """True when entries can be added here (the folder exists or can be made, and is writable)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.folder, os.W_OK | os.X_OK)

    def _private_folder(self) -> Path:
        if self._private is None:
            self._private = Path(tempfile.mkdtemp(prefix="medseg-backends-"))
            atexit.register(shutil.rmtree, self._private, True)
        return self._private

    # --- entries -----------------------------------------------------------------------------------
    def entry_path(self, backend: str, key: str) -> Path:
        return self.folder / f"{backend}-{key}"

    def load(self, backend: str, key: str) -> Entry | None:
        """The entry if it is complete and every file has its recorded sha256; a damaged one is
        removed (when writable) and reported in :attr:`repaired`; None when absent."""
        for base, persistent in ((self.folder, True), (self._private, False)):
            if base is None:
                continue
            path = base / f"{backend}-{key}"
            if not path.is_dir():
                continue
            problem = _check_entry(path)
            if not problem:
                meta = json.loads((path / _ENTRY_FILE).read_text(encoding="utf-8"))
                with contextlib.suppress(OSError):
                    os.utime(path)  # used now: the last to be pruned
                return Entry(backend, key, path, meta, persistent)
            self.repaired.append(f"{path.name}: {problem}")
            self._discard(path)
        return None

    def build(self, backend: str, key: str, recipe: dict[str, Any],
              make: Callable[[Path], dict[str, Any]]) -> Entry:
        """Return the entry for ``key``, building it with ``make(folder) -> extra meta`` if needed.

        ``make`` writes the exported files into the (empty, temporary) ``folder``; every file it
        leaves there is hashed into ``entry.json``. Concurrent builders of one key wait for each
        other; the first complete entry is the one everybody uses.
        """
        found = self.load(backend, key)
        if found is not None:
            return found
        if not self.writable():
            return self._build_into(self._private_folder(), backend, key, recipe, make, persistent=False)
        with self._lock(f"{backend}-{key}"):
            found = self.load(backend, key)  # another process may have finished it while we waited
            if found is not None:
                return found
            entry = self._build_into(self.folder, backend, key, recipe, make, persistent=True)
        self.prune(keep=entry.path)
        return entry

    def max_bytes(self) -> int:
        try:
            return int(float(os.environ.get(MAX_MB_ENV, DEFAULT_MAX_MB)) * 2**20)
        except ValueError:
            return DEFAULT_MAX_MB * 2**20

    def prune(self, *, keep: Path | None = None) -> list[str]:
        """Remove least recently used entries while the exports exceed :meth:`max_bytes`; returns
        the names removed. ``keep`` (the entry just made) is never removed."""
        entries = [(e.path.stat().st_mtime, _size(e.path), e.path) for e in self.entries() if e.path != keep]
        total = sum(size for _, size, _ in entries) + (_size(keep) if keep is not None else 0)
        removed = []
        for _, size, path in sorted(entries):
            if total <= self.max_bytes():
                break
            self._discard(path)
            total -= size
            removed.append(path.name)
        return removed

    def _build_into(self, base: Path, backend: str, key: str, recipe: dict[str, Any],
                    make: Callable[[Path], dict[str, Any]], *, persistent: bool) -> Entry:
        from medseg.io._atomic import remove_stale_temporaries
        from medseg.progress import hold_for_tests

        name = f"{backend}-{key}"
        remove_stale_temporaries(base)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}{_TEMP_MARK}{os.getpid()}-", dir=base))
        try:
            extra = make(tmp) or {}
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            meta = {"format": FORMAT_VERSION, "backend": backend, "key": key, "recipe": recipe,
                    "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
            (tmp / _ENTRY_FILE).write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a shared cache should be readable
            hold_for_tests("cache-entry")  # tests start a second builder here
            final = base / name
            try:
                os.rename(tmp, final)
            except OSError:
                # Lost a race without a lock (the other entry is as good as ours) or the name is
                # taken by a damaged leftover: keep whichever complete entry is there.
                found = self.load(backend, key)
                if found is not None:
                    return found
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return Entry(backend, key, final, meta, persistent, made=True)

    @contextlib.contextmanager
    def _lock(self, name: str):
        from filelock import FileLock, Timeout

        locks = self.folder / ".locks"
        try:
            locks.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(locks / f"{name}.lock"), timeout=LOCK_TIMEOUT_S)
            lock.acquire()
        except (OSError, Timeout):  # no locking here: build anyway, the rename decides
            yield
            return
        try:
            yield
        finally:
            lock.release()

    def _discard(self, path: Path) -> None:
        """Move a damaged entry out of the way (atomically) and delete it."""
        gone = path.with_name(f".{path.name}{_TEMP_MARK}{os.getpid()}-discard-{os.urandom(3).hex()}")
        try:
            os.rename(path, gone)
        except OSError:
            return  # read-only, or another process already moved it
        shutil.rmtree(gone, ignore_errors=True)

    # --- verdicts, decisions, failures (small JSON records) ----------------------------------------
    def verdict(self, entry: Entry, precision: str) -> dict | None:
        if precision in entry.verdicts:
            return entry.verdicts[precision]
        return _read_json(entry.file(f"verdict-{precision}.json"))

    def save_verdict(self, entry: Entry, precision: str, verdict: dict) -> None:
        entry.verdicts[precision] = verdict
        if entry.persistent:
            self._write_json(entry.file(f"verdict-{precision}.json"), verdict)

    def decision(self, key: str) -> dict | None:
        return self._memory.get(f"decision-{key}") or _read_json(self.folder / "decisions" / f"{key}.json")

    def save_decision(self, key: str, decision: dict) -> None:
        self._memory[f"decision-{key}"] = decision
        self._write_json(self.folder / "decisions" / f"{key}.json", decision)

    def failure(self, backend: str, key: str) -> dict | None:
        name = f"{backend}-{key}"
        return self._memory.get(f"failure-{name}") or _read_json(self.folder / "failures" / f"{name}.json")

    def save_failure(self, backend: str, key: str, record: dict) -> None:
        name = f"{backend}-{key}"
        self._memory[f"failure-{name}"] = record
        self._write_json(self.folder / "failures" / f"{name}.json", record)

    def _write_json(self, path: Path, data: dict) -> None:
        from medseg.errors import InputError
        from medseg.io import write_text_atomic

        try:
            write_text_atomic(path, json.dumps(data, indent=1, default=str) + "\n")
        except (OSError, InputError):
            pass  # read-only cache (or a file where a folder should be): kept in memory for this process

    # --- info and clear ----------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Every complete-looking entry (not hash-checked: that is for loading)."""
        out = []
        if not self.folder.is_dir():
            return out
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") or not path.is_dir() or path.name in ("decisions", "failures"):
                continue
            meta = _read_json(path / _ENTRY_FILE)
            if meta is None:
                continue
            entry = Entry(str(meta.get("backend", "")), str(meta.get("key", "")), path, meta)
            for item in sorted(path.glob("verdict-*.json")):
                verdict = _read_json(item)
                if verdict is not None:
                    entry.verdicts[item.stem.removeprefix("verdict-")] = verdict
            out.append(entry)
        return out

    def info(self) -> dict[str, Any]:
        """Plain data for ``medseg cache info``."""
        entries = self.entries()
        rows = []
        for e in entries:
            recipe = e.meta.get("recipe", {})
            rows.append({"backend": e.backend, "key": e.key, "model": recipe.get("model_name", ""),
                         "window": recipe.get("roi"), "backend_version": recipe.get("backend_version"),
                         "created": e.meta.get("created"), "size_bytes": _size(e.path),
                         "export_seconds": e.meta.get("export_seconds"),
                         "verdicts": {p: {"passed": v.get("passed"), "argmax_agreement": v.get("argmax_agreement"),
                                          "max_abs_logit_diff": v.get("max_abs_logit_diff")}
                                      for p, v in e.verdicts.items()},
                         "path": str(e.path)})
        decisions = sorted(self.folder.glob("decisions/*.json")) if self.folder.is_dir() else []
        failures = sorted(self.folder.glob("failures/*.json")) if self.folder.is_dir() else []
        return {"root": str(self.folder), "exists": self.folder.is_dir(), "max_bytes": self.max_bytes(),
                "writable": _writable_path(self.folder),
                "entries": rows, "total_bytes": _size(self.folder) if self.folder.is_dir() else 0,
                "decisions": [_read_json(p) or {} for p in decisions],
                "failures": [{"name": p.stem, **(_read_json(p) or {})} for p in failures]}

    def clear(self) -> tuple[int, int]:
        """Remove the whole cache folder; returns (entries removed, bytes freed).

        The folder is first renamed away in one step, so a process starting meanwhile sees the
        old cache or none, never half of one.
        """
        if not self.folder.is_dir():
            return 0, 0
        n, size = len(self.entries()), _size(self.folder)
        gone = self.folder.with_name(f".{self.folder.name}{_TEMP_MARK}{os.getpid()}-clear-{os.urandom(3).hex()}")
        os.rename(self.folder, gone)
        shutil.rmtree(gone, ignore_errors=True)
        self._memory.clear()
        return n, size


def _writable_path(path: Path) -> bool:
    """Whether ``path`` could be created/written: the nearest existing ancestor decides."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def _check_entry(path: Path) -> str:
    """'' when the entry is complete and intact, else what is wrong."""
    meta = _read_json(path / _ENTRY_FILE)
    if meta is None:
        return f"{_ENTRY_FILE} is missing or unreadable"
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        return f"{_ENTRY_FILE} lists no files"
    for name, digest in files.items():
        item = path / name
        if not item.is_file():
            return f"{name} is missing"
        if sha256_file(item) != digest:
            return f"{name} does not match its sha256 (damaged)"
    return ""


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total
