#!/usr/bin/env bash
# What a JIT-compiled user kernel costs a run, on the GPU machine: the user-style Triton fixtures
# (tests/fieldkernels/user_triton_norms.py) against normgate's own Triton RMSNorm and LayerNorm
# under the same checks, dtypes and budget, from an empty Triton cache and a warm one, and the
# user fixtures once more with the free width draw (bench/free_widths.py: the draw before the
# width palette). Each run is capped (COLD_S, WARM_S); a capped run's summary says interrupted, and its
# rate is cases / wall time all the same. Everything lands in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/compile-aware}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
EX=${EXAMPLES:-40}
W=${WORKERS:-8}
DT=fp32,bf16,fp16,bf16/fp32
USER=(--load tests/fieldkernels/user_triton_norms.py --kernels 'user_triton_*')
OURS=(--kernels triton_rmsnorm_gemma,triton_layernorm)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, hypothesis; print('torch', torch.__version__, 'triton', triton.__version__, 'hypothesis', hypothesis.__version__, 'cpus', __import__('os').cpu_count())" | tee -a "$OUT/gpu.txt"

one() {  # name cache cap args...
  local name=$1 cache=$2 cap=$3; shift 3
  local t0; t0=$(date +%s.%N)
  TRITON_CACHE_DIR=$cache timeout -s TERM "$cap" python3 -m normgate.cli run --device cuda --dtypes $DT --examples "$EX" \
    --workers "$W" --out "$OUT/$name.jsonl" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  python3 - "$OUT/$name.jsonl" "$name" "$rc" "$(python3 -c "import time; print(time.time() - $t0)")" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
from normgate import compiletime
path, name, rc, wall = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
lines = [json.loads(l) for l in open(path)]
res = [l for l in lines if l["type"] == "result"]
s = compiletime.split(lines)
summ = next((l for l in lines if l["type"] == "summary"), {})
bad = sum(l["verdict"] in ("fail", "error") for l in res)
print(f"{name}: rc {rc}, {len(res)} cases in {wall:.1f} s wall = {len(res) / wall:.2f} cases/s; "
      f"fail+error {bad}; worker time {s.task_s:.1f} s, compiling {s.compile_s or 0:.1f} s "
      f"({100 * (s.share or 0):.0f}%), {s.compiles} compiles; interrupted {summ.get('interrupted')}; "
      f"widths {len({l['shape'][-1] for l in res if l.get('shape')})}")
PY
}

COLD=${COLD_S:-90}
WARM=${WARM_S:-60}
one user-cold /tmp/tc-user "$COLD" "${USER[@]}"
one user-warm /tmp/tc-user "$WARM" "${USER[@]}"
one ours-cold /tmp/tc-ours "$COLD" "${OURS[@]}"
one ours-warm /tmp/tc-ours "$WARM" "${OURS[@]}"
one user-free-cold /tmp/tc-free "$COLD" --load bench/free_widths.py "${USER[@]}"
cd "$OUT" && gzip -f ./*.jsonl && tar czf logs.tgz ./*.log && rm -f ./*.log
