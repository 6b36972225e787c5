#!/usr/bin/env bash
# Crash isolation on a GPU, in one command: a Triton kernel that writes far out of bounds (an
# illegal memory access, which leaves the CUDA context unusable) and other broken candidates run
# in one worker, in turn with correct kernels; then a summary of what each became. Expected: every
# broken kernel an error with its reason, every correct kernel all pass, every task finished.
# Bounded: one case may run --timeout seconds, one task --kernel-timeout, the whole run RUN_LIMIT.
# Usage: scripts/gpu-isolation.sh [OUTDIR] [extra normgate run args...]
set -uo pipefail
out=${1:-gpu-isolation}
shift $(( $# >= 1 ? 1 : 0 ))
mkdir -p "$out"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || exit 3
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
loads=()
for f in oob_triton hoard exit raises segfault hang; do loads+=(--load "tests/broken/$f.py"); done
# one worker: the correct kernels run in the same worker slot, after the broken ones replaced it
timeout -k 15 "${RUN_LIMIT:-420}" normgate run --device cuda "${loads[@]}" \
  --kernels 'broken_*,torch_rms_norm,triton_rmsnorm_gemma' --dtypes fp32 --checks accuracy,repeat \
  --examples "${EXAMPLES:-12}" --timeout 30 --kernel-timeout 120 --workers 1 --out "$out/gpu-isolation.jsonl" \
  "$@" 2> "$out/run.log"
rc=$?
echo "normgate run exit code: $rc (1 expected: broken kernels errored; 124 = the whole run timed out)"
tail -4 "$out/run.log"
python3 - "$out/gpu-isolation.jsonl" <<'PY'
import collections, json, sys
lines = [json.loads(ln) for ln in open(sys.argv[1]) if ln.strip()]
results = [ln for ln in lines if ln["type"] == "result"]
tasks = {ln["task"]: ln["status"] for ln in lines if ln["type"] == "task"}
problems = []
for kernel in sorted({ln["kernel"] for ln in results}):
    mine = [ln for ln in results if ln["kernel"] == kernel]
    verdicts = collections.Counter(ln["verdict"] for ln in mine)
    print(f"{kernel:24s} {dict(verdicts)}")
    for ln in mine:
        if ln["verdict"] in ("fail", "error"):
            print(f"    {ln['check']}: {ln['reason'][:160]}")
    broken = kernel.startswith("broken_")
    if broken and not verdicts["error"]:
        problems.append(f"{kernel} recorded no error")
    if not broken and (verdicts["fail"] or verdicts["error"] or not verdicts["pass"]):
        problems.append(f"correct kernel {kernel} did not pass")
oob = [ln for ln in results if ln["kernel"] == "broken_oob_triton" and ln["verdict"] == "error"]
if not any("illegal" in ln["reason"] for ln in oob):
    problems.append("broken_oob_triton: no illegal-memory-access error recorded")
print("tasks:", dict(collections.Counter(tasks.values())))
if not lines or lines[-1]["type"] != "summary":
    problems.append("no summary line: the run did not finish")
print("ISOLATION OK" if not problems else "ISOLATION PROBLEMS: " + "; ".join(problems))
sys.exit(1 if problems else 0)
PY
