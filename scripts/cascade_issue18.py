#!/usr/bin/env python3
"""Issue #18, cascade: collect the runs of scripts/cascade_issue18.sh (runs/i18k, runs/i18k2) into the
"cascade" object of docs/results/designs.json, print the per-seed table against the static front, and
draw docs/img/cascade_issue18.png (matplotlib if importable, e.g. PYTHONPATH=/tmp/mpl).

Runs already recorded in designs.json whose directory is no longer on this machine are kept as they are.
A D2NN run with a routing report (routing.json, written by `d2nn sweep` since the report covers graphs of
up to 8 joint actions) gets the exact expectation of random routing at its controllers' own rates;
older runs keep the sweep's one random draw.

Usage: python3 scripts/cascade_issue18.py [--write]"""
import glob
import json
import os
import sys

from front import envelope, front_at, load, pyplot

RUNS = ["runs/i18k", "runs/i18k2"]
STATICS = {"stage1": "configs/static_cascade_stage1.toml", "stage12": "configs/static_cascade_stage12.toml",
           "full": "configs/static_cascade_full.toml"}
# Sweep directories by variant: (config, extra --set of the command).
VARIANTS = {
    # the shipped configs/cascade.toml: gates read their stage's classifier logits
    "hg_marg": ("configs/cascade.toml", ""),
    "hg_perex": ("configs/cascade.toml",
                 "--set train.bag_size=1 --set train.accuracy=per_example --set train.bag_credit=bag"),
    "hg_bag": ("configs/cascade.toml", "--set train.bag_credit=bag"),
    # tried first: the same training with the older conv gates on the stage features (commit b845f95)
    "d2nn_marg": ("configs/cascade.toml@b845f95", ""),
    # this stop's reruns (runs/i18k2/NAME_seedN, lambda 0.97): the shipped config, for its exact random
    # routing, and gate 1's `continue` regressed onto the path gate 2 takes greedily
    "ship": ("configs/cascade.toml", ""),
    "greedy": ("configs/cascade.toml", "--set train.q_continuation=greedy_path"),
}
EXACT = "exact expectation at the controllers' test-set rates (routing report, as d2nn eval --routing)"
DRAW = "one draw at the controllers' test-set rates (d2nn sweep)"
FULL_MFLOPS = 5.266  # every node of the shipped configs/cascade.toml (d2nn inspect)
# How the runs of runs/i18k2 were started (the earlier ones under nice -n 19, beside other builds).
NICE = "OMP_NUM_THREADS=1 nice -n -5 "


def statics():
    out = []
    for name, config in STATICS.items():
        for d in sorted(g for r in RUNS for g in glob.glob(f"{r}/static_{name}_seed*")):
            s = os.path.join(d, "summary.json")
            if not os.path.exists(s):
                continue
            seed = int(d.rsplit("seed", 1)[1])
            j = load(s)
            out.append({"config": config, "name": name, "seed": seed, "mflops": j["mean_mflops_per_example"],
                        "metric": j["test_f1"], "accuracy": j["test_accuracy"], "run_dir": d,
                        "wall_seconds": j["wall_seconds"],
                        "command": f"nice -n 19 d2nn train --config {config} --set seed={seed} --workers 1 --quiet "
                                   f"--run-dir {d}"})
    return out


def dynamics():
    out = []
    for sweep in sorted(g for r in RUNS for g in glob.glob(f"{r}/*/sweep.json")):
        d = os.path.dirname(sweep)
        base = os.path.basename(d)
        variant = next((v for v in VARIANTS if base.startswith(v + "_l") or base.startswith(v + "_seed")), None)
        if variant is None:
            continue
        seed = int(base.rsplit("seed", 1)[1])
        config, sets = VARIANTS[variant]
        points = load(sweep)["points"]
        for p in points:
            if p["kind"] != "d2nn":
                continue
            rnd = next(q for q in points if q["kind"] == "random_routing" and q["lambda"] == p["lambda"])
            j = load(os.path.join(p["run_dir"], "summary.json"))
            lam = p["lambda"]
            seed_set = "" if seed == 0 else f" --set seed={seed}"
            shipped = variant == "hg_perex" and lam == 0.97
            routing_path = os.path.join(p["run_dir"], "routing.json")
            if os.path.exists(routing_path):
                r = load(routing_path)
                rnd_f1 = r["random_f1"]
                rnd_mflops = FULL_MFLOPS * sum(q * c for q, c in zip(r["random_path_probability"],
                                                                     r["forced_cost_fraction"]))
                kind = EXACT
            else:
                rnd_f1, rnd_mflops, kind = rnd["f1"], rnd["mean_mflops_per_example"], DRAW
            out.append({"config": "configs/cascade_per_example.toml" if shipped else config, "variant": variant, "lambda": lam, "seed": seed,
                        "cost_fraction": j["mean_cost_fraction"], "mflops": j["mean_mflops_per_example"],
                        "metric": j["test_f1"], "accuracy": j["test_accuracy"],
                        "random_routing_metric": rnd_f1, "random_routing_mflops": rnd_mflops, "random_routing": kind,
                        "action_rates": j["action_rates"], "controller_run_rates": j["controller_run_rates"],
                        "run_dir": p["run_dir"], "wall_seconds": j["wall_seconds"],
                        "command": f"{NICE}d2nn sweep --config {config} --no-baselines --jobs 1 --lambdas {lam}"
                                   f"{seed_set} {sets} --run-dir {d}".replace("  ", " ")})
    return out


def recorded():
    """The cascade object of designs.json as recorded, or None."""
    return next((d for d in load("docs/results/designs.json") if d.get("design") == "cascade"), None)


def merged(fresh, old):
    """`fresh` runs plus the recorded ones whose run directory is not among them and no longer exists here."""
    dirs = {p["run_dir"] for p in fresh}
    return fresh + [p for p in old if p["run_dir"] not in dirs and not os.path.exists(p["run_dir"])]


def main():
    st, dy = statics(), dynamics()
    old = recorded() or {"static": [], "dynamic": []}
    # Entries with an "epochs" key are scripts/cascade_centered.py's: kept as they are, not tabled here.
    others = {k: [p for p in old[k] if "epochs" in p] for k in ("static", "dynamic")}
    old = {k: [p for p in old[k] if "epochs" not in p] for k in ("static", "dynamic")}
    for s in old["static"]:
        s.setdefault("name", s["config"].split("static_cascade_")[1].removesuffix(".toml"))
    st, dy = merged(st, old["static"]), merged(dy, old["dynamic"])
    full = FULL_MFLOPS
    by_seed = {}
    for s in st:
        by_seed.setdefault(s["seed"], []).append(s)
    print("| static | seed | MFLOPs | cost fraction | F1 | accuracy | wall |")
    print("|---|---|---|---|---|---|---|")
    for s in sorted(st, key=lambda s: (s["mflops"], s["seed"])):
        print(f"| {s['name']} | {s['seed']} | {s['mflops']:.3f} | {s['mflops'] / full:.3f} | {s['metric']:.4f} | "
              f"{s['accuracy']:.4f} | {s['wall_seconds']:.0f} s |")
    print()
    print("| variant | λ | seed | F1 | MFLOPs (fraction) | front there | vs front | best static | % of its cost | "
          "vs best | random routing F1 (MFLOPs) | vs random | gate1 exit/cont | gate2 exit/cont (run rate) | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in sorted(dy, key=lambda p: (p["variant"], p["lambda"], p["seed"])):
        ss = by_seed.get(p["seed"], [])
        if len(ss) < 3:
            front = vs = best = pct = vsb = None
        else:
            env = envelope([(s["mflops"], s["metric"]) for s in ss])
            front = front_at(env, p["mflops"])
            vs = 100 * (p["metric"] - front)
            best_s = max(ss, key=lambda s: s["metric"])
            best = best_s["metric"]
            pct = 100 * p["mflops"] / best_s["mflops"]
            vsb = 100 * (p["metric"] - best)
        f = lambda x, fmt: "–" if x is None else format(x, fmt)
        g1 = p["action_rates"].get("gate1", [0, 0])
        g2 = p["action_rates"].get("gate2", [0, 0])
        print(f"| {p['variant']} | {p['lambda']} | {p['seed']} | {p['metric']:.4f} | {p['mflops']:.3f} "
              f"({p['cost_fraction']:.3f}) | {f(front, '.4f')} | {f(vs, '+.2f')} | {f(best, '.4f')} | {f(pct, '.1f')} % | "
              f"{f(vsb, '+.2f')} | {p['random_routing_metric']:.4f} ({p['random_routing_mflops']:.3f}) | "
              f"{100 * (p['metric'] - p['random_routing_metric']):+.2f} | {g1[0]:.3f}/{g1[1]:.3f} | "
              f"{g2[0]:.3f}/{g2[1]:.3f} ({p['controller_run_rates'].get('gate2', 0):.3f}) | {p['wall_seconds']:.0f} s |")
    if "--write" not in sys.argv:
        return
    obj = {"design": "cascade", "metric": "f1", "task": "fashion-binary, positive class 6 (Shirt) vs the rest",
           "machine": "machine B (2-core AMD EPYC), 2026-12-02: runs/i18k 13:27-15:01 UTC under nice -n 19 beside "
                      "other builds; runs/i18k2 from 17:37 UTC with OMP_NUM_THREADS=1 under nice -n -5 beside two "
                      "engineers' builds and container runs (wall times are not benchmarks)",
           "full_mflops": full,
           "notes": "cost_fraction: MFLOPs / 5.266 (every node of configs/cascade.toml), except the conv-gate rows "
                    "(config configs/cascade.toml@b845f95), whose fraction is of that network's 5.352 MFLOPs; "
                    "the hg_marg rows at lambda 0.6/0.75/0.9 ran from runs/i18k/cfg/cascade.toml, identical to "
                    "configs/cascade.toml but for train.lambda and sweep.lambdas",
           "static": [{k: s[k] for k in ("config", "mflops", "metric", "seed", "accuracy", "run_dir", "wall_seconds",
                                         "command")} | {"cost_fraction": s["mflops"] / full} for s in st],
           "dynamic": [{k: p[k] for k in ("config", "variant", "lambda", "seed", "cost_fraction", "mflops", "metric",
                                          "accuracy", "random_routing_metric", "random_routing_mflops",
                                          "random_routing", "action_rates", "controller_run_rates", "run_dir",
                                          "wall_seconds", "command")} for p in dy]}
    obj["static"] += others["static"]
    obj["dynamic"] += others["dynamic"]
    designs = load("docs/results/designs.json")
    designs = [d for d in designs if d.get("design") != "cascade"] + [obj]
    with open("docs/results/designs.json", "w") as f:
        json.dump(designs, f, indent=2, ensure_ascii=False)
    plot(st, dy, full)


def plot(st, dy, full):
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    names = ["stage1", "stage12", "full"]
    means = []
    for n in names:
        xs = [s for s in st if s["name"] == n]
        if xs:
            means.append((xs[0]["mflops"], sum(s["metric"] for s in xs) / len(xs)))
            ax.scatter([s["mflops"] for s in xs], [s["metric"] for s in xs], color="black", s=14, zorder=3)
            ax.annotate(f"static {n}", (xs[0]["mflops"], min(s["metric"] for s in xs)), textcoords="offset points",
                        xytext=(4, -12), fontsize=8)
    env = envelope(means)
    ax.plot([c for c, _ in env], [m for _, m in env], color="black", lw=1.2, label="static front (seed means)")
    colors = {"hg_marg": "tab:red", "hg_perex": "tab:blue", "hg_bag": "tab:green", "d2nn_marg": "tab:gray",
              "ship": "tab:orange", "greedy": "tab:purple"}
    labels = {"hg_marg": "D2NN (cascade.toml): bag 32 F1, marginal credit", "hg_perex": "D2NN, per-example reward",
              "hg_bag": "D2NN, bag 32 F1, bag credit (paper's)",
              "d2nn_marg": "D2NN, conv gates (tried)",
              "ship": "D2NN (cascade.toml), rerun on one thread",
              "greedy": "D2NN, q_continuation = greedy_path (one thread)"}
    markers = {0: "s", 1: "^", 2: "D", 3: "v", 4: "P"}
    seen = set()
    for p in dy:
        v = p["variant"]
        lab = labels[v] if v not in seen else None
        seen.add(v)
        ax.scatter(p["mflops"], p["metric"], color=colors[v], marker=markers.get(p["seed"], "o"), s=40, label=lab,
                   zorder=4)
        ax.annotate(f"λ={p['lambda']:g} s{p['seed']}", (p["mflops"], p["metric"]), textcoords="offset points",
                    xytext=(4, 3), fontsize=7, color=colors[v])
        ax.scatter(p["random_routing_mflops"], p["random_routing_metric"], facecolors="none", edgecolors=colors[v],
                   marker=markers.get(p["seed"], "o"), s=30, zorder=2)
    ax.set_xscale("log")
    ax.set_xticks([0.132, 0.3, 0.586, 1, 2, 5.256])
    ax.xaxis.set_major_formatter(plt.matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    ax.set_xlabel("mean MFLOPs per example (log)")
    ax.set_ylabel("test F1 (Shirt vs rest)")
    ax.set_title("cascade at equal cost (issue #18); hollow: random routing at the same rates")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig("docs/img/cascade_issue18.png", dpi=110)


if __name__ == "__main__":
    main()
