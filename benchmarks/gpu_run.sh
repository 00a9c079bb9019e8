#!/usr/bin/env bash
# The GPU run, prepared: everything a session with a lent GPU runs, in one call.
#
#   OUT=DIR bash benchmarks/gpu_run.sh            # from the repository root
#
# Steps, each timed and logged to $OUT/gpu_run.log (README.md, "On a GPU", has the device call):
#   setup       carried wheels (.whl/) into $GPU_RUN_SITE; s9lib from this checkout; versions
#   gpu-tests   pytest -m gpu tests/test_gpu.py                                  (needs CUDA)
#   train-fast  python -m s9lib train --recipe fast on all of CIFAR-10 -> $OUT/fast-history.json
#   export      the trained model as fp16 weights (accuracy measured, also on the carried
#               .data/cifar10_test_exact_first1017.npz when there), split into parts of
#               15 MiB under $OUT with weights.sha256 (benchmarks/gpu_join.sh rejoins them)
#   course-epoch  the course recipe (albumentations DataLoader) for $GPU_RUN_COURSE_EPOCHS epochs
#               -> $OUT/course-history.json (seconds per epoch)
#   speed       benchmarks/train_speed.py --json $OUT/train_speed.json           (needs CUDA)
# export runs before course-epoch so that the weights come back even when the budget runs out.
#
# Environment:
#   OUT                  where the log and results go (required; the device machine sets it)
#   S9LIB_FAST=1         FAST mode: every step runs in seconds on a CPU (tests/test_gpu_script.py)
#   GPU_RUN_BUDGET       seconds the whole script may take [510]; a step is skipped, with its
#                        reason, when less is left than it needs to start, and stopped when
#                        the budget is spent
#   GPU_RUN_RUNS         folder for the training runs [/tmp/s9-gpu-runs]; must not hold them yet
#   GPU_RUN_SITE         where carried wheels are installed [/tmp/s9-gpu-site]
#   GPU_RUN_COURSE_EPOCHS  epochs of the course recipe [1]
#   GPU_RUN_FAST_EPOCHS  epochs of the fast recipe [the recipe's; 1 in FAST mode]
#   S9LIB_DATA           CIFAR-10 [.data/cifar10-jpeg.tar.gz, carried, when it exists]
#   PYTHON               the interpreter [python3]
# Exit status: 0 when every step that ran succeeded (skipped steps do not count), else 1.

set -uo pipefail
export PYTHONUNBUFFERED=1
export NO_ALBUMENTATIONS_UPDATE=1  # its import asks PyPI for a newer version: no network there

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
: "${OUT:?set OUT to the folder for the log and results (the device machine sets it)}"
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_run.log
PYTHON=${PYTHON:-python3}
BUDGET=${GPU_RUN_BUDGET:-510}
RUNS=${GPU_RUN_RUNS:-/tmp/s9-gpu-runs}
SITE=${GPU_RUN_SITE:-/tmp/s9-gpu-site}
COURSE_EPOCHS=${GPU_RUN_COURSE_EPOCHS:-1}
WEIGHTS=resnet18_cifar10_fast_gpu.pt
EXACT=.data/cifar10_test_exact_first1017.npz
START=$(date +%s)
DEADLINE=$((START + BUDGET))
FAILED=()
SUMMARY=()

log() { printf '[gpu_run %s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$LOG"; }
left() { echo $((DEADLINE - $(date +%s))); }
py() { "$PYTHON" "$@"; }
is_fast() { case ${S9LIB_FAST:-} in [1Yy]* | [Tt][Rr][Uu][Ee] | [Oo][Nn]) return 0 ;; *) return 1 ;; esac; }

# step NAME NEED CAP FUNCTION: run FUNCTION when at least NEED seconds of the budget are left,
# for at most CAP seconds (and never past the budget); log its status and wall time.
step() {
    local name=$1 need=$2 cap=$3 fn=$4 rest t0 t1 rc secs
    rest=$(left)
    if ((rest < need)); then
        log "step $name: skipped: ${rest} s of the budget left, it needs ${need} s to start"
        SUMMARY+=("$name skipped (budget)")
        return
    fi
    ((cap > rest)) && cap=$rest
    log "step $name: start (at most ${cap} s)"
    t0=$(date +%s.%N)
    STEP_END=$(($(date +%s) + cap)) "$fn" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    t1=$(date +%s.%N)
    [[ -z $(tail -c 1 "$LOG") ]] || echo >>"$LOG"  # after a progress bar's last \r
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    if ((rc == 0)); then
        log "step $name: ok in ${secs} s"
        SUMMARY+=("$name ok ${secs} s")
    elif ((rc == 3)); then
        log "step $name: skipped (reason above) after ${secs} s"
        SUMMARY+=("$name skipped")
    else
        ((rc == 124 || rc == 137)) && log "step $name: stopped at its limit of ${cap} s"
        log "step $name: FAILED (exit ${rc}) in ${secs} s"
        SUMMARY+=("$name FAILED (exit $rc) ${secs} s")
        FAILED+=("$name")
    fi
}

# a command, stopped at the step's limit (STEP_END, set by step)
limited() {
    local rest=$((STEP_END - $(date +%s)))
    ((rest > 0)) || { echo "no time left in this step for: $*"; return 124; }
    timeout -k 10 "$rest" "$@"
}

skip_without_cuda() {
    if [[ $CUDA != yes ]]; then
        echo "skipped: no CUDA here (torch.cuda.is_available() is False)"
        return 3
    fi
}

# ------------------------------------------------------------------------------- the steps

setup() {
    shopt -s nullglob
    local wheels=(.whl/*.whl)
    if ((${#wheels[@]})); then
        echo "installing ${#wheels[@]} carried wheels into $SITE"
        limited "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$SITE" "${wheels[@]}" \
            || echo "warning: the wheels did not install (they are for CPython 3.12 on x86-64);" \
                    "going on with the installed packages"
    else
        echo "no .whl/ here: using the installed packages"
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    echo "S9LIB_FAST=${S9LIB_FAST:-} S9LIB_DATA=$S9LIB_DATA S9LIB_CACHE=${S9LIB_CACHE:-(user cache dir)}"
    echo "OUT=$OUT GPU_RUN_RUNS=$RUNS budget ${BUDGET} s"
    du -b "$S9LIB_DATA"
    limited "$PYTHON" - "$ROOT" <<'EOF'
import os, platform, sys
import torch
import s9lib
from s9lib.runtime import amp_dtype, fast_mode, get_device

root = os.path.realpath(sys.argv[1])
where = os.path.realpath(s9lib.__file__)
print(f"python {platform.python_version()}  torch {torch.__version__}  s9lib {where}")
if not where.startswith(root + os.sep):
    sys.exit(f"s9lib was imported from {where}, not from this checkout {root}")
import albumentations, cv2, numpy
print(f"albumentations {albumentations.__version__}  opencv {cv2.__version__}  numpy {numpy.__version__}")
dev = get_device()
print(f"device {dev}  autocast {amp_dtype(dev)}  FAST {fast_mode()}  threads {torch.get_num_threads()}")
if dev.type == "cuda":
    print(f"gpu {torch.cuda.get_device_name(dev)}  capability {torch.cuda.get_device_capability(dev)}"
          f"  cudnn {torch.backends.cudnn.version()}  cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}"
          f"  matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}")
EOF
}

gpu_tests() {
    skip_without_cuda || return
    limited "$PYTHON" -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -q -rs
}

train_fast() {
    local epochs=()
    [[ -n ${GPU_RUN_FAST_EPOCHS:-} ]] && epochs=(--epochs "$GPU_RUN_FAST_EPOCHS")
    # stopped at its limit, the checkpoint still holds every finished epoch: export uses it
    limited "$PYTHON" -m s9lib train --recipe fast "${epochs[@]}" --out "$RUNS/fast-gpu"
    local rc=$?
    [[ -f $RUNS/fast-gpu/history.json ]] && cp "$RUNS/fast-gpu/history.json" "$OUT/fast-history.json"
    return $rc
}

export_weights() {
    local ckpt=$RUNS/fast-gpu/checkpoint.pt dest=$RUNS/$WEIGHTS
    if [[ ! -f $ckpt ]]; then
        echo "skipped: no $ckpt (train-fast wrote none)"
        return 3
    fi
    local rc=0 exact=()  # the original-pixel test images, when carried (gpu_prepare.sh)
    [[ -f $EXACT ]] && exact=(--exact "$EXACT")
    if is_fast; then  # the CLI measures all 10,000 test images: minutes on a CPU
        echo "FAST: export_weights() without the test-set measurement of 'python -m s9lib export'"
        plain_export "$ckpt" "$dest" "benchmarks/gpu_run.sh, FAST mode" || return 1
    elif ! limited "$PYTHON" -m s9lib export "$ckpt" "$dest" "${exact[@]}" \
            --note "benchmarks/gpu_run.sh"; then
        rc=1  # the weights still come back, unmeasured, and the step reports the failure
        echo "python -m s9lib export failed: writing the weights without its measurements"
        STEP_END=$(($(date +%s) + 60)) plain_export "$ckpt" "$dest" \
            "benchmarks/gpu_run.sh, not measured" || return 1
    fi
    (cd "$RUNS" && sha256sum "$WEIGHTS") > "$OUT/weights.sha256" || return 1
    split -b 15M -d -a 2 "$dest" "$OUT/$WEIGHTS.part-" || return 1
    du -b "$dest" "$OUT/$WEIGHTS".part-*
    cat "$OUT/weights.sha256"
    return $rc
}

plain_export() {  # CHECKPOINT DEST NOTE: s9lib.checkpoints.export_weights, nothing measured
    limited "$PYTHON" -c 'import sys; from s9lib.checkpoints import export_weights
export_weights(sys.argv[1], sys.argv[2], note=sys.argv[3])' "$@"
}

course_epoch() {
    limited "$PYTHON" -m s9lib train --recipe course --epochs "$COURSE_EPOCHS" --out "$RUNS/course-gpu"
    local rc=$?
    if [[ -f $RUNS/course-gpu/history.json ]]; then
        cp "$RUNS/course-gpu/history.json" "$OUT/course-history.json"
        py -c 'import json, sys
h = json.load(open(sys.argv[1]))
for e in h["epochs"]:
    print("course epoch %(epoch)d: %(seconds).1f s, %(images_per_second).0f img/s, "
          "test acc %(test_acc).4f" % e)
print("device", h["device"], "autocast", h["info"].get("autocast"))' "$RUNS/course-gpu/history.json"
    fi
    return $rc
}

speed() {
    skip_without_cuda || return
    limited "$PYTHON" benchmarks/train_speed.py --json "$OUT/train_speed.json"
}

# ------------------------------------------------------------------------------- the run

: >"$LOG"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z ${S9LIB_DATA:-} && -f .data/cifar10-jpeg.tar.gz ]]; then
    S9LIB_DATA=.data/cifar10-jpeg.tar.gz
fi
if [[ -z ${S9LIB_DATA:-} || ! -e $S9LIB_DATA ]]; then
    log "error: no CIFAR-10 at '${S9LIB_DATA:-}': carry .data/cifar10-jpeg.tar.gz (benchmarks/gpu_prepare.sh) or set S9LIB_DATA"
    exit 2
fi
S9LIB_DATA=$(cd "$(dirname "$S9LIB_DATA")" && pwd)/$(basename "$S9LIB_DATA")
export S9LIB_DATA TQDM_MININTERVAL=${TQDM_MININTERVAL:-5}  # progress bars: a line in 5 s
if ! py -c 'import platformdirs' 2>/dev/null; then  # s9lib.runtime.cache_dir() needs it
    export S9LIB_CACHE=${S9LIB_CACHE:-/tmp/s9lib-cache}
fi
CUDA=$(py -c 'import torch; print("yes" if torch.cuda.is_available() else "no")' 2>/dev/null)
for run in fast-gpu course-gpu; do
    if [[ -e $RUNS/$run ]]; then
        log "error: $RUNS/$run exists; set GPU_RUN_RUNS to a new folder"
        exit 2
    fi
done
mkdir -p "$RUNS" || exit 2
log "gpu_run.sh in $ROOT ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git')), budget ${BUDGET} s, FAST=${S9LIB_FAST:-0}"

step setup 20 120 setup
if [[ ${SUMMARY[-1]} != "setup ok"* ]]; then
    log "setup failed: nothing else can run"
    exit 1
fi
step gpu-tests 60 200 gpu_tests
step train-fast 60 $(($(left) - 75)) train_fast  # 75 s kept for export
step export 30 180 export_weights
step course-epoch 30 180 course_epoch
step speed 45 120 speed

log "summary (wall seconds, $(($(date +%s) - START)) s in all of a ${BUDGET} s budget):"
for line in "${SUMMARY[@]}"; do log "  $line"; done
log "files under $OUT:"
(cd "$OUT" && du -b -- * | tee -a "$LOG")
count=$(find "$OUT" -maxdepth 1 -type f | wc -l)
big=$(find "$OUT" -type f -size +16777216c | wc -l)
((count > 8 || big > 0)) && log "warning: $count files, $big over 16 MiB: the device brings back at most 8 of at most 16 MiB"
((${#FAILED[@]} == 0)) || { log "failed steps: ${FAILED[*]}"; exit 1; }
exit 0
