#!/usr/bin/python3
"""Reference outputs of PyTorch's ResNet8 (scripts/torch_models.py) for tests/unit/test_torch_ref.c
(developer tool; CI never runs it: the fixture it writes is committed).

Weights and inputs come from a formula both sides evaluate identically (double-precision sin from
the same libm, rounded to float32), so the fixture holds only outputs: logits and loss of one
training-mode forward, every parameter gradient, BN running statistics after that step, eval-mode
logits, and parameters after two SGD steps (momentum 0.9, weight decay 5e-4, Nesterov, lr 0.1).

usage: /usr/bin/python3 scripts/torch_fixture.py [OUT]   (default tests/fixtures/resnet8_torch.msgpack)
       /usr/bin/python3 scripts/torch_fixture.py --check MODEL.bfm [IDX_DIR]   (loads a BlockFed model file, ResNet8 or
       CNN, into the matching torch_models.py module by name and prints its predictions on a formula input; with a third
       argument, an IDX directory, also its accuracy on the t10k split)
"""
import math, struct, sys, os
import msgpack
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import ResNet8, from_model_file  # noqa: E402  (the project's reference modules)

B, C, H, W, K = 8, 1, 16, 16, 10


def formula_tensor(name, index, shape):
    """The value every side assigns to element i of the index-th state_dict tensor."""
    n = 1
    for d in shape:
        n *= d
    base = [math.sin(0.1 * i + index) for i in range(n)]
    if name.endswith("running_var"):
        vals = [1.0 + 0.5 * abs(v) for v in base]
    elif name.endswith("running_mean") or name.endswith("bias"):
        vals = [0.1 * v for v in base]
    elif ".bn" in name or name.startswith("bn") or "downsample.1" in name:  # BN weight
        vals = [1.0 + 0.2 * v for v in base]
    else:
        vals = [0.2 * v for v in base]
    return torch.tensor(vals, dtype=torch.float32).reshape(shape)


def build():
    torch.manual_seed(0)
    m = ResNet8(C, K)
    sd = m.state_dict()
    index = 0
    for name, t in sd.items():
        if name.endswith("num_batches_tracked"):
            continue
        t.copy_(formula_tensor(name, index, list(t.shape)))
        index += 1
    return m


def inputs():
    x = torch.tensor([math.sin(0.37 * j) for j in range(B * C * H * W)], dtype=torch.float32).reshape(B, C, H, W)
    y = torch.tensor([(3 * i) % K for i in range(B)], dtype=torch.long)
    return x, y


def f32(t):
    return struct.pack("<%df" % t.numel(), *t.detach().flatten().tolist())


def make(out):
    torch.set_num_threads(1)
    m = build()
    x, y = inputs()
    m.train()
    logits = m(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    grads = {n: f32(p.grad) for n, p in m.named_parameters()}
    running = {n: f32(t) for n, t in m.state_dict().items() if "running" in n}
    m.eval()
    with torch.no_grad():
        eval_logits = m(x)
    # two SGD steps from the formula weights (fresh model, fresh optimizer)
    m2 = build()
    opt = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    m2.train()
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(m2(x), y).backward()
        opt.step()
    after = {n: f32(p) for n, p in m2.named_parameters()}
    # learning-rate schedules over 50 steps
    def trace(make_sched, with_momentum=False):
        p = torch.nn.Parameter(torch.zeros(1))
        o = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        sch = make_sched(o)
        lrs, moms = [], []
        for _ in range(50):
            lrs.append(o.param_groups[0]["lr"])
            moms.append(o.param_groups[0]["momentum"])
            o.step()
            sch.step()
        return (lrs, moms) if with_momentum else lrs
    oc_lr, oc_m = trace(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=50), True)
    schedules = {"onecycle_lr": oc_lr, "onecycle_momentum": oc_m,
                 "cosine_lr": trace(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50)),
                 "step_lr": trace(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5))}
    doc = {"schedules": schedules, "batch": B, "input": [C, H, W], "classes": K, "loss": float(loss), "logits": f32(logits),
           "grads": grads, "running": running, "eval_logits": f32(eval_logits), "after_sgd2": after,
           "torch": torch.__version__}
    with open(out, "wb") as f:
        f.write(msgpack.packb(doc, use_bin_type=True))
    print("wrote", out, "loss", float(loss))


def check(path, idx_dir=None):
    m, doc = from_model_file(path)  # resnet8 or cnn, as the file says; names checked both ways
    c, h, w = doc["input"]
    x = torch.tensor([math.sin(0.37 * j) for j in range(c * h * w)], dtype=torch.float32).reshape(1, c, h, w)
    with torch.no_grad():
        p = F.softmax(m(x), dim=1)[0]
    print("loaded %s (%s) into PyTorch: %d tensors; probabilities on the formula input:" % (path, doc["arch"], len(doc["tensors"])))
    print(" ".join("%.6f" % v for v in p.tolist()))
    if idx_dir:  # accuracy on an IDX test split, preprocessed as the file says
        import gzip
        def read(name):
            path = os.path.join(idx_dir, name)
            return gzip.open(path).read() if os.path.exists(path) else open(path[:-3], "rb").read()
        imgs, labels = read("t10k-images-idx3-ubyte.gz"), read("t10k-labels-idx1-ubyte.gz")
        n = struct.unpack(">I", labels[4:8])[0]
        x = torch.tensor(list(imgs[16:16 + n * h * w]), dtype=torch.float32).reshape(n, 1, h, w) / 255.0
        mean, std = doc["preprocess"]["mean"][0], doc["preprocess"]["std"][0]
        y = torch.tensor(list(labels[8:8 + n]))
        with torch.no_grad():
            pred = m((x - mean) / std).argmax(1)
        print("PyTorch test accuracy of the BlockFed model: %.4f" % (pred == y).float().mean().item())


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--check":
        check(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        make(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "resnet8_torch.msgpack"))
