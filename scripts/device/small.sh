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
python - "$ROOT" "$OUT" "$EXPERIMENT" "$start" "$*" <<'PY'
import json, os, shutil, sys, time
from pathlib import Path
from biolab.runinfo import device_name, git_commit, versions
root, out, experiment, start, args = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
report = root / "report"
for name in ("report.md", "results.csv"):
    if (report / name).is_file():
        shutil.copy(report / name, out / name)
for png in sorted(report.rglob("*.png"))[:4]:
    shutil.copy(png, out / png.name)
stages = {}
for status in root.glob("*/*/status.json"):
    s = json.loads(status.read_text())
    stages[f"{status.parent.parent.name}/{status.parent.name}"] = s.get("seconds")
json.dump({"command": f"scripts/run.py experiment={experiment} scale=small {args}", "git_commit": git_commit() or os.environ.get("BIOLAB_GIT_COMMIT"),
           "device": device_name(), "wall_s": round(time.time() - start, 1), "stage_seconds": stages,
           "versions": versions()}, open(out / "provenance.json", "w"), indent=2)
PY
