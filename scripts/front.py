"""What the issue-18 collectors (cascade_issue18.py, cascade_centered.py, chain_issue18.py,
hierarchical_issue18.py) share: reading a JSON file and a static front, the upper envelope of (MFLOPs, metric)
points, linear between its corners, and drawing a front with the D2NN points beside it."""
import glob
import json
import os


def load(path):
    with open(path) as f:
        return json.load(f)


def finished_runs(pattern):
    """(seed, run folder, summary) for every folder matching the glob `pattern` (named …_seedN) whose run
    finished (wrote summary.json), in name order."""
    for d in sorted(glob.glob(pattern)):
        s = os.path.join(d, "summary.json")
        if os.path.exists(s):
            yield int(d.rsplit("seed", 1)[1]), d, load(s)


# How the issue-18 runs were started (one thread each, beside other work).
NICE = "OMP_NUM_THREADS=1 nice -n 10 "


def static_entry(config, name, seed, run_dir, summary, metric, full_mflops, sets=""):
    """A designs.json "static" entry for a finished `d2nn train` run of `config` (its summary's `metric`,
    cost as a fraction of `full_mflops`), with the command that reproduces it (`sets`: extra --set flags)."""
    mflops = summary["mean_mflops_per_example"]
    return {"config": config, "name": name, "seed": seed, "cost_fraction": mflops / full_mflops, "mflops": mflops,
            "metric": summary[metric], "run_dir": run_dir, "wall_seconds": summary["wall_seconds"],
            "command": f"{NICE}d2nn train --config {config} --set seed={seed}{sets} "
                       f"--workers 1 --quiet --run-dir {run_dir}"}


def d2nn_points(runs, variants):
    """(variant, seed, sweep folder, point) for every D2NN point of the sweeps `runs`/VARIANT_lLL_seedN
    (d2nn sweep --run-dir) whose VARIANT is a key of `variants`."""
    for sweep in sorted(glob.glob(f"{runs}/*_l*_seed*/sweep.json")):
        d = os.path.dirname(sweep)
        base = os.path.basename(d)
        variant = base.rsplit("_l", 1)[0]
        if variant not in variants:
            continue
        seed = int(base.rsplit("seed", 1)[1])
        for p in load(sweep)["points"]:
            if p["kind"] == "d2nn":
                yield variant, seed, d, p


def write_design(designs, design, statics, dynamics, path="docs/results/designs.json"):
    """In `designs` (designs.json's list), replace the entries of object `design` that share a run folder
    with `statics` or `dynamics` by them (keeping every other recorded run) and write the list to `path`."""
    obj = next(d for d in designs if d.get("design") == design)
    fresh = {e["run_dir"] for e in statics + dynamics}
    obj["static"] = [s for s in obj["static"] if s["run_dir"] not in fresh] + statics
    obj["dynamic"] = [p for p in obj["dynamic"] if p["run_dir"] not in fresh] + dynamics
    with open(path, "w") as f:
        json.dump(designs, f, indent=2, ensure_ascii=False)


def envelope(points):
    """Upper envelope (cost ascending, metric increasing) of (mflops, metric)."""
    env = []
    for c, m in sorted(points):
        if not env or m > env[-1][1]:
            env.append((c, m))
    return env


def front_at(env, c):
    """The envelope's metric at cost c: linear between corners, flat beyond its ends."""
    if c <= env[0][0]:
        return env[0][1]
    for (c0, m0), (c1, m1) in zip(env, env[1:]):
        if c <= c1:
            return m0 + (m1 - m0) * (c - c0) / (c1 - c0)
    return env[-1][1]


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None (and a message) where matplotlib is not importable."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401  (plots reach it as plt.matplotlib.ticker)
    except ImportError:
        import sys
        print("matplotlib not importable: no plot", file=sys.stderr)
        return None
    return plt


SEED_MARKERS = {0: "s", 1: "^", 2: "D"}


def draw_front_and_points(plt, statics, dynamics, colors):
    """A log-cost axes with the static front of the seed means (`statics`: dicts with name, mflops,
    metric), every static run as a dot, and each D2NN of `dynamics` as a marker by seed, coloured by its
    variant (`colors`), with its random routing at the same rates hollow beneath it. Returns (fig, ax)."""
    fig, ax = plt.subplots(figsize=(8, 6))
    means = {}
    for s in statics:
        means.setdefault(s["name"], []).append(s)
    env = envelope([(v[0]["mflops"], sum(s["metric"] for s in v) / len(v)) for v in means.values()])
    ax.plot([c for c, _ in env], [m for _, m in env], color="black", lw=1.2, label="static front (seed means)")
    ax.scatter([s["mflops"] for s in statics], [s["metric"] for s in statics], color="black", s=12, zorder=3)
    for name, v in means.items():
        ax.annotate(name, (v[0]["mflops"], min(s["metric"] for s in v)), textcoords="offset points",
                    xytext=(4, -11), fontsize=7)
    seen = set()
    for p in dynamics:
        color, marker = colors.get(p["variant"], "tab:green"), SEED_MARKERS.get(p["seed"], "o")
        label = f"D2NN, {p['variant']}"
        ax.scatter(p["mflops"], p["metric"], color=color, marker=marker, s=40, zorder=4,
                   label=None if label in seen else label)
        ax.scatter(p["mflops"], p["random_routing_metric"], facecolors="none", edgecolors=color, marker=marker,
                   s=40, zorder=4)
        seen.add(label)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plt.matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    ax.set_xlabel("mean MFLOPs per example (log)")
    ax.grid(alpha=0.3)
    return fig, ax
