"""The sweep commands end to end: sweeps (Ray) and tracking (MLflow) put together, for the CLI to call.

Each function does one command's work and reports through `say`, a function that prints a line;
the CLI parses arguments, calls one of these, and prints.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .sweep.console import RayLog, TrialConsole
from .sweep.disk import one_line_when_full
from .sweep.fusion import ray_trials
from .sweep.launch import check_new, create, fit, join, load_saved_spec, preflight, saved_trials
from .sweep.layout import SweepDir, results_root, sweep_dir
from .sweep.results import pareto_trials, ranked, trials_frame, write_table
from .sweep.space import num_trials
from .sweep.spec import SweepSpec, read_spec
from .sweep.validation import spec_from_dict
from .tracking import publish
from .tracking import report as reports
from .tracking import store as stores
from .tracking.runs import locate

Say = Callable[..., None]
# shown beside the objectives: what training added to the equivariance, and whether z is in use
BESIDE = ("equivariance_ratio", "equivariance_ratio_init", "roll_gain", "kl_z")


@dataclass
class Outcome:
    sweep: SweepDir
    spec: SweepSpec
    status: str  # "finished" or "interrupted"
    frame: pd.DataFrame

    @property
    def finished(self) -> bool:
        return self.status == "finished"


def launch(spec_path: Path, overrides: list[str], profile: str | None, name: str | None,
           results_dir: Path | None, address: str | None, overwrite: bool, tracking_uri: str | None,
           say: Say) -> Outcome:
    """Checks everything a sweep needs before anything is written, then runs it to its end."""
    raw = read_spec(spec_path, overrides, profile)
    spec = spec_from_dict(raw)
    sweep = sweep_dir(results_dir, name or spec.name or spec_path.stem)
    check_new(sweep, overwrite)
    preflight(spec, sweep, address)  # an unwritable folder, missing data, no cluster
    stores.preflight(spec.tracking, tracking_uri, sweep.root.parent)  # a dead tracker
    log = RayLog()
    join(spec, sweep, address, log)  # before the sweep's folder is made: a refused cluster leaves no sweep behind
    create(spec, sweep, raw, overwrite)
    with one_line_when_full(sweep, log):
        return _run(spec, sweep, address, log, False, tracking_uri, say)


def resume(name: str, results_dir: Path | None, address: str | None, tracking_uri: str | None,
           say: Say) -> Outcome:
    sweep = sweep_dir(results_dir, name)
    spec = load_saved_spec(sweep)
    preflight(spec, sweep, address)
    stores.preflight(spec.tracking, tracking_uri, sweep.root.parent)
    log = RayLog()
    join(spec, sweep, address, log)
    with one_line_when_full(sweep, log):
        return _run(spec, sweep, address, log, True, tracking_uri, say)


def _run(spec: SweepSpec, sweep: SweepDir, address: str | None, log: RayLog, resumed: bool,
         tracking_uri: str | None, say: Say) -> Outcome:
    total, fused = num_trials(spec), ray_trials(spec)
    console = TrialConsole(list(spec.space), spec.search.metrics, total)
    together = f" trained as {fused} fused trials" if spec.search.fuse else ""
    say(f"sweep {sweep.name}: {total} trials{together}, results in {sweep.root}")
    tracking = None
    if spec.tracking.enabled:
        from .tracking.callback import MlflowTracking

        tracking = MlflowTracking.start(spec, sweep, tracking_uri)
        say(f"MLflow: parent run {tracking.log.parent_id} in experiment {tracking.log.experiment!r}, "
            f"store {tracking.log.store.describe()}")
    elif tracking_uri:
        say("tvae-sweep: tracking is off in the spec (tracking.enabled: false); --tracking-uri is ignored", err=True)
    try:
        status = fit(spec, sweep, address, resumed, [console] + ([tracking] if tracking else []), log)
    except BaseException as e:  # Ctrl-C twice, a lost cluster: no run is left RUNNING
        if tracking is not None:
            tracking.log.close("interrupted", error=e)
        raise
    frame = trials_frame(sweep.read_state()["experiment_path"])
    write_table(frame, sweep.trials)
    if tracking is not None:
        _close_beside_ray_shutdown(tracking.log, status, frame)
        say(f"MLflow: sweep and trials in experiment {tracking.log.experiment!r}, aggregates in "
            f"{sweep.root / 'aggregates'}; see them with: tvae-sweep ui {sweep.name}")
    return Outcome(sweep, spec, status, frame)


def _close_beside_ray_shutdown(log, status: str, frame: pd.DataFrame) -> None:
    """Settles the sweep's MLflow runs (final tables and figures, seconds) while this driver leaves
    Ray (seconds of waiting for the processes of a cluster it started)."""
    import ray

    with ThreadPoolExecutor(1, thread_name_prefix="mlflow-close") as pool:
        closing = pool.submit(log.close, status, frame)
        ray.shutdown()
        closing.result()


def best_lines(frame: pd.DataFrame, metrics: list[str], modes: list[str]) -> list[str]:
    """The sweep's summary: its best trials by one objective, or the Pareto front of several, each
    with its objectives, what training added to the equivariance, and its config."""
    if len(metrics) == 1:
        rows = ranked(frame, metrics[0], 3, modes[0])
        lines = [f"best trials by {metrics[0]}:"]
    else:
        rows = pareto_trials(frame, metrics, modes)
        lines = ["Pareto front of " + ", ".join(f"{m} ({mode})" for m, mode in zip(metrics, modes))
                 + f": {len(rows)} trials"]
    shown = list(metrics) + [m for m in BESIDE if m not in metrics and f"final/{m}" in frame]
    for _, row in rows.iterrows():
        values = "  ".join(f"{m} {row[f'final/{m}']:.4g}" for m in shown if pd.notna(row.get(f"final/{m}")))
        config = ", ".join(f"{k.removeprefix('config/')}={v}" for k, v in row.items() if k.startswith("config/"))
        lines.append(f"  {row['trial_id']}  {values}  {config}")
    return lines


# ---------------------------------------------------------------- MLflow


def sweep_store(name: str | None, results_dir: Path | None, tracking_uri: str | None):
    """(store, experiment name, sweep dir) for NAME, or for the results folder when no NAME is given."""
    if name is None:
        return stores.resolve(tracking_uri, None, results_root(results_dir)), None, None
    sweep = sweep_dir(results_dir, name)
    t = load_saved_spec(sweep).tracking
    return stores.resolve(tracking_uri, t.uri, sweep.root.parent, t.artifact_location), t.experiment or sweep.name, sweep


def report(name: str, tracking_uri: str | None, results_dir: Path | None) -> tuple[str, Path]:
    """A sweep's aggregated results: (the terminal's text, the report.md written)."""
    store, experiment, sweep = sweep_store(name, results_dir, tracking_uri)
    spec = load_saved_spec(sweep)
    frame = saved_trials(sweep)
    result = publish.compute(frame, spec, sweep)
    mlflow_line = None
    if spec.tracking.enabled or tracking_uri:
        if tracking_uri or store.is_server:
            stores.check(store)
        experiment_id, parent = locate(store, experiment, sweep)
        if parent:
            mlflow_line = f"MLflow: parent run {parent} in experiment {experiment!r} (id {experiment_id}), store {store.portable()}"
    text, markdown = reports.render(name, frame, spec, result, mlflow_line)
    return text, reports.write(sweep, markdown)
