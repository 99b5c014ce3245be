"""Each private API tvae-sweep uses, exercised on the real objects: an upgrade that removes one
fails here, with the line that names it, not in the middle of a sweep."""
import atexit
import subprocess
import sys

import optuna
import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from tvae_sweep import compat
from tvae_sweep.sweep.searcher import OptunaSearch as SweepSearch


def test_exit_handlers_run_on_request():
    """In a process of its own: running them here would run this test process's handlers too."""
    code = ("import atexit, os; from tvae_sweep.compat import run_exit_handlers; "
            "atexit.register(print, 'handler ran', flush=True); run_exit_handlers(); os._exit(0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "handler ran\n", proc.stderr


def test_a_restored_tuner_takes_this_drivers_callbacks():
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(callbacks=[]))
    mine = [tune.Callback()]
    compat.set_callbacks_of_restored(tuner, mine)
    assert tuner._local_tuner.get_run_config().callbacks is mine


@pytest.mark.parametrize("metric", ["log_likelihood", ["log_likelihood", "roll_gain"]])
def test_the_searchers_study_trials_and_metrics_are_reachable(metric):
    mode = "max" if isinstance(metric, str) else ["max", "max"]
    searcher = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric=metric, mode=mode)
    searcher.set_search_properties(None, None, {})
    config = searcher.suggest("trial_1")
    assert 0 <= config["x"] <= 1
    assert isinstance(compat.optuna_study(searcher), optuna.Study)
    assert list(compat.optuna_trials(searcher)) == ["trial_1"]
    assert compat.optuna_metrics(searcher) == ([metric] if isinstance(metric, str) else metric)


@pytest.mark.parametrize("metric", ["log_likelihood", ["log_likelihood", "roll_gain"]])
def test_the_sweeps_searcher_names_its_studys_objectives(metric, tmp_path):
    """Our override of Ray's private OptunaSearch._setup_study: the study it creates (or loads)
    names its objectives, which Ray's own searcher leaves unnamed."""
    mode = "max" if isinstance(metric, str) else ["max", "max"]
    metrics = [metric] if isinstance(metric, str) else metric
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    for searcher_class, names in ((OptunaSearch, None), (SweepSearch, metrics)):
        searcher = searcher_class(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric=metric, mode=mode,
                                  study_name=searcher_class.__module__, storage=storage)
        assert compat.optuna_study(searcher).metric_names == names
        loaded = optuna.load_study(study_name=searcher_class.__module__, storage=storage)
        assert loaded.metric_names == names


def test_a_missing_private_api_is_named_in_one_line():
    with pytest.raises(compat.PrivateApiGone, match="has no _ot_study any more"):
        compat.optuna_study(object())


def test_a_missing_private_function_of_a_module_is_named(monkeypatch):
    monkeypatch.delattr(atexit, "_run_exitfuncs")
    with pytest.raises(compat.PrivateApiGone, match="atexit has no _run_exitfuncs any more"):
        compat.run_exit_handlers()


def test_a_frozen_trial_becomes_one_that_can_be_marked_and_told():
    study = optuna.create_study()
    study.ask()
    trial = compat.live_trial(study, study.get_trials()[0])
    trial.set_user_attr("lost", True)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert (study.trials[0].state, study.trials[0].user_attrs) == (optuna.trial.TrialState.FAIL, {"lost": True})
