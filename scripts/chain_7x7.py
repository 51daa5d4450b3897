#!/usr/bin/env python3
"""Issue #18, the chain on a 7x7 trunk (configs/chain_7x7.toml, written by scripts/chain_7x7_configs.py):
collect its runs (runs/i18n: the statics static_X_seedN of seeds 0-2 and the D2NN sweeps VARIANT_lLL_seedN)
into the "chain" object of docs/results/designs.json (beside the first chain's runs, which
scripts/chain_issue18.py collects), print the per-seed table against the same seed's 7x7 static front
(criteria 3 and 4 as in chain_issue18.py), and draw docs/img/chain_7x7.png (matplotlib if importable).

Usage: python3 scripts/chain_7x7.py [--write]"""
import sys

from chain_issue18 import STATICS, dynamics, plot_chain, table
from front import finished_runs, load, static_entry, write_design

RUNS = "runs/i18n"
FULL_MFLOPS = 6.886  # every node of configs/chain_7x7.toml (d2nn inspect): the cost-fraction denominator
FLOOR = "--set train.rate_floor.rate={} --set train.rate_floor.bonus=1"
RANDOM = "--set train.branch_paths=uniform_and_random"
# Sweep folder prefix: (config, its --sets, what it is, algorithm).
POOLED = "docs/results/chain_7x7_pooled_controllers.toml"
# dr, dp and pr ran on a34cf83, whose uniform_and_random pass drew with the sampled pass's key (during the
# random-routing warm-up it repeated that pass); prp ran on b237201 and later (its own stream).
VARIANTS = {
    "dq": ("docs/results/chain_7x7_no_floor.toml", "", "pooled controllers, no rate floor", "q_learning"),
    "df30": (POOLED, FLOOR.format(0.3), "pooled controllers, rate floor 0.3", "q_learning"),
    "df20": (POOLED, "", "pooled controllers, rate floor 0.2", "q_learning"),
    "dr": (POOLED, RANDOM, "pooled controllers, floor 0.2, uniform and random paths", "q_learning"),
    "dp": (POOLED, f"{RANDOM} --set train.accuracy=per_example",
           "pooled controllers, floor 0.2, uniform and random paths, 0/1 accuracy", "q_learning"),
    "pr": ("configs/chain_7x7.toml", "--set train.accuracy=true_class_prob",
           "probe controllers, reward on the true class's probability", "q_learning"),
    "prp": ("configs/chain_7x7.toml", "", "probe controllers, 0/1 accuracy (shipped)", "q_learning"),
}


def statics():
    out = []
    for name in STATICS:
        config = f"configs/static_chain_7x7_{name}.toml"
        for seed, d, j in finished_runs(f"{RUNS}/static_{name}_seed*"):
            out.append(static_entry(config, f"7x7 {name}", seed, d, j, "test_accuracy", FULL_MFLOPS))
    return out


def plot(st, dy):
    colors = dict(zip((v[2] for v in VARIANTS.values()), ("tab:gray", "tab:blue", "tab:olive", "tab:cyan",
                                                           "tab:purple", "tab:orange", "tab:red")))
    plot_chain(st, dy, colors, "chain on a 7x7 trunk", "docs/img/chain_7x7.png")


def main():
    st, dy = statics(), dynamics(RUNS, VARIANTS)
    table(st, dy)
    if "--write" not in sys.argv:
        return
    write_design(load("docs/results/designs.json"), "chain", [{k: v for k, v in s.items() if k != "name"} for s in st],
                 dy)
    plot(st, dy)


if __name__ == "__main__":
    main()
