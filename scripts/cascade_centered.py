#!/usr/bin/env python3
"""Issue #18, cascade with centered Q targets (configs/cascade_centered.toml, 3 epochs): collect its runs
(runs/i18c: the D2NN sweeps ct_lLL_seedN and the statics static_NAME_e3_seedN, all trained 3 epochs) into
the "cascade" object of docs/results/designs.json (entries marked "epochs": 3, beside the 1-epoch runs of
scripts/cascade_issue18.py), print the per-seed table against the 3-epoch static front, and draw
docs/img/cascade_centered.png (matplotlib if importable).

Criterion 3 of the issue: >= 0.5 F1 points over the front at the D2NN's MFLOPs, or within 0.3 points of
the front's best at <= 60 % of its MFLOPs. Random routing: the exact expectation at the controllers'
test-set rates (the sweep's routing report, as `d2nn eval --routing`).

Usage: python3 scripts/cascade_centered.py [--write]"""
import os
import sys

from front import (NICE, d2nn_points, draw_front_and_points, envelope, finished_runs, front_at, load, pyplot,
                   static_entry, write_design)

RUNS = "runs/i18c"
EPOCHS = 3
STATICS = {"stage1": "configs/static_cascade_stage1.toml", "stage12": "configs/static_cascade_stage12.toml",
           "full": "configs/static_cascade_full.toml"}
# Sweep folder prefix: (config, extra --set of its command, what it is).
VARIANTS = {
    "ct": ("configs/cascade_centered.toml", "", "centered Q targets (q_targets = \"centered\")"),
    "raw": ("configs/cascade_centered.toml", "--set train.q_targets=raw", "the same, raw Q targets"),
    "ctpe": ("configs/cascade_centered.toml",
             "--set train.bag_size=1 --set train.accuracy=per_example --set train.bag_credit=bag",
             "centered Q targets, per-example reward (no mini-bags)"),
    "ctg": ("configs/cascade_centered.toml", "--set train.q_continuation=greedy_path",
            "centered Q targets, gate 1 onto gate 2's greedy path (q_continuation = \"greedy_path\")"),
}
# configs/cascade_rate_floor.toml (stop 34: the same with train.rate_floor, rate 0.2): its runs lie in
# runs/i18r as cf_r20b1_seedN and cfpe_r20b1_lL_seedN, linked here as cf20_l9_seedN, cfpe20_lLL_seedN;
# rate 0.15 (cf15) was tried first, bonus 3 (cf20b3, runs/i18r/cf_r20b3_seedN) last; seeds 3 and 4 have no statics.
FLOORED = "configs/cascade_rate_floor.toml"
for rate, sets in (("15", "--set train.rate_floor.rate=0.15"), ("20", "")):
    VARIANTS[f"cf{rate}"] = (FLOORED, sets, f"centered Q targets, rate floor 0.{rate}")
    VARIANTS[f"cfpe{rate}"] = (FLOORED, (sets + " " + VARIANTS["ctpe"][1]).strip(),
                               f"centered Q targets, rate floor 0.{rate}, per-example reward (no mini-bags)")
VARIANTS["cf20b3"] = (FLOORED, "--set train.rate_floor.bonus=3", "centered Q targets, rate floor 0.20, bonus 3")
# Criterion 5's pairs: (mini-bag variant, its per-example twin).
PAIRS = [("ct", "ctpe"), ("cf15", "cfpe15"), ("cf20", "cfpe20")]
EXACT = "exact expectation at the controllers' test-set rates (routing report, as d2nn eval --routing)"
FULL_MFLOPS = 5.266  # every node of the cascade (d2nn inspect)


def statics():
    out = []
    for name, config in STATICS.items():
        for seed, d, j in finished_runs(f"{RUNS}/static_{name}_e{EPOCHS}_seed*"):
            entry = static_entry(config, name, seed, d, j, "test_f1", FULL_MFLOPS, f" --set train.epochs={EPOCHS}")
            out.append(dict(entry, epochs=EPOCHS, accuracy=j["test_accuracy"]))
    return out


def dynamics():
    out = []
    for variant, seed, d, p in d2nn_points(RUNS, VARIANTS):
        config, sets, what = VARIANTS[variant]
        run = p["run_dir"]
        j, r = load(os.path.join(run, "summary.json")), load(os.path.join(run, "routing.json"))
        out.append({"config": config, "variant": what, "lambda": p["lambda"], "seed": seed, "epochs": EPOCHS,
                    "cost_fraction": j["mean_cost_fraction"], "mflops": j["mean_mflops_per_example"],
                    "metric": j["test_f1"], "accuracy": j["test_accuracy"],
                    "random_routing_metric": r["random_f1"], "random_routing": EXACT,
                    "forced_f1": r["forced_f1"], "action_rates": j["action_rates"],
                    "controller_run_rates": j["controller_run_rates"], "algorithm": "q_learning",
                    "run_dir": run, "wall_seconds": j["wall_seconds"],
                    "command": f"{NICE}d2nn sweep --config {config} --no-baselines --jobs 1 --lambdas {p['lambda']} "
                               f"--set seed={seed} {sets} --run-dir {d}".replace("  ", " ")})
    return out


def table(st, dy):
    print("| static | seed | MFLOPs | F1 | accuracy | wall |")
    print("|---|---|---|---|---|---|")
    for s in sorted(st, key=lambda s: (s["mflops"], s["seed"])):
        print(f"| {s['name']} | {s['seed']} | {s['mflops']:.3f} | {s['metric']:.4f} | {s['accuracy']:.4f} | "
              f"{s['wall_seconds']:.0f} s |")
    print()
    print("| variant | λ | seed | F1 | MFLOPs (fraction) | front there | vs front | best static (MFLOPs) | % of its cost | "
          "vs best | criterion 3 | random routing F1 | vs random | gate1 exit/cont | gate2 exit/cont | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in sorted(dy, key=lambda p: (p["variant"], p["lambda"], p["seed"])):
        ss = [s for s in st if s["seed"] == p["seed"]]
        g1, g2 = p["action_rates"].get("gate1", [0, 0]), p["action_rates"].get("gate2", [0, 0])
        head = f"| {p['variant']} | {p['lambda']} | {p['seed']} | {p['metric']:.4f} | {p['mflops']:.3f} ({p['cost_fraction']:.3f}) |"
        tail = (f" {p['random_routing_metric']:.4f} | {100 * (p['metric'] - p['random_routing_metric']):+.2f} | "
                f"{g1[0]:.3f}/{g1[1]:.3f} | {g2[0]:.3f}/{g2[1]:.3f} | {p['wall_seconds']:.0f} s |")
        if len(ss) < len(STATICS):
            print(head + " – | – | – | – | – | – |" + tail)
            continue
        front = front_at(envelope([(s["mflops"], s["metric"]) for s in ss]), p["mflops"])
        best = max(ss, key=lambda s: s["metric"])
        pct, vs_best, vs_front = 100 * p["mflops"] / best["mflops"], 100 * (p["metric"] - best["metric"]), \
            100 * (p["metric"] - front)
        met = vs_front >= 0.5 or (vs_best >= -0.3 and pct <= 60)
        print(head + f" {front:.4f} | {vs_front:+.2f} | {best['metric']:.4f} ({best['mflops']:.3f}) | {pct:.1f} % | "
                     f"{vs_best:+.2f} | {'met' if met else 'missed'} |" + tail)


def minibags_against_per_example(dy):
    """Criterion 5: each mini-bag point (variant ct) against the same seed's per-example points (ctpe),
    their upper envelope read at the mini-bag point's MFLOPs (linear between them, flat beyond their
    ends: beyond the dearest one, the per-example reward's best at less cost)."""
    print()
    print("| variant | λ | seed | mini-bag F1 | MFLOPs | per-example envelope there | vs per-example | "
          "per-example points (λ: F1 @ MFLOPs) |")
    print("|---|---|---|---|---|---|---|---|")
    for pair in PAIRS:
        minibag, per_example = VARIANTS[pair[0]][2], VARIANTS[pair[1]][2]
        for p in sorted((p for p in dy if p["variant"] == minibag), key=lambda p: (p["lambda"], p["seed"])):
            pe = sorted((q for q in dy if q["variant"] == per_example and q["seed"] == p["seed"]),
                        key=lambda q: q["lambda"])
            if not pe:
                continue
            there = front_at(envelope([(q["mflops"], q["metric"]) for q in pe]), p["mflops"])
            points = ", ".join(f"{q['lambda']}: {q['metric']:.4f} @ {q['mflops']:.3f}" for q in pe)
            print(f"| {pair[0]} | {p['lambda']} | {p['seed']} | {p['metric']:.4f} | {p['mflops']:.3f} | {there:.4f} | "
                  f"{100 * (p['metric'] - there):+.2f} | {points} |")


def plot(st, dy):
    plt = pyplot()
    if plt is None:
        return
    colors = {VARIANTS["ct"][2]: "tab:red", VARIANTS["raw"][2]: "tab:gray", VARIANTS["ctpe"][2]: "tab:blue",
              VARIANTS["ctg"][2]: "tab:purple", VARIANTS["cf15"][2]: "tab:green", VARIANTS["cf20"][2]: "tab:olive",
              VARIANTS["cfpe15"][2]: "tab:cyan", VARIANTS["cfpe20"][2]: "tab:brown", VARIANTS["cf20b3"][2]: "tab:pink"}
    fig, ax = draw_front_and_points(plt, st, dy, colors)
    ax.set_ylabel("test F1, Shirt vs rest (Fashion-MNIST)")
    ax.set_title(f"cascade at equal cost, {EPOCHS} epochs (issue #18); markers: seed 0 square, 1 triangle, "
                 "2 diamond;\nhollow: random routing at the same rates (exact expectation)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    fig.savefig("docs/img/cascade_centered.png", dpi=110)


def main():
    st, dy = statics(), dynamics()
    table(st, dy)
    minibags_against_per_example(dy)
    if "--write" not in sys.argv:
        return
    designs = load("docs/results/designs.json")
    write_design(designs, "cascade", st, dy)
    plot(st, dy)


if __name__ == "__main__":
    main()
