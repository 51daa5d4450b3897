"""Every value of helm/d2nn/values.yaml has a row in docs/deploy.md's values table (`| `key` | ...`), and
every row names a value that exists. Sections are followed down to their settings; maps that pass
through to Kubernetes (resources, nodeSelector, securityContext, ...) are one value each.
Usage: check_docs.py VALUES.yaml DEPLOY.md"""
import re
import sys

import yaml

SECTIONS = {"image", "run", "runDir", "data", "cookie", "coordinator", "worker", "nccl", "shm",
            "logging", "gang", "networkPolicy", "tls"}


def keys(values):
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict):
            yield from (f"{key}.{sub}" for sub in value)
        else:
            yield key


def main(values_path, doc_path):
    values = set(keys(yaml.safe_load(open(values_path))))
    rows = set(re.findall(r"^\| `([A-Za-z.]+)` \|", open(doc_path).read(), re.M))
    missing, stale = sorted(values - rows), sorted(rows - values)
    for key in missing:
        print(f"  {doc_path}: no row for the value {key}")
    for key in stale:
        print(f"  {doc_path}: a row for {key}, which is not in {values_path}")
    if not missing and not stale:
        print(f"  {len(values)} values, each with a row")
    return 1 if missing or stale else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
