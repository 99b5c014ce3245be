"""Data: sequences of transforming MNIST digits and dSprites, generated in batches on the device."""
from .sequences import (
                        DATASETS,
                        DSPRITES_FACTORS,
                        MNIST_TRANSFORMS,
                        Batch,
                        SequenceData,
                        Sources,
                        build_data,
                        check_sources,
                        load_sources,
)

__all__ = ["Batch", "DATASETS", "DSPRITES_FACTORS", "MNIST_TRANSFORMS", "SequenceData", "Sources", "build_data",
           "check_sources", "load_sources"]
