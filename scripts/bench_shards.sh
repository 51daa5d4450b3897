#!/usr/bin/env bash
# Issue #23's two measurements, side by side in one run, with a coordinator and two `d2nn worker`
# processes on 127.0.0.1 (high_low, batch 128, one libtorch thread per worker):
#   source   data.source = local (each worker reads its copy) against coordinator (the examples' bytes
#            travel with every step's order); both workers pinned to their own core.
#   balance  worker 1 shares its core with a busy loop (about half speed): train.balance = equal
#            against throughput.
# Prints one JSON line per run (examples/s of the steps, from summary.json) and the medians' ratios.
#
#   scripts/bench_shards.sh [ROUNDS] [STEPS]     (defaults 3 rounds, 150 steps; needs scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
STEPS=${2:-150}
BIN=${D2NN_BIN:-target/release/d2nn}
[ -x "$BIN" ] || { echo "bench_shards.sh: $BIN not built (scripts/setup.sh)" >&2; exit 2; }
[ "$(nproc)" -ge 2 ] || { echo "bench_shards.sh: needs 2 cores to pin the workers apart" >&2; exit 2; }
export D2NN_CLUSTER_COOKIE=bench-shards-cookie-0123456789
work=$(mktemp -d)
hog=
cleanup() { [ -n "$hog" ] && kill "$hog" 2>/dev/null; jobs -p | xargs -r kill 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# run NAME [--set ...]: one coordinator and two workers; prints the run's examples/s.
run() {
  local name=$1 port dir=$work/$1-$RANDOM
  shift
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$BIN" coordinator --config configs/high_low.toml --workers 2 --listen "127.0.0.1:$port" --quiet \
    --run-dir "$dir" --max-steps "$STEPS" --set data.test_limit=1000 "$@" > "$dir.coord.out" 2> "$dir.coord.err" &
  local coord=$!
  taskset -c 0 "$BIN" worker --join "127.0.0.1:$port" --threads 1 > /dev/null 2> "$dir.w0.err" &
  local w0=$!
  taskset -c 1 "$BIN" worker --join "127.0.0.1:$port" --threads 1 > /dev/null 2> "$dir.w1.err" &
  local w1=$!
  wait "$coord" || { echo "bench_shards.sh: $name failed:" >&2; tail -5 "$dir.coord.err" >&2; exit 1; }
  wait "$w0" "$w1" || true
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["examples_per_sec"])' "$dir/summary.json"
}

declare -A rates
record() {
  local key=$1 value=$2
  rates[$key]="${rates[$key]:-} $value"
  printf '{"case": "%s", "round": %d, "examples_per_sec": %.1f}\n' "$key" "$round" "$value"
}
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

for round in $(seq 1 "$ROUNDS"); do
  record source_local "$(run local)"
  record source_coordinator "$(run coordinator --set data.source=coordinator)"
  taskset -c 1 bash -c 'while :; do :; done' &
  hog=$!
  record balance_equal "$(run equal)"
  record balance_throughput "$(run throughput --set train.balance=throughput)"
  kill "$hog"
  wait "$hog" 2>/dev/null || true
  hog=
done
for key in source_local source_coordinator balance_equal balance_throughput; do
  printf '{"case": "%s", "median_examples_per_sec": %.1f}\n' "$key" "$(median "${rates[$key]}")"
done
python3 - "$(median "${rates[source_coordinator]}")" "$(median "${rates[source_local]}")" \
  "$(median "${rates[balance_throughput]}")" "$(median "${rates[balance_equal]}")" <<'EOF'
import sys
c, l, t, e = map(float, sys.argv[1:])
print(f'{{"coordinator_over_local": {c / l:.3f}, "throughput_over_equal": {t / e:.3f}}}')
EOF
