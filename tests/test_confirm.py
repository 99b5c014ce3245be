"""The confirmation (tvae-sweep confirm) without Ray: which configs and baselines it retrains, under
which seeds, the spec it derives, and its table. The real run is in test_fused_sweep.py."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import spec_raw

from tvae_sweep.config import ConfigError
from tvae_sweep.sweep.confirm import (
    CONFIRM,
    baseline_bundles,
    chosen_configs,
    confirm_raw,
    new_seeds,
    used_seeds,
)
from tvae_sweep.sweep.space import grid_points, num_trials
from tvae_sweep.sweep.validation import load_spec, spec_from_dict
from tvae_sweep.tracking import confirmation, report
from tvae_sweep.tracking.compare import comparisons

ROOT = Path(__file__).resolve().parents[1]
KIND = {"type": "preset", "values": {"vae": {"model.variant": "vae"},
                                     "bubble": {"model.shift": 0, "model.coherence_window": 3}}}


def sweep_spec(objectives=("log_likelihood",), modes=("max",), replicates=1, **top):
    raw = spec_raw(space={"kind": KIND, "train.lr": {"type": "categorical", "values": [1e-3, 3e-3]}}, **top)
    raw["search"].update(metric=list(objectives), mode=list(modes), replicates=replicates)
    return raw, spec_from_dict(raw)


def frame(rows):
    return pd.DataFrame([{"trial_id": f"t{i}", "state": "TERMINATED", **row} for i, row in enumerate(rows)])


def test_one_objective_confirms_the_top_k_distinct_configs_best_first():
    _, spec = sweep_spec()
    trials = frame([
        {"config/kind": "vae", "config/model.variant": "vae", "config/model.shift": np.nan,
         "config/train.lr": np.float64(1e-3), "config/train.seed": 0, "final/log_likelihood": -90.0},
        {"config/kind": "bubble", "config/model.shift": np.int64(0), "config/train.lr": 3e-3,
         "config/train.seed": 0, "final/log_likelihood": -80.0},
        {"config/kind": "bubble", "config/model.shift": 0, "config/train.lr": 3e-3,  # the same config, seed 1
         "config/train.seed": 1, "final/log_likelihood": -85.0},
        {"config/kind": "vae", "config/model.variant": "vae", "config/train.lr": 3e-3,
         "final/log_likelihood": math.nan},
        {"config/kind": "vae", "config/model.variant": "vae", "config/train.lr": 3e-3, "final/log_likelihood": -1.0},
    ])
    trials.loc[4, "state"] = "ERROR"
    chosen = chosen_configs(trials, spec, 2)
    assert [c.name for c in chosen] == ["rank1_t1", "rank2_t0"]  # t2 is t1's config; t3 NaN, t4 failed
    assert chosen[0].values == {"model.shift": 0, "train.lr": 3e-3}  # no preset name, no seed
    assert chosen[1].values == {"model.variant": "vae", "train.lr": 1e-3}  # the unsampled shift left out
    assert {type(v) for c in chosen for v in c.values.values()} <= {int, float, str}  # as YAML writes them
    assert [c.name for c in chosen_configs(trials, spec, 1)] == ["rank1_t1"]
    _, minimised = sweep_spec(modes=("min",))
    assert [c.trial_id for c in chosen_configs(trials, minimised, 2)] == ["t0", "t2"]  # t2 before t1 now
    assert chosen_configs(trials[trials["state"] == "ERROR"], spec, 2) == []


def test_several_objectives_confirm_the_front_up_to_k_best_by_the_first():
    _, spec = sweep_spec(("log_likelihood", "equivariance_ratio"), ("max", "min"))
    points = [(-80.0, 0.9), (-85.0, 0.5), (-95.0, 0.2), (-90.0, 0.95), (-100.0, 0.99)]  # the last two dominated
    trials = frame([{"config/train.lr": 1e-4 * (i + 1), "final/log_likelihood": ll, "final/equivariance_ratio": r}
                    for i, (ll, r) in enumerate(points)])
    assert [c.trial_id for c in chosen_configs(trials, spec, 5)] == ["t0", "t1", "t2"]
    assert [c.name for c in chosen_configs(trials, spec, 2)] == ["rank1_t0", "rank2_t1"]


def test_baselines_by_preset_name_config_file_and_inline(tmp_path):
    _, spec = sweep_spec()
    exported = tmp_path / "rank1_abc.yaml"  # what export-best writes: a whole run config
    exported.write_text(yaml.safe_dump({"model": {"variant": "tvae", "n_caps": 3, "shift": 2},
                                        "train": {"lr": 2e-3, "seed": 7}}))
    bundles = baseline_bundles(["vae", str(exported), {"wide": {"model.n_caps": 4}}], spec, "--baseline")
    assert list(bundles) == ["vae", "rank1_abc", "wide"]
    assert bundles["vae"] == {"model.variant": "vae"}
    assert bundles["rank1_abc"] == {"model.variant": "tvae", "model.n_caps": 3, "model.shift": 2, "train.lr": 2e-3}
    assert bundles["wide"] == {"model.n_caps": 4}
    with pytest.raises(ConfigError, match=r"^--baseline nothing: neither a preset of the sweep's space "
                                          r"\(its presets: vae, bubble\) nor a config file$"):
        baseline_bundles(["nothing"], spec, "--baseline")
    with pytest.raises(ConfigError, match=r"^confirm.baselines wide.lr: not a config key"):
        baseline_bundles([{"wide": {"lr": 1e-3}}], spec, "confirm.baselines")
    with pytest.raises(ConfigError, match=r"^confirm.baselines wide: model.n_caps: must be >= 1"):
        baseline_bundles([{"wide": {"model.n_caps": 0}}], spec, "confirm.baselines")
    with pytest.raises(ConfigError, match="two baselines are named 'vae'"):
        baseline_bundles(["vae", {"vae": {"model.n_caps": 4}}], spec, "--baseline")


def test_the_new_seeds_start_past_every_seed_the_search_used():
    _, spec = sweep_spec(replicates=3)
    trials = frame([{"final/log_likelihood": -1.0, "final/log_likelihood_seed2": -1.0}])
    assert used_seeds(trials, spec) == {0, 1, 2}
    assert new_seeds(trials, spec, 3) == [1000, 1001, 1002]
    trials["config/train.seed"] = [1500]  # a searched seed (or one a preset sets)
    assert new_seeds(trials, spec, 2) == [2000, 2001]


def test_the_derived_spec_is_a_grid_of_one_preset_key_trained_once_per_bundle(tmp_path):
    raw, spec = sweep_spec(baseline="vae", confirm={"top": 2, "seeds": 2, "baselines": ["vae"]},
                           storage={"path": str(tmp_path / "shared")})
    bundles = {"rank1_t1": {"model.shift": 0, "train.lr": 3e-3}, **baseline_bundles(["vae"], spec, "b")}
    derived = spec_from_dict(confirm_raw(raw, "capsules", bundles, "vae", [1000, 1001]))
    assert list(derived.space) == [CONFIRM] and derived.space[CONFIRM].type == "preset"
    assert grid_points(derived.space) == {CONFIRM: ["rank1_t1", "vae"]} and num_trials(derived) == 2
    s = derived.search
    assert (s.algorithm, s.scheduler, s.replicates, s.fuse, s.warm_start) == ("grid", "fifo", 2, False, [])
    assert derived.run.train.seed == 1000 and derived.baseline == "vae" and derived.confirm is None
    assert derived.storage.path == str(tmp_path / "shared" / "capsules")
    assert (derived.data, derived.model) == (spec.data, spec.model)
    # final values only: evaluated after the last epoch, trained as the search trained
    assert derived.run.train.eval_every == derived.run.train.epochs == spec.run.train.epochs
    assert derived.run.train.model_dump(exclude={"seed", "eval_every"}) == spec.run.train.model_dump(
        exclude={"seed", "eval_every"})


def test_a_spec_confirm_section_is_strict():
    for confirm, expected in (({"top": 0}, "confirm.top: must be >= 1"), ({"seeds": 1}, "confirm.seeds: must be >= 2"),
                              ({"repeats": 2}, "confirm.repeats: unknown key; allowed: top, seeds, baselines")):
        with pytest.raises(ConfigError, match=expected):
            sweep_spec(confirm=confirm)
    _, spec = sweep_spec(confirm={"baselines": ["vae", {"wide": {"model.n_caps": 4}}]})
    assert (spec.confirm.top, spec.confirm.seeds) == (3, 3)


def confirmation_frame(spec, shift=0.0):
    """A confirmation's trials: two configs under the seeds 1000..1002, against the baseline vae."""
    rows = []
    for name, values in (("rank1_t1", [-80.0, -82.0, -81.0]), ("vae", [-90.0, -91.0, -93.0])):
        values = [v + (shift if name == "rank1_t1" else 0.0) for v in values]
        rows.append({"config/confirm": name, "final/log_likelihood": sum(values) / 3,
                     **{f"final/log_likelihood_seed{1000 + i}": v for i, v in enumerate(values)},
                     "final/kl_z": 0.0, **{f"final/kl_z_seed{1000 + i}": v / 100 + i for i, v in enumerate(values)}})
    return frame(rows)


def test_the_confirmation_table_gives_each_configs_mean_interval_and_paired_difference():
    raw, _ = sweep_spec()
    bundles = {"rank1_t1": {"model.shift": 0}, "vae": {"model.variant": "vae"}}
    spec = spec_from_dict(confirm_raw(raw, "s", bundles, "vae", [1000, 1001, 1002]))
    table = confirmation.table(confirmation_frame(spec), spec, search={"rank1_t1": {"log_likelihood": -70.0}})
    assert list(table.columns) == confirmation.COLUMNS
    best, base = table.iloc[0], table.iloc[1]
    assert (best["config"], best["n"], best["search"], best["mean"]) == ("rank1_t1", 3, -70.0, pytest.approx(-81.0))
    assert (best["ci_low"], best["ci_high"]) == pytest.approx((-81.0 - 2.484138, -81.0 + 2.484138), abs=1e-5)
    assert best["diff"] == pytest.approx(10.333333, abs=1e-5)  # differences 10, 9, 12
    assert best["diff_ci_low"] > 0 and best["p_holm"] < 0.05 and best["verdict"] == "higher (better)"
    # Holm over the table's one comparison (the objective), not over every metric's as comparisons.parquet
    every = comparisons(confirmation_frame(spec), spec).set_index("metric")
    assert best["p_holm"] == best["p"] == every.loc["log_likelihood", "p"]
    assert every.loc["log_likelihood", "p_holm"] == pytest.approx(2 * best["p"])
    assert base["verdict"] == confirmation.IS_BASELINE and math.isnan(base["diff"]) and math.isnan(base["search"])
    shifted = confirmation.table(confirmation_frame(spec, shift=-10.333333), spec)  # now no better than vae
    assert shifted.iloc[0]["mean"] == pytest.approx(-91.333333) and shifted.iloc[1]["mean"] == base["mean"]
    assert shifted.iloc[0]["verdict"] == "no resolvable difference"

    cells = "\n".join(report.confirmation_markdown(table, [1000, 1001, 1002]))
    assert cells.startswith("## Confirmation") and "seeds 1000, 1001, 1002" in cells
    assert "| rank1_t1 | log_likelihood |" in cells and "higher (better)" in cells and "`vae`" in cells
    text = report.confirmation_text(table, [1000, 1001, 1002])
    assert text.splitlines()[0] == "confirmed under the new seeds 1000, 1001, 1002:"


def test_the_capsules_spec_confirms_its_front_against_the_papers_tvae_its_first_warm_start():
    spec = load_spec(ROOT / "search_spaces" / "capsules.yaml")
    assert (spec.confirm.top, spec.confirm.seeds) == (3, 3)
    assert baseline_bundles(spec.confirm.baselines, spec, "confirm.baselines") == {
        "tvae_L13_36": spec.search.warm_start[0]}
