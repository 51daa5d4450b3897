#!/bin/bash
# d2nn against PyTorch eager on the same libtorch (issue 19): the high_low network of
# configs/high_low.toml and the same training step (REINFORCE, uniformly random routing, batch 128),
# measured side by side in interleaved rounds on this machine; JSON lines on stdout, a table of
# medians and ratios on stderr.
#
#   python3 -m venv .venv-reference && .venv-reference/bin/pip install torch==2.11.0 numpy   # once, ~4.6 GB
#   scripts/bench_vs_pytorch.sh [ROUNDS] [STEPS] > bench.jsonl
#   scripts/bench_vs_pytorch.sh --table bench.jsonl               # the table again, from saved lines
#
# Nothing else should run meanwhile: both sides use every core they are given.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3
STEPS=300
[ "${1:-}" = --table ] || { ROUNDS=${1:-3}; STEPS=${2:-300}; }
D2NN=${D2NN:-target/release/d2nn}
PY=${PY:-.venv-reference/bin/python}
REF=scripts/reference/torch_high_low.py
[ -x "$D2NN" ] || { echo "no $D2NN: run scripts/setup.sh first" >&2; exit 2; }
"$PY" -c "import torch" 2>/dev/null || { echo "no PyTorch at $PY: see the comment at the top of $0" >&2; exit 2; }
export PYTHONWARNINGS=ignore

# Adds the keys of the JSON object $1 to every JSON line of stdin.
tag() {
  python3 -c "import json, sys
for l in sys.stdin:
    if l.startswith('{'):
        print(json.dumps({**json.loads(l), **json.loads(sys.argv[1])}), flush=True)" "$1"
}

measure() {
  for round in $(seq "$ROUNDS"); do
    for threads in 1 2; do
      "$D2NN" bench train --set train.algorithm=reinforce --threads "$threads" --steps "$STEPS" 2>/dev/null \
        | grep '"impl"' | tag "{\"bench\":\"train\",\"round\":$round}"
      "$PY" "$REF" --threads "$threads" --steps "$STEPS" 2>/dev/null | tag "{\"bench\":\"train\",\"round\":$round}"
    done
    # Two workers of one thread, 64 examples each per step: the in-process runtime against DDP/gloo.
    OMP_NUM_THREADS=1 "$D2NN" bench runtime --set train.algorithm=reinforce --batch 64 --steps $((STEPS / 2)) --rounds 1 \
      2>/dev/null | grep '"round"' | tag "{\"bench\":\"two_workers\",\"impl\":\"d2nn\",\"round\":$round}"
    "$PY" "$REF" --mode ddp --world 2 --threads 1 --batch 64 --steps $((STEPS / 2)) 2>/dev/null \
      | tag "{\"bench\":\"two_workers\",\"round\":$round}"
    # Inference forwards, batch 256, one thread: d2nn bench exec's routing fractions and PyTorch's.
    OMP_NUM_THREADS=1 "$D2NN" bench exec --batch 256 --reps 20 2>/dev/null \
      | tag "{\"bench\":\"forward\",\"impl\":\"d2nn\",\"round\":$round}"
    for layout in "" --channels-last; do
      "$PY" "$REF" --mode forward --threads 1 --batch 256 --reps 20 $layout 2>/dev/null \
        | tag "{\"bench\":\"forward\",\"round\":$round}"
    done
  done
  # Peak resident memory of a training process, 100 steps, one thread.
  for side in d2nn pytorch_eager; do
    if [ "$side" = d2nn ]; then
      cmd=("$D2NN" bench train --set train.algorithm=reinforce --steps 100)
    else
      cmd=("$PY" "$REF" --steps 100)
    fi
    /usr/bin/time -f "%M" -o "$TMP/rss" "${cmd[@]}" > /dev/null 2>&1
    echo "{\"bench\":\"peak_memory\",\"impl\":\"$side\",\"max_rss_mb\":$(($(tail -1 "$TMP/rss") / 1024))}"
  done
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ "${1:-}" = --table ]; then
  cp "$2" "$TMP/lines"   # the table of lines measured earlier
else
  measure | tee "$TMP/lines"
fi
python3 - "$TMP/lines" >&2 <<'PY'
import json, statistics, sys

lines = [json.loads(l) for l in open(sys.argv[1])]
def pick(bench, impl, key, **match):
    xs = [l[key] for l in lines if l["bench"] == bench and l["impl"] == impl and all(l.get(k) == v for k, v in match.items())]
    return statistics.median(xs) if xs else float("nan")
print("| measurement | d2nn | PyTorch eager | d2nn / PyTorch (examples/s, MB); PyTorch / d2nn (ms): speed |\n|---|---|---|---|")
for t in (1, 2):
    d, p = (pick("train", i, "examples_per_sec", threads=t) for i in ("d2nn", "pytorch_eager"))
    print(f"| training, {t} thread(s), examples/s | {d:,.0f} | {p:,.0f} | {d / p:.2f} |")
d = pick("two_workers", "d2nn", "runtime_2_workers_examples_per_sec")
p = pick("two_workers", "pytorch_eager", "examples_per_sec")
print(f"| 2 workers x 1 thread (in-process runtime) vs DDP/gloo 2 x 1, examples/s | {d:,.0f} | {p:,.0f} | {d / p:.2f} |")
for layout in (False, True):
    name = "channels-last" if layout else "NCHW"
    p = pick("forward", "pytorch_eager", "ms", case="static_high", channels_last=layout)
    d = pick("forward", "d2nn", "static_ms")  # bench exec times the static network with every case
    print(f"| forward, static high, batch 256, ms (PyTorch {name}) | {d:.1f} | {p:.1f} | {p / d:.2f} (speed) |")
    for f in (0.25, 0.5, 0.75, 1.0):
        p = pick("forward", "pytorch_eager", "ms", case=f"dynamic_high_{f}", channels_last=layout)
        d = pick("forward", "d2nn", "dynamic_ms", expensive_fraction=f)
        print(f"| forward, dynamic, {f:.0%} high, ms (PyTorch {name}) | {d:.1f} | {p:.1f} | {p / d:.2f} (speed) |")
d, p = (pick("peak_memory", i, "max_rss_mb") for i in ("d2nn", "pytorch_eager"))
print(f"| peak RSS of a training process, MB | {d:.0f} | {p:.0f} | {d / p:.2f} |")
PY
