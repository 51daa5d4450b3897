#!/usr/bin/env python3
"""Issue #18, the chain with every block trained on the uniform paths (train.branch_paths = "uniform"):
collect its runs (runs/i18ch: the D2NN sweeps VARIANT_lLL_seedN, or links to them and the statics static_X_seedN of seeds 1
and 2; seed 0's statics as recorded in docs/results/designs.json) into the "chain" object of
docs/results/designs.json, print the per-seed table against the same seed's static front, and draw
docs/img/chain_issue18_uniform.png (matplotlib if importable).

Criterion 3: >= 0.5 points over the front at the D2NN's MFLOPs, or within 0.3 points of the front's best
at <= 60 % of its MFLOPs. Criterion 4: every controller's test-set rates in [0.05, 0.95] for at least two
actions, and >= 1 point over random routing at those rates (the exact expectation of the routing report,
`d2nn eval --routing`, all 27 paths).

Usage: python3 scripts/chain_issue18.py [--write]"""
import os
import sys

from front import (NICE, d2nn_points, draw_front_and_points, envelope, finished_runs, front_at, load, pyplot,
                   static_entry, write_design)

RUNS = "runs/i18ch"
STATICS = ["skip", "slim_skip_skip", "slim", "full_skip_skip", "full_slim_skip", "full_full_skip", "full"]
FULL_MFLOPS = 13.7237  # every node of configs/chain.toml (d2nn inspect): the cost-fraction denominator
UNIFORM = "--set train.branch_loss_weight=1 --set train.branch_paths=uniform"
# Sweep folder prefix: (config, its --sets, what it is, algorithm).
VARIANTS = {
    "bu_rf": ("configs/chain.toml", UNIFORM, "REINFORCE, branch loss on the uniform paths", "reinforce"),
    "bu_q": ("configs/chain.toml", f"{UNIFORM} --set train.algorithm=q_learning --set train.epsilon.decay_steps=500",
             "Q-learning (taken action), branch loss on the uniform paths", "q_learning"),
    # Ran as configs/chain.toml with these --sets, which `d2nn config show` resolves to the same config as
    # configs/chain_uniform_paths.toml of stop 32 (all but [sweep].lambdas), whose reward was the paper's.
    "oat": ("configs/chain_uniform_paths.toml", "--set train.accuracy=per_example",
            "Q-learning, every action one at a time, centered, branch loss on the uniform paths", "q_learning"),
    # The shipped configs/chain_uniform_paths.toml: the same with train.accuracy = "true_class_prob".
    "tcp": ("configs/chain_uniform_paths.toml", "",
            "the same, reward on the true class's probability (shipped)", "q_learning"),
    # Not shipped: the shipped config with 128 hidden units in each controller instead of 32 (its
    # header says how it was made); ran from runs/i18w/, a copy without the header.
    "wr": ("docs/results/chain_wide_router.toml", "",
           "the same with 128-unit controllers (not shipped)", "q_learning"),
    # Stop 34, not shipped: convolutional controllers (the header of the file says how it was made;
    # ran from runs/i18v/, the same file), and the shipped config with train.rate_floor (runs/i18r).
    "cv": ("docs/results/chain_conv_router.toml", "",
           "the same with convolutional controllers (not shipped)", "q_learning"),
}
VARIANTS["wf30"] = ("docs/results/chain_wide_router.toml", "--set train.rate_floor.rate=0.3 --set train.rate_floor.bonus=1",
                    "128-unit controllers with rate floor 0.30 (not shipped)", "q_learning")
for rate in ("30", "50"):
    VARIANTS[f"f{rate}"] = ("configs/chain_uniform_paths.toml",
                            f"--set train.rate_floor.rate=0.{rate} --set train.rate_floor.bonus=1",
                            f"the shipped config with rate floor 0.{rate} (not shipped)", "q_learning")
EXACT = "exact expectation at the controllers' test-set rates (routing report over all 27 paths, d2nn eval --routing)"
UNIFORM_PATHS = {"full1a → full2a → full3a": "all-full", "slim1a → slim2a → slim3a": "all-slim",
                 "skip1 → skip2 → skip3": "all-skip"}


def statics(designs):
    obj = next(d for d in designs if d.get("design") == "chain")
    named = [dict(s, name=os.path.basename(s["config"]).removeprefix("static_chain_").removesuffix(".toml"))
             for s in obj["static"] if s["seed"] == 0]
    out = [s for s in named if s["name"] in STATICS]  # not the 7x7 chain's (scripts/chain_7x7.py)
    for name in STATICS:
        for seed, d, j in finished_runs(f"{RUNS}/static_{name}_seed*"):
            out.append(static_entry(f"configs/static_chain_{name}.toml", name, seed, d, j, "test_accuracy", FULL_MFLOPS))
    return out


def dynamics(runs=RUNS, variants=VARIANTS):
    """designs.json "dynamic" entries for the finished sweeps runs/VARIANT_lLL_seedN of `variants`."""
    out = []
    for variant, seed, d, p in d2nn_points(runs, variants):
        config, sets, what, algorithm = variants[variant]
        run = p["run_dir"]
        routing = os.path.join(run, "routing.json")
        if not os.path.exists(routing):
            print(f"{run}: no routing.json yet (d2nn eval --run-dir {run} --routing)", file=sys.stderr)
            continue
        j, r = load(os.path.join(run, "summary.json")), load(routing)
        full = j["mean_mflops_per_example"] / j["mean_cost_fraction"]  # wider controllers cost more
        forced = {UNIFORM_PATHS[a]: {"accuracy": acc, "mflops": c * full}
                  for a, acc, c in zip(r["actions"], r["forced_accuracy"], r["forced_cost_fraction"])
                  if a in UNIFORM_PATHS}
        out.append({"config": config, "variant": what, "lambda": p["lambda"], "seed": seed,
                    "cost_fraction": j["mean_cost_fraction"], "mflops": j["mean_mflops_per_example"],
                    "metric": j["test_accuracy"], "random_routing_metric": r["random_accuracy"],
                    "random_routing": EXACT, "action_rates": j["action_rates"], "uniform_paths": forced,
                    "cheapest_right_accuracy": r["cheapest_right_accuracy"], "algorithm": algorithm,
                    "run_dir": run, "wall_seconds": j["wall_seconds"],
                    "sweep_command": f"{NICE}d2nn sweep --config {config} --no-baselines --jobs 1 "
                                     f"--lambdas {p['lambda']} --set seed={seed} {sets} --run-dir {d}".replace("  ", " ")})
    return out


def mixes(rates):
    return sum(0.05 <= x <= 0.95 for x in rates) >= 2


def table(st, dy, statics_per_seed=len(STATICS)):
    print("| static | seed | MFLOPs | accuracy | wall |")
    print("|---|---|---|---|---|")
    for s in sorted(st, key=lambda s: (s["mflops"], s["seed"])):
        print(f"| {s['name']} | {s['seed']} | {s['mflops']:.3f} | {s['metric']:.4f} | {s['wall_seconds']:.0f} s |")
    print()
    print("| variant | λ | seed | acc | MFLOPs | front there | vs front | best static (MFLOPs) | % of its cost | vs best "
          "| criterion 3 | random, exact | vs random | pick1 / pick2 / pick3 (full/slim/skip) | criterion 4 "
          "| all-full / all-slim / all-skip paths | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in sorted(dy, key=lambda p: (p["variant"], p["lambda"], p["seed"])):
        ss = [s for s in st if s["seed"] == p["seed"]]
        rates = [p["action_rates"][c] for c in ("pick1", "pick2", "pick3")]
        vs_random = 100 * (p["metric"] - p["random_routing_metric"])
        c4 = all(mixes(r) for r in rates) and vs_random >= 1.0
        shown = " · ".join("/".join(f"{x:.2f}" for x in r) for r in rates)
        u = p["uniform_paths"]
        paths = " / ".join(f"{u[k]['accuracy']:.4f}" for k in ("all-full", "all-slim", "all-skip"))
        head = f"| {p['variant']} | {p['lambda']} | {p['seed']} | {p['metric']:.4f} | {p['mflops']:.3f} |"
        tail = (f" {p['random_routing_metric']:.4f} | {vs_random:+.2f} | {shown} | {'met' if c4 else 'missed'} | "
                f"{paths} | {p['wall_seconds']:.0f} s |")
        if not ss:
            print(head + " – | – | – | – | – | – |" + tail)
            continue
        partial = "" if len(ss) == statics_per_seed else f" ({len(ss)} of {statics_per_seed} statics)"
        front = front_at(envelope([(s["mflops"], s["metric"]) for s in ss]), p["mflops"])
        best = max(ss, key=lambda s: s["metric"])
        pct, vs_best = 100 * p["mflops"] / best["mflops"], 100 * (p["metric"] - best["metric"])
        vs_front = 100 * (p["metric"] - front)
        met = vs_front >= 0.5 or (vs_best >= -0.3 and pct <= 60)
        print(head + f" {front:.4f} | {vs_front:+.2f} | {best['metric']:.4f} ({best['mflops']:.3f}) | {pct:.1f} % | "
                     f"{vs_best:+.2f} | {'met' if met else 'missed'}{partial} |" + tail)


def plot(st, dy):
    colors = {VARIANTS["bu_rf"][2]: "tab:gray", VARIANTS["bu_q"][2]: "tab:blue", VARIANTS["oat"][2]: "tab:red",
              VARIANTS["tcp"][2]: "tab:green", VARIANTS["wr"][2]: "tab:purple", VARIANTS["cv"][2]: "tab:brown",
              VARIANTS["f30"][2]: "tab:olive", VARIANTS["f50"][2]: "tab:cyan", VARIANTS["wf30"][2]: "tab:pink"}
    plot_chain(st, dy, colors, "chain", "docs/img/chain_issue18_uniform.png")


def plot_chain(st, dy, colors, network, path):
    """The front of the statics `st` and the D2NN points `dy` (coloured by variant) of a chain `network`."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = draw_front_and_points(plt, st, dy, colors)
    ax.set_ylabel("test accuracy (Fashion-MNIST, 10 classes)")
    ax.set_title(f"{network} at equal cost (issue #18), 5 epochs; markers: seed 0 square, 1 triangle, 2 diamond;\n"
                 "hollow: random routing at the same rates (exact expectation)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    designs = load("docs/results/designs.json")
    st, dy = statics(designs), dynamics()
    table(st, dy)
    if "--write" not in sys.argv:
        return
    # Seed 0's statics are the recorded ones (no "name" there: it is derived when read).
    write_design(designs, "chain", [{k: v for k, v in s.items() if k != "name"} for s in st if s["seed"] != 0], dy)
    plot(st, dy)


if __name__ == "__main__":
    main()
