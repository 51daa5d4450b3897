"""Checks one `helm template` rendering of helm/d2nn, offline.

1. Every object validates strictly (unknown fields rejected) against the Kubernetes schemas bundled in
   kubernetes-validate, for the given version. A kind it has no schema for is an error, except Volcano's
   PodGroup, which is checked against tests/helm/podgroup.schema.json instead.
2. The objects fit together the way the d2nn commands need (the invariants below), and match what the
   case expects (--expect, a JSON object; keys documented in `check_expectations`).

Prints one line per problem and exits 1 if there is any, 0 otherwise.
Usage: check_manifests.py RENDERED.yaml --k8s 1.35.0 [--expect JSON]
"""
import argparse
import base64
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


class Problems(list):
    def check(self, ok, message):
        if not ok:
            self.append(message)
        return ok


def validate_schemas(docs, k8s_version, problems):
    podgroup_schema = json.loads((HERE / "podgroup.schema.json").read_text())
    for doc in docs:
        what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "PodGroup" and doc.get("apiVersion", "").startswith("scheduling.volcano.sh/"):
            for err in jsonschema.Draft202012Validator(podgroup_schema).iter_errors(doc):
                path = ".".join(str(p) for p in err.absolute_path)
                problems.append(f"{what}: {path}: {err.message} (podgroup.schema.json)")
            continue
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            problems.append(f"{what}: {path}: {err.message} (Kubernetes {k8s_version}, strict)")
        except kubernetes_validate.SchemaNotFoundError as err:
            problems.append(f"{what}: {err.message}")


def args_of(container):
    """--key=value arguments as a dict (flags without a value map to True)."""
    out = {}
    for arg in container.get("args", []):
        if arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            out[key] = value if sep else True
    return out


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def mounts_by_volume(pod_spec, container):
    """volume name -> (volume source, mountPath) for one container."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    return {m["name"]: (volumes.get(m["name"]), m["mountPath"]) for m in container.get("volumeMounts", [])}


def check_invariants(docs, namespace, problems):
    """What the coordinator and the workers need from each other, whatever the values."""
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    jobs = {j["metadata"]["labels"].get("app.kubernetes.io/component"): j for j in by_kind.get("Job", [])}
    if not problems.check(set(jobs) == {"coordinator", "worker"} and len(by_kind.get("Job", [])) == 2,
                          f"expected one coordinator Job and one worker Job, got {sorted(map(str, jobs))}"):
        return None
    coord_job, worker_job = jobs["coordinator"], jobs["worker"]
    coord_pod, worker_pod = coord_job["spec"]["template"], worker_job["spec"]["template"]
    coord = coord_pod["spec"]["containers"][0]
    worker = worker_pod["spec"]["containers"][0]
    cargs, wargs, cenv, wenv = args_of(coord), args_of(worker), env_of(coord), env_of(worker)

    # The commands.
    problems.check(coord.get("command") == ["d2nn"] and "coordinator" in coord.get("args", []),
                   f"coordinator container does not run `d2nn coordinator`: {coord.get('command')} {coord.get('args')}")
    problems.check(worker.get("command") == ["d2nn"] and "worker" in worker.get("args", []),
                   f"worker container does not run `d2nn worker`: {worker.get('command')} {worker.get('args')}")
    problems.check(coord["image"] == worker["image"], f"two images: {coord['image']} and {worker['image']}")

    # Workers: an Indexed Job of WORLD_SIZE pods, all at once, RANK = completion index.
    ws = worker_job["spec"]
    world = wenv.get("WORLD_SIZE")
    problems.check(ws.get("completionMode") == "Indexed", "worker Job is not Indexed")
    problems.check(str(ws.get("completions")) == world and str(ws.get("parallelism")) == world,
                   f"worker Job completions/parallelism {ws.get('completions')}/{ws.get('parallelism')} != WORLD_SIZE {world}")
    problems.check(cenv.get("WORLD_SIZE") == world and cargs.get("workers") == world,
                   f"coordinator WORLD_SIZE {cenv.get('WORLD_SIZE')} / --workers {cargs.get('workers')} != workers' {world}")
    problems.check(wenv.get("RANK") == {"fieldRef": {"fieldPath": COMPLETION_INDEX}},
                   f"worker RANK is not the completion-index annotation: {wenv.get('RANK')}")
    problems.check("RANK" not in cenv, "the coordinator has a RANK (it is not a worker)")

    # MASTER_ADDR:MASTER_PORT is a Service that selects the coordinator pod, on the port it listens on.
    services = by_kind.get("Service", [])
    if problems.check(len(services) == 1, f"expected one Service, got {len(services)}"):
        svc = services[0]
        port = svc["spec"]["ports"][0]
        want_addr = f"{svc['metadata']['name']}.{namespace}.svc"
        for who, env in (("coordinator", cenv), ("worker", wenv)):
            problems.check(env.get("MASTER_ADDR") == want_addr,
                           f"{who} MASTER_ADDR {env.get('MASTER_ADDR')} != Service DNS name {want_addr}")
            problems.check(env.get("MASTER_PORT") == str(port["port"]),
                           f"{who} MASTER_PORT {env.get('MASTER_PORT')} != Service port {port['port']}")
        labels = coord_pod["metadata"]["labels"]
        problems.check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
                       f"Service selector {svc['spec']['selector']} does not select the coordinator pod {labels}")
        problems.check(not all(worker_pod["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items()),
                       "Service selector also selects the workers")
        cport = {p["name"]: p["containerPort"] for p in coord.get("ports", [])}
        problems.check(cport.get(port["targetPort"]) == port["port"],
                       f"Service targetPort {port['targetPort']} is not the coordinator's port {port['port']} ({cport})")
        problems.check(cargs.get("listen") == f"0.0.0.0:{port['port']}",
                       f"coordinator --listen {cargs.get('listen')} != 0.0.0.0:{port['port']}")

    # NetworkPolicies, when rendered, match what listens: the coordinator's pod admits its --listen
    # port from the workers only; worker pods admit the workers (ephemeral ring and NCCL ports).
    policies = by_kind.get("NetworkPolicy", [])
    if policies:
        def selects(selector, pod):
            labels = pod["metadata"]["labels"]
            return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
        listen_port = cargs.get("listen", "").rpartition(":")[2]
        for who, pod in (("coordinator", coord_pod), ("worker", worker_pod)):
            mine = [p for p in policies if selects(p["spec"]["podSelector"], pod)]
            if not problems.check(len(mine) == 1, f"{who} pod is selected by {len(mine)} NetworkPolicies, not 1"):
                continue
            rules = mine[0]["spec"].get("ingress", [])
            for rule in rules:
                sources = [f.get("podSelector", {"none": "a source that is not a pod selector"}) for f in rule.get("from", [])]
                problems.check(sources and all(selects(src, worker_pod) and not selects(src, coord_pod) for src in sources),
                               f"{who} NetworkPolicy admits sources other than the release's workers: {rule.get('from')}")
                ports = sorted(str(p.get("port")) for p in rule.get("ports", []))
                if who == "coordinator":
                    problems.check(ports == [listen_port],
                                   f"coordinator NetworkPolicy ports {ports} != its --listen port {listen_port}")
                else:
                    problems.check(ports == [], f"worker NetworkPolicy limits ports to {ports}: the ring's are ephemeral")
            problems.check(len(rules) == 1, f"{who} NetworkPolicy has {len(rules)} ingress rules, not 1")

    # One shared run directory: the same claim at the same path in both pods, --run-dir inside it.
    cm, wm = mounts_by_volume(coord_pod["spec"], coord), mounts_by_volume(worker_pod["spec"], worker)
    run_dir = cargs.get("run-dir", "")
    claim = None
    if problems.check("run-dir" in cm and "run-dir" in wm, "run-dir volume not mounted in both pods"):
        (cvol, cpath), (wvol, wpath) = cm["run-dir"], wm["run-dir"]
        claim = (cvol or {}).get("persistentVolumeClaim", {}).get("claimName")
        problems.check(claim and cvol == wvol, f"run-dir volumes differ or are not a PVC: {cvol} vs {wvol}")
        problems.check(cpath == wpath, f"run-dir mounted at {cpath} (coordinator) and {wpath} (workers)")
        problems.check(run_dir.startswith(cpath.rstrip("/") + "/"), f"--run-dir {run_dir} is not inside {cpath}")
    pvcs = [p["metadata"]["name"] for p in by_kind.get("PersistentVolumeClaim", [])]
    problems.check(not pvcs or pvcs == [claim], f"rendered claims {pvcs}, mounted claim {claim}")

    # One cookie: the same Secret in both, --cookie-file inside its mount, and a generated one is long enough.
    secret_name = None
    for who, mounts, args, env in (("coordinator", cm, cargs, cenv), ("worker", wm, wargs, wenv)):
        if problems.check("cookie" in mounts, f"{who}: no cookie volume"):
            vol, path = mounts["cookie"]
            secret_name = secret_name or vol["secret"]["secretName"]
            problems.check(vol["secret"]["secretName"] == secret_name, f"{who}: another cookie Secret")
            problems.check(args.get("cookie-file", "").startswith(path + "/"),
                           f"{who}: --cookie-file {args.get('cookie-file')} is not in the cookie mount {path}")
            problems.check("D2NN_CLUSTER_COOKIE" not in env, f"{who}: the cookie is in the environment")
    for secret in by_kind.get("Secret", []):
        problems.check(secret["metadata"]["name"] == secret_name,
                       f"rendered Secret {secret['metadata']['name']} is not the mounted one {secret_name}")
        cookie = base64.b64decode(secret["data"]["cookie"]).decode()
        problems.check(len(cookie) >= 16, f"generated cookie has {len(cookie)} characters, d2nn needs 16")

    # TLS on both ends or neither: each --tls-* file inside a mount of the same Secret in both pods.
    tls_secret = None
    flags = ("tls-cert", "tls-key", "tls-ca")
    on = [who for who, args in (("coordinator", cargs), ("worker", wargs)) if any(f in args for f in flags)]
    if on and problems.check(on == ["coordinator", "worker"], f"TLS flags only in the {on} pod: the other end is plain"):
        for who, mounts, args in (("coordinator", cm, cargs), ("worker", wm, wargs)):
            problems.check(all(f in args for f in flags), f"{who}: TLS needs all of --tls-cert, --tls-key, --tls-ca")
            if problems.check("tls" in mounts, f"{who}: TLS flags without a tls volume"):
                vol, path = mounts["tls"]
                tls_secret = tls_secret or vol["secret"]["secretName"]
                problems.check(vol["secret"]["secretName"] == tls_secret, f"{who}: another TLS Secret")
                items = {f"{path}/{i['path']}" for i in vol["secret"].get("items", [])}
                for f in flags:
                    problems.check(args.get(f) in items, f"{who}: --{f} {args.get(f)} is not a mounted item {sorted(items)}")

    # The config: a mounted ConfigMap when --config points into /etc/d2nn/config.
    config = cargs.get("config", "")
    if config.startswith("/etc/d2nn/config/"):
        if problems.check("config" in cm, f"--config {config} but no config volume"):
            vol, path = cm["config"]
            cm_name = vol["configMap"]["name"]
            rendered = [c for c in by_kind.get("ConfigMap", []) if c["metadata"]["name"] == cm_name]
            item_paths = [i["path"] for i in vol["configMap"].get("items", [])]
            problems.check(config == f"{path}/{item_paths[0] if item_paths else ''}",
                           f"--config {config} is not the mounted item {path}/{item_paths}")
            for c in rendered:
                key = vol["configMap"]["items"][0]["key"]
                problems.check(key in c.get("data", {}), f"ConfigMap {cm_name} has no key {key}")
    else:
        problems.check(config.startswith("/opt/d2nn/"), f"--config {config} is neither mounted nor in the image")

    # Gang scheduling: every pod in the PodGroup, through Volcano, and the gang not larger than the job.
    groups = by_kind.get("PodGroup", [])
    for who, pod in (("coordinator", coord_pod), ("worker", worker_pod)):
        group = pod["metadata"].get("annotations", {}).get("scheduling.k8s.io/group-name")
        if groups:
            problems.check(group == groups[0]["metadata"]["name"], f"{who} pod is not in PodGroup: {group}")
            problems.check(pod["spec"].get("schedulerName"), f"{who} pod has no schedulerName")
        else:
            problems.check(group is None and "schedulerName" not in pod["spec"],
                           f"{who} pod has gang settings without a PodGroup")
    if groups:
        pods = int(world) + 1
        problems.check(groups[0]["spec"]["minMember"] <= pods,
                       f"PodGroup minMember {groups[0]['spec']['minMember']} > pods of the job {pods}")

    return {
        "coord_job": coord_job, "worker_job": worker_job, "coord": coord, "worker": worker,
        "cargs": cargs, "wargs": wargs, "cenv": cenv, "wenv": wenv, "by_kind": by_kind,
        "claim": claim, "secret": secret_name, "tls_secret": tls_secret,
    }


def check_expectations(view, expect, problems):
    """Case-specific expectations:
    workers: int          worker pods
    gpus: int             nvidia.com/gpu limit per worker (0: none), and --device cuda:0 with one
    image: str            image of both containers
    kinds: [str]          the exact sorted list of kinds rendered
    claim / secret / configMap: str   names mounted
    tls_secret: str or null      the TLS Secret both pods mount and pass as --tls-* (null: TLS off)
    config_text_from: str path of a file whose text the rendered ConfigMap must hold
    min_member: int       PodGroup minMember
    scheduler: str        schedulerName of both pods
    restart_policy: str   both pods
    worker_env / coord_env: {name: value}   must be present with these values
    worker_node_selector / coord_node_selector: {}   exactly (absent = {})
    worker_tolerations / coord_tolerations: []       exactly (absent = [])
    coord_args: {flag: value}   e.g. {"max-steps": "500", "auto-resume": true}; value null: absent
    worker_data_mount / coord_data_mount: bool   whether the pod mounts the data claim at /opt/d2nn/data
    """
    def eq(name, got, want):
        problems.check(got == want, f"{name}: got {got!r}, want {want!r}")

    if not view:
        return
    wpod, cpod = view["worker_job"]["spec"]["template"]["spec"], view["coord_job"]["spec"]["template"]["spec"]
    if "workers" in expect:
        eq("worker completions", view["worker_job"]["spec"]["completions"], expect["workers"])
    if "gpus" in expect:
        limits = view["worker"].get("resources", {}).get("limits", {})
        eq("worker nvidia.com/gpu", limits.get("nvidia.com/gpu", 0), expect["gpus"])
        eq("worker --device", view["wargs"].get("device"), "cuda:0" if expect["gpus"] else "cpu")
        problems.check("nvidia.com/gpu" not in view["coord"].get("resources", {}).get("limits", {}),
                       "the coordinator asks for a GPU")
    if "image" in expect:
        eq("image", view["coord"]["image"], expect["image"])
    if "kinds" in expect:
        eq("kinds", sorted(d["kind"] for kinds in view["by_kind"].values() for d in kinds), sorted(expect["kinds"]))
    if "claim" in expect:
        eq("run-dir claim", view["claim"], expect["claim"])
    if "secret" in expect:
        eq("cookie Secret", view["secret"], expect["secret"])
    if "tls_secret" in expect:
        eq("TLS Secret", view["tls_secret"], expect["tls_secret"])
    if "configMap" in expect:
        vols = {v["name"]: v for v in cpod.get("volumes", [])}
        eq("config ConfigMap", vols.get("config", {}).get("configMap", {}).get("name"), expect["configMap"])
    if "config_text_from" in expect:
        want = pathlib.Path(expect["config_text_from"]).read_text()
        got = [c["data"].get("config.toml") for c in view["by_kind"].get("ConfigMap", [])]
        problems.check(got and got[0].rstrip("\n") == want.rstrip("\n"),
                       f"ConfigMap config.toml is not the text of {expect['config_text_from']}")
    if "min_member" in expect:
        eq("PodGroup minMember", view["by_kind"]["PodGroup"][0]["spec"]["minMember"], expect["min_member"])
    if "scheduler" in expect:
        eq("worker schedulerName", wpod.get("schedulerName"), expect["scheduler"])
        eq("coordinator schedulerName", cpod.get("schedulerName"), expect["scheduler"])
    if "restart_policy" in expect:
        eq("worker restartPolicy", wpod["restartPolicy"], expect["restart_policy"])
        eq("coordinator restartPolicy", cpod["restartPolicy"], expect["restart_policy"])
    for who, env in (("worker", view["wenv"]), ("coord", view["cenv"])):
        for name, value in expect.get(f"{who}_env", {}).items():
            eq(f"{who} env {name}", env.get(name), value)
    for who, pod in (("worker", wpod), ("coord", cpod)):
        eq(f"{who} nodeSelector", pod.get("nodeSelector", {}), expect.get(f"{who}_node_selector", {}))
        eq(f"{who} tolerations", pod.get("tolerations", []), expect.get(f"{who}_tolerations", []))
    for flag, value in expect.get("coord_args", {}).items():
        eq(f"coordinator --{flag}", view["cargs"].get(flag), value)
    for who, container in (("worker", view["worker"]), ("coord", view["coord"])):
        if f"{who}_data_mount" in expect:
            mounted = any(m["mountPath"] == "/opt/d2nn/data" for m in container.get("volumeMounts", []))
            eq(f"{who} mounts the data claim", mounted, expect[f"{who}_data_mount"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("rendered")
    parser.add_argument("--k8s", required=True, help="Kubernetes version of the schemas, e.g. 1.35.0")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--expect", default="{}", help="JSON object of case expectations")
    args = parser.parse_args()

    docs = [d for d in yaml.safe_load_all(pathlib.Path(args.rendered).read_text()) if d]
    problems = Problems()
    if not docs:
        problems.append("nothing rendered")
    validate_schemas(docs, args.k8s, problems)
    view = check_invariants(docs, args.namespace, problems) if docs else None
    check_expectations(view, json.loads(args.expect), problems)
    for p in problems:
        print(f"  {p}")
    kinds = ", ".join(sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs))
    if not problems:
        print(f"  {len(docs)} objects valid and consistent: {kinds}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
