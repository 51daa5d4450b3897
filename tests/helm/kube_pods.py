#!/usr/bin/env python3
"""Turns a `helm template` rendering of helm/d2nn into what `podman kube play` runs (scripts/chart_run.sh).

    kube_pods.py RENDERED OUTDIR --coordinator-ip IP

Writes into OUTDIR, and prints a JSON summary of it:
  coordinator.yaml   the coordinator Job's pod template as a Pod (the Job controller's part)
  worker-<i>.yaml    one Pod per completion index of the Indexed worker Job, with the annotation
                     batch.kubernetes.io/job-completion-index the Job controller sets (RANK reads it)
  configmap.yaml     the ConfigMap, when the chart renders one (for `podman kube play --configmap`)
  secret-<name>/     each Secret volume's items as files, mode `defaultMode` with the pod's fsGroup as
                     their group (what the kubelet does), mounted as a hostPath directory: podman 4.3
                     panics on a secret volume without `optional` and writes the data undecoded
The Service (headless: its DNS name answers with the coordinator pod's IP) becomes a hostAliases entry
for MASTER_ADDR in every pod, pointing at the coordinator pod's fixed IP on the podman network.
Anything the conversion cannot carry over faithfully is an error, not a silent change.
"""
import argparse
import base64
import copy
import json
import os
import sys

import yaml


def fail(message):
    print(f"kube_pods.py: {message}", file=sys.stderr)
    sys.exit(1)


def env_value(container, name):
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("outdir")
    ap.add_argument("--coordinator-ip", required=True)
    args = ap.parse_args()

    with open(args.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    jobs = {j["metadata"]["labels"].get("app.kubernetes.io/component"): j for j in by_kind.get("Job", [])}
    if set(jobs) != {"coordinator", "worker"}:
        fail(f"expected a coordinator Job and a worker Job, found {sorted(jobs)}")
    services = by_kind.get("Service", [])
    if len(services) != 1 or services[0]["spec"].get("clusterIP") != "None":
        fail("expected one headless Service (the coordinator's)")
    os.makedirs(args.outdir, exist_ok=True)

    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
    out = {"pods": {}, "claims": [], "configmap": None, "grace_seconds": None, "master_addr": None}

    def to_pod(job, name, index=None):
        template = copy.deepcopy(job["spec"]["template"])
        meta = template.setdefault("metadata", {})
        meta["name"] = name
        meta.setdefault("labels", {})["batch.kubernetes.io/job-name"] = job["metadata"]["name"]
        spec = template["spec"]
        if index is not None:
            meta.setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = str(index)
        (container,) = spec["containers"]
        master = env_value(container, "MASTER_ADDR")
        if not master:
            fail(f"{name}: no MASTER_ADDR")
        out["master_addr"] = master
        spec["hostAliases"] = [{"ip": args.coordinator_ip, "hostnames": [master]}]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        for vol in spec.get("volumes", []):
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                if claim not in out["claims"]:
                    out["claims"].append(claim)
            elif "secret" in vol:
                src = vol.pop("secret")
                secret = secrets.get(src["secretName"])
                if secret is None:
                    fail(f"{name}: Secret {src['secretName']} is not in the rendering")
                path = os.path.abspath(os.path.join(args.outdir, f"secret-{src['secretName']}"))
                os.makedirs(path, exist_ok=True)
                os.chmod(path, 0o755)
                for item in src.get("items") or [{"key": k, "path": k} for k in secret.get("data", {})]:
                    data = secret.get("data", {}).get(item["key"])
                    if data is None:
                        fail(f"{name}: Secret {src['secretName']} has no key {item['key']}")
                    file = os.path.join(path, item["path"])
                    with open(file, "wb") as f:
                        f.write(base64.b64decode(data))
                    os.chmod(file, item.get("mode", src.get("defaultMode", 0o644)))
                    if os.geteuid() == 0:  # as the kubelet; an offline check as a user skips it
                        os.chown(file, 0, fs_group if fs_group is not None else 0)
                vol["hostPath"] = {"path": path, "type": "Directory"}
            elif "configMap" in vol:
                out["configmap"] = vol["configMap"]["name"]
            elif "emptyDir" not in vol:
                fail(f"{name}: volume {vol['name']} has a type this conversion does not carry over")
        out["grace_seconds"] = spec.get("terminationGracePeriodSeconds", 30)
        out["pods"][name] = {
            "container": f"{name}-{container['name']}",
            "restart_policy": spec.get("restartPolicy"),
            "args": container.get("args", []),
        }
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}

    coord = jobs["coordinator"]
    coord_name = coord["metadata"]["name"]
    pod = to_pod(coord, coord_name)
    out["pods"][coord_name]["file"] = os.path.join(args.outdir, "coordinator.yaml")
    with open(out["pods"][coord_name]["file"], "w") as f:
        yaml.safe_dump(pod, f, sort_keys=False)
    worker = jobs["worker"]
    if worker["spec"].get("completionMode") != "Indexed":
        fail("the worker Job is not Indexed (RANK comes from the completion index)")
    for i in range(worker["spec"]["completions"]):
        name = f"{worker['metadata']['name']}-{i}"
        pod = to_pod(worker, name, index=i)
        out["pods"][name]["file"] = os.path.join(args.outdir, f"worker-{i}.yaml")
        with open(out["pods"][name]["file"], "w") as f:
            yaml.safe_dump(pod, f, sort_keys=False)
    for cm in by_kind.get("ConfigMap", []):
        out["configmap_file"] = os.path.join(args.outdir, "configmap.yaml")
        with open(out["configmap_file"], "w") as f:
            yaml.safe_dump(cm, f, sort_keys=False)
    if out["configmap"] and "configmap_file" not in out:
        fail(f"the pods mount ConfigMap {out['configmap']}, which is not in the rendering")
    out["coordinator"] = coord_name
    out["workers"] = [n for n in out["pods"] if n != coord_name]
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
