#!/usr/bin/env bash
# bench/gpu_check.sh: the search's trial start-up on one NVIDIA GPU, in at most 8 minutes.
#
#   bash bench/gpu_check.sh            (on a machine with one NVIDIA GPU and the project's .venv)
#
# 1. bf16 vs fp32 (autocast) step time of the cached pre-training and fine-tuning steps
#    (bench/train.py --quick --device cuda);
# 2. a 4-trial search on the GPU, each trial one rank with the whole GPU, the same configs twice:
#    as Ray Train runs (NCCL process group of one rank) and as warm in-process trials, then the
#    same configs in an in-process Optuna loop: trials/hour, the trial phase against the loop,
#    and the time to the first epoch split into actor start, process group (NCCL), imports, data
#    reaching the worker, model build and first epoch (bench/search.py's table).
# Nothing depends on this script; it prints, and leaves its data and results in $WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-out/gpu-check}
export RAY_USAGE_STATS_ENABLED=0
started=$(date +%s)

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'device', torch.cuda.get_device_name(0))"

echo
echo "== 1/2 bf16 vs fp32 step time (bench/train.py --quick --device cuda)"
timeout 150 "$PY" bench/train.py --config small --device cuda --quick 2>&1 | grep -iE "bf16|fp32|samples/s|peak" || \
    echo "gpu_check: bench/train.py did not finish within 150 s"

echo
echo "== 2/2 a 4-trial search on the GPU: Ray Train (NCCL) vs warm in-process trials vs an Optuna loop"
left=$((480 - ($(date +%s) - started) - 10))
timeout "$left" "$PY" bench/search.py --trials 4 --epochs 2,6 --subjects 6 --stimuli 6 --duration 16 \
    --gpus-per-worker 1 --cpus-per-worker 4 --work "$WORK" \
    --shapes "train x1, 1 at a time;inprocess x1, 1 at a time"
echo "gpu_check took $(( $(date +%s) - started )) s"
