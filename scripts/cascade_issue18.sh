#!/usr/bin/env bash
# Issue #18, cascade: the whole table of docs/RESULTS.md "Training: cascade at equal cost (issue #18)".
# Three statics x 3 seeds, the shipped D2NN (configs/cascade.toml: Q-learning, bag 32, F1 reward with
# marginal credit) and the per-example-reward comparison, seeds 0-2; two trainings at a time, niced.
# Then: PYTHONPATH=/tmp/mpl python3 scripts/cascade_issue18.py --write (designs.json + the plot).
# D2NN=path/to/d2nn (default target/release/d2nn); LAMBDA and LAMBDA_PEREX as in the RESULTS table.
set -euo pipefail
cd "$(dirname "$0")/.."
D2NN=${D2NN:-target/release/d2nn}
LAMBDA=${LAMBDA:-0.6}
LAMBDA_PEREX=${LAMBDA_PEREX:-0.9}
R=runs/i18k
mkdir -p $R
static() { nice -n 19 "$D2NN" train --config "configs/static_cascade_$1.toml" --set seed="$2" --workers 1 --quiet \
  --run-dir "$R/static_$1_seed$2"; }
d2nn() { nice -n 19 "$D2NN" sweep --config configs/cascade.toml --no-baselines --jobs 1 --lambdas "$LAMBDA" \
  --set seed="$1" --run-dir "$R/hg_marg_l${LAMBDA}_seed$1"; }
perex() { nice -n 19 "$D2NN" sweep --config configs/cascade.toml --no-baselines --jobs 1 --lambdas "$LAMBDA_PEREX" \
  --set seed="$1" --set train.bag_size=1 --set train.accuracy=per_example --set train.bag_credit=bag \
  --run-dir "$R/hg_perex_l${LAMBDA_PEREX}_seed$1"; }
for seed in 0 1 2; do
  (static stage1 $seed; static stage12 $seed; static full $seed) &
  d2nn $seed
  wait
  perex $seed
done
