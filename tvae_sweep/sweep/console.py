"""What a sweep shows while it runs, and where Ray's own output goes.

On a terminal: one live table of the trials that fits the terminal's width, redrawn in place under a
progress line (trials done, running, pending; epochs done of those planned; elapsed; an ETA from
what each trial's epochs cost, eta.py). Elsewhere (a log file, CI): one line per trial event, and
after a trial's end the progress line. A fused Ray trial is shown as its points, each with its own
state and metrics. Ray's banner, hints and warnings go to results/<name>/ray.log instead of the
console.
"""
from __future__ import annotations

import io
import logging
import math
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, redirect_stderr, redirect_stdout, suppress
from pathlib import Path
from typing import TextIO

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .disk import notice
from .eta import Eta, done_epochs
from .records import ERROR, RUNNING, TrialRecord, records_of
from .rungs import Rungs

RAY_LOG = "ray.log"
REFRESH_S = 1.0  # the live table is redrawn at most this often
PROGRESS_S = 30.0  # in a log, the progress line follows a trial's end at most this often
WIDTH = 120  # the live table's width where the terminal's is unknown
# a searched key's column is headed by the key's last component, or by its name here
SHORT_NAMES = {"model.n_off_diag": "K", "model.coherence_window": "window", "model.mu_init": "mu",
               "model.torus_window": "torus", "train.batch_size": "batch", "train.eval_batch_size": "eval_batch",
               "train.ll_samples": "ll_n", "data.train_sequences": "train_seqs", "data.test_sequences": "test_seqs"}


def format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def short_names(keys: list[str]) -> list[str]:
    """Column headers for searched keys: n_caps, cap_dim, K, window, shift, mu...; a key whose short
    name another key shares keeps its whole name."""
    short = [SHORT_NAMES.get(k, k.rsplit(".", 1)[-1]) for k in keys]
    return [name if short.count(name) == 1 else key for key, name in zip(keys, short, strict=True)]


def fitting_columns(headers: list[str], rows: list[list[str]], droppable: range, width: int) -> list[int]:
    """The columns (indices) of a table without borders, two spaces apart, that fit `width`: all of
    them, or without the droppable ones that do not fit, the last first."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    shown = list(range(len(headers)))
    while sum(widths[i] + 2 for i in shown) - 2 > width and any(i in droppable for i in shown):
        shown.remove(max(i for i in shown if i in droppable))
    return shown


def state_of(record: TrialRecord) -> str:
    """Ray's state of the trial, or STOPPED r<k> for one ASHA stopped at rung k."""
    return record.state if record.stopped_at_rung is None else f"STOPPED r{record.stopped_at_rung}"


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
            return len(text)
        if self._file.closed:  # closed when the disk was full: dropped
            return 0
        try:
            self._file.write(text)
            self._file.flush()
        except OSError as e:
            if not notice(e):
                raise
            with suppress(OSError):  # a full disk: the sweep ends with one line about it, and its log here
                self._file.close()
            return 0
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

    def __init__(self, params: list[str], metrics: list[str], eta: Eta, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, rungs: Rungs | None = None):
        """eta: the sweep's time left (launch.sweep_eta), which knows its trials; rungs: the sweep's
        ASHA rungs (asha_rungs), to show where it stopped a trial."""
        self.params, self.metrics, self.eta, self.rungs = params, metrics, eta, rungs
        self.stream = stream or sys.stdout  # the console as it is now, before Ray's output is redirected
        self.clock = clock
        self.started = clock()
        self.live = None
        self.drawn = 0.0
        self.progressed = -math.inf  # when a log last got the progress line
        self.seen: set[str] = set()

    @property
    def interactive(self) -> bool:
        return self.stream.isatty()

    # ------------------------------------------------------------ what is shown

    def progress_line(self, records: list[TrialRecord]) -> str:
        done = sum(r.finished for r in records)
        running = sum(r.state == RUNNING for r in records)
        left = self.eta.seconds_left(records)
        total = self.eta.total
        line = (f"{done}/{total} trials done, {running} running, {total - done - running} pending; "
                f"{done_epochs(records)}/{self.eta.planned(records)} epochs; "
                f"{_duration(self.clock() - self.started)} elapsed")
        if left is not None and done < total:
            line += f", about {_duration(left)} to go"
        return line

    def rows(self, records: list[TrialRecord]) -> list[list[str]]:
        return [[r.trial_id, state_of(r), *(format_value(r.config.get(p, "-")) for p in self.params),
                 format_value(r.epochs), *(format_value(r.last.get(m, "-")) for m in self.metrics)]
                for r in records]

    def table(self, records: list[TrialRecord], width: int = WIDTH) -> Table:
        """The trials, in `width` columns without a word cut: searched keys
        under short names, and those that do not fit left out, the last first (named under the
        table); the trial, its state, its epoch and the objectives always shown."""
        headers = ["trial", "state", *short_names(self.params), "epoch", *self.metrics]
        rows = self.rows(records)
        params = range(2, 2 + len(self.params))
        shown = fitting_columns(headers, rows, params, width)
        left_out = [headers[i] for i in params if i not in shown]
        caption = f"not shown, for the width: {', '.join(left_out)}" if left_out else None
        table = Table(box=None, pad_edge=False, caption=caption, caption_justify="left")
        for i in shown:
            table.add_column(headers[i], no_wrap=True)
        for row in rows:
            table.add_row(*(row[i] for i in shown))
        return table

    def view(self, records: list[TrialRecord], width: int = WIDTH) -> Group:
        """What a terminal shows: the progress line over the table."""
        return Group(Text(self.progress_line(records)), self.table(records, width))

    def event(self, records: list[TrialRecord], what: str) -> None:
        """A line for each record (each point of a fused trial; a point that failed alone says so)."""
        for record in records:
            values = "  ".join(f"{m} {format_value(record.last[m])}" for m in self.metrics if m in record.last)
            said = "failed" if what == "finished" and record.state == ERROR else what
            if what == "finished" and record.stopped_at_rung is not None:
                said = f"stopped by ASHA at rung {record.stopped_at_rung}"
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
        self.live.update(self.view(records_of(trials, rungs=self.rungs), self.live.console.width), refresh=True)
        self.drawn = time.monotonic()

    # ------------------------------------------------------------ Tune's hooks

    def on_step_end(self, iteration, trials, **info):
        self.draw(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        # Ray calls this before it marks `trial` RUNNING
        self.eta.observe(sum(t.status == RUNNING or t is trial for t in trials))
        records = records_of([trial])
        if not self.interactive:
            self.event([r for r in records if r.trial_id not in self.seen], "started")
        self.seen.update(r.trial_id for r in records)
        self.draw(trials, force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not self.interactive:
            self.event(records_of([trial], finished={trial.trial_id}, rungs=self.rungs), "finished")
            self.log_progress(trials, trial)
        self.draw(trials, force=True)

    def log_progress(self, trials, ended) -> None:
        """In a log, the progress line with its ETA after trial `ended` ended (Ray marks it
        TERMINATED only after its callbacks), at most every PROGRESS_S."""
        if self.clock() - self.progressed < PROGRESS_S:
            return
        self.progressed = self.clock()
        records = records_of(trials, finished={ended.trial_id}, rungs=self.rungs)
        print(f"{time.strftime('%H:%M:%S')}  {self.progress_line(records)}", file=self.stream, flush=True)

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
