"""The tracking thread: what Tune's hooks hand over, written to MLflow in order, off Tune's loop.

Tune calls the hooks in its loop and a trial waits at each report until the loop is through, so a
hook never waits on MLflow: it hands the write over (`later`). A write that fails is reported on the
console in one line (the first one with its traceback) and never stops the sweep.
"""
from __future__ import annotations

import sys
import traceback
from concurrent.futures import ThreadPoolExecutor

from ..errors import redact


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


class Writer:
    def __init__(self):
        self.pool: ThreadPoolExecutor | None = None  # the tracking thread, started by the first write
        self.warned = False
        self.console = sys.stderr  # as it is now: while Tune runs, sys.stderr is Ray's log

    def later(self, name: str, fn, *args) -> None:
        """Runs fn(*args) on the tracking thread, in the order the hooks were called."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow-log")
        self.pool.submit(self.run_guarded, name, fn, *args)

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
