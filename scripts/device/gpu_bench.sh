#!/usr/bin/env bash
# Issue #19's GPU targets on a lent GPU machine, measured side by side in interleaved rounds:
#   1. training at batch 128: `d2nn bench train --device cuda:0` against the PyTorch eager reference
#      (scripts/reference/torch_high_low.py --device cuda) on the same GPU;
#   2. training at batch 1024: the GPU against the same host's CPU at 16 threads;
#   3. host synchronisations per step of every design on the GPU (routing by its policy).
# Binaries as scripts/device/gpu_check.sh says (.dev/d2nn built with `--features cuda`), data/ beside
# the checkout. JSON lines to $OUT/gpu_bench.jsonl; the table of medians and ratios at the end.
#   ROUNDS=3 STEPS=300 scripts/device/gpu_bench.sh      # defaults; run under `timeout` on a lent machine
set -u
OUT=${OUT:-/tmp/gpu_bench_out}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-300}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_bench.log") 2>&1
# shellcheck source=scripts/device/lent_env.sh
source scripts/device/lent_env.sh .dev/lib
nvidia-smi -L
nproc
D=.dev/d2nn
REF=scripts/reference/torch_high_low.py
J=$OUT/gpu_bench.jsonl
: > "$J"
# Runs a command and keeps its measurement lines, each tagged with $1 (inner keys of a JSON object;
# `pass`, since `d2nn bench train` has a `round` of its own).
keep() {
  local tags=$1; shift
  "$@" 2>>"$OUT/stderr.log" | grep '"impl"' | sed "s/^{/{$tags,/" | tee -a "$J"
}
train=(bench train --set train.algorithm=reinforce --routing random)
for round in $(seq "$ROUNDS"); do
  r="\"pass\":$round"
  keep "$r" $D "${train[@]}" --device cuda:0 --batch 128 --steps "$STEPS"
  keep "$r" python3 "$REF" --device cuda --batch 128 --steps "$STEPS"
  keep "$r" $D "${train[@]}" --device cuda:0 --batch 1024 --steps $((STEPS / 3))
  keep "$r" $D "${train[@]}" --device cpu --threads 16 --batch 1024 --steps $((STEPS / 3))
  keep "$r" python3 "$REF" --device cuda --batch 1024 --steps $((STEPS / 3))
done
for design in high_low chain hierarchical cascade; do
  keep '"pass":0' $D bench train --config "configs/$design.toml" --routing policy --device cuda:0 --steps 20 --warmup 2
done
python3 - "$J" <<'PY'
import json, statistics, sys

lines = [json.loads(l) for l in open(sys.argv[1])]
def median(impl, device, batch, key="examples_per_sec"):
    xs = [l[key] for l in lines if l["pass"] > 0 and l["impl"] == impl and l["device"].startswith(device) and l["batch"] == batch]
    return statistics.median(xs) if xs else float("nan")
g128, p128 = median("d2nn", "cuda", 128), median("pytorch_eager", "cuda", 128)
g1024, c1024, p1024 = median("d2nn", "cuda", 1024), median("d2nn", "cpu", 1024), median("pytorch_eager", "cuda", 1024)
print("| measurement | d2nn | other | ratio | target |\n|---|---|---|---|---|")
print(f"| GPU training, batch 128, examples/s, vs PyTorch eager on the GPU | {g128:,.0f} | {p128:,.0f} | {g128 / p128:.2f} | >= 1.5 |")
print(f"| GPU training, batch 1024, vs the host's CPU at 16 threads | {g1024:,.0f} | {c1024:,.0f} | {g1024 / c1024:.2f} | >= 5 |")
print(f"| GPU training, batch 1024, vs PyTorch eager on the GPU | {g1024:,.0f} | {p1024:,.0f} | {g1024 / p1024:.2f} | |")
for l in lines:
    if l["pass"] == 0:
        print(f"| host synchronisations per step, {l['config']} (policy routing) | {l['host_syncs_per_step']} | | | <= 2 |")
PY
