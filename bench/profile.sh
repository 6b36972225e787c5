#!/usr/bin/env bash
# Where our kernels lose to a peer, on the GPU machine: a config sweep with register and spill
# counts (bench/tune.py --sweep-only), then Nsight Compute counters of ours and the peer for each
# case in CASES ("kernel op N pass [M]", M = 16384 unless given). Everything lands in $OUT.
#   OUT=/tmp/p NS=16384,32768 bash bench/profile.sh
# NCU_CACHE=none TARGET_ARGS=--clear-l2: each step after a 256 MB write, L2 left as that write leaves
# it (do_bench's clearing, as the benchmark's timings start), instead of flushed by the profiler.
set -uo pipefail
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
source "$(dirname "$0")/../scripts/carried-wheels.sh"  # its default cases profile Liger-Kernel too
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/profile-gpu.txt"
timeout "${TUNE_S:-240}" python3 bench/tune.py --out "$OUT" --ns "${NS:-16384,32768}" --sweep-only 2>&1 | tee "$OUT/profile-tune.log"
METRICS=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum
METRICS+=,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread,launch__grid_size
METRICS+=,launch__block_size,launch__occupancy_limit_registers,sm__warps_active.avg.pct_of_peak_sustained_active
METRICS+=,l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum,l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum
METRICS+=,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio
METRICS+=,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio
CASES=${CASES:-"normgate rmsnorm 32768 forward;torch_compile rmsnorm 32768 forward;normgate rmsnorm 16384 forward_backward;liger rmsnorm 16384 forward_backward"}
IFS=';' read -ra cases <<< "$CASES"
for c in "${cases[@]}"; do
  read -r kernel op n pass m <<< "$c"
  m=${m:-16384}
  name="$kernel-$op-$n-$pass"
  [ "$m" = 16384 ] || name="$name-m$m"
  # every launch of two steps (the first compiles; the second is the one to read); torch.compile's
  # generated kernels (its source, the autotuned configs) go to the .err file
  TORCH_LOGS=${TORCH_LOGS:-output_code} timeout 120 ncu --clock-control none --cache-control "${NCU_CACHE:-all}" --metrics "$METRICS" --csv \
    python3 bench/ncu_target.py "$kernel" "$op" "$n" "$pass" --m "$m" --repeat 2 ${TARGET_ARGS:-} > "$OUT/ncu-$name.csv" 2> "$OUT/ncu-$name.err"
  echo "ncu $c: rc $?"
done
python3 bench/ncu_summary.py "$OUT"/ncu-*.csv | tee "$OUT/ncu-summary.txt"
