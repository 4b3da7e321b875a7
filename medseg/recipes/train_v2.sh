#!/usr/bin/env bash
# Recipe v2 of the default model on any machine (a GPU one where lent): install what is missing,
# resume from the last checkpoint, train, and leave the model, curves and metrics in OUT.
#
#   medseg/recipes/train_v2.sh WORK OUT [EPOCHS]        e.g. runs/v2 "$OUT" 60
#
# WORK is the run folder (checkpoints; a run interrupted anywhere, on this machine or another,
# resumes when it is carried along). Environment: PYTHON (default python3), VENV (an existing venv
# to use instead of creating .venv-train), DEVICE (auto|cpu|cuda), THREADS, WORKERS, STEPS
# (steps per epoch; a resume needs the same EPOCHS and STEPS), SHARED_DATA.
# Tested on CPU with a tiny budget: VENV=.venv DEVICE=cpu STEPS=2 medseg/recipes/train_v2.sh /tmp/t /tmp/o 1
set -euo pipefail
work=${1:?run folder}
out=${2:?output folder}
epochs=${3:-60}
steps=${STEPS:-50}
venv=${VENV:-.venv-train}
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
  # On Linux the PyPI torch wheel brings CUDA; pin it as the project does (ENVIRONMENT.md).
  "$venv/bin/pip" install -q torch==2.13.0
  "$venv/bin/pip" install -q -e . "monai==1.6.1" einops pytorch-ignite
fi
if [ "${DEVICE:-auto}" != cpu ]; then
  "$venv/bin/python" -c "import torch; print('cuda:', torch.cuda.is_available(), torch.__version__)"
fi
mkdir -p "$out"
data=()
if [ -n "${SHARED_DATA:-}" ]; then data=(--shared-data "$SHARED_DATA"); fi
nice -n "${NICE:-0}" "$venv/bin/python" -m medseg.recipes.default_v2 --work "$work" --epochs "$epochs" \
  --steps-per-epoch "$steps" --device "${DEVICE:-auto}" --threads "${THREADS:-$(nproc)}" \
  --num-workers "${WORKERS:-4}" "${data[@]}" 2>&1 | tee -a "$out/train.log"
"$venv/bin/python" -m medseg.recipes.default_v2 --work "$work" --snapshot "$out/model"
cp "$work/training.json" "$out/" 2>/dev/null || true
echo "model, curves and metrics in $out/model"
