"""Model package: the TVAE, its baselines and the topographic operators."""
from ..config import ModelConfig
from .topographic import topographic_energy, torus_energy, window_offsets
from .tvae import ModelOutput, Posterior, TopographicVAE


def build_model(cfg: ModelConfig) -> TopographicVAE:
    """The model of `cfg.variant`: "vae", "tvae" (any shift; 0 is stationary grouping) or "tvae2d"."""
    return TopographicVAE(cfg)


__all__ = ["ModelConfig", "ModelOutput", "Posterior", "TopographicVAE", "build_model",
           "topographic_energy", "torus_energy", "window_offsets"]
