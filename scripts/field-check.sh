#!/usr/bin/env bash
# The field's function kernels on a GPU machine, through normgate.field's adapters (kernels/field.py).
# Usage: scripts/field-check.sh OUTDIR [EXAMPLES]
#
# flash-attention's Triton layer_norm is one pure-Python file inside its source archive on PyPI
# (`pip download --no-deps --no-binary :all: --no-build-isolation flash-attn==VERSION`, with
# FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE). Put each version's files under $FIELD_SRC/fa-VERSION/
# (flash_attn/ops/triton/layer_norm.py, and flash_attn/utils/{torch,library}.py for releases that
# import them) in a folder git ignores; this script makes a package of them outside the checkout,
# with empty __init__ files of its own (the real flash_attn/__init__ loads the CUDA extension), and
# runs each version in its own normgate run. Liger-Kernel comes as a carried wheel (.whl/).
# Every run stops at its LIMIT with SIGTERM: an interrupted run keeps its results.
set -uo pipefail
out=${1:?usage: scripts/field-check.sh OUTDIR [EXAMPLES]}
examples=${2:-10}
src=${FIELD_SRC:-.fieldsrc}
mkdir -p "$out"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || exit 3
source "$(dirname "$0")/carried-wheels.sh"
base_path=${PYTHONPATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
export TRITON_CACHE_AUTOTUNING=1  # autotuned configs shared by the run's workers, not retuned in each
common=(--device cuda --workers "${WORKERS:-8}" --examples "$examples" --checks "${CHECKS:-accuracy,contract,poisoned}")

run() {  # name limit kernels dtypes [PYTHONPATH prefix]
  local name=$1 limit=$2 kernels=$3 dtypes=$4 prefix=${5:-}
  PYTHONPATH="$prefix${prefix:+:}$base_path" timeout -s TERM "$limit" normgate run "${common[@]}" \
    --kernels "$kernels" --dtypes "$dtypes" --out "$out/$name.jsonl" > "$out/$name.log" 2>&1
  echo "== $name (rc $?)"; tail -4 "$out/$name.log"
}

for dir in "$src"/fa-*; do
  [ -f "$dir/flash_attn/ops/triton/layer_norm.py" ] || continue
  ver=${dir##*/fa-}
  pkg=/tmp/field/fa-$ver
  rm -rf "$pkg"; mkdir -p "$pkg"; cp -r "$dir/flash_attn" "$pkg/"
  for d in flash_attn flash_attn/ops flash_attn/ops/triton flash_attn/utils; do
    [ -d "$pkg/$d" ] && touch "$pkg/$d/__init__.py"
  done
  run "flash-attn-$ver" "${FA_LIMIT:-90}" "${FA_KERNELS:-flash_attn_*}" "${FA_DTYPES:-fp32,bf16}" "$pkg"
done
if python3 -c "import liger_kernel" 2>/dev/null; then
  run liger-fn "${LIGER_LIMIT:-45}" "${LIGER_KERNELS:-liger_fn_*}" "${LIGER_DTYPES:-bf16,fp16}"
fi

python3 - "$out" <<'PY'
import collections, glob, json, os, sys
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.jsonl"))):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    res = [l for l in lines if l.get("type") == "result"]
    print(f"\n{os.path.basename(path)}: {len(res)} cases, {dict(collections.Counter(l['verdict'] for l in res))}")
    by = collections.defaultdict(list)
    for l in res:
        by[(l["kernel"], l["check"])].append(l)
    for (kernel, check), ls in sorted(by.items()):
        v = collections.Counter(l["verdict"] for l in ls)
        bad = [l for l in ls if l["verdict"] in ("fail", "error")]
        print(f"  {kernel:38s} {check:10s} {dict(v)}")
        if bad:
            b = min(bad, key=lambda l: (l["verdict"] != "fail", len(l.get("case", ""))))
            print(f"      {b['verdict']}: {b.get('reason', '')[:300]}")
            print(f"      replay: {b.get('replay', '')}")
PY
for f in "$out"/*.jsonl; do gzip -kf "$f"; done
