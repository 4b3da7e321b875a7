#!/usr/bin/env bash
# The README's first command: medseg's main job on the shipped synthetic sample.
#   one `medseg run` (read the DICOM series once -> organs + lesion class with the shipped default
#   model -> lesion instances and their table -> report, written as one case folder), then the
#   scores against the sample's exact truth (classes matched by name, no values hard-coded).
# Usage: scripts/demo.sh VENV_BIN RESULTS_DIR
set -euo pipefail
bin=${1:-.venv/bin}
out=${2:-results/demo}
sample=sample_data/phantom

step() { printf '\n== %s\n' "$*"; }

step "1/3 what is in the sample"
"$bin/medseg" info "$sample/ct_dicom"

step "2/3 segment, separate and measure lesions (touching ones split), write the case"
"$bin/medseg" run "$sample/ct_dicom" -o "$out/case" --split 1

step "3/3 score against the sample's ground truth"
"$bin/medseg" evaluate "$out/case/labels.nii.gz" "$sample/organs.nii.gz" --reference-classes \
  -o "$out/evaluation/organs"
"$bin/medseg" evaluate "$out/case/lesions/lesions.nii.gz" "$sample/lesions.nii.gz" --instances \
  -o "$out/evaluation/lesions"

out_abs=$(cd "$out" && pwd)
cat <<MSG

Results are in $out_abs:
  case/labels.nii.gz, labels.json          organ labels on the input grid and their names
  case/lesions/lesions.nii.gz, lesions.csv lesion instances and the per-lesion table (mL, mm, HU, organ)
  case/lesions/*.png                       lesion size plot and a montage of every lesion
  case/provenance.json, case.json          input sha256, model, settings, stage timings; the case manifest
  evaluation/organs/report.json            organ Dice/HD95/NSD against the phantom's truth (+ PNG)
  evaluation/lesions/report.json           lesion detection F1 and panoptic quality
MSG
