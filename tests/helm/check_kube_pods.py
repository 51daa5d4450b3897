#!/usr/bin/env python3
"""Checks what tests/helm/kube_pods.py wrote (scripts/helm_check.sh runs it offline, without podman):

    check_kube_pods.py PODS.json

The pods must carry what a Kubernetes Job controller and the cluster would give them, or the podman run
of scripts/chart_run.sh would prove nothing: one Pod per completion index with its annotation, RANK read
from it, MASTER_ADDR resolving to the coordinator's IP, the cookie as a file of the Secret's decoded
value with the Secret's mode, the run-dir claim and the pods' security context kept."""
import json
import os
import re
import sys

import yaml

problems = []


def expect(cond, message):
    if not cond:
        problems.append(message)


def check_run_lengths(args, env):
    """Every run of scripts/chart_run.sh must end at its --max-steps (what it asserts in summary.json),
    not earlier at the end of the configured epochs: the values must give enough epochs. (It once ran
    800 steps with the config's 5 epochs, 200 steps, and found summary.json at 200.)"""
    values = {e: env.get(e, {}).get("value") for e in ("D2NN_TRAIN__EPOCHS", "D2NN_DATA__TRAIN_LIMIT",
                                                         "D2NN_TRAIN__BATCH_SIZE")}
    missing = [k for k, v in values.items() if v is None]
    if missing:
        expect(False, f"the podman values must set {missing} (run.overrides), so a run's length is known")
        return
    epochs, limit, batch = (int(v) for v in values.values())
    expect(limit % batch == 0, f"train_limit {limit} is not a multiple of batch_size {batch}")
    total = epochs * (limit // batch)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "chart_run.sh")
    runs = {"run 1 (run.maxSteps)": [a.split("=", 1)[1] for a in args if a.startswith("--max-steps=")]}
    runs["run 1 (run.maxSteps)"] = int(runs["run 1 (run.maxSteps)"][0]) if runs["run 1 (run.maxSteps)"] else None
    for var, steps in re.findall(r"\b(STEPS_[A-Z]+)=([0-9]+)", open(script).read()):
        runs[f"chart_run.sh {var}"] = int(steps)
    expect(len(runs) >= 3, f"expected run 1's --max-steps and chart_run.sh's STEPS_LOSE, STEPS_STOP: {runs}")
    for run, steps in runs.items():
        expect(steps is not None and 0 < steps <= total,
               f"{run}: {steps} steps, but train.epochs {epochs} x ({limit} / {batch}) is {total} steps")


def main():
    out = json.load(open(sys.argv[1]))
    coord = out["coordinator"]
    expect(len(out["workers"]) == 2, f"workers: {out['workers']}")
    expect(out["claims"] == ["rel-d2nn-runs"], f"claims: {out['claims']}")
    for index, name in enumerate([coord] + out["workers"]):
        pod = yaml.safe_load(open(out["pods"][name]["file"]))
        spec, meta = pod["spec"], pod["metadata"]
        expect(pod["kind"] == "Pod" and meta["name"] == name, f"{name}: not a Pod of that name")
        (c,) = spec["containers"]
        env = {e["name"]: e for e in c["env"]}
        aliases = spec.get("hostAliases", [])
        expect(aliases == [{"ip": "10.89.24.10", "hostnames": [env["MASTER_ADDR"]["value"]]}],
               f"{name}: hostAliases {aliases}")
        expect(spec["securityContext"].get("runAsUser") == 1000 and spec["securityContext"].get("fsGroup") == 1000,
               f"{name}: securityContext {spec['securityContext']}")
        vols = {v["name"]: v for v in spec["volumes"]}
        expect(all("secret" not in v for v in vols.values()), f"{name}: a secret volume is left")
        cookie_dir = vols["cookie"]["hostPath"]["path"]
        cookie = os.path.join(cookie_dir, "cookie")
        expect(os.stat(cookie).st_mode & 0o777 == 0o440, f"{name}: cookie mode {oct(os.stat(cookie).st_mode)}")
        expect(len(open(cookie).read()) >= 16, f"{name}: the cookie file holds less than 16 characters")
        expect(vols["run-dir"]["persistentVolumeClaim"]["claimName"] == "rel-d2nn-runs", f"{name}: claim")
        if name == coord:
            expect("RANK" not in env, f"{name}: the coordinator has a RANK")
            check_run_lengths(out["pods"][name]["args"], env)
            continue
        i = index - 1
        expect(meta["annotations"].get("batch.kubernetes.io/job-completion-index") == str(i),
               f"{name}: completion index annotation {meta.get('annotations')}")
        ref = env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
        expect(ref == "metadata.annotations['batch.kubernetes.io/job-completion-index']", f"{name}: RANK from {ref}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"{len(out['pods'])} pods as a Job controller makes them")


if __name__ == "__main__":
    main()
