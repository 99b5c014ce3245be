"""A full disk during a sweep: noticed wherever it surfaces, told as one line.

When the disk under a sweep fills, the error surfaces in many places at once: trials fail to write
checkpoints and results, Ray's driver fails to write a trial's error file or its experiment state,
MLflow's SQLite store refuses its writes, the sweep's own logs stop. Each of those is noticed here
(`notice`), kept off the console, and the sweep stops with one line naming the path, the cause and
the command that continues it; the traceback goes to the sweep's ray.log when there is room for it.
Nothing is lost: Ray's saved experiment keeps the trials' states and checkpoints, and `tvae-sweep
resume NAME` reruns what did not finish once there is space again.
"""
from __future__ import annotations

import errno
import logging
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

from .layout import SweepDir, continue_command, title

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# the same condition as text: errors that crossed a process (Ray's trial errors, TuneError's
# formatted tracebacks) or a library (SQLite) keep only their message
NO_SPACE_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded")
EXIT_CODE = 1  # not bad input (2) nor an interrupted sweep (130): the machine failed the sweep

# the libraries whose console logs, once the disk is full, only repeat it (with tracebacks)
LIBRARY_LOGGERS = ("ray", "mlflow", "optuna", "sqlalchemy")

_noticed: list[BaseException] = []  # the no-space errors seen during this process's sweep


class DiskFull(RuntimeError):
    """The sweep stopped because its disk is full; its message is the one line to show, and the
    command exits with EXIT_CODE."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, its causes and contexts, and the exception a Ray task error wraps."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        wrapped = getattr(e, "cause", None)  # RayTaskError's
        todo += [e.__cause__, e.__context__, wrapped if isinstance(wrapped, BaseException) else None]


def no_space(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says that a disk or a quota is full."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            return True
        if any(text in str(e).lower() for text in NO_SPACE_TEXTS):
            return True
    return False


def notice(error: BaseException) -> bool:
    """Remembers `error` if it is a full disk (the sweep then ends with the one line); says whether it was."""
    if not no_space(error):
        return False
    if not _noticed:
        _quiet_libraries()
    _noticed.append(error)
    return True


def _silent(record: logging.LogRecord) -> bool:
    return False


def _quiet_libraries() -> None:
    """Keeps the libraries' logs off the console from now on: every write fails the same way."""
    for name in LIBRARY_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.addFilter(_silent)


def first_noticed() -> BaseException | None:
    """The first full disk noticed during this sweep, if any."""
    return _noticed[0] if _noticed else None


def raise_first(errors: Iterable[BaseException | None]) -> None:
    """Raises the first of the trials' `errors` that is a full disk, if any."""
    for error in errors:
        if error is not None and no_space(error):
            raise error


def _failed_path(error: BaseException, sweep: SweepDir) -> Path:
    """The file whose write failed, if the error names one, else the sweep's folder."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS and e.filename:
            return Path(e.filename)
    return sweep.root


def stop_line(error: BaseException, sweep: SweepDir, log: TextIO) -> str:
    """The one line that tells why the sweep stopped, where, and how to continue it; the error's
    traceback goes to `log` (the sweep's ray.log), which drops it when there is no room."""
    path = _failed_path(error, sweep)
    with suppress(OSError):  # written whole or not at all: `list` shows it stopped, when there is room
        sweep.write_state(status="interrupted")
    logged = log.write("".join(traceback.format_exception(error)))
    details = "; its traceback is in the sweep's ray.log" if logged else ""
    return (f"{path}: no space left on device; the {title(sweep)} stopped with its trials saved: "
            f"free space there, then continue it with `{continue_command(sweep)}`{details}")


@contextmanager
def one_line_when_full(sweep: SweepDir, log: TextIO) -> Iterator[None]:
    """Runs a sweep; a full disk, wherever it surfaced, ends it as DiskFull (one line, exit code 1)
    with the traceback in `log`."""
    _noticed.clear()
    try:
        yield
    except Exception as e:
        if not (notice(e) or _noticed):
            raise
        raise DiskFull(stop_line(e, sweep, log)) from None
    if _noticed:  # the sweep got to its end, but parts of it were not written
        raise DiskFull(stop_line(_noticed[0], sweep, log))

