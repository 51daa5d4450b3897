#!/usr/bin/env python3
"""Issue #18, hierarchical variant E (configs/hierarchical_regrouped.toml, dresses with the tops): collect
its runs (runs/i18h2: the D2NN sweeps E_seedN and the all-experts statics allE_seedN) into the
"hierarchical" object of docs/results/designs.json, print the per-seed table against the static front,
and draw docs/img/hierarchical_issue18.png (matplotlib if importable, e.g. PYTHONPATH=/tmp/mpl).

The front of a seed: the four flat classifiers (recorded in designs.json; they do not depend on the
groups) and variant E's all-experts static of the same seed; its upper envelope, linear in MFLOPs.
Criterion 3 of the issue: >= 0.5 points over the front at the D2NN's MFLOPs, or within 0.3 points of
the front's best at <= 60 % of its MFLOPs.

Usage: python3 scripts/hierarchical_issue18.py [--write]"""
import glob
import json
import os
import sys

from front import envelope, front_at, load

RUNS = "runs/i18h2"
D2NN_CONFIG = "configs/hierarchical_regrouped.toml"
ALL_CONFIG = "configs/static_hier_all_regrouped.toml"
FULL_MFLOPS = 10.335  # every node of configs/hierarchical.toml: the object's cost-fraction denominator
NICE = "OMP_NUM_THREADS=1 nice -n -5 "
FLAT = ["static_hier_flat", "static_hier_flat_mid", "static_hier_flat_half", "static_hier_flat_wide"]
EXACT = "exact expectation at the router's test-set rates (the sweep's routing report, as d2nn eval --routing)"


def seed_of(d):
    return int(d.rsplit("seed", 1)[1])


def fresh_statics():
    out = []
    for d in sorted(glob.glob(f"{RUNS}/allE_seed*")):
        s = os.path.join(d, "summary.json")
        if not os.path.exists(s):
            continue
        j, seed = load(s), seed_of(d)
        out.append({"config": ALL_CONFIG, "cost_fraction": j["mean_mflops_per_example"] / FULL_MFLOPS,
                    "mflops": j["mean_mflops_per_example"], "metric": j["test_accuracy"], "seed": seed,
                    "run_dir": d, "wall_seconds": j["wall_seconds"],
                    "command": f"{NICE}d2nn train --config {ALL_CONFIG} --set seed={seed} --workers 1 --quiet "
                               f"--run-dir {d}"})
    return out


def fresh_dynamics():
    out = []
    for d in sorted(glob.glob(f"{RUNS}/E_seed*")):
        run = os.path.join(d, "lambda_0.99")
        if not os.path.exists(os.path.join(run, "summary.json")) or not os.path.exists(os.path.join(d, "sweep.json")):
            continue
        j, r, seed = load(os.path.join(run, "summary.json")), load(os.path.join(run, "routing.json")), seed_of(d)
        rnd = next(p for p in load(os.path.join(d, "sweep.json"))["points"] if p["kind"] == "random_routing")
        out.append({"config": D2NN_CONFIG, "lambda": 0.99, "seed": seed,
                    "cost_fraction": j["mean_mflops_per_example"] / FULL_MFLOPS,
                    "mflops": j["mean_mflops_per_example"], "metric": j["test_accuracy"],
                    "random_routing_metric": r["random_accuracy"], "random_routing_kind": EXACT,
                    "random_routing_sampled_metric": rnd["accuracy"],
                    "random_routing_sampled_mflops": rnd["mean_mflops_per_example"],
                    "action_rates": {"router": r["rates"]}, "actions": {"router": r["actions"]},
                    "forced_accuracy": r["forced_accuracy"], "cheapest_right_accuracy": r["cheapest_right_accuracy"],
                    "algorithm": "qlearning", "algorithm_name": "q_learning",
                    "variant": "E: dresses with the tops (data.coarse_groups), Q-learning, q_every_action, branch "
                               "loss 1, cosine (all in the file)",
                    "run_dir": run, "wall_seconds": j["wall_seconds"],
                    "sweep_command": f"{NICE}d2nn sweep --config {D2NN_CONFIG} --no-baselines --jobs 1 --lambdas 0.99 "
                                     f"--set seed={seed} --run-dir {d}"})
    return out


def merge(recorded, fresh):
    dirs = {p["run_dir"] for p in fresh}
    return [p for p in recorded if p["run_dir"] not in dirs] + fresh


def front_of(statics, seed):
    """The seed's statics of variant E's front: the flat classifiers and E's all-experts static."""
    return [s for s in statics if s["seed"] == seed
            and (s["config"] == ALL_CONFIG or os.path.basename(s["config"]).removesuffix(".toml") in FLAT)]


def table(statics, dynamics):
    print("| seed | D2NN acc | MFLOPs | front's best (MFLOPs) | % of its MFLOPs | vs best | front there | vs front | "
          "all-experts static E | rates tops / trousers / footwear / bags | random, exact | vs random | "
          "right on some path | criterion 3 | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in sorted((p for p in dynamics if p["config"] == D2NN_CONFIG), key=lambda p: p["seed"]):
        ss = front_of(statics, p["seed"])
        all_e = next((s for s in ss if s["config"] == ALL_CONFIG), None)
        best = max(ss, key=lambda s: s["metric"])
        env = envelope([(s["mflops"], s["metric"]) for s in ss])
        front = front_at(env, p["mflops"])
        pct = 100 * p["mflops"] / best["mflops"]
        vs_best, vs_front = 100 * (p["metric"] - best["metric"]), 100 * (p["metric"] - front)
        met = vs_front >= 0.5 or (vs_best >= -0.3 and pct <= 60)
        rates = " / ".join(f"{x:.3f}" for x in p["action_rates"]["router"])
        print(f"| {p['seed']} | {p['metric']:.4f} | {p['mflops']:.3f} | {best['metric']:.4f} ({best['mflops']:.3f}) | "
              f"{pct:.1f} % | {vs_best:+.2f} | {front:.4f} | {vs_front:+.2f} | "
              f"{'–' if all_e is None else format(all_e['metric'], '.4f')} | {rates} | "
              f"{p['random_routing_metric']:.4f} | {100 * (p['metric'] - p['random_routing_metric']):+.2f} | "
              f"{p['cheapest_right_accuracy']:.4f} | {'met' if met else 'missed'} | {p['wall_seconds']:.0f} s |")


def main():
    designs = load("docs/results/designs.json")
    obj = next(d for d in designs if d.get("design") == "hierarchical")
    statics = merge(obj["static"], fresh_statics())
    dynamics = merge(obj["dynamic"], fresh_dynamics())
    table(statics, dynamics)
    if "--write" not in sys.argv:
        return
    obj["static"], obj["dynamic"] = statics, dynamics
    with open("docs/results/designs.json", "w") as f:
        json.dump(designs, f, indent=2, ensure_ascii=False)
    plot(obj)


def plot(obj):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib not importable: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    statics = [s for s in obj["static"] if os.path.basename(s["config"]).removesuffix(".toml") in FLAT
               or s["config"] == ALL_CONFIG]
    means = {}
    for s in statics:
        means.setdefault(s["config"], []).append(s)
    pts = [(v[0]["mflops"], sum(s["metric"] for s in v) / len(v)) for v in means.values()]
    env = envelope(pts)
    ax.plot([c for c, _ in env], [m for _, m in env], color="black", lw=1.2, label="static front (seed means)")
    ax.scatter([s["mflops"] for s in statics], [s["metric"] for s in statics], color="black", s=12, zorder=3)
    for config, v in means.items():
        ax.annotate(os.path.basename(config).removesuffix(".toml").replace("static_hier_", ""),
                    (v[0]["mflops"], min(s["metric"] for s in v)), textcoords="offset points", xytext=(4, -11),
                    fontsize=7)
    markers = {0: "s", 1: "^", 2: "D"}
    styles = {"configs/hierarchical.toml": ("tab:gray", "D2NN, variant C (configs/hierarchical.toml)"),
              D2NN_CONFIG: ("tab:red", "D2NN, variant E (configs/hierarchical_regrouped.toml)")}
    seen = set()
    for p in obj["dynamic"]:
        color, label = styles.get(p["config"], ("tab:blue", p["config"]))
        ax.scatter(p["mflops"], p["metric"], color=color, marker=markers.get(p["seed"], "o"), s=40, zorder=4,
                   label=None if p["config"] in seen else label)
        seen.add(p["config"])
    best = envelope(pts)[-1]
    ax.add_patch(plt.Rectangle((0, best[1] - 0.003), 0.6 * best[0], 0.003, fill=False, ls=":", color="tab:red"))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("mean MFLOPs per example (log)")
    ax.set_ylabel("test accuracy (Fashion-MNIST, 10 classes)")
    ax.set_title("hierarchical at equal cost (issue #18); markers: seed 0 square, 1 triangle, 2 diamond\n"
                 "dotted box: within 0.3 points of the front's best at <= 60 % of its MFLOPs", fontsize=9)
    ax.set_ylim(0.885, 0.92)
    ax.legend(fontsize=8, loc="center left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig("docs/img/hierarchical_issue18.png", dpi=110)


if __name__ == "__main__":
    main()
