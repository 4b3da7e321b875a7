"""Reports: CSV tables, versioned JSON documents and plots of lesion tables and evaluations.

>>> from medseg.report import write_lesion_csv, write_lesion_json, plot_lesion_montage   # doctest: +SKIP
>>> write_lesion_csv(table, "out/lesions.csv")                                           # doctest: +SKIP
>>> plot_lesion_montage(table, ct, "out/lesion_montage.png")                             # doctest: +SKIP
"""

from medseg.report.montage import plot_lesion_montage
from medseg.report.plots import plot_class_metrics, plot_lesion_sizes
from medseg.report.tables import (
    EVALUATION_SCHEMA,
    LESION_TABLE_SCHEMA,
    SCHEMA_VERSION,
    evaluation_document,
    lesion_document,
    lesion_records,
    write_evaluation,
    write_lesion_csv,
    write_lesion_json,
)

__all__ = [
    "write_lesion_csv",
    "write_lesion_json",
    "lesion_document",
    "lesion_records",
    "write_evaluation",
    "evaluation_document",
    "plot_class_metrics",
    "plot_lesion_sizes",
    "plot_lesion_montage",
    "LESION_TABLE_SCHEMA",
    "EVALUATION_SCHEMA",
    "SCHEMA_VERSION",
]
