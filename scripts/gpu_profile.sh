#!/usr/bin/env bash
# On the GPU machine: Nsight Compute on one marlin_matmul launch per shape,
# a few sections (speed of light, warp stalls, issue, instructions, memory),
# clocks left alone. Reports go to OUT/ncu-KxN-mM.txt, a summary to stdout.
# Usage: OUT=dir bash scripts/gpu_profile.sh path/to/marlin-bench KxN:m [KxN:m ...]
set -uo pipefail
out=${OUT:-/tmp/marlin-out}; mkdir -p "$out"
bench=$1; shift
ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -n "$ncu_bin" ] || { echo "gpu_profile: ncu not found"; exit 1; }
for spec in "$@"; do
  shape=${spec%%:*}; m=${spec##*:}
  report=$out/ncu-$shape-m$m.txt
  # Skip the warm-up and calibration launches; profile one timed launch.
  "$ncu_bin" --clock-control none -k regex:marlin_gemm --launch-skip 12 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats \
    --section MemoryWorkloadAnalysis --section LaunchStats \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
    "$bench" --shape "$shape" --m "$m" --trials 5 >"$report" 2>&1
  echo "== $shape m=$m (rc=$?)"
  grep -E "Duration|DRAM Throughput|Memory Throughput|Issue Slots Busy|Issued Ipc Active|No Eligible|Warp Cycles Per Issued|Stall|Executed Instructions  |Registers Per|Grid Size|Block Limit" "$report" | head -30
  grep -E "issue_stalled" "$report" | awk '$NF+0 > 0.05' | sort -k3 -g -r | head -8
done
# With SOURCE=1: per-instruction stall sampling of the same launches (needs
# python3 there): OUT/hot-KxN-mM.txt lists where warps wait.
if [ "${SOURCE:-0}" = 1 ]; then
  for spec in "$@"; do
    shape=${spec%%:*}; m=${spec##*:}
    "$ncu_bin" --clock-control none -k regex:marlin_gemm --launch-skip 12 --launch-count 1 \
      --section SourceCounters --section WarpStateStats -f -o /tmp/src-$shape-m$m \
      "$bench" --shape "$shape" --m "$m" --trials 5 >/dev/null 2>&1
    "$ncu_bin" -i /tmp/src-$shape-m$m.ncu-rep --page source --csv --print-source sass >/tmp/src-$shape-m$m.csv 2>&1
    python3 "$(dirname "$0")/stall_hotspots.py" /tmp/src-$shape-m$m.csv 40 >"$out/hot-$shape-m$m.txt" 2>&1
    echo "== hotspots $shape m=$m"; head -16 "$out/hot-$shape-m$m.txt"
  done
fi
