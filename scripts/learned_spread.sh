#!/usr/bin/env bash
# The spread of what the tests' small training runs learn, across seeds, libtorch kernel paths
# (ATEN_CPU_CAPABILITY) and thread counts: the measurements behind the thresholds of the tests that
# assert a learned value (common/src/train/tests.rs, tests/cluster.rs). One JSON line per run, then the
# min–max per test. Seeds $SEEDS (default 0 1 2 3 4) on this CPU's widest kernels with 2 threads; seed 0
# also under `default` with 1 thread and `avx2` with 2.
#
#   scripts/learned_spread.sh [OUT.jsonl]   after scripts/setup.sh (uses target/release/d2nn);
#                                           OUT defaults to learned_spread.jsonl, written as runs finish
#
# The same slices, batches, epochs and warm-up as the tests, run through `d2nn train` with one worker
# (which reproduces the tests' local loop bit for bit on one machine).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-learned_spread.jsonl}
BIN=target/release/d2nn
[ -x "$BIN" ] || { echo "learned_spread.sh: $BIN missing: run scripts/setup.sh first" >&2; exit 2; }
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
touch "$OUT"  # runs already in OUT are skipped, so an interrupted measurement continues

# Presets: the tests' slices (train/test limits, batch, epochs, warm-up, ε decay).
HL=configs/high_low.toml
UNEQUAL=common/src/train/testdata/unequal_branches.toml
lambda_test() { # λ=0 and λ=1 in lambda_trades_accuracy_for_cost
  echo --set data.train_limit=2048 --set data.test_limit=500 --set train.batch_size=64 \
    --set train.eval_batch_size=500 --set train.log_every=10 --set train.epochs=3 \
    --set train.warmup_steps=30 --set train.epsilon.decay_steps=30
}
algorithm_test() { # q_learning_and_reinforce_lift_accuracy_well_above_chance
  echo --set data.train_limit=3072 --set data.test_limit=1000 --set train.batch_size=64 \
    --set train.eval_batch_size=500 --set train.log_every=10 --set train.epochs=2 --set train.warmup_steps=20
}
cluster_test() { # tests/cluster.rs SLICE (3 workers there; the accuracy bound is the same property)
  echo --set data.train_limit=960 --set data.test_limit=300 --set train.batch_size=48 \
    --set train.epochs=2 --set train.log_every=2
}

one() { # name config cap threads seed workers preset-args...
  local name=$1 config=$2 cap=$3 threads=$4 seed=$5 workers=$6
  shift 6
  grep -q "\"test\": \"$name\", \"cap\": \"$cap\", \"threads\": $threads, \"seed\": $seed," "$OUT" && return
  local dir="$SCRATCH/run"
  rm -rf "$dir"
  ATEN_CPU_CAPABILITY=$cap OMP_NUM_THREADS=$threads "$BIN" train --config "$config" --quiet \
    --run-dir "$dir" --workers "$workers" --set seed="$seed" "$@" > /dev/null 2> "$SCRATCH/err" \
    || { cat "$SCRATCH/err" >&2; exit 1; }
  python3 - "$dir/summary.json" "$name" "$cap" "$threads" "$seed" <<'EOF' | tee -a "$OUT"
import json, sys
s = json.load(open(sys.argv[1]))
rates = s.get("action_rates", {}).get("router", [None, None])
print(json.dumps({"test": sys.argv[2], "cap": sys.argv[3], "threads": int(sys.argv[4]), "seed": int(sys.argv[5]),
                  "accuracy": s["test_accuracy"], "cost": s["mean_cost_fraction"], "high_rate": rates[1]}))
EOF
}

case_set() { # cap threads seed
  one lambda1 "$UNEQUAL" "$1" "$2" "$3" 1 $(lambda_test) --set train.lambda=1.0
  one q_learning "$HL" "$1" "$2" "$3" 1 $(algorithm_test) --set train.algorithm=q_learning
  one reinforce "$HL" "$1" "$2" "$3" 1 $(algorithm_test) --set train.algorithm=reinforce
  one cluster3 "$HL" "$1" "$2" "$3" 3 $(cluster_test)
}

# λ = 0 rewards cost alone; its router is the certain half of the λ test, measured once per kernel path.
NATIVE=$(grep -q avx512f /proc/cpuinfo && echo avx512 || echo avx2)
SEEDS=${SEEDS:-0 1 2 3 4}
for seed in $SEEDS; do case_set "$NATIVE" 2 "$seed"; done
# The λ = 1 run of the test before issue #17, on high_low's two similar branches: a coin toss of the seed.
for seed in 0 1; do one lambda1_high_low "$HL" "$NATIVE" 2 "$seed" 1 $(lambda_test) --set train.lambda=1.0; done
for run in "default 1" "avx2 2"; do
  read -r cap threads <<< "$run"
  one lambda0 "$UNEQUAL" "$cap" "$threads" 0 1 $(lambda_test) --set train.lambda=0.0
  case_set "$cap" "$threads" 0
done
python3 - "$OUT" <<'EOF'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
by = collections.defaultdict(list)
for r in rows: by[r["test"]].append(r)
for t, rs in by.items():
    def span(k):
        v = [r[k] for r in rs if r[k] is not None]
        return f"{k} {min(v):.4f}–{max(v):.4f}" if v else f"{k} –"
    print(f"{t:11s} runs {len(rs):2d}  " + "  ".join(span(k) for k in ("accuracy", "cost", "high_rate")))
EOF
