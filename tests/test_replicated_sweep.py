"""A replicated search (search.replicates) on a real local Ray with a real MLflow store: each
trial's seeds, their mean and spread, exported and trained again, and the launch's confirmation."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from sweeps import child_runs, launch_grid, run_cli

pytestmark = pytest.mark.cost(117)  # seconds on 2 cores (measured): costliest files first


@pytest.fixture(scope="module")
def replicated(tmp_path_factory, ray_temp):
    space = {"model.shift": {"type": "categorical", "values": [0, 1]}}
    # the launch confirms its best config against an inline baseline after the search
    confirm = {"top": 1, "seeds": 2, "baselines": [{"bubble": {"model.shift": 0}}]}
    results = launch_grid(tmp_path_factory.mktemp("replicated"), "replicated", space, {"replicates": 3}, ray_temp,
                     confirm=confirm)
    return results, pd.read_parquet(results / "replicated" / "trials.parquet")


@pytest.mark.slow
def test_a_replicated_trial_reports_its_seeds_mean_spread_and_each_value(replicated, tmp_path):
    results, frame = replicated
    assert len(frame) == 2
    runs = child_runs(results, "replicated")
    for _, row in frame.iterrows():
        seeds = [row[f"final/log_likelihood_seed{s}"] for s in (0, 1, 2)]
        assert row["final/log_likelihood"] == pytest.approx(sum(seeds) / 3)
        assert row["final/log_likelihood_std"] == pytest.approx(pd.Series(seeds).std())
        assert row["final/log_likelihood_std"] > 0
        metrics = runs[row["trial_id"]].data.metrics
        expected = {"log_likelihood", "log_likelihood_std", "log_likelihood_seed2", "equivariance_ratio_learned_std"}
        assert expected <= set(metrics)

    out = tmp_path / "best"
    assert run_cli("export-best", "replicated", "--results-dir", results, "--out", out).returncode == 0
    config = next(out.glob("rank1_*.yaml"))
    assert "--seeds 0,1,2" in config.read_text()
    proc = run_cli("train", config, "--output", tmp_path / "again", "--seeds", "0,1,2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = frame.sort_values("final/log_likelihood", ascending=False).iloc[0]
    printed = (results.parent / "replicated.out").read_text().splitlines()  # the confirmation, printed last
    table = printed.index("confirmed under the new seeds 1000, 1001:")  # the search's seeds were 0, 1, 2
    assert printed[table + 1].split()[:4] == ["config", "metric", "in", "the"]
    assert printed[table + 3].startswith(f"rank1_{best['trial_id']}  log_likelihood")
    assert printed[table + 4].startswith("bubble ") and printed[table + 4].endswith("(the baseline)")
    assert printed[-1].startswith(f"confirmation: {results / 'replicated' / 'confirm'}; report: ")
    for s in (0, 1, 2):
        final = json.loads((tmp_path / "again" / f"seed_{s}" / "metrics.json").read_text())["final"]
        assert final["log_likelihood"] == pytest.approx(best[f"final/log_likelihood_seed{s}"], rel=1e-4, abs=2e-3)
