#!/usr/bin/env bash
# GPU runs of the kernels, for the device machine (no network; packages come as wheels).
#   bash bench/gpu.sh check   # harness correctness run over our kernels, then bench/tune.py
#   bash bench/gpu.sh bench   # the benchmark (what `nox -s bench` runs), JSON named after the GPU
# Everything lands in $OUT (default: bench/results).
set -uo pipefail
OUT=${OUT:-bench/results}
export PYTHONUNBUFFERED=1
source "$(dirname "$0")/../scripts/carried-wheels.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
case "${1:-bench}" in
  check)
    start=$(date +%s)
    timeout "${CHECK_S:-300}" normgate run --device cuda --kernels 'triton_*' --examples "${EXAMPLES:-300}" \
      --workers "${WORKERS:-4}" --out "$OUT/triton-gpu.jsonl" 2>&1 | tail -n 25 | tee "$OUT/check.log"
    echo "normgate run: rc ${PIPESTATUS[0]}, $(( $(date +%s) - start )) s" | tee -a "$OUT/check.log"
    timeout "${TUNE_S:-200}" python3 bench/tune.py --out "$OUT" ${TUNE_ARGS:-} 2>&1 | tee "$OUT/tune.log"
    ;;
  bench)
    name=$(python3 -c "import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
    timeout "${BENCH_S:-540}" python3 -m pytest bench -q -p no:cacheprovider --benchmark-json "$OUT/$name.json" \
      ${BENCH_ARGS:-} 2>&1 | tail -n 15
    python3 bench/summarize.py "$OUT/$name.json" | tee "$OUT/$name.md"
    ;;
esac
