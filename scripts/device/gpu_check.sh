#!/usr/bin/env bash
# GPU checks and GPU-side experiments on a lent GPU machine that has PyTorch 2.11.0+cu130 but no
# Rust toolchain and no network. It runs binaries built elsewhere with the `cuda` feature:
#   cargo build --release --features cuda -p d2nn-coordinator
#   cargo test --release --features cuda -p d2nn-worker --no-run
# copied into .dev/ (d2nn, worker-tests), with data/fashion-mnist beside the checkout.
# Their RUNPATH names the build machine's venv, which lent_env.sh points at this
# machine's site-packages; libnccl.so is linked next to libtorch as scripts/setup.sh --cuda does.
# Writes logs and a tarball of the run directories to $OUT.
set -u
OUT=${OUT:-/tmp/gpu_check_out}
LIMIT=${LIMIT:-360}
mkdir -p "$OUT" runs
exec > >(tee "$OUT/gpu_check.log") 2>&1

# shellcheck source=scripts/device/lent_env.sh
source scripts/device/lent_env.sh .dev/lib
echo "site-packages $SITE; nccl $NCCL"
nvidia-smi -L
nproc
D=.dev/d2nn

echo "== d2nn doctor"
$D doctor --require-gpu

echo "== NCCL and device-buffer tests"
[ -x .dev/worker-tests ] && .dev/worker-tests --test-threads=1 --nocapture collective flat 2>&1 | tail -25

echo "== smoke: 60 steps high_low on cuda:0 and on the CPU (16 threads)"
gpu_ok=0
t0=$SECONDS
$D train --config configs/high_low.toml --device cuda:0 --workers 1 --max-steps 60 --quiet --run-dir /tmp/smoke_gpu \
  && gpu_ok=1
echo "gpu smoke $((SECONDS - t0)) s"; t0=$SECONDS
$D train --config configs/high_low.toml --device cpu --workers 1 --max-steps 60 --quiet --run-dir /tmp/smoke_cpu
echo "cpu smoke $((SECONDS - t0)) s"
grep -h examples_per_sec /tmp/smoke_gpu/summary.json /tmp/smoke_cpu/summary.json
echo "== runtime scaling on an idle 16-core CPU (1 thread per worker)"
$D bench runtime --rounds 5 --steps 40 2>&1 | grep '^{'

DEV=cpu
[ "$gpu_ok" = 1 ] && DEV=cuda:0
echo "experiments on $DEV"

echo "== the main job on the GPU (background), and the sweeps"
( $D train --config configs/high_low.toml --device cuda:0 --workers 1 --quiet --run-dir runs/gpu_high_low \
    && $D eval --run-dir runs/gpu_high_low --device cpu ) > "$OUT/gpu_high_low.log" 2>&1 &
sweep() { # name, args...
  local name=$1; shift
  timeout "$LIMIT" $D sweep --device "$DEV" --run-dir "runs/$name" "$@" > "runs/$name.log" 2>&1
  echo "$name exit $?"
}
sweep sweep_chain --config configs/chain.toml --jobs 4 &
sweep sweep_hierarchical --config configs/hierarchical.toml --jobs 4 &
sweep sweep_cascade_bag32 --config configs/cascade.toml --jobs 3 &
sweep sweep_cascade_bag1 --config configs/cascade.toml --no-baselines --jobs 2 \
  --set train.bag_size=1 --set train.accuracy=per_example &
sweep sweep_high_low_reinforce --config configs/high_low.toml --no-baselines --jobs 2 \
  --lambdas 0.97,0.98,0.99 --set train.algorithm=reinforce &
wait
tail -12 runs/*.log
tar czf "$OUT/runs.tgz" runs
ls -la "$OUT"
