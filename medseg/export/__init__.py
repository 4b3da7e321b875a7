"""Results in the formats other tools open: DICOM SEG, DICOM RTSTRUCT, viewer colour tables.

Each format has its own module (``dicom_seg``, ``rtstruct``, ``colour_tables``, ``codes``); this
package imports none of them eagerly (highdicom and pydicom load on first use).
"""
