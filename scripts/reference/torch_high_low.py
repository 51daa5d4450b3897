#!/usr/bin/env python3
"""PyTorch eager reference for `d2nn bench train`: the high_low network of configs/high_low.toml and
the same training step, written as a PyTorch user would write it, so that the Rust runtime can be
compared with Python on the same libtorch.

The step (REINFORCE, `--routing random` in `d2nn bench train`): the stem runs on the batch, the
router on the detached stem (control_grad_to_trunk = false), each example goes to `low` or `high`
uniformly at random, only the chosen branch runs on its rows (index_select / index_copy), the loss is
cross-entropy (sum / batch) plus the REINFORCE loss of the router (reward lambda*correct -
(1-lambda)*cost fraction, minus the running baseline; entropy bonus 0.01), backward, the router's and
the rest's gradients clipped apart to norm 5, SGD (momentum 0.9, weight decay 5e-4, lr 0.05). The
step reads back its loss, accuracy and reward (as the Rust step does, for its logs).

Needs a full PyTorch 2.11 (the project's own .venv carries only libtorch's CPU libraries):
    python3 -m venv .venv-reference && .venv-reference/bin/pip install torch==2.11.0
    .venv-reference/bin/python scripts/reference/torch_high_low.py --threads 1
    .venv-reference/bin/python scripts/reference/torch_high_low.py --mode ddp --world 2 --batch 64

On a GPU (`--device cuda`), as `d2nn bench train --device cuda:0` does: the training images sit on
the device once and each batch is gathered there; a step ends with the same reads (`.item()`).

Prints one JSON line per measurement, like `d2nn bench train`.
"""
import argparse
import gzip
import json
import os
import statistics
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LAMBDA = 0.98
ENTROPY = 0.01
BASELINE_DECAY = 0.9
CLIP = 5.0


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(dims)


def load(data_dir):
    images = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz")).unsqueeze(1)
    labels = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")).long()
    return images, labels


class HighLow(nn.Module):
    """configs/high_low.toml, layer for layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.router = nn.Sequential(
            nn.Conv2d(16, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 7 * 7, 2)
        )
        self.low = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 7 * 7, 10)
        )
        self.high = nn.Sequential(
            nn.Conv2d(16, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )
        # MFLOPs per example of each node, as `d2nn inspect --config configs/high_low.toml` counts them.
        self.flops = {"stem": 0.251, "router": 0.115, "low": 0.925, "high": 19.712}

    def forward(self, x, route):
        """`route`: 0 (low) or 1 (high) per example. Returns logits, router scores, cost per example."""
        h = self.stem(x)
        scores = self.router(h.detach())
        out = h.new_zeros(x.shape[0], 10)
        cost = torch.full((x.shape[0],), self.flops["stem"] + self.flops["router"], device=x.device)
        for action, branch in ((0, self.low), (1, self.high)):
            rows = (route == action).nonzero().squeeze(1)
            if rows.numel():
                out = out.index_copy(0, rows, branch(h.index_select(0, rows)))
                cost[rows] += self.flops[("low", "high")[action]]
        return out, scores, cost


def clip_apart(model):
    router = list(model.router.parameters())
    rest = [p for n, p in model.named_parameters() if not n.startswith("router.")]
    torch.nn.utils.clip_grad_norm_(router, CLIP)
    torch.nn.utils.clip_grad_norm_(rest, CLIP)


def train_step(model, net, opt, x, y, baseline, full, generator):
    """One step; `net` is the model or its DDP wrapper. Returns the new baseline."""
    route = torch.randint(0, 2, (x.shape[0],), generator=generator, device=x.device)
    logits, scores, cost = net(x, route)
    task = F.cross_entropy(logits, y, reduction="sum") / x.shape[0]
    correct = (logits.detach().argmax(1) == y).float()
    reward = LAMBDA * correct - (1 - LAMBDA) * cost / full
    log_p = scores.log_softmax(1)
    taken = log_p.gather(1, route.unsqueeze(1)).squeeze(1)
    entropy = -(log_p.exp() * log_p).sum()
    control = (-(taken * (reward - baseline)).sum() - ENTROPY * entropy) / x.shape[0]
    loss = task + control
    opt.zero_grad(set_to_none=False)
    loss.backward()
    clip_apart(model)
    opt.step()
    # What the Rust step reads back for its logs: losses, accuracy, cost, reward.
    mean_reward = reward.mean().item()
    _ = (loss.item(), task.item(), correct.sum().item(), cost.sum().item())
    return BASELINE_DECAY * baseline + (1 - BASELINE_DECAY) * mean_reward


def run_training(args, rank=0, world=1):
    torch.manual_seed(0)
    device = torch.device(args.device)
    images, labels = (t.to(device) for t in load(args.data))
    model = HighLow().to(device)
    full = sum(model.flops.values())
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator(device=device).manual_seed(1 + rank)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(7 + rank)).to(device)
    baseline, times = 0.0, []
    profiler = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup and getattr(args, "profile", False):
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
        ids = order[(step * args.batch) % (images.shape[0] - args.batch) :][: args.batch]
        started = time.perf_counter()
        x = images.index_select(0, ids).float() / 255.0
        y = labels.index_select(0, ids)
        baseline = train_step(model, net, opt, x, y, baseline, full, generator)
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    if profiler is not None:
        profiler.__exit__(None, None, None)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20), file=sys.stderr)
    return times


def ddp_worker(rank, args, port, queue):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(args.threads)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=args.world)
    times = run_training(args, rank, args.world)
    torch.distributed.destroy_process_group()
    queue.put((rank, times))


def forward_time(args):
    """Inference forwards, no autograd, as `d2nn bench exec` times them: the static high network
    (stem + high) and the dynamic network with a fraction of the batch forced onto `high`, the rest
    onto `low`. Returns {case: median seconds}."""
    device = torch.device(args.device)
    model = HighLow().eval().to(device)
    x = torch.rand(args.batch, 1, 28, 28, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    cases = {"static_high": lambda: model.high(model.stem(x))}
    for fraction in (0.25, 0.5, 0.75, 1.0):
        route = (torch.arange(args.batch, device=device) < round(fraction * args.batch)).long()
        cases[f"dynamic_high_{fraction}"] = lambda route=route: model(x, route)
    out = {}
    with torch.no_grad():
        for name, fn in cases.items():
            for _ in range(3):
                fn()
            reps = []
            for _ in range(args.reps):
                sync()
                started = time.perf_counter()
                fn()
                sync()
                reps.append(time.perf_counter() - started)
            out[name] = statistics.median(reps)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["train", "ddp", "forward"], default="train")
    p.add_argument("--data", default="data/fashion-mnist")
    p.add_argument("--device", default="cpu", help="cpu or cuda (train and forward modes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (per process with --mode ddp)")
    p.add_argument("--batch", type=int, default=128, help="examples per step (per process with ddp)")
    p.add_argument("--steps", type=int, default=300, help="timed steps")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    p.add_argument("--world", type=int, default=2, help="processes with --mode ddp")
    p.add_argument("--reps", type=int, default=20, help="timed forwards per case with --mode forward")
    p.add_argument("--profile", action="store_true", help="--mode train: print torch.profiler's op table to stderr")
    p.add_argument(
        "--channels-last", action="store_true", help="--mode forward: weights and input in NHWC memory order"
    )
    args = p.parse_args()
    if args.mode == "ddp" and args.device != "cpu":
        p.error("--mode ddp compares with d2nn's CPU workers: it runs gloo on the CPU only")
    torch.set_num_threads(args.threads)
    common = {
        "impl": "pytorch_eager",
        "torch": torch.__version__,
        "device": args.device,
        "threads": args.threads,
        "batch": args.batch,
    }
    if args.mode == "forward":
        for case, seconds in forward_time(args).items():
            line = {**common, "mode": "forward", "channels_last": args.channels_last, "case": case}
            print(json.dumps({**line, "ms": round(seconds * 1e3, 3)}))
        return
    if args.mode == "train":
        times = run_training(args)
        world = 1
    else:
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=ddp_worker, args=(r, args, port, queue)) for r in range(args.world)]
        for proc in procs:
            proc.start()
        results = dict(queue.get() for _ in procs)
        for proc in procs:
            proc.join()
        if any(proc.exitcode != 0 for proc in procs):
            sys.exit("a DDP process failed")
        # Synchronous ranks: a step ends when the slower rank's ends.
        times = [max(ts) for ts in zip(*results.values())]
        world = args.world
    total = sum(times)
    print(
        json.dumps(
            {
                **common,
                "mode": args.mode,
                "world": world,
                "steps": len(times),
                "examples_per_sec": round(len(times) * args.batch * world / total, 1),
                "step_ms_median": round(statistics.median(times) * 1e3, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
