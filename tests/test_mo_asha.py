"""ASHA's rungs and multi-objective ASHA: the ranking on constructed vectors, the scheduler's
decisions on constructed reports, and where a stopped trial's rung shows (records, the trials
table, the console, the Optuna study)."""
import io
import math
import pickle
import random
import types

import numpy as np
import optuna
import pytest
from helpers import spec_raw
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tvae_sweep.sweep.console import TrialConsole
from tvae_sweep.sweep.eta import Eta
from tvae_sweep.sweep.launch import _scheduler
from tvae_sweep.sweep.layout import SweepDir
from tvae_sweep.sweep.mo_asha import MultiObjectiveAsha, crowding_distance, promoted, ranking
from tvae_sweep.sweep.records import RUNNING, TERMINATED, records_of
from tvae_sweep.sweep.results import frame_of
from tvae_sweep.sweep.rungs import Rungs, asha_rungs, milestones, rung_of
from tvae_sweep.sweep.searcher import OptunaSearch
from tvae_sweep.sweep.validation import spec_from_dict

MAX_MIN = ["max", "min"]  # log_likelihood, kl_z

# ---------------------------------------------------------------- rungs


@pytest.mark.parametrize("grace, factor, max_t", [(1, 2, 3), (1, 2, 4), (1, 3, 27), (2, 2, 20), (1, 2.5, 20),
                                                  (3, 3, 3), (1, 4, 100)])
def test_the_rungs_are_those_of_rays_asha_below_max_t(grace, factor, max_t):
    # Ray's own bracket (a private attribute, read here only to compare with it)
    ray_rungs = sorted(m for m, _ in ASHAScheduler(max_t=max_t, grace_period=grace,
                                                   reduction_factor=factor)._brackets[0]._rungs)
    assert milestones(grace, factor, max_t) == [m for m in ray_rungs if m < max_t]


def test_a_trial_stopped_early_was_stopped_at_the_highest_rung_it_reached():
    # rungs at 1, 2, 4 and 8 epochs of 10
    assert [rung_of(e, 1, 2, 10) for e in range(11)] == [None, 0, 1, 1, 2, 2, 2, 2, 3, 3, None]
    assert rung_of(2, 3, 2, 10) is None  # before the grace period: not by ASHA
    rungs = Rungs(1, 2, 10)
    assert rungs.stopped_at({"training_iteration": 3, "done": True}) == 1
    assert rungs.stopped_at({"training_iteration": 3, "done": False}) is None  # still running, or interrupted
    assert rungs.stopped_at({"training_iteration": 10, "done": True}) is None  # ran its epochs


def test_only_an_asha_sweep_has_rungs():
    raw = spec_raw({**spec_raw()["search"], "scheduler": "asha", "grace_period": 2, "reduction_factor": 3})
    raw["train"]["epochs"] = 9
    assert asha_rungs(spec_from_dict(raw)) == Rungs(2, 3, 9)
    assert asha_rungs(spec_from_dict(spec_raw())) is None  # fifo


def test_several_objectives_get_multi_objective_asha_and_one_keeps_rays():
    search = {**spec_raw()["search"], "scheduler": "asha", "reduction_factor": 2}
    one = spec_from_dict(spec_raw(search))
    several = spec_from_dict(spec_raw({**search, "metric": ["log_likelihood", "kl_z"], "mode": MAX_MIN}))
    assert type(_scheduler(one)) is ASHAScheduler
    scheduler = _scheduler(several)
    assert isinstance(scheduler, MultiObjectiveAsha)
    assert (scheduler.metrics, scheduler.modes, scheduler.rungs) == (["log_likelihood", "kl_z"], MAX_MIN,
                                                                    Rungs(1, 2, 2))


# ---------------------------------------------------------------- the ranking


def test_a_dominated_vector_stops_and_a_dominating_one_goes_on():
    best, worse = (-100.0, 1.0), (-120.0, 2.0)  # higher likelihood and lower kl_z is better
    assert promoted([best, worse], MAX_MIN, 2) == [True, False]
    assert promoted([worse, best], MAX_MIN, 2) == [False, True]  # arrival does not save the dominated one
    assert promoted([best], MAX_MIN, 2) == [True]  # the first at a rung always goes on


def test_within_a_front_the_earlier_arrival_wins_a_tie():
    a, b = (-100.0, 1.0), (-90.0, 3.0)  # neither dominates
    assert promoted([a, b], MAX_MIN, 2) == [True, False]
    assert promoted([b, a], MAX_MIN, 2) == [True, False]
    assert promoted([a, a, a], MAX_MIN, 2) == [True, True, False]  # equal vectors: by arrival


def test_the_top_ceil_k_over_the_reduction_factor_go_on():
    vectors = [(-float(i), float(i)) for i in range(7)]  # each dominates the next
    assert promoted(vectors, MAX_MIN, 2) == [True] * 4 + [False] * 3
    assert promoted(vectors, MAX_MIN, 3) == [True] * 3 + [False] * 4
    assert promoted(vectors[::-1], MAX_MIN, 3) == [False] * 4 + [True] * 3


def test_crowding_distance_picks_the_extreme_points_of_a_front_first():
    front = np.array([[1.5, 2.0], [0.0, 4.0], [1.0, 3.0], [4.0, 0.0], [3.5, 0.5]])  # all mutually non-dominated
    distance = crowding_distance(front)
    assert np.isinf(distance[[1, 3]]).all() and np.isfinite(distance[[0, 2, 4]]).all()
    # [1.5, 2] sits in the widest gap (neighbours [1, 3] and [3.5, 0.5]): 2.5 / 4 on each objective
    assert distance[0] == pytest.approx(1.25) and distance[4] == pytest.approx(1.125)
    assert distance[2] == pytest.approx(0.875)
    as_max = [(-x, y) for x, y in front]  # the same front as (likelihood to maximise, kl_z to minimise)
    assert ranking(as_max, MAX_MIN) == [1, 3, 0, 4, 2]
    assert promoted(as_max, MAX_MIN, 2) == [True, True, False, True, False]  # ceil(5 / 2) = 3: the extremes first


def test_crowding_is_the_same_for_equal_points_and_ignores_an_objective_without_spread():
    distance = crowding_distance(np.array([[1.0, 5.0], [2.0, 5.0], [1.0, 5.0], [3.0, 5.0]]))
    assert distance[0] == distance[2] and np.isinf(distance[[0, 3]]).all() and distance[1] == pytest.approx(1.0)


def test_fronts_come_before_crowding():
    # two fronts: the second's extreme points do not pass the first's middle one
    first = [(-1.0, 1.0), (-0.0, 2.0), (-2.0, 0.0)]
    second = [(-5.0, 5.0), (-0.5, 9.0), (-9.0, 0.5)]
    assert ranking(second + first, MAX_MIN)[:3] == [4, 5, 3]
    assert set(ranking(second + first, MAX_MIN)[3:]) == {0, 1, 2}


def test_a_non_finite_vector_ranks_last():
    diverged = [(float("nan"), 1.0), (-1e9, float("inf")), (-float("inf"), 0.0)]
    fine = [(-500.0, 50.0), (-400.0, 60.0)]
    assert ranking(diverged + fine, MAX_MIN) == [3, 4, 0, 1, 2]
    assert promoted([diverged[0], fine[0]], MAX_MIN, 2) == [False, True]
    assert promoted([(float("inf"), 0.0)], MAX_MIN, 2) == [True]  # alone at its rung


def test_one_objective_decides_as_a_sort():
    rng = random.Random(0)
    for mode in ("max", "min"):
        for _ in range(30):
            values = [float(rng.choice(range(6))) for _ in range(rng.randint(1, 12))]  # with ties
            factor = rng.choice([2, 3, 4.5])
            by_sort = sorted(range(len(values)), key=lambda i: (-values[i] if mode == "max" else values[i], i))
            keep = set(by_sort[:math.ceil(len(values) / factor)])
            assert promoted([(v,) for v in values], [mode], factor) == [i in keep for i in range(len(values))]


# ---------------------------------------------------------------- the scheduler


def result(epoch, ll=None, kl=None):
    out = {"training_iteration": epoch}
    if ll is not None:
        out.update(log_likelihood=ll, kl_z=kl)
    return out


def trial(trial_id):
    return types.SimpleNamespace(trial_id=trial_id)


def test_the_scheduler_stops_a_trial_dominated_at_a_rung():
    asha = MultiObjectiveAsha(["log_likelihood", "kl_z"], MAX_MIN, Rungs(1, 2, 8))  # rungs at 1, 2, 4
    good, bad = trial("good"), trial("bad")
    assert asha.on_trial_result(None, good, result(1, -100.0, 1.0)) == TrialScheduler.CONTINUE  # first at rung 0
    assert asha.on_trial_result(None, bad, result(1, -150.0, 2.0)) == TrialScheduler.STOP
    assert asha.on_trial_result(None, good, result(1, -100.0, 1.0)) == TrialScheduler.CONTINUE  # recorded once
    assert asha.on_trial_result(None, good, result(8, -90.0, 1.0)) == TrialScheduler.STOP  # max_t: its end
    assert [list(r) for r in asha.recorded] == [["good", "bad"], [], []] and asha.num_stopped == 1
    assert asha.debug_string().endswith("num_stopped=1; recorded at 1 epochs: 2, 2 epochs: 0, 4 epochs: 0")


def test_a_report_without_the_objectives_waits_for_the_next_and_counts_at_its_highest_rung():
    """train.eval_every 3: the report after epoch 3 is its first with objectives, past rungs 0 and 1."""
    asha = MultiObjectiveAsha(["log_likelihood", "kl_z"], MAX_MIN, Rungs(1, 2, 10))  # rungs at 1, 2, 4, 8
    first, second = trial("a"), trial("b")
    for epoch in (1, 2):
        assert asha.on_trial_result(None, first, result(epoch)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, first, result(3, -100.0, 1.0)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, second, result(3, -100.0, 1.0)) == TrialScheduler.STOP  # equal, later
    assert [list(r) for r in asha.recorded] == [[], ["a", "b"], [], []]
    assert asha.on_trial_result(None, first, result(4)) == TrialScheduler.CONTINUE  # rung 2: no objectives yet
    assert asha.on_trial_result(None, first, result(6, -80.0, 1.0)) == TrialScheduler.CONTINUE
    assert [list(r) for r in asha.recorded] == [[], ["a", "b"], ["a"], []]
    assert rung_of(3, 1, 2, 10) == 1  # where the second trial shows as stopped


def test_a_resumed_sweeps_scheduler_continues_from_the_rungs_saved_before_it_stopped(tmp_path):
    """Ray resumes a sweep with the scheduler pickled at its launch, before any report: the rungs
    come from the sweep's folder. A trial stopped before the interruption and resumed from an older
    checkpoint is stopped again at that rung; a new trial meets the vectors recorded before."""
    state = tmp_path / "rungs.json"
    launched = pickle.dumps(MultiObjectiveAsha(["log_likelihood", "kl_z"], MAX_MIN, Rungs(1, 2, 8), state))
    before = pickle.loads(launched)
    assert before.on_trial_result(None, trial("good"), result(1, -100.0, 1.0)) == TrialScheduler.CONTINUE
    assert before.on_trial_result(None, trial("bad"), result(1, -150.0, 2.0)) == TrialScheduler.STOP
    resumed = pickle.loads(launched)  # a new driver: Tuner.restore
    assert resumed.on_trial_result(None, trial("bad"), result(1, -150.0, 2.0)) == TrialScheduler.STOP
    assert resumed.on_trial_result(None, trial("new"), result(1, -160.0, 2.5)) == TrialScheduler.STOP  # 3rd of 3
    afresh = MultiObjectiveAsha(["log_likelihood", "kl_z"], MAX_MIN, Rungs(1, 2, 8))
    assert afresh.on_trial_result(None, trial("new"), result(1, -160.0, 2.5)) == TrialScheduler.CONTINUE
    assert [list(r) for r in resumed.recorded] == [["good", "bad", "new"], [], []]


def test_a_sweep_keeps_multi_objective_ashas_rungs_in_its_folder(tmp_path):
    raw = spec_raw(search={"algorithm": "random", "metric": ["log_likelihood", "kl_z"], "mode": ["max", "min"],
                           "num_trials": 4, "scheduler": "asha", "grace_period": 1, "reduction_factor": 2})
    sweep = SweepDir(tmp_path / "name")
    assert _scheduler(spec_from_dict(raw), sweep).state == sweep.rungs == tmp_path / "name" / "rungs.json"


# ---------------------------------------------------------------- where a stopped trial shows


def ray_trial(trial_id, status, epochs, done, ll=-100.0):
    last = {"training_iteration": epochs, "done": done, "log_likelihood": ll, "kl_z": 1.0}
    return types.SimpleNamespace(trial_id=trial_id, status=status, config={"train.lr": 0.001}, last_result=last,
                                 path="/nowhere", checkpoint=None, num_failures=0)


TRIALS = [ray_trial("ran", TERMINATED, 8, True), ray_trial("stopped", TERMINATED, 2, True),
          ray_trial("running", RUNNING, 2, False)]


def test_records_and_the_trials_table_say_at_which_rung_asha_stopped_a_trial():
    records = records_of(TRIALS, rungs=Rungs(1, 2, 8))
    assert [r.stopped_at_rung for r in records] == [None, 1, None]
    frame = frame_of(records)
    assert list(frame.columns[frame.columns.get_loc("epochs"):][:2]) == ["epochs", "stopped_at_rung"]
    assert frame["stopped_at_rung"].isna().tolist() == [True, False, True] and frame["stopped_at_rung"].iloc[1] == 1
    assert "stopped_at_rung" not in frame_of(records_of(TRIALS))  # no ASHA: no column
    assert "stopped_at_rung" not in frame_of(records_of(TRIALS[:1], rungs=Rungs(1, 2, 8)))  # none stopped


def test_the_console_shows_the_rung_of_a_stopped_trial():
    log = io.StringIO()
    console = TrialConsole(["train.lr"], ["log_likelihood", "kl_z"], Eta(total=3, epochs=8), stream=log,
                           rungs=Rungs(1, 2, 8))
    records = records_of(TRIALS, rungs=Rungs(1, 2, 8))
    assert [row[1] for row in console.rows(records)] == ["TERMINATED", "STOPPED r1", "RUNNING"]
    stopped = ray_trial("stopped", RUNNING, 2, True)  # Tune calls on_trial_complete before it marks the trial
    console.on_trial_complete(0, [stopped], stopped)
    assert "trial stopped stopped by ASHA at rung 1 after 2 epochs  log_likelihood -100  kl_z 1" in log.getvalue()


# ---------------------------------------------------------------- the Optuna study


def searcher(rungs, metric=("log_likelihood", "kl_z"), mode=MAX_MIN):
    """Our OptunaSearch on a study in memory, and a function that reads the study's trials."""
    def space(trial):
        trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)

    storage = optuna.storages.InMemoryStorage()
    search = OptunaSearch(space=space, metric=list(metric) if len(metric) > 1 else metric[0],
                          mode=list(mode) if len(mode) > 1 else mode[0], storage=storage, study_name="s", rungs=rungs)
    return search, lambda: optuna.load_study(study_name="s", storage=storage).get_trials()


def test_a_trial_asha_stopped_reaches_the_study_pruned_with_its_last_values():
    search, study_trials = searcher(Rungs(1, 2, 3))
    for trial_id in ("stopped", "ran", "diverged"):
        assert search.suggest(trial_id)
    search.on_trial_complete("stopped", {"training_iteration": 2, "done": True, "log_likelihood": -120.0, "kl_z": 2.0})
    search.on_trial_complete("ran", {"training_iteration": 3, "done": True, "log_likelihood": -100.0, "kl_z": 1.0})
    search.on_trial_complete("diverged", {"training_iteration": 1, "done": True, "log_likelihood": float("nan"),
                                          "kl_z": 5.0})
    stopped, ran, diverged = study_trials()
    assert stopped.state == TrialState.PRUNED and stopped.values is None
    assert stopped.user_attrs == {"last_values": {"log_likelihood": -120.0, "kl_z": 2.0}, "stopped_at_rung": 1}
    assert ran.state == TrialState.COMPLETE and ran.values == [-100.0, 1.0] and ran.user_attrs == {}
    assert diverged.state == TrialState.PRUNED and diverged.user_attrs["stopped_at_rung"] == 0
    assert math.isnan(diverged.user_attrs["last_values"]["log_likelihood"])


def test_without_rungs_the_study_is_told_as_before():
    """One objective (or no ASHA): a trial that ended early is COMPLETE with its last value."""
    search, study_trials = searcher(None, ("log_likelihood",), ("max",))
    search.suggest("t")
    search.on_trial_complete("t", {"training_iteration": 1, "done": True, "log_likelihood": -120.0})
    trial, = study_trials()
    assert trial.state == TrialState.COMPLETE and trial.values == [-120.0] and trial.user_attrs == {}
