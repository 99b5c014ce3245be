"""The Topographic VAE (Keller & Welling, NeurIPS 2021) and its VAE baseline.

Per image, with z ~ q(z|x) and u ~ q(u|x) diagonal Gaussians and N(0, I) priors:

    t = (z + mu) / sqrt(v + eps),   v = W(u^2)

W couples the frames of a sequence (variant "tvae") or the units of a torus within a frame
(variant "tvae2d"); the VAE baseline decodes t = z. The loss is the negative ELBO per image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .networks import BernoulliDecoder, GaussianEncoder
from .topographic import topographic_energy, torus_energy

EPS = 1e-6
LOG_2PI = math.log(2 * math.pi)


@dataclass
class ModelOutput:
    loss: torch.Tensor       # scalar: negative ELBO per image
    recon_nll: torch.Tensor  # scalar: Bernoulli NLL per image
    kl: torch.Tensor         # scalar: KL(q(z)||p(z)) + KL(q(u)||p(u)) per image
    t: torch.Tensor          # (B, S, n_caps, cap_dim)
    logits: torch.Tensor     # (B, S, C, H, W)
    posterior: Posterior


@dataclass
class Posterior:
    z_mean: torch.Tensor     # each (B, S, n_caps, cap_dim)
    z_logvar: torch.Tensor
    u_mean: torch.Tensor | None
    u_logvar: torch.Tensor | None


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor | float = 0.0, logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(logvar))."""
    logvar = torch.as_tensor(logvar, dtype=x.dtype, device=x.device)
    return -0.5 * ((x - mean) ** 2 * torch.exp(-logvar) + logvar + LOG_2PI)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean, exp(logvar)) || N(0, 1))."""
    return 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar)


def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A reparameterised draw; the noise is drawn in float32 whatever the autocast dtype of mean,
    from `generator` (None: the global RNG)."""
    return mean + torch.randn(mean.shape, generator=generator, device=mean.device) * torch.exp(0.5 * logvar)


class TopographicVAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.topographic = cfg.variant != "vae"
        self.z_encoder = GaussianEncoder(cfg.image_shape, cfg.latent_dim)
        self.u_encoder = GaussianEncoder(cfg.image_shape, cfg.latent_dim) if self.topographic else None
        self.decoder = BernoulliDecoder(cfg.image_shape, cfg.latent_dim)
        self.mu = nn.Parameter(torch.tensor(float(cfg.mu_init))) if self.topographic else None

    @property
    def metric_shift(self) -> int:
        """The roll per frame that equivariance is measured against: the shift of a shifting TVAE,
        and 1 for every model whose W does not shift (VAE, BubbleVAE, TVAE L=0), as the paper does.
        Never 0: without a roll, E_eq cannot tell a sequence from its frames permuted."""
        return self.cfg.shift if self.cfg.variant == "tvae" and self.cfg.shift >= 1 else 1

    # ------------------------------------------------------------ pieces

    def encode(self, x: torch.Tensor) -> Posterior:
        b, s = x.shape[:2]
        flat = x.reshape(b * s, -1)  # (B*S, C*H*W)
        shape = (b, s, self.cfg.n_caps, self.cfg.cap_dim)
        z_mean, z_logvar = (p.reshape(shape) for p in self.z_encoder(flat))
        if not self.topographic:
            return Posterior(z_mean, z_logvar, None, None)
        u_mean, u_logvar = (p.reshape(shape) for p in self.u_encoder(flat))
        return Posterior(z_mean, z_logvar, u_mean, u_logvar)

    def energy(self, u_sq: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c.variant == "tvae2d":
            return torus_energy(u_sq, c.torus_window)
        return topographic_energy(u_sq, c.coherence_window, c.n_off_diag, c.shift)

    def latent(self, z: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        """t from z and u, each (B, S, n_caps, cap_dim)."""
        if not self.topographic:
            return z
        return (z + self.mu) / torch.sqrt(self.energy(u * u) + EPS)

    def decode(self, t: torch.Tensor) -> torch.Tensor:
        """(B, S, n_caps, cap_dim) -> Bernoulli logits (B, S, C, H, W)."""
        b, s = t.shape[:2]
        return self.decoder(t.reshape(b * s, -1)).reshape(b, s, *self.cfg.image_shape)

    @staticmethod
    def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-image NLL (B, S) of pixels in [0, 1] (continuous targets allowed)."""
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return nll.flatten(2).sum(-1)

    # ------------------------------------------------------------ objectives

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """x: (B, S, C, H, W) in [0, 1]."""
        q = self.encode(x)
        z = sample(q.z_mean, q.z_logvar)
        u = sample(q.u_mean, q.u_logvar) if self.topographic else None
        t = self.latent(z, u)
        logits = self.decode(t)
        n_images = x.shape[0] * x.shape[1]
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n_images
        kl = gaussian_kl(q.z_mean, q.z_logvar).sum()
        if self.topographic:
            kl = kl + gaussian_kl(q.u_mean, q.u_logvar).sum()
        kl = kl / n_images
        return ModelOutput(loss=recon + kl, recon_nll=recon, kl=kl, t=t, logits=logits, posterior=q)

    def sample_latent(self, x: torch.Tensor) -> torch.Tensor:
        """One posterior sample of t, (B, S, n_caps, cap_dim).

        A sample, not the posterior means: with u at its mean (near 0 early in training) v is
        near 0 and t blows up, so the means are no typical code of the model.
        """
        q = self.encode(x)
        z = sample(q.z_mean, q.z_logvar)
        u = sample(q.u_mean, q.u_logvar) if self.topographic else None
        return self.latent(z, u)

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Each frame's share of the importance weight log p(x, z, u) - log q(z, u | x): (n_samples, B, S).

        The frames of a sequence are coupled through v, so the weight of a sample is the sum over
        its sequence's frames.
        """
        q = self.encode(x)
        out = []
        for _ in range(n_samples):
            z = sample(q.z_mean, q.z_logvar)
            log_w = (gaussian_log_prob(z) - gaussian_log_prob(z, q.z_mean, q.z_logvar)).flatten(2).sum(-1)
            u = None
            if self.topographic:
                u = sample(q.u_mean, q.u_logvar)
                log_w = log_w + (gaussian_log_prob(u) - gaussian_log_prob(u, q.u_mean, q.u_logvar)).flatten(2).sum(-1)
            logits = self.decode(self.latent(z, u))
            out.append(log_w - self.bernoulli_nll(logits, x))
        return torch.stack(out)

    @torch.no_grad()
    def log_likelihoods(self, x: torch.Tensor, n_samples: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """Two importance-sampled estimates of log p(x) in nats per image from the same samples,
        one value per sequence each: ((B,), (B,)).

        Ours (the paper's maths): log p(x_1..S) ~ logsumexp_n(sum_s log w_ns) - log N, divided by S.
        The authors' code's: logsumexp_n(log w_ns) per frame, averaged over frames, without - log N;
        it reads higher by a model-dependent amount, so published numbers compare with it.
        """
        log_w = self.log_weights(x, n_samples)  # (N, B, S)
        ours = (torch.logsumexp(log_w.sum(-1), dim=0) - math.log(n_samples)) / x.shape[1]
        per_frame = torch.logsumexp(log_w, dim=0).mean(-1)
        return ours, per_frame

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, n_samples: int = 10) -> torch.Tensor:
        """Importance-sampled log p(x) in nats per image, one value per sequence: (B,)."""
        return self.log_likelihoods(x, n_samples)[0]
