#!/usr/bin/env python3
"""Writes the 7x7 chain of issue #18 (stop 35): configs/chain_7x7.toml (the D2NN) and its seven statics
configs/static_chain_7x7_<path>.toml, all from one description of the blocks, so the statics are the
D2NN's paths node for node. Edit here, run `python3 scripts/chain_7x7_configs.py`, commit the configs.

Usage: python3 scripts/chain_7x7_configs.py [--check]   (--check: exit 1 if a config differs from this)"""
import sys

TRUNK, FULL_MID, SLIM_MID = 16, 64, 16
STEM = (f'{{ type = "conv2d", out = {TRUNK}, kernel = 3, stride = 2, padding = 1 }}, {{ type = "relu" }}, '
        '{ type = "max_pool", kernel = 2 }')
CLASSIFIER = '{ type = "max_pool", kernel = 2 }, { type = "flatten" }, { type = "linear", out = 10 }'
STATICS = {"skip": ("skip", "skip", "skip"), "slim_skip_skip": ("slim", "skip", "skip"), "slim": ("slim",) * 3,
           "full_skip_skip": ("full", "skip", "skip"), "full_slim_skip": ("full", "slim", "skip"),
           "full_full_skip": ("full", "full", "skip"), "full": ("full",) * 3}

WHY = """\
# Why this network (issue #18, stop 35): in configs/chain.toml (8 channels at 14x14, a linear classifier on
# the 7x7x8 max-pooled map) the all-skip path, one conv and a linear layer on 392 features, was already
# 0.8635 and more blocks added at most 0.6 points, so no routing could gain much. Here the stem is one
# 3x3 conv (1->16, stride 2) and a 2x2 max-pool, the three stages run at 7x7x16 (residual blocks as in
# chain.toml: relu(x + conv(mid->16)(relu(conv(16->mid)(x)))), mid 64 full, 16 slim), and the classifier
# reads a 3x3x16 max-pooled map (144 features): the all-skip path is weak (0.82), the first block is
# worth six points and costs 8 % of the all-full path, so which images need it is a real decision.
# Measured (5 epochs, cosine, 3 seeds) in docs/RESULTS.md, "The chain on a 7x7 trunk".
"""

TRAIN = """\
algorithm = "q_learning"
lambda = {lam}
warmup_steps = 300
epsilon = {{ start = 1.0, end = 0.1, decay_steps = 500 }}
branch_loss_weight = 1.0
branch_paths = "uniform_and_random"
q_every_action = true
q_alternatives = "one_at_a_time"
q_targets = "centered"
accuracy = "per_example"
rate_floor = {{ rate = {rate}, bonus = 1.0 }}
"""
LAMBDA, FLOOR = 0.7, 0.2

D2NN_HEAD = """\
# Chain D2NN on Fashion-MNIST on a 7x7 trunk (written by scripts/chain_7x7_configs.py; edit there): three
# stages; before each, a controller picks a full block, a slim block, or skipping the stage (identity).
# The paper's chain dataset is uncertain (see the paper digest); no run of this config reproduces a
# paper figure.
{why}# The controllers read a probe: before each stage, a head of the classifier's kind (3x3 max-pool and a
# linear layer, 0.003 MFLOPs) on the features the stage would take, trained on the labels, whose class
# probabilities the controller reads (softmax, 32 hidden units). The question "does this image need the
# block" is "is the classifier unsure here", which a probe's probabilities carry and the raw pooled
# features (configs/chain.toml's controllers) did not: with those the routing beat random routing at its
# rates by +0.02 to +0.63 points; with probes by +1.9 to +3.6 (docs/RESULTS.md, stop 35).
# Training, none of it the paper's except the Q-learning regression (each key documented in README):
# every block also trained on the all-full, all-slim and all-skip paths of every image and on one path
# drawn at random per image (branch_paths = "uniform_and_random"); every controller's three actions
# observed one at a time and regressed onto centered rewards; 0/1 correctness as the reward's accuracy
# (accuracy = "per_example": a block is worth its cost only where it changes the answer); a rate floor of
# {rate} keeps each controller's runner-up action in use (train.rate_floor). lambda = {lam}.
"""
STATIC_HEAD = """\
# Static baseline for chain_7x7.toml (written by scripts/chain_7x7_configs.py; edit there): stage 1 {0},
# stage 2 {1}, stage 3 {2} (the same blocks as chain_7x7.toml, no controllers), same schedule and epochs.
{why}"""

COMMON = """seed = 0

[data]
task = "fashion-mnist"

[train]
{train}
[train.schedule]
kind = "cosine"
warmup_steps = 0
{sweep}
[model]
output = "out"

[[model.nodes]]
name = "stem"
inputs = ["input"]
layers = [{stem}]
"""


def block(kind, stage, source):
    mid = FULL_MID if kind == "full" else SLIM_MID
    return f"""
[[model.nodes]]
name = "{kind}{stage}a"
inputs = ["{source}"]
layers = [
  {{ type = "conv2d", out = {mid}, kernel = 3, padding = 1 }},
  {{ type = "relu" }},
  {{ type = "conv2d", out = {TRUNK}, kernel = 3, padding = 1 }},
]

[[model.nodes]]
name = "{kind}{stage}"
inputs = ["{source}", "{kind}{stage}a"]
merge = "sum"
layers = [{{ type = "relu" }}]
"""


def controller(stage, source):
    """A probe (the classifier's kind of head on the features before the stage, trained on the labels)
    and the controller that reads the probe's class probabilities."""
    return f"""
[[model.nodes]]
name = "probe{stage}"
inputs = ["{source}"]
layers = [{CLASSIFIER}]
head = {{ target = "label" }}

[[model.nodes]]
name = "pick{stage}"
kind = "control"
inputs = ["probe{stage}"]
layers = [
  {{ type = "softmax" }},
  {{ type = "linear", out = 32 }},
  {{ type = "relu" }},
  {{ type = "linear", out = 3 }},
]
actions = [["full{stage}a"], ["slim{stage}a"], ["skip{stage}"]]
"""


def tail(source):
    return f"""
[[model.nodes]]
name = "classifier"
inputs = ["{source}"]
layers = [{CLASSIFIER}]

[[model.nodes]]
name = "out"
kind = "output"
inputs = ["classifier"]
"""


def static(path):
    text = STATIC_HEAD.format(*path, why=WHY) + COMMON.format(train="", sweep="", stem=STEM)
    source = "stem"
    for stage, kind in enumerate(path, 1):
        if kind != "skip":
            text += block(kind, stage, source)
            source = f"{kind}{stage}"
    return text + tail(source)


def d2nn():
    sweep = "\n[sweep]\nlambdas = [{}]\nbaselines = [\n{}]\n".format(
        LAMBDA, "".join(f'  "static_chain_7x7_{name}.toml",\n' for name in STATICS))
    text = D2NN_HEAD.format(why=WHY, lam=LAMBDA, rate=FLOOR)
    text += COMMON.format(train=TRAIN.format(lam=LAMBDA, rate=FLOOR), sweep=sweep, stem=STEM)
    source = "stem"
    for stage in (1, 2, 3):
        text += controller(stage, source) + block("full", stage, source) + block("slim", stage, source)
        text += (f'\n[[model.nodes]]\nname = "skip{stage}"\ninputs = ["{source}"]\n\n[[model.nodes]]\n'
                 f'name = "block{stage}"\ninputs = ["full{stage}", "slim{stage}", "skip{stage}"]\nmerge = "select"\n')
        source = f"block{stage}"
    return text + tail(source)


def main():
    files = {"configs/chain_7x7.toml": d2nn()}
    files.update({f"configs/static_chain_7x7_{name}.toml": static(path) for name, path in STATICS.items()})
    stale = []
    for path, text in files.items():
        if "--check" in sys.argv:
            try:
                with open(path) as f:
                    if f.read() != text:
                        stale.append(path)
            except FileNotFoundError:
                stale.append(path)
        else:
            with open(path, "w") as f:
                f.write(text)
    if stale:
        sys.exit(f"differ from scripts/chain_7x7_configs.py: {', '.join(stale)}")


if __name__ == "__main__":
    main()
