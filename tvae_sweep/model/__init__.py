"""Model package: the TVAE, its baselines and the topographic operators, K members at once."""
from ..config import ModelConfig
from .networks import FusedLinear
from .topographic import w_by_rolls, window_offsets
from .tvae import ModelOutput, Posterior, TopographicVAE, check_fusable


def build_model(cfg: ModelConfig) -> TopographicVAE:
    """The model of `cfg.variant`: "vae", "tvae" (any shift; 0 is stationary grouping) or "tvae2d"."""
    return TopographicVAE(cfg)


__all__ = ["FusedLinear", "ModelConfig", "ModelOutput", "Posterior", "TopographicVAE", "build_model",
           "check_fusable", "w_by_rolls", "window_offsets"]
