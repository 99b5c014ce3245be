"""No config is trained twice: the Optuna searcher asks its sampler again when a sample repeats a
config the study already asked for, and ends the sweep when the space holds no new one. In process,
on the searcher Ray drives (suggest / on_trial_complete), with its study in memory or in SQLite."""
import itertools
from pathlib import Path

import optuna
import pytest
from helpers import spec_raw
from optuna.trial import TrialState
from ray.tune.search import Searcher

from tvae_sweep.sweep.searcher import DUPLICATE_OF, EXHAUSTED, LOST, RANDOM_ASKS, SAMPLER_ASKS, optuna_search
from tvae_sweep.sweep.validation import load_spec, spec_from_dict

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"
# 2 x 3 = 6 configs: the shift is searched for the TVAE only
SIX = {"model.n_caps": {"type": "categorical", "values": [2, 3]},
       "model.variant": {"type": "categorical", "values": ["vae", "tvae"]},
       "model.shift": {"type": "int", "low": 0, "high": 1, "when": {"model.variant": ["tvae"]}}}

GRID = {"model.n_caps": {"type": "categorical", "values": [2, 3]}, "model.shift": {"type": "int", "low": 0, "high": 2}}


def six_configs(algorithm: str, seed: int = 0, **search):
    return spec_from_dict(spec_raw(search={"algorithm": algorithm, "metric": "log_likelihood", "mode": "max",
                                           "num_trials": 6, "seed": seed, "scheduler": "fifo",
                                           "n_startup_trials": 2, **search}, space=SIX))


def objective(config: dict) -> float:
    """A value the samplers can learn from: fewer capsules and no shift are better."""
    return -float(config.get("model.n_caps", 0)) - config.get("model.shift", 0) - (config.get("model.variant") == "vae")


def key(config: dict) -> tuple:
    return tuple(sorted(config.items()))


def run(searcher, n: int, complete: bool = True, first: int = 0) -> list:
    """n suggestions, each told its objective at once (or left running)."""
    configs = []
    for i in range(first, first + n):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        if complete and isinstance(config, dict):
            searcher.on_trial_complete(f"t{i}", result={"log_likelihood": objective(config)})
    return configs


def duplicates_point_at_their_originals(study: optuna.Study) -> list:
    """The FAIL trials the searcher made of repeated samples: each names a trial with its config."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    failed = [t for t in trials.values() if t.state == TrialState.FAIL]
    for t in failed:
        assert trials[t.user_attrs[DUPLICATE_OF]].params == t.params
        assert trials[t.user_attrs[DUPLICATE_OF]].state != TrialState.FAIL
    return failed


@pytest.mark.parametrize("algorithm", ["tpe", "gp", "cmaes", "random"])
def test_every_config_of_a_small_space_once_then_the_search_ends(algorithm):
    searcher = optuna_search(six_configs(algorithm), "six")
    configs = run(searcher, 6)
    assert len({key(c) for c in configs}) == 6
    assert searcher.suggest("t6") == Searcher.FINISHED
    study = searcher._ot_study
    failed = duplicates_point_at_their_originals(study)
    assert len(failed) >= SAMPLER_ASKS + RANDOM_ASKS  # the 7th suggestion's asks
    assert study.user_attrs[EXHAUSTED] == 6


def smoke_configs(seed: int = 0) -> tuple[list, optuna.Study]:
    """24 suggestions of TPE in the smoke space (36 configs), two trials at a time as its sweep runs
    them, each told a value."""
    searcher = optuna_search(load_spec(SMOKE, [f"search.seed={seed}"]), "smoke")
    running, configs = [], []
    for i in range(24):
        configs.append(searcher.suggest(f"t{i}"))
        running.append((f"t{i}", configs[-1]))
        if len(running) == 2:
            trial_id, config = running.pop(0)
            searcher.on_trial_complete(trial_id, result={"log_likelihood": -abs(config["model.n_caps"] - 4)
                                                         - abs(config["model.coherence_window"] - 3)})
    return configs, searcher._ot_study


def test_the_smoke_space_gives_24_distinct_configs_to_tpe():
    """TPE alone repeats a quarter of its 24 trials here."""
    configs, study = smoke_configs()
    assert len({key(c) for c in configs}) == 24
    failed = duplicates_point_at_their_originals(study)
    assert len(failed) == len(study.trials) - 24


def test_the_same_seed_gives_the_same_configs():
    """Also after the sampler repeated itself SAMPLER_ASKS times in a row and random asks took over."""
    configs, study = smoke_configs()
    numbers = [t.number for t in study.trials if t.state != TrialState.FAIL]
    assert max(b - a - 1 for a, b in itertools.pairwise(numbers)) > SAMPLER_ASKS
    assert smoke_configs()[0] == configs
    assert smoke_configs(seed=1)[0] != configs


def test_a_running_config_is_not_suggested_again():
    searcher = optuna_search(six_configs("tpe"), "six")
    configs = run(searcher, 6, complete=False)
    assert len({key(c) for c in configs}) == 6
    assert searcher.suggest("t6") == Searcher.FINISHED


def test_a_failed_trial_stays_asked_for_and_gets_the_worst_value():
    searcher = optuna_search(six_configs("random"), "six")
    run(searcher, 2)
    failed = searcher.suggest("t2")
    searcher.on_trial_complete("t2", error=True)
    configs = run(searcher, 3, first=3)
    assert key(failed) not in {key(c) for c in configs}
    assert searcher._ot_trials["t2"].number in {t.number for t in searcher._ot_study.get_trials()
                                                 if t.state == TrialState.COMPLETE}


def test_a_restored_searcher_does_not_repeat_a_config_trained_before(tmp_path):
    """Ray restores the searcher from its last saved state, which can be older than the study in
    SQLite (a SIGKILL between the two): the configs asked for come from the study."""
    spec, storage = six_configs("tpe"), f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = optuna_search(spec, "six", optuna.storages.RDBStorage(storage))
    before = run(searcher, 2)
    searcher.save(str(tmp_path / "searcher.pkl"))
    before += run(searcher, 1, first=2)  # after the save: only the study knows it
    restored = optuna_search(spec, "six", optuna.storages.RDBStorage(storage))
    restored.restore(str(tmp_path / "searcher.pkl"))
    after = run(restored, 3, first=3)
    assert len({key(c) for c in before + after}) == 6
    reopened = optuna_search(spec, "six", optuna.storages.RDBStorage(storage))  # a new driver, same study
    assert set(reopened.asked_configs()) == {key(c) for c in before + after}


def saved_then_killed(spec, tmp_path) -> tuple[str, dict]:
    """Two trials run, the sweep's state saved, a third asked for (the driver then killed before
    Ray saved its trial): the study's storage and the config of the lost trial."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = optuna_search(spec, spec.name, optuna.storages.RDBStorage(storage))
    run(searcher, 2)
    searcher.save(str(tmp_path / "searcher.pkl"))
    return storage, searcher.suggest("t2")


def test_a_trial_lost_with_the_driver_fails_on_restore_and_its_config_is_asked_for_again(tmp_path):
    spec = six_configs("tpe")
    storage, lost = saved_then_killed(spec, tmp_path)
    restored = optuna_search(spec, spec.name, optuna.storages.RDBStorage(storage))
    restored.restore(str(tmp_path / "searcher.pkl"))
    states = [(t.state, t.user_attrs.get(LOST)) for t in restored._ot_study.get_trials()
              if DUPLICATE_OF not in t.user_attrs]
    assert states == [(TrialState.COMPLETE, None)] * 2 + [(TrialState.FAIL, True)]
    assert key(lost) not in restored.asked_configs()
    after = run(restored, 4, first=3)  # the four configs left, the lost one among them
    assert key(lost) in {key(c) for c in after} and restored.suggest("t7") == Searcher.FINISHED


def test_a_grid_keeps_a_point_lost_with_the_driver_running_and_trains_it_last(tmp_path):
    spec = spec_from_dict(spec_raw(search={"algorithm": "grid", "metric": "log_likelihood", "mode": "max"},
                                   space=GRID))
    storage, lost = saved_then_killed(spec, tmp_path)
    restored = optuna_search(spec, spec.name, optuna.storages.RDBStorage(storage))
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored._ot_study.get_trials()[2].state == TrialState.RUNNING
    after = run(restored, 4, first=3)
    assert key(after[-1]) == key(lost) and len({key(c) for c in after}) == 4


def test_a_warm_start_is_taken_as_given_and_a_later_sample_equal_to_it_is_a_duplicate():
    point = {"model.n_caps": 2, "model.variant": "vae"}
    spec = six_configs("random", warm_start=[point, point])
    searcher = optuna_search(spec, "six")
    configs = run(searcher, 7)
    assert configs[0] == configs[1] == point
    assert len({key(c) for c in configs[2:]}) == 5 and key(point) not in {key(c) for c in configs[2:]}
    assert searcher.suggest("t7") == Searcher.FINISHED


def test_a_grid_runs_each_point_once_as_before():
    spec = spec_from_dict(spec_raw(search={"algorithm": "grid", "metric": "log_likelihood", "mode": "max"},
                                   space=GRID))
    searcher = optuna_search(spec, "grid")
    configs = run(searcher, 6)
    assert sorted(key(c) for c in configs) == sorted(key({"model.n_caps": n, "model.shift": s})
                                                     for n in (2, 3) for s in (0, 1, 2))
    assert [t.state for t in searcher._ot_study.get_trials()] == [TrialState.COMPLETE] * 6
    assert [c["model.n_caps"] for c in configs] == [3, 3, 3, 2, 2, 2]  # the costliest points first


def test_a_grid_of_presets_trains_its_largest_models_first_so_its_slots_end_together():
    """A confirmation's bundles: the two of 18 capsules of 18 first, one on each slot, not one after
    the other at the end as the seeded shuffle would have it."""
    bundles = {"small_a": {"model.n_caps": 6, "model.cap_dim": 6}, "big_a": {"model.n_caps": 18, "model.cap_dim": 18},
               "mid": {"model.n_caps": 12, "model.cap_dim": 9}, "big_b": {"model.n_caps": 18, "model.cap_dim": 18}}
    spec = spec_from_dict(spec_raw(search={"algorithm": "grid", "metric": "log_likelihood", "mode": "max"},
                                   space={"confirm": {"type": "preset", "values": bundles}}))
    names = [c["confirm"] for c in run(optuna_search(spec, "bundles"), 4)]
    assert set(names[:2]) == {"big_a", "big_b"} and names[2:] == ["mid", "small_a"]
