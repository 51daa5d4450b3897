"""What the issue-18 collectors (cascade_issue18.py, hierarchical_issue18.py) share: reading a JSON file
and a static front, the upper envelope of (MFLOPs, metric) points, linear between its corners."""
import json


def load(path):
    with open(path) as f:
        return json.load(f)


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
