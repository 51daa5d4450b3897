#!/usr/bin/env bash
# Issue #18, cascade: the runs of docs/RESULTS.md "Training: cascade at equal cost (issue #18)", seeds 0-2:
# the three statics, configs/cascade.toml (mini-bag F-score reward with marginal credit, lambda 0.97) and
# configs/cascade_per_example.toml (per-example reward, lambda 0.97), plus the per-example reward at
# lambda 0.9 and 0.99; two trainings at a time, niced. About 25-40 min on an idle 2-core machine.
# Then: PYTHONPATH=<matplotlib> python3 scripts/cascade_issue18.py --write (designs.json + the plot).
# (The exploratory runs of the table, other lambdas and the conv-gate variant, are not repeated here.)
set -euo pipefail
cd "$(dirname "$0")/.."
D2NN=${D2NN:-target/release/d2nn}
R=runs/i18k
mkdir -p $R
static() { nice -n 19 "$D2NN" train --config "configs/static_cascade_$1.toml" --set seed="$2" --workers 1 --quiet \
  --run-dir "$R/static_$1_seed$2"; }
sweep() { # config lambda run-name seed [--set ...]
  local config=$1 lambda=$2 name=$3 seed=$4
  shift 4
  nice -n 19 "$D2NN" sweep --config "$config" --no-baselines --jobs 1 --lambdas "$lambda" --set seed="$seed" "$@" \
    --run-dir "$R/${name}_l${lambda}_seed$seed"
}
perex=(--set train.bag_size=1 --set train.accuracy=per_example --set train.bag_credit=bag)
for seed in 0 1 2; do
  (static stage1 "$seed"; static stage12 "$seed"; static full "$seed") &
  sweep configs/cascade.toml 0.97 hg_marg "$seed"
  wait
  sweep configs/cascade_per_example.toml 0.97 hg_perex "$seed" &
  sweep configs/cascade.toml 0.9 hg_perex "$seed" "${perex[@]}"
  wait
  sweep configs/cascade.toml 0.99 hg_perex "$seed" "${perex[@]}"
done
