"""A training step captured as a CUDA graph: one launch per step instead of hundreds.

At the paper's batch (8 sequences) a step of the full-size model is a few hundred small kernels,
and on a GPU their launches, not their arithmetic, take the time. After a few eager warm-up steps
(on a side stream, as CUDA graph capture requires), forward, backward and the optimiser step are
captured once and replayed on a static input buffer. The random draws inside the step come from
the default CUDA generator, which CUDA graphs advance at every replay.

The graph holds the optimiser's state tensors: `reset()` must follow anything that replaces them
(loading a checkpoint); the next step captures again.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

WARMUP_STEPS = 3


class GraphedStep:
    def __init__(self, forward_backward_step: Callable[[torch.Tensor], torch.Tensor], zero_grad: Callable[[], None]):
        self.step = forward_backward_step  # x -> loss, after running backward and the optimiser
        self.zero_grad = zero_grad
        self.reset()

    def reset(self) -> None:
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_x: torch.Tensor | None = None
        self.static_loss: torch.Tensor | None = None
        self.warm = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.graph is None and self.warm < WARMUP_STEPS:
            self.warm += 1
            return self._on_side_stream(x)
        if self.graph is None:
            self._capture(x)
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_loss

    def _on_side_stream(self, x: torch.Tensor) -> torch.Tensor:
        stream = torch.cuda.Stream(x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            self.zero_grad()
            loss = self.step(x)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        return loss

    def _capture(self, x: torch.Tensor) -> None:
        self.static_x = x.clone()
        self.zero_grad()  # gradients are then allocated inside the graph, at fixed addresses
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = self.step(self.static_x)
