"""Every private API of Ray, Optuna or CPython that tvae-sweep uses, each with the reason.

Each accessor fails with one clear line when an upgrade removes what it reaches for, and
tests/test_compat.py exercises each one on the real objects, so such an upgrade fails the tests
rather than a sweep.
"""
from __future__ import annotations

import atexit
from collections.abc import Callable
from types import ModuleType
from typing import Any


class PrivateApiGone(RuntimeError):
    """A private attribute this version of tvae-sweep relies on is missing from a dependency."""


def _private(obj: Any, name: str, why: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        owner = obj.__name__ if isinstance(obj, ModuleType) else f"{type(obj).__module__}.{type(obj).__name__}"
        raise PrivateApiGone(f"{owner} has no {name} any more "
                             f"(tvae-sweep reads it {why}); install the versions of constraints.txt") from None


def run_exit_handlers() -> None:
    """CPython's atexit._run_exitfuncs: a successful command runs its exit handlers (Ray's shutdown
    among them) and then leaves with os._exit, skipping seconds of module teardown. atexit has no
    public way to run the handlers early."""
    _private(atexit, "_run_exitfuncs", "to run the exit handlers before a prompt exit")()


def set_callbacks_of_restored(tuner, callbacks: list) -> None:
    """Ray's Tuner._local_tuner: Tuner.restore takes no RunConfig, so a restored sweep would call the
    callbacks pickled by the driver that launched it (its MLflow client, its progress table); the
    resuming driver puts its own in their place."""
    local = _private(tuner, "_local_tuner", "to give a restored sweep this driver's callbacks")
    local.get_run_config().callbacks = callbacks


def optuna_study(searcher):
    """Ray's OptunaSearch._ot_study: the Optuna study, to give failed trials the worst value seen."""
    return _private(searcher, "_ot_study", "to give a failed trial the worst value seen")


def optuna_trials(searcher) -> dict:
    """Ray's OptunaSearch._ot_trials: Ray trial id -> Optuna trial, to know which trials it asked for."""
    return _private(searcher, "_ot_trials", "to tell its own trials from others")


def optuna_metrics(searcher) -> list[str]:
    """Ray's OptunaSearch._metric: the objective name(s) the searcher was given."""
    metric = _private(searcher, "_metric", "to name the objectives of a failed trial")
    return metric if isinstance(metric, list) else [metric]



def live_trial(study, frozen) -> Any:
    """A FrozenTrial of `study` as a Trial whose attributes can be set and which can be told its
    state: Optuna builds one from the storage's trial id, FrozenTrial._trial_id."""
    import optuna  # noqa: PLC0415 compat loads no Optuna for its other readers

    return optuna.trial.Trial(study, _private(frozen, "_trial_id", "to mark a trial lost in an interruption"))


def order_grid(sampler, key: Callable[[dict[str, Any]], Any]) -> None:
    """Optuna's GridSampler._all_grids and _param_names: its trial n takes point n of a grid it
    shuffled with its seed, and no public API orders the grid. A sweep sorts it by `key` (of each
    point's {param: value}), stably, so points of one key keep the seed's order."""
    grids = _private(sampler, "_all_grids", "to order a grid's points")
    names = _private(sampler, "_param_names", "to order a grid's points")
    grids.sort(key=lambda values: key(dict(zip(names, values, strict=True))))
