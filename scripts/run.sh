#!/usr/bin/env bash
# The main job: set everything up, then train the default D2NN (high-low capacity on Fashion-MNIST)
# on the embedded in-process cluster and print its test accuracy and mean cost.
# Extra arguments go to `d2nn train`, e.g. scripts/run.sh --max-steps 200.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec target/release/d2nn train --config configs/high_low.toml --run-dir runs/high_low "$@"
