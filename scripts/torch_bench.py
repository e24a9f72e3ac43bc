#!/usr/bin/python3
"""torch_bench.py: PyTorch's speed on BlockFed's networks (scripts/torch_models.py), the other half
of `blockfed-bench train --torch scripts/torch_bench.py` (developer tool; CI never runs it).

Measures what tests/bench/bench_train.c measures on the C engine, the same way: random normal
images and random labels (throughput does not depend on values), 3 warm-up calls, then as many
calls as fit in the time given; training steps are forward + cross-entropy + backward + SGD
(momentum 0.9, weight decay 5e-4, lr 0.05), inference is an eval-mode forward without autograd.

usage: /usr/bin/python3 scripts/torch_bench.py [--arch resnet8|cnn] [--input CxHxW=1x28x28]
           [--batch B=64] [--threads T=2] [--seconds S=5]

Prints one JSON line; bench_train.c reads its "train_img_per_s", "infer_img_per_s" and
"single_image_ms" fields (each written as `"key": value`):
  {"engine": "pytorch-VERSION", "arch": ..., "input": "CxHxW", "batch": B, "threads": T,
   "params": trainable parameters, "train_img_per_s": ..., "infer_img_per_s": ..., "single_image_ms": ...}
Batch inference runs for S/2 seconds, single-image latency (batch of 1) for S/2 seconds.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402


def calls_per_second(call, seconds):
    for _ in range(3):
        call()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        call()
        n += 1
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description="PyTorch training and inference speed of BlockFed's networks")
    ap.add_argument("--arch", choices=torch_models.ARCHS, default="resnet8")
    ap.add_argument("--input", default="1x28x28", help="CxHxW of one image")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--classes", type=int, default=10)
    a = ap.parse_args()
    try:
        c, h, w = (int(v) for v in a.input.split("x"))
    except ValueError:
        ap.error("--input takes CxHxW, e.g. 3x32x32")
    if a.batch < 1 or a.threads < 1 or a.seconds <= 0:
        ap.error("--batch and --threads must be >= 1, --seconds > 0")

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = torch_models.build(a.arch, c, h, w, a.classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(a.batch, c, h, w), torch.randint(0, a.classes, (a.batch,))

    def train_step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    model.train()
    train = calls_per_second(train_step, a.seconds) * a.batch
    model.eval()
    with torch.no_grad():
        infer = calls_per_second(lambda: model(x), a.seconds / 2) * a.batch
        single_ms = 1000.0 / calls_per_second(lambda: model(x[:1]), a.seconds / 2)
    print(json.dumps({"engine": "pytorch-" + torch.__version__, "arch": a.arch, "input": a.input, "batch": a.batch,
                      "threads": a.threads, "params": sum(p.numel() for p in model.parameters()),
                      "train_img_per_s": round(train, 1), "infer_img_per_s": round(infer, 1),
                      "single_image_ms": round(single_ms, 3)}), flush=True)


if __name__ == "__main__":
    main()
