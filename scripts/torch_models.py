"""torch_models.py: BlockFed's two architectures, ResNet8 and the CNN, as PyTorch modules.

The reference the C engine (models/net.c) is checked against and the way to open a BlockFed model
file in PyTorch: every module's state_dict has exactly the names, shapes and order of the engine's
named views (bf_net_tensor), plus PyTorch's num_batches_tracked counters, which the engine does not
keep. docs/MODEL_FORMAT.md states the same architectures in words.

Developer tool (Debian's python3-torch; CI never imports it). Used by scripts/torch_fixture.py and
scripts/torch_bench.py:

    import torch_models
    m = torch_models.build("resnet8", 1, 28, 28, 10)
    torch_models.load_model_file(m, "model.bfm")   # or torch_models.from_model_file("model.bfm")
"""
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

# The engine's BatchNorm (models/net.c): PyTorch's defaults, written out because the C side
# hard-codes them. Training updates running = (1 - momentum) * running + momentum * batch, with
# the batch's unbiased variance in running_var; normalization uses the biased one.
BN_EPS = 1e-5
BN_MOMENTUM = 0.1

ARCHS = ("resnet8", "cnn")


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.
    The shortcut is the identity, or a 1x1 convolution with the block's stride followed by BN
    (`downsample.0`, `downsample.1`) when the stride or the channel count changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _bn(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), _bn(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(y + skip)


class ResNet8(nn.Module):
    """CIFAR-style ResNet (6n+2 layers, n = 1): a 16-channel stem, one BasicBlock per stage at
    16, 32 and 64 channels (strides 1, 2, 2), global average pooling, one linear layer."""

    def __init__(self, in_channels=3, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = _bn(16)
        self.layer1 = nn.Sequential(BasicBlock(16, 16, 1))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2))
        self.layer3 = nn.Sequential(BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, classes)
        _engine_init(self)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class CNN(nn.Module):
    """The small MNIST network: two stages of conv5x5 (padding 2, with bias)-ReLU-maxpool 2x2,
    then fc1 (128 units)-ReLU-fc2. fc1 reads the 64 x H/4 x W/4 feature map flattened in
    channel, row, column order, so H and W must be multiples of 4."""

    def __init__(self, in_channels=1, classes=10, height=28, width=28):
        super().__init__()
        if height % 4 or width % 4:
            raise ValueError("cnn needs an input height and width divisible by 4 (got %dx%d)" % (height, width))
        self.conv1 = nn.Conv2d(in_channels, 32, 5, 1, 2)
        self.conv2 = nn.Conv2d(32, 64, 5, 1, 2)
        self.fc1 = nn.Linear(64 * (height // 4) * (width // 4), 128)
        self.fc2 = nn.Linear(128, classes)
        _engine_init(self)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _engine_init(model):
    """The distributions bf_net_init draws from (not its numbers: the generators differ):
    convolution weights Kaiming-normal (fan_out, ReLU), convolution biases and linear layers
    PyTorch's defaults, BN weight 1, bias 0, running mean 0, running variance 1."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build(arch, channels, height, width, classes):
    """The module for an architecture name as model files and TASK_CREATE spell it."""
    if arch == "resnet8":
        return ResNet8(channels, classes)
    if arch == "cnn":
        return CNN(channels, classes, height, width)
    raise ValueError("unknown model architecture %r (expected resnet8 or cnn)" % arch)


def engine_tensors(model):
    """(name, tensor) in the engine's view order: the state_dict without num_batches_tracked."""
    return [(n, t) for n, t in model.state_dict().items() if not n.endswith("num_batches_tracked")]


def read_model_file(path):
    """A model file (docs/MODEL_FORMAT.md) as (document, state_dict of float32 tensors). Checks
    the format name and version only (and a version-2 file's digest over its other bytes); the C
    reader is the one that validates."""
    import hashlib
    import msgpack
    with open(path, "rb") as f:
        data = f.read()
    doc = msgpack.unpackb(data, raw=False)
    if doc.get("format") != "blockfed-model" or doc.get("version") not in (1, 2):
        raise ValueError("%s: not a version 1 or 2 BlockFed model file" % path)
    if doc["version"] == 2 and (data[-73:-64] != b"\xa6sha256\xd9\x40" or
                                hashlib.sha256(data[:-73]).hexdigest() != data[-64:].decode("ascii", "replace")):
        raise ValueError("%s: sha256 mismatch (corrupt file)" % path)
    sd = {}
    for name, t in doc["tensors"].items():
        data = t["data"]
        sd[name] = torch.tensor(struct.unpack("<%df" % (len(data) // 4), data), dtype=torch.float32).reshape(t["shape"])
    return doc, sd


def _load_tensors(model, sd, path):
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError("%s: tensors missing %s, unexpected %s" % (path, missing, unexpected))


def load_model_file(model, path):
    """Loads a model file's tensors into model by name; every name must match both ways
    (num_batches_tracked aside). Returns the file's document."""
    doc, sd = read_model_file(path)
    _load_tensors(model, sd, path)
    return doc


def from_model_file(path):
    """The module a model file describes, its tensors loaded, in eval mode; and the document."""
    doc, sd = read_model_file(path)
    c, h, w = doc["input"]
    model = build(doc["arch"], c, h, w, len(doc["classes"]))
    _load_tensors(model, sd, path)
    return model.eval(), doc
