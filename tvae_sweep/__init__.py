"""tvae-sweep: Topographic VAEs and the sweeps that find which topographic structure makes them equivariant."""
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .model import build_model

__all__ = ["DataConfig", "ModelConfig", "RunConfig", "TrainConfig", "build_model"]
__version__ = "0.1.0"
