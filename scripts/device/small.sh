#!/usr/bin/env bash
# One whole small-scale experiment on the GPU machine, in one device call (BIOLAB_GIT_COMMIT is the
# output of `git rev-parse HEAD` here, pasted as a literal: the machine has no .git):
#   run(command="BIOLAB_GIT_COMMIT=<40-hex commit> bash scripts/device/small.sh fig3_augmentation 'datasets=[bioS_single,bioS_multi5_permute]'",
#       carry=["wheelhouse"])
# Unpacks the wheelhouse offline, runs scripts/run.py at scale=small into /tmp/root, and copies the
# report, results.csv, the probe heatmaps and provenance.json into $OUT (at most 8 small files).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
EXPERIMENT=${1:?experiment}; shift
: "${OUT:?OUT must name the folder whose files come back}"
PY=${PY:-python3}
start=$(date +%s)
# biolab from the source tree and Hydra unpacked beside it: nothing to build, nothing written into
# the machine's environment, no network (see gpu_session.sh)
SITE=$(mktemp -d /tmp/biolab_site.XXXXXX)
"$PY" -m pip install -q --no-index --no-deps --target "$SITE" wheelhouse/*.whl
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
ROOT=${ROOT:-/tmp/root}
"$PY" scripts/run.py experiment="$EXPERIMENT" scale=small root="$ROOT" progress=false train.wandb=disabled finetune.train.wandb=disabled "$@" 2>&1 | tail -n 200 > "$OUT/log.txt"
"$PY" scripts/collect.py "$ROOT" "$OUT" --command "scripts/run.py experiment=$EXPERIMENT scale=small $*" \
  --wall-s $(( $(date +%s) - start )) --max-figures 4 --flat --pattern "*positions.png"
