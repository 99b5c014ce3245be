"""The Topographic VAE (Keller & Welling, NeurIPS 2021) and its VAE baseline.

Per image, with z ~ q(z|x) and u ~ q(u|x) diagonal Gaussians and N(0, I) priors:

    t = (z + mu) / sqrt(v + eps),   v = W(u^2)

W couples the frames of a sequence (variant "tvae") or the units of a torus within a frame
(variant "tvae2d"); the VAE baseline decodes t = z. The loss is the negative ELBO per image.

One model holds K members of one network shape (model.SHAPE_KEYS) on a leading axis: weights
(K, in, out), each member with its own W, mu, initialisation and noise; the maths below is written
once over that axis. K = 1 is one run, and its methods take and give tensors without the axis:
`build_model(cfg)(x).loss` for x (B, S, C, H, W). A sweep fuses members that differ only in values
(seed, mu_init, W's window, neighbourhood and shift); `member_losses` trains them as one, and
`member(m)` / `member_state(m)` give member m as a K = 1 model and in a single run's layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SHAPE_KEYS, ConfigError, ModelConfig
from .networks import BernoulliDecoder, GaussianEncoder
from .topographic import w_by_rolls, w_matrix_t

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

    def first(self) -> Posterior:
        """Member 0's posterior, without the member axis."""
        return Posterior(*(p[0] if p is not None else None for p in (self.z_mean, self.z_logvar, self.u_mean,
                                                                      self.u_logvar)))


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor | float = 0.0,
                      logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
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


def check_fusable(members: list[ModelConfig]) -> None:
    """Refuses members whose networks differ in shape, naming the first key that differs."""
    if not members:
        raise ConfigError("fused members: none given")
    for key in SHAPE_KEYS:
        values = [getattr(m, key) for m in members]
        if any(v != values[0] for v in values):
            raise ConfigError(f"model.{key}: fused members must share the network's shapes, "
                              f"got {', '.join(dict.fromkeys(map(str, values)))}")


def to_member(name: str, value: torch.Tensor) -> torch.Tensor:
    """One member's slice of a parameter (or of a buffer of its shape, such as an optimiser's
    momentum) in a single run's layout, nn.Linear's: weights (out, in), stored here transposed."""
    return (value.t() if name.endswith("weight") else value).clone(memory_format=torch.contiguous_format)


def from_members(name: str, values: list[torch.Tensor]) -> torch.Tensor:
    """The parameter (or buffer) of the members' values given in a single run's layout."""
    return torch.stack([v.t() if name.endswith("weight") else v for v in values])


class TopographicVAE(nn.Module):
    def __init__(self, cfg_or_members: ModelConfig | list[ModelConfig]):
        super().__init__()
        members = [cfg_or_members] if isinstance(cfg_or_members, ModelConfig) else list(cfg_or_members)
        check_fusable(members)
        self.members = members
        cfg = self.cfg = members[0]
        k = len(members)
        self.topographic = cfg.variant != "vae"
        self.z_encoder = GaussianEncoder(k, cfg.image_shape, cfg.latent_dim)
        self.u_encoder = GaussianEncoder(k, cfg.image_shape, cfg.latent_dim) if self.topographic else None
        self.decoder = BernoulliDecoder(k, cfg.image_shape, cfg.latent_dim)
        self.mu = nn.Parameter(torch.tensor([float(m.mu_init) for m in members])) if self.topographic else None
        # each member's W^T for sequences of seq_len frames, (K, n, n); None: applied as rolls
        self.register_buffer("w_t", self._stacked_w_t(cfg.seq_len, torch.device("cpu"), torch.float32)
                             if self.topographic else None, persistent=False)

    @property
    def k(self) -> int:
        return len(self.members)

    @property
    def metric_shift(self) -> int:
        """The roll per frame that equivariance is measured against: the shift of a shifting TVAE,
        and 1 for every model whose W does not shift (VAE, BubbleVAE, TVAE L=0), as the paper does.
        Never 0: without a roll, E_eq cannot tell a sequence from its frames permuted."""
        return self.cfg.shift if self.cfg.variant == "tvae" and self.cfg.shift >= 1 else 1

    # ------------------------------------------------------------ the maths, over the member axis K

    def _stacked_w_t(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """Each member's W^T, (K, n, n), or None where W is applied as rolls (the plan is the shape's)."""
        matrices = [w_matrix_t(m, seq_len, device, dtype) for m in self.members]
        return None if matrices[0] is None else torch.stack(matrices)

    def _encode(self, x: torch.Tensor) -> Posterior:
        """x (K, B, S, C, H, W) -> the posteriors' parameters, each (K, B, S, n_caps, cap_dim)."""
        k, b, s = x.shape[:3]
        flat = x.reshape(k, b * s, -1)  # (K, B*S, C*H*W)
        shape = (k, b, s, self.cfg.n_caps, self.cfg.cap_dim)
        z_mean, z_logvar = (p.reshape(shape) for p in self.z_encoder(flat))
        if not self.topographic:
            return Posterior(z_mean, z_logvar, None, None)
        u_mean, u_logvar = (p.reshape(shape) for p in self.u_encoder(flat))
        return Posterior(z_mean, z_logvar, u_mean, u_logvar)

    def _energy(self, u_sq: torch.Tensor) -> torch.Tensor:
        """v = W(u^2) per member; u_sq (K, B, S, C, D)."""
        k, b, s, c, d = u_sq.shape
        w_t = self.w_t if s == self.cfg.seq_len else self._stacked_w_t(s, u_sq.device, torch.float32)
        if w_t is None:
            return torch.stack([w_by_rolls(m, u_sq[i]) for i, m in enumerate(self.members)])
        w_t = w_t.to(u_sq.dtype)
        if self.cfg.variant == "tvae2d":  # within each frame's torus
            return torch.bmm(u_sq.reshape(k, -1, d), w_t).reshape(u_sq.shape)
        flat = u_sq.transpose(2, 3).reshape(k, b * c, s * d)  # one row per capsule: (frame, position)
        return torch.bmm(flat, w_t).reshape(k, b, c, s, d).transpose(2, 3)

    def _latent(self, z: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        """t from z and u, each (K, B, S, n_caps, cap_dim)."""
        if not self.topographic:
            return z
        return (z + self.mu.view(-1, 1, 1, 1, 1)) / torch.sqrt(self._energy(u * u) + EPS)

    def _decode(self, t: torch.Tensor) -> torch.Tensor:
        """(K, B, S, n_caps, cap_dim) -> Bernoulli logits (K, B, S, C, H, W)."""
        k, b, s = t.shape[:3]
        return self.decoder(t.reshape(k, b * s, -1)).reshape(k, b, s, *self.cfg.image_shape)

    def _draw(self, q: Posterior, generators: list[torch.Generator | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z, then u: each member's noise from its generator (None: the global RNG), in that order."""

        def draw(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
            if len(generators) == 1:
                return sample(mean, logvar, generators[0])
            return torch.stack([sample(m, lv, g) for m, lv, g in zip(mean, logvar, generators, strict=True)])

        z = draw(q.z_mean, q.z_logvar)
        return z, (draw(q.u_mean, q.u_logvar) if self.topographic else None)

    def _pass(self, x: torch.Tensor, generators: list[torch.Generator | None]):
        """One sampled pass of x (K, B, S, C, H, W): each member's Bernoulli NLL and KL per image
        (K,), and t, the logits and the posterior, each with the member axis first."""
        k, b, s = x.shape[:3]
        q = self._encode(x)
        t = self._latent(*self._draw(q, generators))
        logits = self._decode(t)
        n_images = b * s
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").reshape(k, -1).sum(1) / n_images
        kl = gaussian_kl(q.z_mean, q.z_logvar).reshape(k, -1).sum(1)
        if self.topographic:
            kl = kl + gaussian_kl(q.u_mean, q.u_logvar).reshape(k, -1).sum(1)
        return recon, kl / n_images, t, logits, q

    def member_losses(self, x: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
        """x (K, B, S, C, H, W) in [0, 1], member m's batch in x[m]: each member's negative ELBO per
        image, (K,). Member m's noise comes from generators[m] (None: the global RNG)."""
        recon, kl = self._pass(x, generators)[:2]
        return recon + kl

    # ------------------------------------------------------------ members as single runs

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member m's weights in a single run's layout (a K = 1 model's, nn.Linear's)."""
        return {name: to_member(name, p[m].detach()) for name, p in self.state_dict().items()}

    @torch.no_grad()
    def load_member_states(self, states: list[dict[str, torch.Tensor]]) -> None:
        """Each member's weights from a single run's layout, as member_state gives them (and as a
        single run's checkpoint holds them)."""
        own = self.state_dict()
        if any(set(s) != set(own) for s in states):
            raise KeyError("member states: not the parameters of this model")
        for name, p in own.items():
            p.copy_(from_members(name, [s[name] for s in states]))

    def member(self, m: int) -> TopographicVAE:
        """Member m as a K = 1 model with its weights (a K = 1 model is its own member 0)."""
        if self.k == 1 and m == 0:
            return self
        with torch.random.fork_rng(devices=[]):  # building draws an initialisation: leave the RNG as it was
            model = TopographicVAE(self.members[m])
        model.to(self.decoder.net[0].weight.device, self.decoder.net[0].weight.dtype)
        model.load_member_states([self.member_state(m)])
        return model

    # ------------------------------------------------------------ a single run (K = 1): no member axis

    def _single(self) -> None:
        if self.k != 1:
            raise ValueError(f"a model of {self.k} members: take member(m) for one member's methods")

    def encode(self, x: torch.Tensor) -> Posterior:
        """x (B, S, C, H, W) -> the posteriors' parameters, each (B, S, n_caps, cap_dim)."""
        self._single()
        return self._encode(x[None]).first()

    def energy(self, u_sq: torch.Tensor) -> torch.Tensor:
        """v = W(u^2) for u_sq (B, S, C, D)."""
        self._single()
        return self._energy(u_sq[None])[0]

    def latent(self, z: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        """t from z and u, each (B, S, n_caps, cap_dim)."""
        self._single()
        return self._latent(z[None], u[None] if u is not None else None)[0]

    def decode(self, t: torch.Tensor) -> torch.Tensor:
        """(B, S, n_caps, cap_dim) -> Bernoulli logits (B, S, C, H, W)."""
        self._single()
        return self._decode(t[None])[0]

    @staticmethod
    def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-image NLL (B, S) of pixels in [0, 1] (continuous targets allowed)."""
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return nll.flatten(2).sum(-1)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """x: (B, S, C, H, W) in [0, 1]; the noise from the global RNG."""
        self._single()
        recon, kl, t, logits, q = self._pass(x[None], [None])
        return ModelOutput(loss=(recon + kl)[0], recon_nll=recon[0], kl=kl[0], t=t[0], logits=logits[0],
                           posterior=q.first())

    def sample_latent(self, x: torch.Tensor) -> torch.Tensor:
        """One posterior sample of t, (B, S, n_caps, cap_dim).

        A sample, not the posterior means: with u at its mean (near 0 early in training) v is
        near 0 and t blows up, so the means are no typical code of the model.
        """
        self._single()
        return self._latent(*self._draw(self._encode(x[None]), [None]))[0]

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
