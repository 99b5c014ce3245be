"""The tracking thread: what Tune's hooks hand over, written to MLflow in order, off Tune's loop.

Tune calls the hooks in its loop and a trial waits at each report until the loop is through, so a
hook never waits on MLflow: it hands the write over (`later`). A write that replaces the one before
it (the parent run's aggregates over all trials) is handed over with `latest`: while one such write
waits, a newer one takes its place, so when the thread falls behind a long sweep's trials, at most
one of them waits, not one per trial (each holding a table of every trial). A write that fails is
reported on the console in one line (the first one with its traceback) and never stops the sweep.
"""
from __future__ import annotations

import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

from ..errors import redact
from ..sweep.disk import notice


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


class Writer:
    def __init__(self):
        self.pool: ThreadPoolExecutor | None = None  # the tracking thread, started by the first write
        self.warned = False
        self.console = sys.stderr  # as it is now: while Tune runs, sys.stderr is Ray's log
        self.waiting: dict[str, tuple] = {}  # kind -> (name, fn, args) of a `latest` write not yet begun
        self.lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Ray pickles the sweep's callbacks with its run config: no thread, lock, waiting write or console."""
        return {**self.__dict__, "pool": None, "lock": None, "waiting": {}, "console": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.Lock())

    def later(self, name: str, fn, *args) -> None:
        """Runs fn(*args) on the tracking thread, in the order the hooks were called."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow-log")
        self.pool.submit(self.run_guarded, name, fn, *args)

    def latest(self, kind: str, name: str, fn, *args) -> None:
        """Like `later`, but a write of the same `kind` that has not begun yet is replaced by this one
        (it runs where the replaced one stood in the order)."""
        with self.lock:
            queued = kind in self.waiting
            self.waiting[kind] = (name, fn, args)
        if not queued:
            self.later(name, self._run_latest, kind)

    def _run_latest(self, kind: str) -> None:
        with self.lock:
            name, fn, args = self.waiting.pop(kind)
        self.run_guarded(name, fn, *args)

    def run_guarded(self, name: str, fn, *args) -> None:
        with self.guard(name):
            fn(*args)

    def drain(self) -> None:
        """Waits for every write handed over so far, and stops the thread."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def guard(self, name: str) -> _Guard:
        """Inside, an exception is reported as a failure of `name`, never raised."""
        return _Guard(self, name)

    def warn(self, name: str, error: BaseException) -> None:
        if notice(error):  # a full disk: the sweep ends with one line about it
            return
        console = self.console or sys.stderr
        print(f"tvae-sweep: tracking: {name} failed: {type(error).__name__}: {redact(first_line(str(error)))}",
              file=console, flush=True)
        if not self.warned:
            print(redact("".join(traceback.format_exception(error))), end="", file=console, flush=True)
            self.warned = True


class _Guard:
    def __init__(self, writer: Writer, name: str):
        self.writer, self.name = writer, name

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is not None and isinstance(error, Exception):
            self.writer.warn(self.name, error)
            return True
        return False
