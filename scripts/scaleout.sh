#!/usr/bin/env bash
# One normgate run over every built-in kernel on all the GPUs of this machine, then the same run on
# one GPU, and a comparison: the speed-up, and whether the two results files hold the same results.
# Each run starts with empty Triton and Inductor caches, so neither inherits the other's compiles.
# Usage: scripts/scaleout.sh OUTDIR [EXAMPLES] [WORKERS_PER_GPU] [extra normgate run args...]
set -uo pipefail
out=${1:?usage: scripts/scaleout.sh OUTDIR [EXAMPLES] [WORKERS_PER_GPU] [args...]}
examples=${2:-30}
per_gpu=${3:-1}
shift $(( $# >= 3 ? 3 : $# ))
extra=("$@")
mkdir -p "$out"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || exit 3
source "$(dirname "$0")/carried-wheels.sh"
nvidia-smi --query-gpu=index,name --format=csv,noheader
gpus=$(nvidia-smi -L | wc -l)
timed_run() {  # name, the GPUs it may use, how many of them
  local name=$1 visible=$2 count=$3
  local cache
  cache=$(mktemp -d)
  local start end
  start=$(date +%s.%N)
  CUDA_VISIBLE_DEVICES=$visible TRITON_CACHE_DIR=$cache/triton TORCHINDUCTOR_CACHE_DIR=$cache/inductor \
    normgate run --device cuda --workers $((count * per_gpu)) --examples "$examples" \
    --out "$out/$name.jsonl" "${extra[@]}" 2> "$out/$name.log"
  echo "rc=$?" >> "$out/$name.log"
  end=$(date +%s.%N)
  echo "$name $start $end" >> "$out/times.txt"
  grep -v "^normgate: \[" "$out/$name.log" | tail -n 8
}
if [ "${SCALEOUT_ONLY:-}" != "one" ]; then timed_run "gpus$gpus" "$(seq -s, 0 $((gpus - 1)))" "$gpus"; fi
if [ "${SCALEOUT_ONLY:-}" != "many" ]; then timed_run gpus1 0 1; fi
[ -f "$out/gpus1.jsonl" ] && [ -f "$out/gpus$gpus.jsonl" ] || exit 0
python3 - "$out" "$gpus" <<'PY'
import sys
from normgate import results
out, gpus = sys.argv[1], sys.argv[2]
times = {n: float(b) - float(a) for n, a, b in (line.split() for line in open(f"{out}/times.txt"))}
many = results.content(results.read_lines(f"{out}/gpus{gpus}.jsonl"))
one = results.content(results.read_lines(f"{out}/gpus1.jsonl"))
cases = sum(1 for ln in one if ln.get("type") == "result")
t1, tn = times["gpus1"], times[f"gpus{gpus}"]
print(f"{cases} cases: 1 GPU {t1:.1f}s ({cases / t1:.1f} cases/s), {gpus} GPUs {tn:.1f}s "
      f"({cases / tn:.1f} cases/s), speed-up {t1 / tn:.2f}x")
body = lambda lines: [ln for ln in lines if ln.get("type") != "summary"]
same = body(one) == body(many)
print("results identical in content:", same)
if not same:
    for a, b in [(a, b) for a, b in zip(body(one), body(many)) if a != b][:3]:
        print(" 1 GPU:", a, "\n many:", b)
PY
