"""A live progress table of a sweep's trials, printed by the driver as results arrive."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from ray.tune import Callback


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ProgressTable(Callback):
    """Prints one row per trial (state, searched values, epoch, objectives) at most every
    `interval` seconds, and once more when the sweep ends."""

    def __init__(self, params: list[str], metrics: list[str], total: int, interval: float = 10.0,
                 stream: TextIO | None = None):
        self.params = params
        self.metrics = metrics
        self.total = total
        self.interval = interval
        self.stream = stream or sys.stdout
        self.last_print = 0.0

    def _rows(self, trials) -> list[list[str]]:
        rows = []
        for trial in trials:
            result = trial.last_result or {}
            row = [trial.trial_id, trial.status]
            row += [format_value(trial.config.get(p, "-")) for p in self.params]
            row.append(format_value(result.get("training_iteration", 0)))
            row += [format_value(result.get(m, "-")) for m in self.metrics]
            rows.append(row)
        return rows

    def print_table(self, trials) -> None:
        header = ["trial", "state", *self.params, "epoch", *self.metrics]
        rows = self._rows(trials)
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
        done = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
        lines = [f"== {time.strftime('%H:%M:%S')}  {done}/{self.total} trials done",
                 "  ".join(h.ljust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        print("\n".join(lines), file=self.stream, flush=True)
        self.last_print = time.monotonic()

    def on_step_end(self, iteration, trials, **info):
        if trials and time.monotonic() - self.last_print >= self.interval:
            self.print_table(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.print_table(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.print_table(trials)

    def on_experiment_end(self, trials, **info):
        self.print_table(trials)
