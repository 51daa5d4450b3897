#!/usr/bin/env bash
# Runtime scaling (issue #5) on a lent machine's idle CPU cores. No GPU is used and no Rust toolchain
# is needed there: the CPU release binary is built on the development machine
#   cargo build --release -p d2nn-coordinator && cp target/release/d2nn .dev/cpu/
# and carried along with data/ and .dev/cpu/lib (plotters' system libraries, which the image lacks).
# The binary's RUNPATH names the build machine's venv (RUNPATH_SITE), which is pointed here at this
# machine's site-packages, whose PyTorch 2.11 carries the same libtorch_cpu and libc10.
# Writes the JSON lines of each benchmark and the machine's topology to $OUT.
#   CORES=2,3   confine the whole process to these cores (taskset), so no thread migrates beyond them
#   B128=0      skip the 128-examples-per-worker rounds
set -u
CORES=${CORES:-}
B128=${B128:-1}
OUT=${OUT:-/tmp/runtime_scaling_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/runtime_scaling.log") 2>&1

# shellcheck source=scripts/device/lent_env.sh
source scripts/device/lent_env.sh .dev/cpu/lib
D=.dev/cpu/d2nn
[ -n "$CORES" ] && D="taskset -c $CORES $D" && echo "confined to cores $CORES"
date -u
lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA node0|L3)'
uptime

echo "== 64 examples per worker, 5 rounds"
timeout 260 $D bench runtime --rounds 5 2>&1 | tee "$OUT/bench_runtime_b64.log" | grep '^{' \
  > "$OUT/bench_runtime_b64.jsonl"
tail -3 "$OUT/bench_runtime_b64.jsonl"
[ "$B128" = 1 ] || exit 0
echo "== 128 examples per worker, 3 rounds"
timeout 220 $D bench runtime --rounds 3 --batch 128 2>&1 | tee "$OUT/bench_runtime_b128.log" | grep '^{' \
  > "$OUT/bench_runtime_b128.jsonl"
tail -3 "$OUT/bench_runtime_b128.jsonl"
date -u
