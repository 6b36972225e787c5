#!/usr/bin/env bash
# The full check on a GPU machine, in one command: every built-in kernel (PyTorch eager,
# torch.compile, ours, Liger-Kernel when its wheel is carried in .whl/) through every check.
# Usage: scripts/device-check.sh OUTDIR [EXAMPLES] [extra normgate run args...]
set -uo pipefail
out=${1:?usage: scripts/device-check.sh OUTDIR [EXAMPLES] [args...]}
examples=${2:-100}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "$out"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || exit 3
source "$(dirname "$0")/carried-wheels.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
normgate list --device cuda > "$out/kernels.txt"
start=$(date +%s)
# LIMIT (seconds) stops the run with SIGTERM: it ends as an interrupted run whose results stay valid
# and resumable (normgate run --resume), instead of being lost to an outer timeout.
timeout -s TERM "${LIMIT:-0}" normgate run --device cuda --examples "$examples" --out "$out/gpu-results.jsonl" "$@" 2> "$out/run.log"
rc=$?
end=$(date +%s)
tail -25 "$out/run.log"
python3 - "$out/gpu-results.jsonl" $((end - start)) <<'PY'
import json, sys, collections
lines = [json.loads(l) for l in open(sys.argv[1])]
res = [l for l in lines if l["type"] == "result"]
c = collections.Counter(l["verdict"] for l in res)
k = collections.Counter(l["kernel"] for l in res)
print(f"cases {len(res)} in {sys.argv[2]}s = {len(res)/max(1,int(sys.argv[2])):.1f} cases/s; {dict(c)}; {len(k)} kernels")
for name, n in sorted(k.items()):
    mine = [l for l in res if l["kernel"] == name]
    bad = sum(1 for l in mine if l["verdict"] in ("fail", "error"))
    secs = sum(l.get("duration_s", 0) for l in mine)
    print(f"  {name:34s} {n:6d} cases {bad:4d} fail/error {secs:8.1f} worker-s")
PY
gzip -k "$out/gpu-results.jsonl"
exit $rc
