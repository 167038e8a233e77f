#!/usr/bin/env bash
# One prepared 15-minute GPU session (issue 17), one device call of at most 9 minutes:
#   run(command="BIOLAB_GIT_COMMIT=$(git rev-parse HEAD) bash scripts/device/gpu_session.sh",
#       carry=["wheelhouse"], timeout_s=560)
# Phases, each under its own wall-clock budget (`timeout`; one that runs out is logged and the script
# moves on): install, smoke (pytest -m gpu), fig3 (16 datasets, priority order, parallel jobs),
# probes + mixed, bench, then report + collect. Whatever happened, $OUT ends with at most 8 files:
# report.md, results.csv, provenance.json (with the phases), bench.json, log.txt, <= 3 heatmaps.
# CPU dry run (the same script, tiny settings, ~1 minute): BIOLAB_DEVICE_DRY=1 or --cpu.
# See scripts/device/README.md for the sizing behind the scale=small overrides below.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)

DRY=${BIOLAB_DEVICE_DRY:-0}
for arg in "$@"; do
  case "$arg" in
    --cpu) DRY=1 ;;
    *) echo "usage: gpu_session.sh [--cpu]" >&2; exit 2 ;;
  esac
done
[[ "$DRY" == 0 ]] || DRY=1
: "${OUT:?OUT must name the folder whose files come back}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PY:-python}
ROOT=${ROOT:-$(mktemp -d /tmp/biolab_root.XXXXXX)}
mkdir -p "$ROOT"
WORK=$(mktemp -d /tmp/biolab_session.XXXXXX)
LOG=$OUT/log.txt
PHASES=$WORK/phases.jsonl
: > "$LOG"
: > "$PHASES"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
T0=$(date +%s)

# Every run.py call shares these (stage hashes match, so later phases reuse fig3's stages).
COMMON=(progress=false report=false train.wandb=disabled finetune.train.wandb=disabled "root=$ROOT")
FIG3=(bioS_single bioS_multi5_permute bioS_multi5_permute_fullname bioS_single_fullname
  bioS_single_permute1 bioS_single_permute2 bioS_single_permute5 bioS_single_permute1_fullname
  bioS_single_permute2_fullname bioS_single_permute5_fullname bioS_multi2 bioS_multi2_fullname
  bioS_multi2_permute bioS_multi2_permute_fullname bioS_multi5 bioS_multi5_fullname)
if [[ "$DRY" == 1 ]]; then
  SESSION_S=${BIOLAB_SESSION_S:-240}
  SCALE=(scale=tiny data.n_people=24 train.steps=4 train.warmup_steps=1 train.log_every=2
    train.ckpt_every=0 model.n_layer=1 model.d_model=32 model.n_head=2 model.max_positions=128
    tokenizer.vocab_size=400 finetune.train.steps=2 finetune.train.log_every=1
    probe.max_people=24 probe.max_positions=4 probe.linear.epochs=1 probe.linear.min_steps=2
    'probe.controls=[]')
  FIG3=("${FIG3[@]:0:2}")
  JOBS=2
  BENCH_PRE=(--model tiny --ctx 64 --batch-size 4 --steps 3 --warmup 1 --repeats 1 --n-people 24 --vocab-size 400)
  BENCH_EVAL=(--model tiny --batch-size 8 --questions 8 --n-people 24 --vocab-size 400)
else
  SESSION_S=${BIOLAB_SESSION_S:-530}
  # scale=small as in conf/scale/small.yaml is ~65 GPU-minutes for fig3 (README.md here); these
  # overrides cut it to ~4 minutes: 1000 people, 400 steps of 32 x 512 tokens (6.6M tokens, ~65
  # exposures per person), finetune 400 steps. BIOLAB_SMALL_OVERRIDES replaces them (" " for none).
  read -r -a FIT <<< "${BIOLAB_SMALL_OVERRIDES:-data.n_people=1000 train.steps=400 train.batch_size=32 train.warmup_steps=40 train.ckpt_every=200 finetune.train.steps=400 probe.controls=[]}"
  SCALE=(scale=small "${FIT[@]}")
  JOBS=${BIOLAB_JOBS:-4}
  BENCH_PRE=(--model gpt2_rotary_124m --ctx 512 --batch-size 32 --steps 20 --warmup 5 --repeats 2 --n-people 1000 --vocab-size 4096)
  BENCH_EVAL=(--model gpt2_rotary_124m --batch-size 64 --questions 200 --n-people 1000 --vocab-size 4096)
fi

DEADLINE=$((T0 + SESSION_S))
# phase budgets and reserves below are written for the 530 s GPU session; shorter sessions scale them
# (the dry run's phases are mostly Python start-up: budgets get 70%, reserves scale with the session, within the same deadline)
RPCT=$((SESSION_S * 100 / 530))
PCT=$RPCT
[[ "$DRY" == 0 ]] || PCT=70

log() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }

# phase NAME BUDGET_S RESERVE_S CMD...: run CMD under min(BUDGET, time left - RESERVE), output to the
# log; record name, budget, seconds and exit status (124: out of time). Never fails the script.
phase() {
  local name=$1 budget=$(($2 * PCT / 100)) reserve=$(($3 * RPCT / 100))
  shift 3
  local left=$((DEADLINE - $(date +%s) - reserve))
  ((budget <= left)) || budget=$left
  local start rc=0 status=ok
  start=$(date +%s)
  if ((budget < 5)); then
    rc=125 status=skipped
    log "phase $name: skipped, no time left"
  else
    log "phase $name: start (budget ${budget}s)"
    timeout --kill-after=5 "$budget" "$@" >> "$LOG" 2>&1 || rc=$?
    if ((rc == 124 || rc == 137)); then status=timeout; elif ((rc != 0)); then status=failed; fi
  fi
  local secs=$(($(date +%s) - start))
  log "phase $name: $status (rc $rc, ${secs}s of ${budget}s)"
  printf '{"phase": "%s", "status": "%s", "rc": %d, "seconds": %d, "budget_s": %d}\n' \
    "$name" "$status" "$rc" "$secs" "$budget" >> "$PHASES"
  return 0
}

phase_ok() { grep -q "\"phase\": \"$1\", \"status\": \"ok\"" "$PHASES"; }

# A phase runs under `timeout`, which signals its whole process group (run.py's workers too), so the
# composite phases are bash -c strings of quoted commands.
q() { printf '%q ' "$@"; }
run_py() { q "$PY" scripts/run.py "$@" "${SCALE[@]}" "${COMMON[@]}"; }
A=${FIG3[0]} B=${FIG3[1]}
# (d): three run.py commands at once; the stages they share with fig3 are reused, not rebuilt
PROBES_MIXED="$(run_py experiment=fig5_pprobe "datasets=[$A,$B]" 'probes=[p_fast]') > $WORK/p_fast.log 2>&1 &
$(run_py experiment=fig7_qprobe "datasets=[$A,$B]" 'probes=[q_fast]') > $WORK/q_fast.log 2>&1 &
$(run_py experiment=fig1_mixed "datasets=[$A]") > $WORK/mixed.log 2>&1 &
rc=0; for pid in \$(jobs -p); do wait \$pid || rc=\$?; done
for f in p_fast q_fast mixed; do echo \"--- \$f\"; tail -n 40 $WORK/\$f.log; done; exit \$rc"
BENCH="rc=0; $(q "$PY" scripts/bench.py pretrain "${BENCH_PRE[@]}" --out "$WORK/bench_pretrain.json") || rc=\$?
$(q "$PY" scripts/bench.py eval "${BENCH_EVAL[@]}" --out "$WORK/bench_eval.json") || rc=\$?; exit \$rc"

finish() {  # always: report, collect, bench.json, phases into provenance.json, check_out
  local rc=$?
  trap - EXIT TERM INT
  set +e
  log "finish (script status $rc)"
  phase report 60 0 "$PY" scripts/report.py "root=$ROOT"
  if [[ -f "$ROOT/report/report.md" ]]; then
    "$PY" scripts/collect.py "$ROOT" "$WORK/collect" --flat --max-figures 3 --pattern "*positions.png" \
      --command "bash scripts/device/gpu_session.sh (dry=$DRY) ${SCALE[*]} jobs=$JOBS" \
      --wall-s $(($(date +%s) - T0)) >> "$LOG" 2>&1
  fi
  mkdir -p "$WORK/collect"
  for f in "$WORK"/collect/*; do
    [[ -f "$f" ]] || continue
    local name
    name=$(basename "$f" | sed 's/[^A-Za-z0-9._-]/_/g; s/^[^A-Za-z0-9]/x/')
    cp "$f" "$OUT/$name"
  done
  "$PY" - "$OUT" "$WORK" "$PHASES" "$DRY" "$JOBS" "$(($(date +%s) - T0))" "$rc" "${SCALE[*]}" >> "$LOG" 2>&1 <<'PYEOF'
import json, os, sys
from pathlib import Path

out, work, phases, dry, jobs, wall, rc, scale = sys.argv[1:9]
out, work = Path(out), Path(work)
bench = {}
for what in ("pretrain", "eval"):
    f = work / f"bench_{what}.json"
    if f.is_file():
        bench[what] = json.loads(f.read_text())
if bench:
    (out / "bench.json").write_text(json.dumps(bench, indent=2) + "\n")
prov_file = out / "provenance.json"
prov = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
if not prov:
    try:
        from biolab.status import device_name, versions
        prov = {"device": device_name(), "versions": versions()}
    except Exception as e:  # the install failed: say so, still write the file
        prov = {"device": None, "versions": None, "error": f"biolab not importable: {e}"}
rows = [json.loads(line) for line in Path(phases).read_text().splitlines() if line.strip()]
prov.update({
    "session": "scripts/device/gpu_session.sh", "dry_run": dry == "1", "jobs": int(jobs),
    "scale_overrides": scale.split(), "session_wall_s": int(wall), "script_status": int(rc),
    "git_commit": prov.get("git_commit") or os.environ.get("BIOLAB_GIT_COMMIT"),
    "phases": rows,
})
prov.setdefault("command", "bash scripts/device/gpu_session.sh")
prov_file.write_text(json.dumps(prov, indent=2) + "\n")
print("phases:", ", ".join(f"{r['phase']}={r['status']}({r['seconds']}s)" for r in rows))
PYEOF
  # keep the log under the 16 MiB limit: its head and its last 8 MiB
  if (($(stat -c %s "$LOG") > 12000000)); then
    { head -c 2000000 "$LOG"; echo; echo "[... log cut ...]"; tail -c 8000000 "$LOG"; } > "$WORK/log.cut"
    mv "$WORK/log.cut" "$LOG"
  fi
  log "outputs: $(cd "$OUT" && ls | tr '\n' ' ')"
  "$PY" "$REPO/scripts/device/check_out.py" "$OUT" | tee -a "$LOG"
  log "done in $(($(date +%s) - T0))s (root $ROOT)"
  exit "$rc"
}
trap finish EXIT
trap 'exit 143' TERM INT

log "gpu_session: dry=$DRY jobs=$JOBS root=$ROOT out=$OUT commit=${BIOLAB_GIT_COMMIT:-unknown}"
log "scale: ${SCALE[*]}"
log "fig3 datasets: ${FIG3[*]}"

# (a) install (GPU only) and versions
if [[ "$DRY" == 0 ]]; then
  phase install 90 420 bash -c "$PY -m pip install -q --no-index --no-deps wheelhouse/*.whl && \
    $PY -m pip install -q --no-deps --no-build-isolation -e . && nvidia-smi"
fi
phase versions 30 400 "$PY" -c "import json; from biolab.status import device_name, versions; \
print(json.dumps({'device': device_name(), **versions()}))"

# (b) smoke: the GPU path in seconds; without it nothing else is worth the time
phase smoke 90 330 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
if ! phase_ok smoke; then
  log "STOP: the GPU smoke test (pytest -m gpu tests/test_gpu.py) failed or ran out of time; see above"
  exit 3
fi

# (c) Figure 3: 16 datasets in priority order, JOBS runs at once on the one GPU
FIG3_LIST=$(IFS=,; echo "${FIG3[*]}")
phase fig3 330 100 bash -c "$(run_py experiment=fig3_augmentation "datasets=[$FIG3_LIST]" "jobs=$JOBS")"

# (d) probes p_fast / q_fast on the first two datasets, mixed training on bioS_single
phase probes_mixed 75 45 bash -c "$PROBES_MIXED"

# (e) speed: our loop vs the HF Trainer, batched vs one-at-a-time generation
phase bench 60 15 bash -c "$BENCH"
