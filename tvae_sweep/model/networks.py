"""Dense encoder and decoder on flattened images, for K members at once.

The original writes these layers as Conv2d with a kernel as large as the image; a Linear layer on
the flattened image is the same function and runs faster. Every layer holds K members' weights on
a leading axis and is one batched matrix product (horizontal fusion, HFTA, Wang et al., MLSys 2021):
K small models cost about one large step's per-operation overhead instead of K; K = 1 is one run.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class _BatchedAffine(torch.autograd.Function):
    """baddbmm(bias, x, weight) with the weight's gradient made in place: x^T @ grad is written
    into the layer's own gradient buffer (or added to weight.grad where one is held), not into a
    new tensor. Autograd's new (K, in, out) gradient each step costs a fresh allocation that
    glibc hands out as new pages beyond 32 MB (the largest layers from K = 4 members on): tens of
    thousands of page faults a step, about 15% of a CPU step at K = 4 (benchmarks/RESULTS.md)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, layer: FusedLinear) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.layer = layer
        return torch.baddbmm(bias.unsqueeze(1), x, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_bias = grad.sum(1) if ctx.needs_input_grad[2] else None
        if ctx.needs_input_grad[1]:
            ctx.layer.add_weight_grad(x, grad)
        return grad_x, None, grad_bias, None


class FusedLinear(nn.Module):
    """K independent Linear layers: (K, N, in) -> (K, N, out), one batched product.

    The weight is kept as (K, in, out), each member's nn.Linear weight transposed, so that the
    product and its weight gradient x^T @ grad are both in the weight's own layout: stored as
    (K, out, in), the gradient would come out transposed and be copied back at every step (a quarter
    of a CPU step at K = 2). In training the gradient is made in place (_BatchedAffine): after
    `zero_grad(set_to_none=True)` the next backward hands weight.grad the layer's buffer again, so
    a gradient kept from an earlier step is overwritten (the trainer keeps none).

    Each member starts as nn.Linear starts, drawing the same numbers in the same order."""

    def __init__(self, k: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(k, out_features))
        self.grad_buffer: torch.Tensor | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        k, n_in, n_out = self.weight.shape
        bound = 1 / math.sqrt(n_in)
        for m in range(k):
            w = torch.empty(n_out, n_in)  # nn.Linear's layout, so its draws land where nn.Linear's do
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            self.weight[m].copy_(w.t())
            nn.init.uniform_(self.bias[m], -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type):
            return _BatchedAffine.apply(x, self.weight, self.bias, self)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)  # autocast: autograd's own gradient

    @torch.no_grad()
    def add_weight_grad(self, x: torch.Tensor, grad: torch.Tensor) -> None:
        """weight.grad += x^T @ grad, as autograd accumulates it."""
        w, x_t = self.weight, x.transpose(1, 2)
        if w.grad is not None:
            w.grad.baddbmm_(x_t, grad)
            return
        buffer = self.grad_buffer
        if buffer is None or (buffer.shape, buffer.dtype, buffer.device) != (w.shape, w.dtype, w.device):
            buffer = self.grad_buffer = torch.empty_like(w)  # first use, or the layer was moved or cast
        w.grad = torch.bmm(x_t, grad, out=buffer)


def mlp(k: int, sizes: list[int]) -> nn.Sequential:
    """Linear-ReLU-...-Linear over `sizes` for K members."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers += [FusedLinear(k, a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """Images -> mean and log-variance of `latent_dim` latents: C*H*W -> 3D -> 2D -> 2D."""

    def __init__(self, k: int, image_shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        d = latent_dim
        self.net = mlp(k, [math.prod(image_shape), 3 * d, 2 * d, 2 * d])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (K, N, C*H*W) -> mean, logvar: (K, N, D)
        return self.net(x).chunk(2, dim=-1)


class BernoulliDecoder(nn.Module):
    """Latents -> Bernoulli logits of every pixel: D -> 2D -> 3D -> C*H*W."""

    def __init__(self, k: int, image_shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        d = latent_dim
        self.net = mlp(k, [d, 2 * d, 3 * d, math.prod(image_shape)])

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # t: (K, N, D) -> logits: (K, N, C*H*W)
        return self.net(t)
