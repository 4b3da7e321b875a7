"""Batch processing: a cohort of scans, resumable, in-process or on a Dask cluster.

>>> from medseg.batch import run_batch                                     # doctest: +SKIP
>>> result = run_batch("scans/", "results/", workers=2)                     # doctest: +SKIP
>>> result.counts["done"], [c.reason for c in result.failed]                # doctest: +SKIP

One module per step (``docs/batch.md`` for the user's view):

``preflight``    checks before anything is written (paths, lock, scheduler address)
``discover``     cases in a folder tree, with stable, filesystem-safe ids (``case_lists``: CSV/text lists)
``fingerprint``  input content hashes, reused while the files are unchanged
``manifest``     the SQLite manifest (written by the client only) and the output lock
``resume``       whether a case folder already holds this case's result
``work``         one case: ``run_case`` into ``OUTPUT_DIR/<case_id>/``, measured; the in-process loop
``run``          ``run_batch``: discover, decide, run, record, report
``dask_run``     LocalCluster/existing cluster, the model-loading worker plugin, worker deaths
``report``       the cohort CSV and plots

Importing this package imports neither torch nor Dask.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BatchEvent",
    "BatchResult",
    "CaseInput",
    "CaseOutcome",
    "Discovery",
    "Manifest",
    "discover_cases",
    "run_batch",
    "write_cohort_report",
]

_LAZY = {
    "run_batch": "medseg.batch.run", "BatchResult": "medseg.batch.run", "BatchEvent": "medseg.batch.run",
    "CaseOutcome": "medseg.batch.run", "discover_cases": "medseg.batch.discover", "CaseInput": "medseg.batch.discover",
    "Discovery": "medseg.batch.discover", "Manifest": "medseg.batch.manifest",
    "write_cohort_report": "medseg.batch.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medseg.batch' has no attribute {name!r}")
