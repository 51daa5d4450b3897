#!/usr/bin/env bash
# Training throughput of 2 worker processes (d2nn coordinator + 2 d2nn worker, TCP ring on
# loopback) against 2 in-process workers (shared memory), same config, batch and threads (the
# in-process default, half the cores each, given to the worker processes with --threads), in
# interleaved rounds. Prints one JSON line per round and one with the medians.
# Usage: scripts/bench_cluster.sh [STEPS=60] [ROUNDS=3] [CONFIG=configs/high_low.toml]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-60}
ROUNDS=${2:-3}
CONFIG=${3:-configs/high_low.toml}
D=target/release/d2nn
[ -x "$D" ] || { echo "build first: cargo build --release" >&2; exit 1; }
THREADS=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; kill $(jobs -p) 2>/dev/null || true' EXIT
export D2NN_CLUSTER_COOKIE=bench-cluster-cookie-$$-0123456789
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rate() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["examples_per_sec"])' "$1/summary.json"; }

for r in $(seq 1 "$ROUNDS"); do
  "$D" train --config "$CONFIG" --workers 2 --max-steps "$STEPS" --quiet --run-dir "$WORK/inproc$r" >/dev/null 2>&1
  p=$(port)
  "$D" coordinator --config "$CONFIG" --workers 2 --listen "127.0.0.1:$p" --max-steps "$STEPS" --quiet \
    --run-dir "$WORK/procs$r" >/dev/null 2>"$WORK/coord$r.err" &
  coord=$!
  for w in 1 2; do "$D" worker --join "127.0.0.1:$p" --threads "$THREADS" >/dev/null 2>&1 & done
  wait "$coord" || { cat "$WORK/coord$r.err" >&2; exit 1; }
  wait
  a=$(rate "$WORK/inproc$r"); b=$(rate "$WORK/procs$r")
  python3 -c 'import json, sys
a, b = float(sys.argv[1]), float(sys.argv[2])
print(json.dumps({"round": int(sys.argv[3]), "threads_per_worker": int(sys.argv[4]), "in_process_ex_per_s": round(a, 1),
                  "processes_ex_per_s": round(b, 1), "processes_over_in_process": round(b / a, 3)}))' "$a" "$b" "$r" "$THREADS"
  echo "$a $b" >> "$WORK/rates"
done
python3 - "$WORK/rates" "$STEPS" <<'PY'
import json, statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
a = statistics.median(r[0] for r in rows); b = statistics.median(r[1] for r in rows)
print(json.dumps({"median_in_process_ex_per_s": round(a, 1), "median_processes_ex_per_s": round(b, 1),
                  "median_ratio": round(statistics.median(r[1] / r[0] for r in rows), 3),
                  "rounds": len(rows), "steps": int(sys.argv[2])}))
PY
