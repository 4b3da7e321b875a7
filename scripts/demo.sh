#!/usr/bin/env bash
# The README's first command: run medseg's main job on the shipped synthetic sample.
# Usage: scripts/demo.sh VENV_BIN RESULTS_DIR
set -euo pipefail
bin=${1:-.venv/bin}
out=${2:-results/demo}
sample=sample_data/phantom
mkdir -p "$out"
"$bin/medseg" info "$sample/ct_dicom"
"$bin/medseg" convert "$sample/ct_dicom" "$out/ct.nii.gz"
echo
echo "Results are in $(cd "$out" && pwd):"
ls -1 "$out"
