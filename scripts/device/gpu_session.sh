#!/usr/bin/env bash
# One prepared 15-minute GPU session (issues 17 and 29), one device call of at most ~9 minutes. Run
# `git rev-parse HEAD` here first and paste its 40 hex digits as a literal: the machine has no .git,
# so a `$(git rev-parse HEAD)` in the command would be evaluated there and come out empty:
#   run(command="BIOLAB_GIT_COMMIT=<40-hex commit> bash scripts/device/gpu_session.sh",
#       carry=["wheelhouse"], timeout_s=560)
# Phases, each under its own wall-clock budget (`timeout`; one that fails or runs out is logged and
# the script moves on): install, versions, smoke (pytest -m gpu; once more without torch.compile if
# it fails), fig3 (16 datasets, priority order, parallel jobs), report_fig3, probes + mixed, bench,
# report. $OUT is brought up to date after every phase (provenance.json's `phases`, bench.json) and
# holds a whole report from report_fig3 on, so a session killed at the tool's hard limit still
# brings back Figure 3. $OUT never holds more than 8 files: report.md, results.csv,
# provenance.json, bench.json, log.txt, <= 3 heatmaps.
# CPU dry run (the same script, tiny settings, ~2 minutes): BIOLAB_DEVICE_DRY=1 or --cpu.
# See scripts/device/README.md for the budgets and the sizing behind the scale=small overrides.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)

DRY=${BIOLAB_DEVICE_DRY:-0}
for arg in "$@"; do
  case "$arg" in
    --cpu) DRY=1 ;;
    *) echo "usage: [BIOLAB_GIT_COMMIT=<40-hex commit>] gpu_session.sh [--cpu]" >&2; exit 2 ;;
  esac
done
[[ "$DRY" == 0 ]] || DRY=1
: "${OUT:?OUT must name the folder whose files come back}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PY:-python3}
ROOT=${ROOT:-$(mktemp -d /tmp/biolab_root.XXXXXX)}
mkdir -p "$ROOT"
WORK=$(mktemp -d /tmp/biolab_session.XXXXXX)
LOG=$OUT/log.txt
PHASES=$WORK/phases.jsonl
: > "$LOG"
: > "$PHASES"
: > "$WORK/tailed"     # stage logs already copied into $LOG
: > "$WORK/collected"  # the files of the last report in $OUT
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
# biolab from the source tree, not `pip install -e .`: an editable install needs setuptools (build
# isolation is impossible offline) and writes into the machine's environment; PYTHONPATH needs
# nothing. Hydra's wheels are unpacked into $WORK/site by the install phase, for the same reasons.
export PYTHONPATH="$REPO:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)

# The commit comes as a literal (see the top). Anything else is recorded as null, never guessed.
COMMIT=${BIOLAB_GIT_COMMIT:-}
COMMIT_WARNING=
if [[ ! "$COMMIT" =~ ^[0-9a-fA-F]{7,40}$ ]]; then
  COMMIT_WARNING="WARNING: BIOLAB_GIT_COMMIT is missing"
  [[ -z "$COMMIT" ]] || COMMIT_WARNING="WARNING: BIOLAB_GIT_COMMIT='$COMMIT' is not 7-40 hex digits"
  COMMIT_WARNING+="; provenance.json records git_commit null. Pass the commit as a literal: \
run(command=\"BIOLAB_GIT_COMMIT=<40-hex commit> bash scripts/device/gpu_session.sh\", ...)"
  COMMIT=
  unset BIOLAB_GIT_COMMIT  # collect.py would copy it into provenance.json
fi

# Every run.py call shares these (stage hashes match, so later phases reuse fig3's stages).
COMMON=(progress=false report=false train.wandb=disabled finetune.train.wandb=disabled "root=$ROOT")
FIG3=(bioS_single bioS_multi5_permute bioS_multi5_permute_fullname bioS_single_fullname
  bioS_single_permute1 bioS_single_permute2 bioS_single_permute5 bioS_single_permute1_fullname
  bioS_single_permute2_fullname bioS_single_permute5_fullname bioS_multi2 bioS_multi2_fullname
  bioS_multi2_permute bioS_multi2_permute_fullname bioS_multi5 bioS_multi5_fullname)
if [[ "$DRY" == 1 ]]; then
  SESSION_S=${BIOLAB_SESSION_S:-300}
  SCALE=(scale=tiny data.n_people=24 train.steps=4 train.warmup_steps=1 train.log_every=2
    train.ckpt_every=0 model.n_layer=1 model.d_model=32 model.n_head=2 model.max_positions=128
    tokenizer.vocab_size=400 finetune.train.steps=2 finetune.train.log_every=1
    probe.max_people=24 probe.max_positions=4 probe.linear.epochs=1 probe.linear.min_steps=2
    'probe.controls=[]')
  FIG3=("${FIG3[@]:0:2}")
  JOBS=2
  BENCH_PRE=(--model tiny --ctx 64 --batch-size 4 --steps 3 --warmup 1 --repeats 1 --n-people 24 --vocab-size 400)
  BENCH_EVAL=(--model tiny --batch-size 8 --questions 8 --single 2 --n-people 24 --vocab-size 400)
else
  SESSION_S=${BIOLAB_SESSION_S:-530}
  # scale=small as in conf/scale/small.yaml is ~65 GPU-minutes for fig3 (README.md here); these
  # overrides cut it to ~4 minutes: 1000 people, 400 steps of 32 x 512 tokens (6.6M tokens, ~65
  # exposures per person), finetune 400 steps. BIOLAB_SMALL_OVERRIDES replaces them (" " for none).
  read -r -a FIT <<< "${BIOLAB_SMALL_OVERRIDES:-data.n_people=1000 train.steps=400 train.batch_size=32 train.warmup_steps=40 train.ckpt_every=200 finetune.train.steps=400 probe.controls=[]}"
  SCALE=(scale=small "${FIT[@]}")
  JOBS=${BIOLAB_JOBS:-4}
  BENCH_PRE=(--model gpt2_rotary_124m --ctx 512 --batch-size 32 --steps 20 --warmup 5 --repeats 2 --n-people 1000 --vocab-size 4096)
  # every QA of 1000 people (6,000) at the evaluation's own GPU batch (eval.gpu_batch_size), 32 one at a time
  BENCH_EVAL=(--model gpt2_rotary_124m --questions 6000 --single 32 --n-people 1000 --vocab-size 4096)
fi

DEADLINE=$((T0 + SESSION_S))
# Phase budgets and reserves below are written for the 530 s GPU session; a shorter one scales them.
# The dry run keeps the budgets whole (its phases are Python start-up on 2 busy cores, about as long
# as on the GPU) and scales only the reserves, within its own 300 s deadline.
RPCT=$((SESSION_S * 100 / 530))
PCT=$RPCT
[[ "$DRY" == 0 ]] || PCT=100
COMPILE=true

log() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
q() { printf '%q ' "$@"; }
outputs() { find "$OUT" -mindepth 1 -printf '%P\n' | sort | tr '\n' ' '; }

# provenance [SCRIPT_STATUS]: $OUT/provenance.json (the last report's, plus this session's phases so
# far) and $OUT/bench.json from whatever the bench wrote, even a half-finished one. Only json is
# imported, so it costs a fraction of a second after every phase.
provenance() {
  "$PY" - "$OUT" "$WORK" "$DRY" "$JOBS" "$(($(date +%s) - T0))" "${1:-}" "$COMMIT" "$COMPILE" \
    "${SCALE[*]}" >> "$LOG" 2>&1 <<'PYEOF' || log "provenance.json not updated (see above)"
import json, re, sys
from pathlib import Path

out, work, dry, jobs, wall, status, commit, compile_, scale = sys.argv[1:10]
out, work = Path(out), Path(work)


def read(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"error": f"{path.name}: {type(e).__name__}: {e}"} if path.exists() else None


bench = {what: read(work / f"bench_{what}.json") for what in ("pretrain", "eval")}
bench = {k: v for k, v in bench.items() if v is not None}
if bench:
    (out / "bench.json").write_text(json.dumps(bench, indent=2) + "\n")
prov = read(work / "collect_provenance.json") or {}  # collect.py's, from the last whole report
found = read(work / "versions.json") or {}
prov.setdefault("device", found.get("device"))
if not prov.get("versions"):
    prov["versions"] = {k: v for k, v in found.items() if k != "device"} or None
# git's answer where there is a .git (the dry run), else the literal, else null
known = prov.get("git_commit")
if not (isinstance(known, str) and re.fullmatch(r"[0-9a-fA-F]{7,40}(\+dirty)?", known)):
    prov["git_commit"] = commit or None
prov.setdefault("command", "bash scripts/device/gpu_session.sh")
prov.update({
    "session": "scripts/device/gpu_session.sh", "dry_run": dry == "1", "jobs": int(jobs),
    "scale_overrides": scale.split(), "compile": compile_ == "true", "session_wall_s": int(wall),
    "script_status": int(status) if status else None,  # null: the session was still running
    "phases": [json.loads(line) for line in (work / "phases.jsonl").read_text().splitlines() if line.strip()],
})
tmp = out / ".provenance.json.tmp"
tmp.write_text(json.dumps(prov, indent=2) + "\n")
tmp.replace(out / "provenance.json")
PYEOF
}

# stage_tails: a failed or unfinished stage's traceback is in ROOT/<kind>/<hash>/log.txt, which never
# comes back; copy the last 40 lines of each into $LOG, once per version of that log.
stage_tails() {
  local status dir state seen
  for status in "$ROOT"/*/*/status.json; do
    [[ -f "$status" ]] || continue
    dir=${status%/status.json}
    [[ -f "$dir/log.txt" ]] || continue
    state=$(sed -n 's/^ *"status": *"\([a-z]*\)".*/\1/p' "$status" | head -n 1)
    [[ "$state" != "done" ]] || continue
    seen="$dir $(stat -c %s:%Y "$dir/log.txt")"
    ! grep -qxF "$seen" "$WORK/tailed" || continue
    echo "$seen" >> "$WORK/tailed"
    {
      echo "----- last 40 lines of ${dir#"$ROOT"/}/log.txt (status: ${state:-unknown}) -----"
      tail -n 40 "$dir/log.txt"
      echo "----- end of ${dir#"$ROOT"/}/log.txt -----"
    } >> "$LOG"
  done
}

# keep the log under the 16 MiB limit: its head and its last 8 MiB
trim_log() {
  if (($(stat -c %s "$LOG") > 12000000)); then
    { head -c 2000000 "$LOG"; echo; echo "[... log cut ...]"; tail -c 8000000 "$LOG"; } > "$WORK/log.cut"
    cat "$WORK/log.cut" > "$LOG"
  fi
}

# phase NAME BUDGET_S RESERVE_S CMD...: run CMD under min(BUDGET, time left - RESERVE), output to the
# log; record name, budget, seconds and exit status (124: out of time) and bring $OUT up to date.
# Never fails the script. CMD runs in the background so that a TERM reaches the trap at once,
# not after the phase; `timeout` signals CMD's whole process group (run.py's workers too), so the
# composite phases are bash -c strings of quoted commands.
PHASE_PID='' PHASE_NAME='' PHASE_START=0 PHASE_BUDGET=0
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
    timeout --kill-after=5 "$budget" "$@" >> "$LOG" 2>&1 &
    PHASE_PID=$! PHASE_NAME=$name PHASE_START=$start PHASE_BUDGET=$budget
    wait "$PHASE_PID" || rc=$?
    PHASE_PID=
    if ((rc == 124 || rc == 137)); then status=timeout; elif ((rc != 0)); then status=failed; fi
  fi
  local secs=$(($(date +%s) - start))
  log "phase $name: $status (rc $rc, ${secs}s of ${budget}s)"
  printf '{"phase": "%s", "status": "%s", "rc": %d, "seconds": %d, "budget_s": %d}\n' \
    "$name" "$status" "$rc" "$secs" "$budget" >> "$PHASES"
  [[ "$status" == ok || "$status" == skipped ]] || stage_tails
  trim_log
  provenance
  return 0
}

phase_ok() { grep -q "\"phase\": \"$1\", \"status\": \"ok\"" "$PHASES"; }

# report TAG BUDGET_S RESERVE_S: the report of what ROOT holds now, in place of the last one in $OUT.
# Only a report that finished whole replaces the last: a timeout leaves the previous one there.
REPORTED=
report() {
  local tag=$1 dest=$WORK/collect_$1
  REPORTED=$tag
  rm -rf "$dest"
  phase "$tag" "$2" "$3" bash -c "$(q "$PY" scripts/report.py "root=$ROOT") > $(q "$WORK/report.md.log") && \
$(q "$PY" scripts/collect.py "$ROOT" "$dest" --flat --max-figures 3 --pattern "*positions.png" \
    --command "bash scripts/device/gpu_session.sh (dry=$DRY) ${SCALE[*]} jobs=$JOBS" \
    --wall-s $(($(date +%s) - T0)))"
  phase_ok "$tag" || { log "$tag: no whole report; \$OUT keeps the last one"; return 0; }
  local f name
  while read -r name; do rm -f "$OUT/$name"; done < "$WORK/collected"  # its figures may differ
  : > "$WORK/collected"
  for f in "$dest"/*; do
    [[ -f "$f" ]] || continue
    name=$(basename "$f" | sed 's/[^A-Za-z0-9._-]/_/g; s/^[^A-Za-z0-9]/x/')
    if [[ "$name" == provenance.json ]]; then
      cp "$f" "$WORK/collect_provenance.json"  # provenance() merges the phases into it
    else
      cp "$f" "$OUT/$name"
      echo "$name" >> "$WORK/collected"
    fi
  done
  provenance
  log "$tag: \$OUT now holds $(outputs)"
}

finish() {  # always: a last report unless there was one, provenance.json, check_out
  local rc=$?
  trap - EXIT TERM INT
  set +e
  if [[ -n "$PHASE_PID" ]]; then  # a TERM in the middle of a phase: end it (timeout passes it on)
    kill -TERM "$PHASE_PID" 2>/dev/null
    for _ in 1 2 3 4 5 6; do kill -0 "$PHASE_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL "$PHASE_PID" 2>/dev/null
    PHASE_PID=
    log "phase $PHASE_NAME: interrupted ($(($(date +%s) - PHASE_START))s of ${PHASE_BUDGET}s)"
    printf '{"phase": "%s", "status": "interrupted", "rc": %d, "seconds": %d, "budget_s": %d}\n' \
      "$PHASE_NAME" "$rc" "$(($(date +%s) - PHASE_START))" "$PHASE_BUDGET" >> "$PHASES"
    stage_tails
  fi
  log "finish (script status $rc)"
  if [[ "$REPORTED" != report && -d "$ROOT/runs" ]]; then
    report report 40 0
  fi
  provenance "$rc"
  log "outputs: $(outputs)"
  "$PY" "$REPO/scripts/device/check_out.py" "$OUT" | tee -a "$LOG"
  log "done in $(($(date +%s) - T0))s (root $ROOT)"
  trim_log
  exit "$rc"
}
trap finish EXIT
trap 'exit 143' TERM INT

log "gpu_session: dry=$DRY jobs=$JOBS root=$ROOT out=$OUT commit=${COMMIT:-null}"
[[ -z "$COMMIT_WARNING" ]] || log "$COMMIT_WARNING"
log "scale: ${SCALE[*]}"
log "fig3 datasets: ${FIG3[*]}"

# (a) install (GPU only; every pip call offline) and versions
if [[ "$DRY" == 0 ]]; then
  phase install 60 440 bash -c "$(q "$PY") -m pip install -q --no-index --no-deps --target $(q "$WORK/site") \
wheelhouse/*.whl && nvidia-smi"
fi
phase versions 30 420 bash -c "$(q "$PY") -c \"import json; from biolab.status import device_name, versions; \
print(json.dumps({'device': device_name(), **versions()}))\" > $(q "$WORK/versions.json") && cat $(q "$WORK/versions.json")"

# (b) smoke: the GPU path in seconds; without it nothing else is worth the time. test_gpu.py's one
# fixture compiles the model every test uses, so `-k "not compile"` would still compile: the retry
# turns torch.compile off with torch's own switch instead (TORCH_COMPILE_DISABLE=1 runs it eagerly).
SMOKE=("$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py)
HAVE_PYTEST=1
if ! "$PY" -c "import pytest" > /dev/null 2>&1; then
  # a machine without pytest says nothing about the GPU path: no reason to give up the session
  HAVE_PYTEST=0
  log "WARNING: pytest is not importable with $PY (add its wheels to wheelhouse/): no smoke test; going on"
elif [[ "${BIOLAB_DEVICE_FAKE_COMPILE_FAILURE:-0}" == 1 ]]; then
  # the CPU smoke skips, so the dry run walks the fallback only when told to
  phase smoke 90 340 bash -c 'echo "smoke: compile failure faked (BIOLAB_DEVICE_FAKE_COMPILE_FAILURE=1)"; exit 1'
else
  phase smoke 90 340 "${SMOKE[@]}"
fi
if [[ "$HAVE_PYTEST" == 1 ]] && ! phase_ok smoke; then
  log "smoke failed with torch.compile: once more without it (TORCH_COMPILE_DISABLE=1)"
  phase smoke_nocompile 60 300 env TORCH_COMPILE_DISABLE=1 "${SMOKE[@]}"
  if ! phase_ok smoke_nocompile; then
    log "STOP: the GPU smoke test (pytest -m gpu tests/test_gpu.py) failed or ran out of time, with and without torch.compile; see above"
    exit 3
  fi
  # the rest runs eagerly: a changed stage hash, but the same for every later phase
  COMPILE=false
  SCALE+=(train.compile=false)
  export TORCH_COMPILE_DISABLE=1
  log "compile off from here: train.compile=false, TORCH_COMPILE_DISABLE=1"
fi

# JOBS run.py workers would each start one inductor compile thread per core
CORES=$(nproc 2>/dev/null || echo 1)
TORCHINDUCTOR_COMPILE_THREADS=$((CORES / JOBS))
((TORCHINDUCTOR_COMPILE_THREADS >= 1)) || TORCHINDUCTOR_COMPILE_THREADS=1
export TORCHINDUCTOR_COMPILE_THREADS
log "TORCHINDUCTOR_COMPILE_THREADS=$TORCHINDUCTOR_COMPILE_THREADS ($CORES cores, $JOBS jobs)"

run_py() { q "$PY" scripts/run.py "$@" "${SCALE[@]}" "${COMMON[@]}"; }

# (c) Figure 3: 16 datasets in priority order, JOBS runs at once on the one GPU; then at once a
# whole report, so that a session cut off later still brings Figure 3 back
FIG3_LIST=$(IFS=,; echo "${FIG3[*]}")
phase fig3 330 150 bash -c "$(run_py experiment=fig3_augmentation "datasets=[$FIG3_LIST]" "jobs=$JOBS")"
report report_fig3 40 110

# (d) probes p_fast / q_fast on the first two datasets, mixed training on bioS_single: three run.py
# commands at once; the stages they share with fig3 are reused, not rebuilt
A=${FIG3[0]} B=${FIG3[1]}
phase probes_mixed 75 80 bash -c "$(run_py experiment=fig5_pprobe "datasets=[$A,$B]" 'probes=[p_fast]') > $(q "$WORK/p_fast.log") 2>&1 &
$(run_py experiment=fig7_qprobe "datasets=[$A,$B]" 'probes=[q_fast]') > $(q "$WORK/q_fast.log") 2>&1 &
$(run_py experiment=fig1_mixed "datasets=[$A]") > $(q "$WORK/mixed.log") 2>&1 &
rc=0; for pid in \$(jobs -p); do wait \$pid || rc=\$?; done; exit \$rc"
for f in p_fast q_fast mixed; do  # here, not in the bash -c: also after a timeout
  if [[ -f "$WORK/$f.log" ]]; then
    { echo "--- run.py $f (last 40 lines)"; tail -n 40 "$WORK/$f.log"; } >> "$LOG"
  fi
done

# (e) speed: our loop vs the HF Trainer, batched vs one-at-a-time generation. bench.py rewrites its
# --out file after each measured loop; provenance() copies whatever is there into bench.json.
# QA throughput first: seconds on the GPU, while the three training loops may use the whole budget
phase bench 60 40 bash -c "rc=0; $(q "$PY" scripts/bench.py eval "${BENCH_EVAL[@]}" --out "$WORK/bench_eval.json") || rc=\$?
$(q "$PY" scripts/bench.py pretrain "${BENCH_PRE[@]}" --out "$WORK/bench_pretrain.json") || rc=\$?; exit \$rc"

# (f) the last report, with the probes' heatmaps and the mixed run; finish() checks $OUT
report report 40 0
