"""Tune's side of a full disk (sweep/disk.py): its trials' failures watched, its loop stopped.

Tune logs every trial failure with the trial's exception (TUNE_PRINT_ALL_TRIAL_ERRORS, on by
default); a full disk among them, or anywhere else in the driver, ends Tune's loop at the end of
that step, before every other trial fails the same way and is retried. The driver stops as after a
crash, which Tuner.restore resumes from: finished trials stay finished, the others continue from
their last checkpoints.
"""
from __future__ import annotations

import errno
import logging

from ray.tune import Callback

from .disk import first_noticed, notice

TUNE_LOGGER = "ray.tune"


class _TrialFailures(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            notice(record.exc_info[1])


_TRIAL_FAILURES = _TrialFailures()


class StopWhenFull(Callback):
    """Stops the sweep at the end of the step in which a full disk was noticed."""

    def setup(self, **info) -> None:
        logging.getLogger(TUNE_LOGGER).addHandler(_TRIAL_FAILURES)

    def on_step_end(self, iteration, trials, **info) -> None:
        full = first_noticed()
        if full is not None:
            raise OSError(errno.ENOSPC, "no space left on device: the sweep stops here") from full

    def on_experiment_end(self, trials, **info) -> None:
        logging.getLogger(TUNE_LOGGER).removeHandler(_TRIAL_FAILURES)
