"""Dense encoder and decoder on flattened images.

The original writes these layers as Conv2d with a kernel as large as the image; a Linear layer on
the flattened image is the same function and runs faster.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class GaussianEncoder(nn.Module):
    """Image -> mean and log-variance of `latent_dim` latents: C*H*W -> 3D -> 2D -> 2D."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        d = latent_dim
        self.net = nn.Sequential(
            nn.Linear(math.prod(image_shape), 3 * d), nn.ReLU(),
            nn.Linear(3 * d, 2 * d), nn.ReLU(),
            nn.Linear(2 * d, 2 * d),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (N, C*H*W) -> mean, logvar: (N, D)
        return self.net(x).chunk(2, dim=-1)


class BernoulliDecoder(nn.Module):
    """Latents -> Bernoulli logits of every pixel: D -> 2D -> 3D -> C*H*W."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        d = latent_dim
        self.net = nn.Sequential(
            nn.Linear(d, 2 * d), nn.ReLU(),
            nn.Linear(2 * d, 3 * d), nn.ReLU(),
            nn.Linear(3 * d, math.prod(image_shape)),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # t: (N, D) -> logits: (N, C*H*W)
        return self.net(t)
