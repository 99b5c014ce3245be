"""What a sweep shows while it runs, and where Ray's own output goes.

On a terminal: one live table of the trials, redrawn in place under a progress line (done, running,
pending, elapsed, ETA). Elsewhere (a log file, CI): one line per trial event. A fused Ray trial is
shown as its points, each with its own state and metrics. Ray's banner, hints and warnings go to
results/<name>/ray.log instead of the console.
"""
from __future__ import annotations

import io
import logging
import sys
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TextIO

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .records import ERROR, RUNNING, TrialRecord, records_of

RAY_LOG = "ray.log"
REFRESH_S = 1.0  # the live table is redrawn at most this often


def format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class RayLog(io.TextIOBase):
    """A text stream for Ray's console output: held in memory until the sweep's folder exists, then
    appended to its ray.log."""

    def __init__(self):
        self._pending: list[str] = []
        self._file: TextIO | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._file is None:
            self._pending.append(text)
        else:
            self._file.write(text)
            self._file.flush()
        return len(text)

    def attach(self, folder: Path) -> None:
        if self._file is None:
            self._file = (folder / RAY_LOG).open("a", encoding="utf-8")
            self._file.write("".join(self._pending))
            self._file.flush()
            self._pending.clear()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


@contextmanager
def ray_output_to(log: RayLog):
    """Inside: what Ray prints (Tune's reporter) and logs (its "ray" logger's console handlers, which
    keep the stream they were made with) goes to `log`."""
    handlers = [h for h in logging.getLogger("ray").handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    streams = [h.setStream(log) for h in handlers]
    try:
        with redirect_stdout(log), redirect_stderr(log):
            yield
    finally:
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)


class TrialConsole(Callback):
    """The sweep's console: a live table on a terminal, one line per trial event elsewhere."""

    def __init__(self, params: list[str], metrics: list[str], total: int, stream: TextIO | None = None):
        """total: the sweep's trials, a fused trial's points counted one by one."""
        self.params, self.metrics, self.total = params, metrics, total
        self.stream = stream or sys.stdout  # the console as it is now, before Ray's output is redirected
        self.started = time.monotonic()
        self.live = None
        self.drawn = 0.0
        self.seen: set[str] = set()

    @property
    def interactive(self) -> bool:
        return self.stream.isatty()

    # ------------------------------------------------------------ what is shown

    def progress_line(self, records: list[TrialRecord]) -> str:
        done = sum(r.finished for r in records)
        running = sum(r.state == RUNNING for r in records)
        elapsed = time.monotonic() - self.started
        line = (f"{done}/{self.total} trials done, {running} running, {self.total - done - running} pending; "
                f"{_duration(elapsed)} elapsed")
        if 0 < done < self.total:
            line += f", about {_duration(elapsed / done * (self.total - done))} to go"
        return line

    def rows(self, records: list[TrialRecord]) -> list[list[str]]:
        return [[r.trial_id, r.state, *(format_value(r.config.get(p, "-")) for p in self.params),
                 format_value(r.epochs), *(format_value(r.last.get(m, "-")) for m in self.metrics)]
                for r in records]

    def table(self, records: list[TrialRecord]) -> Table:
        table = Table(title=self.progress_line(records), title_justify="left", box=None, pad_edge=False)
        for name in ["trial", "state", *self.params, "epoch", *self.metrics]:
            table.add_column(name, no_wrap=True)
        for row in self.rows(records):
            table.add_row(*row)
        return table

    def event(self, records: list[TrialRecord], what: str) -> None:
        """A line for each record (each point of a fused trial; a point that failed alone says so)."""
        for record in records:
            values = "  ".join(f"{m} {format_value(record.last[m])}" for m in self.metrics if m in record.last)
            said = "failed" if what == "finished" and record.state == ERROR else what
            print(f"{time.strftime('%H:%M:%S')}  trial {record.trial_id} {said}"
                  + (f" after {record.epochs} epochs  {values}" if what != "started" else ""),
                  file=self.stream, flush=True)

    def draw(self, trials, force: bool = False) -> None:
        """Redraws the live table of Ray's `trials` (at most every REFRESH_S unless forced)."""
        if not self.interactive or (not force and time.monotonic() - self.drawn < REFRESH_S):
            return
        if self.live is None:
            console = Console(file=self.stream, force_terminal=True)
            self.live = Live(console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
            self.live.start()
        self.live.update(self.table(records_of(trials)), refresh=True)
        self.drawn = time.monotonic()

    # ------------------------------------------------------------ Tune's hooks

    def on_step_end(self, iteration, trials, **info):
        self.draw(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        records = records_of([trial])
        if not self.interactive:
            self.event([r for r in records if r.trial_id not in self.seen], "started")
        self.seen.update(r.trial_id for r in records)
        self.draw(trials, force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not self.interactive:
            self.event(records_of([trial]), "finished")
        self.draw(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        if not self.interactive:
            self.event(records_of([trial]), "failed")
        self.draw(trials, force=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        if not self.interactive:
            self.event(records_of([trial]), "is retried from its checkpoint")

    def on_experiment_end(self, trials, **info):
        if self.interactive:
            self.draw(trials, force=True)
            self.live.stop()
            self.live = None
        else:
            print(self.progress_line(records_of(trials)), file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
