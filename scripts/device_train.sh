#!/usr/bin/env bash
# Trains the shipped SeemoRe-T models further on a lent GPU machine (the device tool), in one call.
#
# The machine reaches no registry and keeps nothing, so the call carries the training photographs as a
# pack (scripts/build_trainset.py --pack: JPEG q95, 31 MiB, in the git-ignored datasets/ folder, named in
# the device tool's `carry`) and runs sisr from the source tree with the machine's own python3 and torch:
#
#   1. builds the training set from the pack (build_trainset.py --from-photos) into $SET, and the
#      held-out validation folder datasets/val from scikit-image's photographs;
#   2. trains the runs in $RUNS at once, on the one GPU, each with the configs/shipped/ file named below
#      and the overrides of this script (experiment name gpu_<run>, bigger batches, more loader workers,
#      the set built in step 1, a schedule of $ITERS_<RUN> iterations), stopped by `--time-limit` so that
#      everything ends before $BUDGET seconds have passed since the script started;
#   3. leaves in $OUT one gpu_<run>.tar.gz per run (models/net_g_latest.pth, config.yml, log.jsonl and the
#      run's output) and the set's manifest.json, for scripts/export_model.py here.
#
# Runs:  x4_real  seemore_t_x4_real.yml, from the shipped seemore-t-x4-real (export with --continues)
#        x2_real  seemore_t_x2_real.yml, from the shipped seemore-t-x2-real (export with --continues)
#        x4       seemore_t_x4_stage3.yml, from the shipped seemore-t-x4 (export with --continues)
#
# Usage (on the device machine; every setting is an environment variable with the default shown):
#   bash scripts/device_train.sh
# Tested here on the CPU with a few photographs and iterations (tests/test_device_train.py):
#   DEVICE=cpu BUDGET=300 ITERS_X4_REAL=4 ... bash scripts/device_train.sh
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

PACK=${PACK:-datasets/trainset2-photos}
SET=${SET:-datasets/trainset2-pack}
VAL=${VAL:-datasets/val}          # made from scikit-image's photographs when absent
EXPERIMENTS=${EXPERIMENTS:-experiments}
BUILD_ARGS=${BUILD_ARGS:-}        # more build_trainset.py options (the test's smaller sub-images)
OUT=${OUT:?set OUT to the folder that receives the results}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-540}             # seconds for the whole script
RUNS=${RUNS:-x4_real x2_real x4}
BUILD_WORKERS=${BUILD_WORKERS:-$(nproc)}
BATCH_X4_REAL=${BATCH_X4_REAL:-16}
BATCH_X2_REAL=${BATCH_X2_REAL:-16}
BATCH_X4=${BATCH_X4:-32}
# Schedules sized by benchmarks/loader.py (a worker supplies 18, 37 and 55 samples per second on an
# Intel Xeon core) for the workers below and about 400 s of training; the time limit ends them anyway.
ITERS_X4_REAL=${ITERS_X4_REAL:-2500}
ITERS_X2_REAL=${ITERS_X2_REAL:-3000}
ITERS_X4=${ITERS_X4:-2000}
WARMUP=${WARMUP:-100}             # iterations of linear warm-up before the cosine schedule
WORKERS_X4_REAL=${WORKERS_X4_REAL:-6}  # the degradations run in the loader workers: x4 needs most
WORKERS_X2_REAL=${WORKERS_X2_REAL:-4}
WORKERS_X4=${WORKERS_X4:-3}
TAIL=${TAIL:-40}                  # seconds kept at the end for the last checkpoints and the archives
PYTHON=${PYTHON:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

mkdir -p "$OUT"
{
  "$PYTHON" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'
  "$PYTHON" -c 'import torch, sisr.runtime as r; print(r.hardware(r.resolve_device(None)))'
  nproc
} > "$OUT/machine.txt" 2>&1

# 1. The training set and the validation photographs.
# shellcheck disable=SC2086  # BUILD_ARGS is a list of options
# Only the x4 LR sub-images: the clean x4 run reads them (the degraded runs make their own LR).
"$PYTHON" scripts/build_trainset.py --from-photos "$PACK" --out "$SET" --workers "$BUILD_WORKERS" \
  --lr-scales 4 $BUILD_ARGS \
  > "$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }
cp "$SET/manifest.json" "$OUT/manifest.json"
if [[ ! -d $VAL/HR ]]; then
  VAL=$VAL "$PYTHON" - <<'EOF'
import os
from pathlib import Path

from PIL import Image

from sisr.heldout import PHOTOS, photo

hr = Path(os.environ["VAL"]) / "HR"
hr.mkdir(parents=True, exist_ok=True)
for name in PHOTOS:
    Image.fromarray(photo(name)).save(hr / f"{name}.png")
EOF
  "$PYTHON" -m sisr prepare lr "$VAL/HR" "$VAL/LR_bicubic" --scales 2 4 > /dev/null
fi
echo "built in $((SECONDS - start)) s" >> "$OUT/build.log"

# 2. The runs, at once; each stops by itself before the budget ends.
minutes=$("$PYTHON" -c "print(max(0.1, ($BUDGET - $TAIL - ($SECONDS - $start)) / 60))")
train() {  # train RUN SCALE CONFIG ITERS BATCH WORKERS START [OVERRIDES...]
  local run=$1 scale=$2 config=$3 iters=$4 batch=$5 workers=$6 from=$7
  shift 7
  "$PYTHON" -m sisr train "configs/shipped/$config" --device "$DEVICE" --time-limit "$minutes" \
    "name=gpu_$run" "path.experiments_root=$EXPERIMENTS/gpu_$run" "path.pretrain_network_g=$from" \
    "datasets.train.dataroot_gt=$SET/hr_sub" "datasets.train.batch_size_per_gpu=$batch" \
    "datasets.train.num_worker_per_gpu=$workers" "train.total_iter=$iters" \
    "train.warmup_iter=$WARMUP" \
    "train.scheduler.T_max=$((iters - WARMUP))" "val.val_freq=$iters" \
    "datasets.val.dataroot_gt=$VAL/HR" "datasets.val.dataroot_lq=$VAL/LR_bicubic/X$scale" \
    "logger.print_freq=50" "logger.save_checkpoint_freq=250" "$@" > "$EXPERIMENTS/gpu_$run.log" 2>&1
}
mkdir -p "$EXPERIMENTS"
pids=()
for run in $RUNS; do
  case $run in
    x4_real) train x4_real 4 seemore_t_x4_real.yml "$ITERS_X4_REAL" "$BATCH_X4_REAL" "$WORKERS_X4_REAL" \
               src/sisr/weights/seemore-t-x4-real.safetensors & ;;
    x2_real) train x2_real 2 seemore_t_x2_real.yml "$ITERS_X2_REAL" "$BATCH_X2_REAL" "$WORKERS_X2_REAL" \
               src/sisr/weights/seemore-t-x2-real.safetensors & ;;
    x4) train x4 4 seemore_t_x4_stage3.yml "$ITERS_X4" "$BATCH_X4" "$WORKERS_X4" \
          src/sisr/weights/seemore-t-x4.safetensors \
          "datasets.train.dataroot_lq=$SET/lr_sub/X4" "datasets.train.meta_info_file=$SET/meta_info_hard.txt" & ;;
    *) echo "device_train: unknown run $run (x4_real, x2_real, x4)" >&2; exit 2 ;;
  esac
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done

# 3. The results.
for run in $RUNS; do
  exp=$EXPERIMENTS/gpu_$run
  cp "$exp.log" "$exp/train.log" 2>/dev/null || true
  files=()
  for f in config.yml log.jsonl train.log models/net_g_latest.pth; do
    [[ -f $exp/$f ]] && files+=("gpu_$run/$f")
  done
  ((${#files[@]})) && tar -czf "$OUT/gpu_$run.tar.gz" -C "$EXPERIMENTS" "${files[@]}"
  tail -n 3 "$exp.log"
done
echo "device_train: done in $((SECONDS - start)) s (budget $BUDGET s), status $status"
exit $status
