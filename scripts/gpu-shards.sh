#!/usr/bin/env bash
# The built-ins on one GPU, unsharded and then as two shards run one after another: the merged
# shards must give the unsharded run's verdicts (and, but for torch.compile candidates, whose bits
# depend on what their worker compiled before, its lines). Prints each run's wall time.
# Usage: OUT=DIR [LIMIT=seconds per run] scripts/gpu-shards.sh [EXAMPLES] [WORKERS] [normgate run args...]
set -u
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || exit 3
source scripts/carried-wheels.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
sel="--device cuda --examples ${1:-6} --seed 0 --workers ${2:-16} ${*:3}"
for name in whole s1 s2; do
  extra=""; [ $name = s1 ] && extra="--shard 1/2"; [ $name = s2 ] && extra="--shard 2/2"
  t0=$(date +%s.%N)
  timeout -s TERM "${LIMIT:-170}" normgate run $sel $extra --out $OUT/$name.jsonl > $OUT/$name.log 2>&1
  echo "$name rc=$? wall=$(python3 -c "import time;print(round(time.time()-$t0,1))")s" | tee -a $OUT/times.txt
  tail -3 $OUT/$name.log
done
python3 - <<'PY'
import json, os, collections
from normgate.shards import merge
from normgate import results
out = os.environ["OUT"]
L = lambda n: results.read_lines(f"{out}/{n}.jsonl", allow_truncated_tail=True)
whole = L("whole")
m = merge([(f"{out}/s1.jsonl", L("s1")), (f"{out}/s2.jsonl", L("s2"))])
key = lambda ln: (ln["task"], ln["case"])
vw = {key(l): l["verdict"] for l in whole if l["type"] == "result"}
vm = {key(l): l["verdict"] for l in m if l["type"] == "result"}
same_lines = results.content(m) == results.content(whole)
diff = [k for k in set(vw) | set(vm) if vw.get(k) != vm.get(k)]
print("cases whole", len(vw), "merged", len(vm), "verdict differences", len(diff), "content identical", same_lines)
print("whole verdicts", dict(collections.Counter(vw.values())))
cw = [a for a, b in zip(results.content(whole), results.content(m)) if a != b]
print("differing lines", len(cw), [ (a.get("kernel"), a.get("check")) for a in cw[:10]])
for l in whole:
    if l["type"] == "result" and l["verdict"] in ("fail", "error"):
        print("BAD", l["kernel"], l["check"], l["dtype"], l["reason"][:200], l.get("replay", ""))
PY
gzip -k $OUT/*.jsonl
