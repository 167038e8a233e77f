#!/usr/bin/env bash
# One whole small-scale experiment on the GPU machine, in one device call:
#   run(command="BIOLAB_GIT_COMMIT=<sha> bash scripts/device/small.sh fig3_augmentation 'datasets=[bioS_single,bioS_multi5_permute]'",
#       carry=["wheelhouse"])
# Installs the wheelhouse offline, runs scripts/run.py at scale=small into /tmp/root, and copies the
# report, results.csv, the probe heatmaps and provenance.json into $OUT (at most 8 small files).
set -euo pipefail
EXPERIMENT=${1:?experiment}; shift
start=$(date +%s)
python -m pip install -q --no-index --no-deps wheelhouse/*.whl
python -m pip install -q --no-deps --no-build-isolation -e .
ROOT=${ROOT:-/tmp/root}
python scripts/run.py experiment="$EXPERIMENT" scale=small root="$ROOT" progress=false train.wandb=disabled finetune.train.wandb=disabled "$@" 2>&1 | tail -n 200 > "$OUT/log.txt"
python scripts/collect.py "$ROOT" "$OUT" --command "scripts/run.py experiment=$EXPERIMENT scale=small $*" \
  --wall-s $(( $(date +%s) - start )) --max-figures 4 --flat --pattern "*positions.png"
