#!/usr/bin/env bash
# Download what the GPU machine lacks (it has torch, transformers, accelerate, peft, tokenizers,
# scikit-learn, matplotlib; no network) into wheelhouse/ (git-ignored; name it in the device tool's
# `carry`): Hydra, and pytest for the session's GPU smoke test (the machine lists no pytest). Device
# runs use train.wandb=disabled, faker is unused at run time, and biolab itself goes on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
mkdir -p wheelhouse
"$PY" -m pip download --dest wheelhouse --no-deps hydra-core==1.3.8 omegaconf==2.3.1 \
  pytest==8.4.2 pluggy==1.6.0 iniconfig==2.1.0 packaging==25.0
# antlr4 is published as a source archive only: build its (pure-Python) wheel here
"$PY" -m pip wheel --wheel-dir wheelhouse --no-deps antlr4-python3-runtime==4.9.3
du -sh wheelhouse
