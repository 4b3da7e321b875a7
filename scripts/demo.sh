#!/usr/bin/env bash
# The README's first command: medseg's main job on the shipped synthetic sample.
#   scan the DICOM series -> segment organs (+ lesion class) with the shipped default model ->
#   separate and measure lesion instances -> score organs and lesions against the sample's truth.
# Usage: scripts/demo.sh VENV_BIN RESULTS_DIR
set -euo pipefail
bin=${1:-.venv/bin}
out=${2:-results/demo}
sample=sample_data/phantom
organs="liver=1,spleen=2,kidney_right=3,kidney_left=4,stomach=5,pancreas=6,aorta=7,lung_right=8,lung_left=9,bone=10"

step() { printf '\n== %s\n' "$*"; }

step "1/4 what is in the sample"
"$bin/medseg" info "$sample/ct_dicom"

step "2/4 segment organs with the shipped default model"
"$bin/medseg" segment "$sample/ct_dicom" -o "$out"

step "3/4 separate and measure lesions (class 11 of the model), split touching ones"
"$bin/medseg" lesions "$out/labels.nii.gz" --image "$sample/ct_dicom" --lesion-label 11 \
  --organs "$out/labels.nii.gz" --min-volume 100 --split 1 -o "$out/lesions"

step "4/4 score against the sample's ground truth"
"$bin/medseg" evaluate "$out/labels.nii.gz" "$sample/organs.nii.gz" --labels "$organs" \
  -o "$out/evaluation/organs"
"$bin/medseg" evaluate "$out/lesions/lesions.nii.gz" "$sample/lesions.nii.gz" --instances \
  -o "$out/evaluation/lesions"

out_abs=$(cd "$out" && pwd)
cat <<MSG

Results are in $out_abs:
  labels.nii.gz, labels.json          organ labels on the input grid (value -> name)
  lesions/lesions.nii.gz, lesions.csv  lesion instances and the per-lesion table (mL, mm, HU, organ)
  lesions/*.png                        lesion size plot and a montage of every lesion
  evaluation/organs/report.json        organ Dice/HD95/NSD against the phantom's truth (+ PNG)
  evaluation/lesions/report.json       lesion detection F1 and panoptic quality
MSG
