r"""Small networks and the two losses, with the loss convention stated.

Loss conventions (docs/theory.md#loss-conventions)
---------------------------------------------------
* ``"mse"``: :math:`\ell_i=\tfrac12\lVert f(x_i)-e_{y_i}\rVert^2`, **summed over the outputs** (one-hot
  0/1 targets), and :math:`L=\frac1n\sum_i\ell_i` **averaged over examples**: the convention of Cohen et al.
  (``SquaredLoss``) and of the Central Flows code.  Damian et al.'s ``CategoricalMSELoss`` has no ½,
  so its Hessian (and sharpness) is twice this one for the same network.
* ``"ce"``: softmax cross-entropy, averaged over examples.

(:mod:`sdeeos.torch._losses` implements both, checks the targets' shape, and takes any callable
``loss(outputs, targets)`` besides.)

Architectures (Cohen et al.'s families, scaled to CPU): ``mlp-tanh``/``mlp-relu`` (``depth`` hidden
layers of ``width`` units, with bias) and ``cnn-tanh``/``cnn-relu`` (two 3-wide convolutions of
``channels`` channels, each followed by the activation and 2-wide average pooling, then a linear
layer).  Average pooling rather than max pooling keeps the tanh CNN smooth, so that third derivatives
exist everywhere.  The CNN is 1-D for MNIST-1D (length-40 signals) and 2-D for digits (8×8 images).
"""

from __future__ import annotations

import torch
from torch import nn

from .._train_config import LOSSES, MODELS  # the names TrainConfig accepts
from .._validation import check_choice, check_int
from ._losses import mean_loss, per_example_loss  # re-exported: the loss conventions live in _losses

__all__ = ["MODELS", "LOSSES", "build_model", "per_example_loss", "mean_loss", "accuracy"]


_ACT = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _mlp(in_dim: int, n_out: int, width: int, depth: int, act: str) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), _ACT[act]()]
        d = width
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


def _cnn(input_shape: tuple[int, ...], n_out: int, channels: int, act: str) -> nn.Module:
    if len(input_shape) == 1:
        conv, pool, length = nn.Conv1d, nn.AvgPool1d, input_shape[0]
        unsqueeze = nn.Unflatten(1, (1, length))
        spatial = length // 2 // 2
        feat = channels * spatial
    elif len(input_shape) == 2:
        conv, pool = nn.Conv2d, nn.AvgPool2d
        h, w = input_shape
        unsqueeze = nn.Unflatten(1, (1, h, w))
        feat = channels * (h // 2 // 2) * (w // 2 // 2)
    else:  # pragma: no cover - guarded by the data loaders
        raise ValueError(f"input shape {input_shape} not supported")
    return nn.Sequential(
        nn.Flatten(), unsqueeze,
        conv(1, channels, 3, padding=1), _ACT[act](), pool(2),
        conv(channels, channels, 3, padding=1), _ACT[act](), pool(2),
        nn.Flatten(), nn.Linear(feat, n_out),
    )


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int, *, width: int = 100,
                depth: int = 2, channels: int = 16, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> nn.Module:
    """A freshly initialised network (PyTorch's default initialisation, seeded by ``seed``)."""
    check_choice("model", name, MODELS)
    width = check_int("width", width, low=1)
    depth = check_int("depth", depth, low=1)
    channels = check_int("channels", channels, low=1)
    family, act = name.split("-")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        if family == "mlp":
            in_dim = 1
            for s in input_shape:
                in_dim *= int(s)
            model = _mlp(in_dim, n_classes, width, depth, act)
        else:
            model = _cnn(tuple(int(s) for s in input_shape), n_classes, channels, act)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.to(dtype)


def accuracy(outputs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((outputs.argmax(dim=-1) == labels).to(torch.float64).mean())
