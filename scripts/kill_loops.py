#!/usr/bin/env python3
"""Kill loops on loopback (issue #20): does anything get lost when processes die at random moments?

  1. --train-kills N (100): `kill -9` a `d2nn train` at random moments, every other one aimed at a
     checkpoint write (killed as soon as a staging directory appears). After each kill the run's
     checkpoints must all verify (`d2nn checkpoints list`) and LATEST must load
     (`d2nn checkpoints inspect`); at the end `d2nn train --resume` must finish the run.
  2. --worker-kills N (20): one `d2nn coordinator` run with 3 worker processes and
     `--verify-replicas-every 1`; a random worker is killed and a replacement started, N times.
     The run must finish (every replica digest check passed, or the coordinator would have failed).
  3. --coordinator-kills N (10): a 2-worker run, its coordinator killed N times and restarted with
     `--auto-resume` each time (workers restarted with it); the final parameters must equal an
     undisturbed run's bit for bit (`params_sha256` of the final checkpoint).

Prints one JSON line per loop and exits non-zero if any check failed.
Usage: scripts/kill_loops.py [--train-kills 100] [--worker-kills 20] [--coordinator-kills 10]
       [--binary target/release/d2nn] [--seed 0]
"""
import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COOKIE = "kill-loops-cookie-0123456789abcdef"
# A Fashion-MNIST slice, batch 48 (divisible by 2 and 3): 20 steps per epoch.
SLICE = ["--set", "data.train_limit=960", "--set", "data.test_limit=300", "--set", "train.batch_size=48",
         "--set", "train.log_every=5"]


def env():
    e = dict(os.environ, D2NN_CLUSTER_COOKIE=COOKIE)
    for var in ["RUST_LOG", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"]:
        e.pop(var, None)
    return e


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(cmd, log):
    return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def run(cmd):
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True)


def staging(ckpt_dir):
    try:
        return any(n.startswith(".staging-") for n in os.listdir(ckpt_dir))
    except FileNotFoundError:
        return False


def kill(p):
    if p.poll() is None:
        p.kill()
    p.wait()


def train_loop(d2nn, work, kills, rng, failures):
    run_dir = work / "train"
    ckpt = run_dir / "checkpoints"
    fresh = [d2nn, "train", "--config", "configs/high_low.toml", *SLICE, "--set", "train.epochs=30",
             "--checkpoint-every", "2", "--set", "checkpoint.keep_last=3", "--quiet", "--workers", "1",
             "--run-dir", str(run_dir)]
    stats = {"kills": 0, "during_write": 0, "finished_before_kill": 0, "checks": 0}
    for i in range(kills):
        cmd = [d2nn, "train", "--resume", str(run_dir), "--quiet", "--workers", "1"] \
            if (ckpt / "LATEST").exists() else fresh
        p = spawn(cmd, work / "train.log")
        if i % 2 == 0:
            # Aimed at a write: kill as soon as a staging directory appears.
            deadline = time.time() + 30
            while p.poll() is None and not staging(ckpt) and time.time() < deadline:
                time.sleep(0.0002)
        else:
            time.sleep(rng.uniform(0.2, 3.0))
        if p.poll() is not None:
            stats["finished_before_kill"] += 1
            if p.returncode != 0:
                failures.append(f"train kill {i}: the run failed (exit {p.returncode}), see {work / 'train.log'}")
            shutil.rmtree(run_dir, ignore_errors=True)  # finished: start the next cycle afresh
            continue
        stats["during_write"] += staging(ckpt)
        kill(p)
        stats["kills"] += 1
        if not (ckpt / "LATEST").exists():
            continue
        stats["checks"] += 1
        for check in (["checkpoints", "list", str(run_dir)], ["checkpoints", "inspect", str(run_dir)]):
            r = run([d2nn, *check])
            if r.returncode != 0:
                failures.append(f"train kill {i}: `d2nn {' '.join(check)}` failed: {r.stderr.strip()[-400:]}")
    if (ckpt / "LATEST").exists():
        r = run([d2nn, "train", "--resume", str(run_dir), "--quiet", "--workers", "1"])
        summary = run_dir / "summary.json"
        if r.returncode != 0 or not summary.exists():
            failures.append(f"the final resume failed: {r.stderr.strip()[-400:]}")
        else:
            stats["final_steps"] = json.loads(summary.read_text())["steps"]
    return stats


def coordinator_cmd(d2nn, run_dir, port, workers, extra):
    return [d2nn, "coordinator", "--config", "configs/high_low.toml", *SLICE, "--quiet", "--run-dir", str(run_dir),
            "--listen", f"127.0.0.1:{port}", "--workers", str(workers), *extra]


def worker_cmd(d2nn, port):
    return [d2nn, "worker", "--join", f"127.0.0.1:{port}", "--threads", "1"]


def worker_loop(d2nn, work, kills, rng, failures):
    run_dir, port = work / "workers", free_port()
    # Long enough to outlast the kills (1-3 s apart, each re-forming the cluster): 160 steps per kill.
    extra = ["--set", f"train.epochs={8 * kills}", "--verify-replicas-every", "1", "--heartbeat-timeout", "5"]
    coord = spawn(coordinator_cmd(d2nn, run_dir, port, 3, extra), work / "workers-coordinator.log")
    workers = [spawn(worker_cmd(d2nn, port), work / f"workers-w{i}.log") for i in range(3)]
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.1)
    done = 0
    for k in range(kills):
        time.sleep(rng.uniform(1.0, 3.0))
        if coord.poll() is not None:
            failures.append(f"worker loop: the coordinator ended after {done} kills (exit {coord.returncode})")
            break
        victim = rng.randrange(len(workers))
        kill(workers[victim])
        workers[victim] = spawn(worker_cmd(d2nn, port), work / f"workers-replacement{k}.log")
        done += 1
    # Let it finish: the slice runs to its last step with the replacements.
    try:
        coord.wait(timeout=900)
    except subprocess.TimeoutExpired:
        kill(coord)
        failures.append("worker loop: the coordinator did not finish within 15 min")
    for w in workers:
        try:
            w.wait(timeout=60)
        except subprocess.TimeoutExpired:
            kill(w)
    log = (work / "workers-coordinator.log").read_text(errors="replace")
    if coord.returncode != 0:
        failures.append(f"worker loop: the coordinator exited {coord.returncode}: {log.strip()[-400:]}")
    summary = run_dir / "summary.json"
    return {"kills": done, "reformed": log.count("cluster re-formed"), "exit": coord.returncode,
            "steps": json.loads(summary.read_text())["steps"] if summary.exists() else None,
            "digest_checks": "every step (--verify-replicas-every 1)"}


def final_digest(d2nn, run_dir):
    r = run([d2nn, "checkpoints", "inspect", str(run_dir), "--json"])
    return json.loads(r.stdout)["params_sha256"] if r.returncode == 0 else None


def two_worker_run(d2nn, work, run_dir, extra, log):
    port = free_port()
    coord = spawn(coordinator_cmd(d2nn, run_dir, port, 2, extra), log)
    workers = [spawn(worker_cmd(d2nn, port), f"{log}.w{i}") for i in range(2)]
    return coord, workers


def coordinator_loop(d2nn, work, kills, rng, failures):
    extra = ["--set", "train.epochs=10", "--checkpoint-every", "5", "--auto-resume"]
    reference = work / "reference"
    coord, workers = two_worker_run(d2nn, work, reference, extra, work / "reference.log")
    coord.wait()
    for w in workers:
        w.wait()
    want = final_digest(d2nn, reference)
    disturbed = work / "disturbed"
    latest = disturbed / "checkpoints" / "LATEST"
    done, cycles = 0, 0
    while True:
        cycles += 1
        coord, workers = two_worker_run(d2nn, work, disturbed, extra, work / "disturbed.log")
        if done < kills:
            # Kill after progress beyond the last checkpoint, at a random moment.
            before = latest.read_text() if latest.exists() else ""
            deadline = time.time() + 120
            while coord.poll() is None and (latest.read_text() if latest.exists() else "") == before \
                    and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.0))
            if coord.poll() is None:
                kill(coord)
                done += 1
        else:
            coord.wait()
        for w in workers:
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill(w)
        if coord.returncode == 0 and (disturbed / "summary.json").exists():
            break
        if cycles > kills + 5:
            failures.append("coordinator loop: the run did not finish")
            break
    got = final_digest(d2nn, disturbed)
    if want is None or got != want:
        failures.append(f"coordinator loop: final params_sha256 {got} differ from the undisturbed run's {want}")
    return {"kills": done, "restarts": cycles - 1, "reference_params_sha256": want,
            "final_params_sha256": got, "bitwise_equal": got == want and want is not None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-kills", type=int, default=100)
    ap.add_argument("--worker-kills", type=int, default=20)
    ap.add_argument("--coordinator-kills", type=int, default=10)
    ap.add_argument("--binary", default=str(ROOT / "target/release/d2nn"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not Path(args.binary).is_file():
        sys.exit(f"kill_loops.py: {args.binary} not found; build it first (scripts/setup.sh)")
    rng = random.Random(args.seed)
    failures = []
    with tempfile.TemporaryDirectory(prefix="d2nn-kill-loops-") as tmp:
        work = Path(tmp)
        for name, loop, n in [("train", train_loop, args.train_kills), ("workers", worker_loop, args.worker_kills),
                              ("coordinator", coordinator_loop, args.coordinator_kills)]:
            if n <= 0:
                continue
            started, before = time.time(), len(failures)
            result = loop(args.binary, work, n, rng, failures)
            result.update(loop=name, seconds=round(time.time() - started, 1), failures=failures[before:])
            print(json.dumps(result), flush=True)
    if failures:
        print(f"{len(failures)} checks failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
