"""Which cases a batch still has to run: the case folder, not the manifest, decides.

A case is **done** when ``OUTPUT_DIR/<case_id>/`` is a complete case (``case.json`` present, every
file it lists there with its size; a case found without a matching manifest row is also checked
byte for byte against its sha256s) and its ``exports/batch.json`` names the same input sha256,
the same model (name, version, weights sha256) and the same options hash. Everything else runs:
a new case, one whose input, model or options changed, one half-written when a run was killed
(no ``case.json`` in place: the atomic write left the old folder or nothing), a damaged one.

A case a person corrected since (``kind`` ``correction``, or a correction in its history) is
**kept** as it is, unless the batch is told to replace corrections.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.batch.discover import CaseInput
from medseg.batch.work import BATCH_RECORD
from medseg.errors import InputError

__all__ = ["Decision", "decide"]


@dataclass(frozen=True)
class Decision:
    """``run`` or ``skip`` a case, with why (and, for a skip, what the case folder records)."""

    action: str
    status: str
    reason: str
    record: dict[str, Any] | None = None


def _changes(record: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    changed = []
    if record.get("input_sha256") != expected["input_sha256"]:
        changed.append("input changed")
    model, want = record.get("model") or {}, expected["model_key"]
    if any(model.get(k) != want.get(k) for k in ("name", "version", "weights_sha256")):
        changed.append(f"model changed ({model.get('name')} {model.get('version')} -> "
                       f"{want.get('name')} {want.get('version')})")
    if record.get("options_hash") != expected["options_hash"]:
        changed.append("options changed")
    return changed


def decide(case: CaseInput, expected: Mapping[str, Any], row: Mapping[str, Any] | None, output_dir: str | Path, *,
           restart: bool = False, replace_corrections: bool = False) -> Decision:
    """Whether ``case`` must run.

    Parameters
    ----------
    case : CaseInput
    expected : mapping
        ``input_sha256``, ``model_key`` and ``options_hash`` this batch would give the case.
    row : mapping or None
        The case's manifest row from an earlier run.
    output_dir : path-like
    restart : bool
        Run every case again (still never over a person's corrections unless ``replace_corrections``).
    """
    from medseg.case import is_case, read_case, sha256_of

    folder = Path(output_dir) / case.case_id
    if case.problem or not expected.get("input_sha256"):
        return Decision("run", "pending", "input cannot be read")
    if not folder.exists():
        return Decision("run", "pending", "new")
    if not is_case(folder):
        return Decision("run", "pending", "no complete case folder")
    try:
        existing = read_case(folder)
    except InputError as exc:
        return Decision("run", "pending", f"case folder damaged ({exc.problem})")
    corrected = existing.kind == "correction" or any(h.get("kind") == "correction" for h in existing.history)
    if corrected and not replace_corrections:
        return Decision("skip", "kept", f"corrected by a person (version {existing.version}); kept as it is")
    if restart:
        return Decision("run", "pending", "restart")
    record_path = existing.file(BATCH_RECORD)
    if record_path is None:
        return Decision("run", "pending", "case folder not written by a batch")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Decision("run", "pending", "case folder damaged (unreadable exports/batch.json)")
    changed = _changes(record, expected)
    if changed:
        return Decision("run", "pending", ", ".join(changed))
    if row is not None and row.get("status") == "done" and row.get("case_json_sha256") == sha256_of(
            folder / "case.json"):
        return Decision("skip", "done", "done earlier", record)
    # A complete, matching case the manifest does not know as done: a run killed between writing
    # the case and recording it, or a manifest moved away. Trust it only byte for byte.
    try:
        existing.verify()
    except InputError as exc:
        return Decision("run", "pending", f"case folder damaged ({exc.problem})")
    return Decision("skip", "done", "complete case folder found (finished before the previous run stopped)", record)
