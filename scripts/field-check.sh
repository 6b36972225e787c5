#!/usr/bin/env bash
# The field's function kernels on a GPU machine, through normgate.field's adapters (kernels/field.py),
# one normgate run per package version, with a verdict table and each failing case's replay command.
# Usage: scripts/field-check.sh OUTDIR [EXAMPLES]
#
# Sources, in $FIELD_SRC (default .fieldsrc/, a folder git ignores; third-party code is never
# committed):
#   fa-VERSION/flash_attn/...  flash-attention's Triton layer_norm, one pure-Python file inside its
#       source archive on PyPI (`pip download --no-deps --no-binary :all: --no-build-isolation
#       flash-attn==VERSION`, with FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE): flash_attn/ops/triton/
#       layer_norm.py, and flash_attn/utils/{torch,library}.py for releases that import them.
#   unsloth-VERSION/unsloth/...  the files Unsloth's norm kernels import, taken from its wheel by
#       `python3 scripts/field_pkg.py extract unsloth-VERSION-py3-none-any.whl .fieldsrc/unsloth-VERSION`.
# Each is made a package outside the checkout, under /tmp/field/, with empty __init__ files of its
# own (flash_attn's loads the CUDA extension, unsloth's imports the world) and, for Unsloth, the
# stand-ins field_pkg.py writes for packages the machine lacks. Wheels in $FIELD_SRC/wheels/
# (Liger-Kernel: `pip download --no-deps --only-binary=:all: liger-kernel==0.8.5 -d .fieldsrc/wheels`)
# and .whl/ are installed under /tmp; transformers is the machine's own; quack runs when
# importable (its wheels carried in .whl/, ANCHORS.md).
#
# The runs go one after another, each with WORKERS workers (default 16, one per core of the H200
# machine; runs side by side would each give their workers a share of the GPU's memory as if
# alone). Every run stops at its LIMIT with SIGTERM (an interrupted run keeps its results); the
# LIMITs add up to 380 s. Each run's summary is printed as it ends, so a call cut short still
# shows what finished. DRY=1 prints the plan and runs nothing; ONLY=GLOB runs the runs whose name
# matches (e.g. 'unsloth-*'); DEVICE=cpu (with TRITON_INTERPRET=1) runs on the CPU, with LOAD=FILE a
# --load file for every run (tests/fieldkernels/field_on_cpu.py claims the CPU for the field's
# candidates).
set -uo pipefail
out=${1:?usage: scripts/field-check.sh OUTDIR [EXAMPLES]}
examples=${2:-10}
here=$(cd "$(dirname "$0")" && pwd)
src=${FIELD_SRC:-.fieldsrc}
pkgs=${FIELD_PKGS:-/tmp/field}
device=${DEVICE:-cuda}
workers=${WORKERS:-16}
dry=${DRY:-0}
py=${PYTHON:-python3}
mkdir -p "$out"
if [ "$dry" != 1 ]; then
  "$py" -m pip install -q --no-deps --no-build-isolation -e . > "$out/pip.log" 2>&1 \
    || { echo "field-check: pip install -e . failed ($out/pip.log)"; tail -5 "$out/pip.log"; exit 3; }
  source "$here/carried-wheels.sh"
  # quack's CuTe DSL lives in a folder a .pth file names, and pip install --target skips .pth files
  cute=/tmp/site/nvidia_cutlass_dsl/python_packages
  [ -d "$cute" ] && export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$cute
  # the field's own wheels (Liger-Kernel) travel with its sources, so carrying .fieldsrc is enough
  if ls "$src"/wheels/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$pkgs/site" "$src"/wheels/*.whl \
      >/dev/null && export PYTHONPATH=$pkgs/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
fi
base_path=${PYTHONPATH:-}
export TRITON_CACHE_AUTOTUNING=1  # autotuned configs shared by the run's workers, not retuned in each
common=(--device "$device" --workers "$workers" --examples "$examples" --checks "${CHECKS:-accuracy,contract,poisoned}")
[ -n "${LOAD:-}" ] && common+=(--load "$LOAD")

# ---- the plan: one line per run, "name limit kernels dtypes [PYTHONPATH prefix]" ---------------------
plan=()
for dir in "$src"/fa-*; do
  [ -f "$dir/flash_attn/ops/triton/layer_norm.py" ] || continue
  ver=${dir##*/fa-}
  pkg=$pkgs/fa-$ver
  if [ "$dry" != 1 ]; then
    rm -rf "$pkg"; mkdir -p "$pkg"; cp -r "$dir/flash_attn" "$pkg/"
    for d in flash_attn flash_attn/ops flash_attn/ops/triton flash_attn/utils; do
      [ -d "$pkg/$d" ] && touch "$pkg/$d/__init__.py"
    done
  fi
  plan+=("flash-attn-$ver ${FA_LIMIT:-95} ${FA_KERNELS:-flash_attn_*} ${FA_DTYPES:-fp32,bf16} $pkg")
done
for dir in "$src"/unsloth-*; do
  [ -f "$dir/unsloth/kernels/rms_layernorm.py" ] || continue
  ver=${dir##*/unsloth-}
  pkg=$pkgs/unsloth-$ver
  if [ "$dry" != 1 ]; then
    PYTHONPATH=$base_path "$py" "$here/field_pkg.py" build "$dir" "$pkg" > "$out/unsloth-$ver.stand-ins.txt" || exit 3
  fi
  plan+=("unsloth-$ver ${UNSLOTH_LIMIT:-50} ${UNSLOTH_KERNELS:-unsloth_*} ${UNSLOTH_DTYPES:-fp32,bf16,fp16,bf16/fp32} $pkg")
done
if [ "$dry" = 1 ] || "$py" -c "import liger_kernel" 2>/dev/null; then
  plan+=("liger-fn ${LIGER_LIMIT:-50} ${LIGER_KERNELS:-liger_fn_*} ${LIGER_DTYPES:-bf16,fp16}")
fi
if [ "$dry" = 1 ] || "$py" -c "import transformers" 2>/dev/null; then
  plan+=("transformers ${HF_LIMIT:-40} ${HF_KERNELS:-transformers_*} ${HF_DTYPES:-fp32,bf16,fp16,bf16/fp32}")
fi
if [ "$dry" != 1 ] && "$py" -c "import quack.rmsnorm" 2>/dev/null; then
  plan+=("quack ${QUACK_LIMIT:-90} ${QUACK_KERNELS:-quack_*} ${QUACK_DTYPES:-fp32,bf16,fp16,bf16/fp32}")
fi

summary() {  # the verdicts of the results files given, per kernel and check; all failing cases' replays
  "$py" - "$@" <<'PY'
import collections, json, os, sys
MAX = int(os.environ.get("REPLAYS", "3"))  # replay commands printed per kernel and check (all in failures.txt)
fails = []
for path in sys.argv[1:]:
    try:
        lines = [json.loads(l) for l in open(path) if l.strip()]
    except (OSError, ValueError) as e:
        print(f"{os.path.basename(path)}: unreadable ({e})")
        continue
    res = [l for l in lines if l.get("type") == "result"]
    secs = sum(l.get("duration_s", 0) or 0 for l in res)
    comp = sum(l.get("compile_s", 0) or 0 for l in res)
    print(f"\n{os.path.basename(path)}: {len(res)} cases, {dict(collections.Counter(l['verdict'] for l in res))}, "
          f"{secs:.0f} worker-s ({comp:.0f} s compiling)")
    by = collections.defaultdict(list)
    for l in res:
        by[(l["kernel"], l["check"])].append(l)
    for (kernel, check), ls in sorted(by.items()):
        v = collections.Counter(l["verdict"] for l in ls)
        bad = sorted((l for l in ls if l["verdict"] in ("fail", "error")),
                     key=lambda l: (l["verdict"] != "fail", len(l.get("case", ""))))
        verdict = "FAIL" if v["fail"] else "ERROR" if v["error"] else "pass" if v["pass"] else "-"
        print(f"  {verdict:5s} {kernel:38s} {check:10s} {' '.join(f'{k} {n}' for k, n in sorted(v.items()))}")
        for b in bad[:MAX]:
            print(f"        {b['verdict']}: {b.get('reason', '')[:240]}")
            print(f"        replay: {b.get('replay', '')}")
        if len(bad) > MAX:
            print(f"        ... {len(bad) - MAX} more in failures.txt")
        fails += [f"{os.path.basename(path)}\t{b['verdict']}\t{b.get('replay', '')}\t{b.get('reason', '')}" for b in bad]
if os.environ.get("FAILURES"):
    with open(os.environ["FAILURES"], "w") as f:
        f.write("".join(x + "\n" for x in fails))
PY
}

run() {  # name limit kernels dtypes [PYTHONPATH prefix]
  local name=$1 limit=$2 kernels=$3 dtypes=$4 prefix=${5:-} start rc
  local path="$prefix${prefix:+${base_path:+:}}$base_path"
  if [ "$dry" = 1 ]; then
    echo "PYTHONPATH=$path timeout -s TERM $limit normgate run ${common[*]} --kernels '$kernels' --dtypes $dtypes --out $out/$name.jsonl"
    return 0
  fi
  start=$(date +%s)
  PYTHONPATH=$path timeout -s TERM "$limit" normgate run "${common[@]}" \
    --kernels "$kernels" --dtypes "$dtypes" --out "$out/$name.jsonl" > "$out/$name.log" 2>&1
  rc=$?
  { echo "== $name: rc $rc, $(( $(date +%s) - start )) s of $limit"; tail -3 "$out/$name.log"
    [ -s "$out/$name.jsonl" ] && REPLAYS=1 summary "$out/$name.jsonl"; } > "$out/$name.summary.txt" 2>&1
  cat "$out/$name.summary.txt"
  [ -s "$out/$name.jsonl" ] && gzip -kf "$out/$name.jsonl"
}

echo "field-check: ${#plan[@]} runs of $workers workers, --examples $examples on $device"
for line in "${plan[@]}"; do
  read -r name limit kernels dtypes prefix <<< "$line"
  # shellcheck disable=SC2053  # ONLY is a glob
  [[ $name == ${ONLY:-*} ]] && run "$name" "$limit" "$kernels" "$dtypes" "$prefix"
done
[ "$dry" = 1 ] && exit 0
echo; echo "==== verdicts, every run ($out/failures.txt has every failing case)"
FAILURES="$out/failures.txt" summary "$out"/*.jsonl > "$out/verdicts.txt"
cat "$out/verdicts.txt"
