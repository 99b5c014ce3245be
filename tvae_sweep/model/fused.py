"""K models of one shape trained as one: every layer batched over the members.

Horizontal fusion (HFTA, Wang et al., MLSys 2021): the members' weights are stacked on a leading
axis of size K and each dense layer is one batched matrix product, so K small models cost about
one large step's per-operation overhead instead of K. Members share the network's shapes
(model.SHAPE_KEYS) and may differ in what only changes values: seed, mu_init, and W (coherence
window, neighbourhood, shift), which is stacked per member too.

The parameter names are those of TopographicVAE with K in front of each shape, so member m's
weights are `{name: p[m]}` of the fused state dict and a member saves, loads and evaluates as a
TopographicVAE. Each member draws its sampling noise from its own generator, in the order a
single model draws it from the global one, so member m trains as its config would alone.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SHAPE_KEYS, ConfigError, ModelConfig
from .topographic import DENSE_LIMIT, coherence_matrix_t, energy_by_rolls, torus_matrix_t
from .tvae import EPS, TopographicVAE, gaussian_kl, sample


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
    a gradient kept from an earlier step is overwritten (the trainers keep none)."""

    def __init__(self, k: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(k, out_features))
        self.grad_buffer: torch.Tensor | None = None

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


def fused_mlp(k: int, sizes: list[int]) -> nn.Sequential:
    """Linear-ReLU-...-Linear over `sizes`, laid out as networks.py's (same indices, same names)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [FusedLinear(k, a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class _Net(nn.Module):
    """Holds an MLP under `.net`, as GaussianEncoder and BernoulliDecoder do."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.net = net


def to_member(name: str, value: torch.Tensor) -> torch.Tensor:
    """One member's slice of a fused parameter (or of a buffer of its shape, such as an optimiser's
    momentum) in TopographicVAE's layout: Linear weights are stored transposed here."""
    return (value.t() if name.endswith("weight") else value).clone(memory_format=torch.contiguous_format)


def from_members(name: str, values: list[torch.Tensor]) -> torch.Tensor:
    """The fused parameter (or buffer) of the members' values in TopographicVAE's layout."""
    return torch.stack([v.t() if name.endswith("weight") else v for v in values])


def check_fusable(members: list[ModelConfig]) -> None:
    """Refuses members whose networks differ in shape, naming the first key that differs."""
    if not members:
        raise ConfigError("fused members: none given")
    for key in SHAPE_KEYS:
        values = [getattr(m, key) for m in members]
        if any(v != values[0] for v in values):
            raise ConfigError(f"model.{key}: fused members must share the network's shapes, "
                              f"got {', '.join(dict.fromkeys(map(str, values)))}")


class FusedTVAE(nn.Module):
    def __init__(self, members: list[ModelConfig]):
        super().__init__()
        check_fusable(members)
        self.members = list(members)
        cfg = self.cfg = members[0]
        k, d, pixels = len(members), cfg.latent_dim, math.prod(cfg.image_shape)
        self.topographic = cfg.variant != "vae"
        self.z_encoder = _Net(fused_mlp(k, [pixels, 3 * d, 2 * d, 2 * d]))
        self.u_encoder = _Net(fused_mlp(k, [pixels, 3 * d, 2 * d, 2 * d])) if self.topographic else None
        self.decoder = _Net(fused_mlp(k, [d, 2 * d, 3 * d, pixels]))
        self.mu = nn.Parameter(torch.tensor([float(m.mu_init) for m in members])) if self.topographic else None
        if self.topographic:
            self.register_buffer("w_t", self._stacked_w(), persistent=False)

    @property
    def k(self) -> int:
        return len(self.members)

    def _stacked_w(self) -> torch.Tensor:
        """Each member's W^T, (K, n, n): per capsule over (frame, position), or over the torus."""
        c = self.cfg
        if c.variant == "tvae2d":
            side = round(c.cap_dim ** 0.5)
            return torus_matrix_t(side, c.torus_window, torch.device("cpu"), torch.float32).expand(self.k, -1, -1).clone()
        if c.seq_len * c.cap_dim > DENSE_LIMIT:
            return torch.zeros(self.k, 0, 0)  # applied as rolls, see energy
        return torch.stack([coherence_matrix_t(m.seq_len, m.cap_dim, m.coherence_window, m.n_off_diag, m.shift,
                                               torch.device("cpu"), torch.float32) for m in self.members])

    # ------------------------------------------------------------ members as single models

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member m's weights under TopographicVAE's names and shapes."""
        return {name: to_member(name, p[m].detach()) for name, p in self.state_dict().items()}

    def member_model(self, m: int) -> TopographicVAE:
        model = TopographicVAE(self.members[m]).to(self.decoder.net[0].weight.device)
        model.load_state_dict(self.member_state(m))
        return model

    @torch.no_grad()
    def load_member_states(self, states: list[dict[str, torch.Tensor]]) -> None:
        for name, p in self.state_dict().items():
            p.copy_(from_members(name, [s[name] for s in states]))

    # ------------------------------------------------------------ the fused computation

    def energy(self, u_sq: torch.Tensor) -> torch.Tensor:
        """v = W(u^2) per member; u_sq (K, B, S, C, D)."""
        k, b, s, c, d = u_sq.shape
        if self.cfg.variant == "tvae2d":
            return (u_sq.reshape(k, -1, d) @ self.w_t.to(u_sq.dtype)).reshape(u_sq.shape)
        if self.w_t.numel() == 0:
            return torch.stack([energy_by_rolls(u_sq[i], m.coherence_window, m.n_off_diag, m.shift)
                                for i, m in enumerate(self.members)])
        flat = u_sq.transpose(2, 3).reshape(k, b * c, s * d)  # one row per capsule: (frame, position)
        return torch.bmm(flat, self.w_t.to(u_sq.dtype)).reshape(k, b, c, s, d).transpose(2, 3)

    def forward(self, x: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
        """x: (K, B, S, C, H, W) in [0, 1], member m's batch in x[m]; returns each member's negative
        ELBO per image, (K,). Member m's noise comes from generators[m] (None: the global RNG)."""
        k, b, s = x.shape[:3]
        flat = x.reshape(k, b * s, -1)
        shape = (k, b, s, self.cfg.n_caps, self.cfg.cap_dim)
        z_mean, z_logvar = (p.reshape(shape) for p in self.z_encoder.net(flat).chunk(2, dim=-1))
        kl = gaussian_kl(z_mean, z_logvar).flatten(1).sum(1)
        t = z = self._sample(z_mean, z_logvar, generators)
        if self.topographic:
            u_mean, u_logvar = (p.reshape(shape) for p in self.u_encoder.net(flat).chunk(2, dim=-1))
            # the single model samples z, then u: the same order from each member's generator
            u = self._sample(u_mean, u_logvar, generators)
            kl = kl + gaussian_kl(u_mean, u_logvar).flatten(1).sum(1)
            t = (z + self.mu.view(k, 1, 1, 1, 1)) / torch.sqrt(self.energy(u * u) + EPS)
        logits = self.decoder.net(t.reshape(k, b * s, -1))
        recon = F.binary_cross_entropy_with_logits(logits, x.reshape(k, b * s, -1), reduction="none").flatten(1).sum(1)
        return (recon + kl) / (b * s)

    @staticmethod
    def _sample(mean: torch.Tensor, logvar: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
        return torch.stack([sample(m, lv, g) for m, lv, g in zip(mean, logvar, generators)])
