"""The sweep commands end to end: sweeps (Ray) and tracking (MLflow) put together, for the CLI to call.

Each function does one command's work and reports through `say`, a function that prints a line;
the CLI parses arguments, calls one of these, and prints.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
import ray

from .config import read_yaml
from .errors import ConfigError
from .metrics import SUMMARY
from .sweep.confirm import CONFIRM, baseline_bundles, chosen_configs, confirm_dir, confirm_raw, new_seeds
from .sweep.console import RayLog, TrialConsole
from .sweep.disk import one_line_when_full
from .sweep.fusion import ray_trials
from .sweep.launch import (
    check_new,
    check_stopped,
    create,
    fit,
    join,
    load_saved_spec,
    preflight,
    saved_trial_records,
    saved_trials,
    sweep_eta,
)
from .sweep.layout import SweepDir, all_sweeps, disk_usage, origin_of, results_root, sweep_dir, title
from .sweep.pruning import apply_prune, plan_prune
from .sweep.records import histories_of
from .sweep.results import frame_of, hypervolume_line, hypervolume_summary, pareto_trials, ranked, write_trials
from .sweep.rungs import asha_rungs
from .sweep.space import num_trials
from .sweep.spec import ConfirmSpec, SweepSpec, read_spec
from .sweep.validation import check_confirm, spec_from_dict
from .tracking import confirmation, publish
from .tracking import report as reports
from .tracking import store as stores
from .tracking.callback import MlflowTracking
from .tracking.runs import locate
from .tracking.ui import experiment_page, page_url, serve

Say = Callable[..., None]


@dataclass
class Outcome:
    sweep: SweepDir
    spec: SweepSpec
    status: str  # "finished" or "interrupted"
    frame: pd.DataFrame
    confirmation: list[str] = field(default_factory=list)  # the confirmed configs' table, printed last

    @property
    def finished(self) -> bool:
        return self.status == "finished"


def launch(spec_path: Path, overrides: list[str], profile: str | None, name: str | None,
           results_dir: Path | None, address: str | None, overwrite: bool, tracking_uri: str | None,
           say: Say) -> Outcome:
    """Checks everything a sweep needs before anything is written, then runs it to its end."""
    raw = read_spec(spec_path, overrides, profile)
    spec = spec_from_dict(raw)
    check_confirm(spec)  # a confirmation's baseline that is not there: refused before the search
    sweep = sweep_dir(results_dir, name or spec.name or spec_path.stem)
    check_new(sweep, overwrite)
    preflight(spec, sweep, address)  # an unwritable folder, missing data, no cluster
    stores.preflight(spec.tracking, tracking_uri, sweep.root.parent)  # a dead tracker
    log = RayLog()
    join(spec, sweep, address, log)  # before the sweep's folder is made: a refused cluster leaves no sweep behind
    create(spec, sweep, raw, overwrite)
    with one_line_when_full(sweep, log):
        outcome = _run(spec, sweep, address, log, False, tracking_uri, say)
    return _then_confirm(outcome, address, tracking_uri, say)


def resume(name: str, results_dir: Path | None, address: str | None, tracking_uri: str | None,
           say: Say) -> Outcome:
    sweep = sweep_dir(results_dir, name)
    spec = load_saved_spec(sweep)
    preflight(spec, sweep, address)
    stores.preflight(spec.tracking, tracking_uri, sweep.root.parent)
    log = RayLog()
    join(spec, sweep, address, log)
    with one_line_when_full(sweep, log):
        outcome = _run(spec, sweep, address, log, True, tracking_uri, say)
    return _then_confirm(outcome, address, tracking_uri, say)


def _run(spec: SweepSpec, sweep: SweepDir, address: str | None, log: RayLog, resumed: bool,
         tracking_uri: str | None, say: Say) -> Outcome:
    total, fused = num_trials(spec), ray_trials(spec)
    console = TrialConsole(list(spec.space), spec.search.metrics, sweep_eta(spec), rungs=asha_rungs(spec))
    together = f" trained as {fused} fused trials" if spec.search.fuse else ""
    origin, _ = origin_of(sweep)
    say(f"{title(sweep)}: {total} trials{together}, results in {sweep.root}")
    tracking = None
    if spec.tracking.enabled:
        tracking = MlflowTracking.start(spec, sweep, tracking_uri)
        say(f"MLflow: parent run {tracking.log.parent_id} in experiment {tracking.log.experiment!r}, "
            f"store {tracking.log.store.describe()}")
    elif tracking_uri:
        say("tvae-sweep: tracking is off in the spec (tracking.enabled: false); --tracking-uri is ignored", err=True)
    try:
        status, records = fit(spec, sweep, address, resumed, [console] + ([tracking] if tracking else []), log)
    except BaseException as e:  # Ctrl-C twice, a lost cluster: no run is left RUNNING
        if tracking is not None:
            tracking.log.close("interrupted", error=e)
        raise
    frame = frame_of(records)
    exhausted = sweep.read_state().get("exhausted")
    if exhausted:
        say(f"the space holds no config beyond the {exhausted} asked for: the sweep ended after {len(frame)} "
            f"of {total} trials")
    write_trials(frame, spec, sweep.trials)
    if tracking is not None:
        _close_beside_ray_shutdown(tracking.log, status, frame, histories_of(records))
        say(f"MLflow: sweep and trials in experiment {tracking.log.experiment!r}, aggregates in "
            f"{sweep.root / 'aggregates'}; see them with: tvae-sweep ui {origin.name}")
    return Outcome(sweep, spec, status, frame)


def _close_beside_ray_shutdown(log, status: str, frame: pd.DataFrame, histories) -> None:
    """Settles the sweep's MLflow runs (final tables, learning curves from the trials' `histories`,
    figures: seconds) while this driver leaves Ray (seconds of waiting for the processes of a
    cluster it started)."""
    with ThreadPoolExecutor(1, thread_name_prefix="mlflow-close") as pool:
        closing = pool.submit(log.close, status, frame, None, histories)
        ray.shutdown()
        closing.result()


def best_lines(frame: pd.DataFrame, metrics: list[str], modes: list[str],
               reference: list[float] | None = None) -> list[str]:
    """The sweep's summary: its best trials by one objective, or the Pareto front of several and
    its hypervolume (up to `reference`, else the worst finished values), each trial with its
    objectives, what training added to the equivariance, and its config."""
    if len(metrics) == 1:
        rows = ranked(frame, metrics[0], 3, modes[0])
        lines = [f"best trials by {metrics[0]}:"]
    else:
        rows = pareto_trials(frame, metrics, modes)
        lines = ["Pareto front of " + ", ".join(f"{m} ({mode})" for m, mode in zip(metrics, modes, strict=True))
                 + f": {len(rows)} trials"]
        if not rows.empty:
            lines.append(hypervolume_line(hypervolume_summary(frame, metrics, modes, reference)))
    shown = list(metrics) + [m for m in SUMMARY if m not in metrics and f"final/{m}" in frame]
    for _, row in rows.iterrows():
        values = "  ".join(f"{m} {row[f'final/{m}']:.4g}" for m in shown if pd.notna(row.get(f"final/{m}")))
        config = ", ".join(f"{k.removeprefix('config/')}={v}" for k, v in row.items() if k.startswith("config/"))
        lines.append(f"  {row['trial_id']}  {values}  {config}")
    return lines


# ---------------------------------------------------------------- the confirmation


def confirm(name: str, top: int | None, seeds: int | None, baselines: list[str], results_dir: Path | None,
            address: str | None, overwrite: bool, tracking_uri: str | None, say: Say) -> Outcome:
    """Retrains a stopped sweep's best configs and baselines under new seeds (sweep/confirm.py), or
    continues the confirmation that was started; a finished one is only shown again (unless
    `overwrite`). Options not given come from the spec's confirm section, else its defaults."""
    if top is not None and top < 1:
        raise ConfigError(f"--top {top}: confirm at least 1 config")
    if seeds is not None and seeds < 2:
        raise ConfigError(f"--seeds {seeds}: an interval needs at least 2 seeds")
    sweep = sweep_dir(results_dir, name)
    check_stopped(sweep)
    return _confirm(sweep, load_saved_spec(sweep), top, seeds, list(baselines), address, overwrite, tracking_uri, say)


def _then_confirm(outcome: Outcome, address: str | None, tracking_uri: str | None, say: Say) -> Outcome:
    """After a finished search whose spec has a confirm section: its confirmation (continued if it
    was started, only shown if it has run); the search's outcome, stopped if the confirmation was."""
    if not outcome.finished or outcome.spec.confirm is None:
        return outcome
    confirmed = _confirm(outcome.sweep, outcome.spec, None, None, [], address, False, tracking_uri, say)
    outcome.status, outcome.confirmation = confirmed.status, confirmed.confirmation
    return outcome


def _confirm(sweep: SweepDir, spec: SweepSpec, top: int | None, seeds: int | None, baselines: list,
             address: str | None, overwrite: bool, tracking_uri: str | None, say: Say) -> Outcome:
    folder = confirm_dir(sweep)
    started = folder.state.is_file() and not overwrite
    if started:
        check_stopped(folder)
        _check_unchanged(folder, top, seeds, baselines)
        cspec, raw, state = load_saved_spec(folder), None, None
        if folder.read_state().get("status") == "finished":
            say(f"{sweep.name} is confirmed already, in {folder.root}; --overwrite runs the confirmation again")
            shown = Outcome(folder, cspec, "finished", saved_trials(folder))
            return _confirmed(sweep, shown, tracking_uri, write_report=False)
        say(f"continuing the confirmation of {sweep.name} in {folder.root}")
    else:
        raw, state = _prepare(sweep, spec, top, seeds, baselines)
        cspec = spec_from_dict(raw)
    preflight(cspec, folder, address)
    stores.preflight(cspec.tracking, tracking_uri, sweep.root.parent)
    log = RayLog()
    join(cspec, folder, address, log)
    if not started:
        create(cspec, folder, raw, overwrite=True)
        folder.write_state(**state)
    with one_line_when_full(folder, log):
        outcome = _run(cspec, folder, address, log, started, tracking_uri, say)
    return _confirmed(sweep, outcome, tracking_uri)


def _prepare(sweep: SweepDir, spec: SweepSpec, top: int | None, seeds: int | None,
             baselines: list) -> tuple[dict, dict]:
    """The confirmation's raw spec and the state it records (refused with one line, before anything
    is written, for an unknown baseline or a sweep without a finished trial)."""
    defaults = spec.confirm or ConfirmSpec()
    top, n = top or defaults.top, seeds or defaults.seeds
    items = baselines or defaults.baselines or ([spec.baseline] if spec.baseline else [])
    bundles = baseline_bundles(items, spec, "--baseline" if baselines else "confirm.baselines")
    frame = saved_trials(sweep)
    chosen = chosen_configs(frame, spec, top)
    if not chosen:
        raise ConfigError(f"sweep {sweep.name} has no finished trial with a finite "
                          f"{' and '.join(spec.search.metrics)}: nothing to confirm")
    for c in chosen:
        if c.name in bundles:
            raise ConfigError(f"baseline {c.name}: a chosen config has that name; give the baseline another")
    new = new_seeds(frame, spec, n)
    rows = frame.set_index("trial_id")
    search = {c.name: {m: float(rows.loc[c.trial_id, f"final/{m}"]) for m in spec.search.metrics} for c in chosen}
    raw = confirm_raw(read_yaml(sweep.spec), sweep.name, {**{c.name: c.values for c in chosen}, **bundles},
                      next(iter(bundles), None), new)
    state = {"stage": CONFIRM, "top": top, "seeds": new, "baselines": items,
             "chosen": {c.name: c.trial_id for c in chosen}, "search": search}
    return raw, state


def _check_unchanged(folder: SweepDir, top: int | None, seeds: int | None, baselines: list) -> None:
    """A confirmation that was started is continued as it was started: other options are refused."""
    state = folder.read_state()
    given = {"--top": (top, state.get("top")), "--seeds": (seeds, len(state.get("seeds", []))),
             "--baseline": (baselines or None, state.get("baselines"))}
    changed = [option for option, (value, saved) in given.items() if value is not None and value != saved]
    if changed:
        raise ConfigError(f"{', '.join(changed)}: the confirmation in {folder.root} was started with --top "
                          f"{state.get('top')} --seeds {len(state.get('seeds', []))}; rerun without them to "
                          "continue it, or pass --overwrite to start it again")


def _confirmed(sweep: SweepDir, outcome: Outcome, tracking_uri: str | None, write_report: bool = True) -> Outcome:
    """A finished confirmation's table, to print last, and the sweep's report.md with it."""
    if outcome.finished:
        path = sweep.root / "report.md"
        if write_report:
            _, path = report(sweep.name, tracking_uri, sweep.root.parent)
        table, state = confirmation_table(sweep)
        outcome.confirmation = [reports.confirmation_text(table, state["seeds"]),
                                f"confirmation: {outcome.sweep.root}; report: {path}"]
    return outcome


def confirmation_table(sweep: SweepDir) -> tuple[pd.DataFrame, dict] | tuple[None, None]:
    """A sweep's finished confirmation: its table, written to confirm/aggregates/confirmation.parquet
    (with the aggregates and comparisons beside it), and its state; (None, None) without one."""
    folder = confirm_dir(sweep)
    if not folder.trials.is_file() or folder.read_state().get("status") != "finished":
        return None, None
    spec, frame, state = load_saved_spec(folder), pd.read_parquet(folder.trials), folder.read_state()
    result = publish.compute(frame, spec, folder, figures=False)
    table = confirmation.table(frame, spec, result.comparisons, state.get("search"))
    table.to_parquet(publish.folder(folder) / f"{confirmation.FILE}.parquet", index=False)
    return table, state


# ---------------------------------------------------------------- saved sweeps


def status(name: str | None, results_dir: Path | None, say: Say) -> None:
    """A sweep's state, disk footprint and trials (or every sweep's state and footprint)."""
    sweeps = [sweep_dir(results_dir, name)] if name else all_sweeps(results_dir)
    for sweep in sweeps:
        state = sweep.read_state()
        say(f"{sweep.name}: {state.get('status')}, {state.get('num_trials')} trials planned, "
            f"{disk_usage(sweep.root) / 1e6:.1f} MB on disk in {sweep.root}")
        if name:
            frame = saved_trials(sweep)
            shown = [c for c in frame.columns if c.startswith(("config/", "final/"))][:10]
            say(frame[["trial_id", "state", "epochs", *shown]].to_string(index=False))


def prune(name: str, keep_best: int, metric: str | None, results_dir: Path | None, say: Say,
          confirm: Callable[[str], object] | None) -> None:
    """Removes the weights of all but the best `keep_best` finished trials of a stopped sweep, once
    `confirm` (None: no question) accepts the plan it was shown."""
    sweep = sweep_dir(results_dir, name)
    check_stopped(sweep)
    spec = load_saved_spec(sweep)
    frame = saved_trials(sweep)
    plan = plan_prune(frame, metric or spec.search.metrics[0], keep_best)
    say(plan.describe(name))
    if confirm is not None:
        confirm("remove them?")
    freed = apply_prune(plan, frame)
    say(f"freed {freed / 1e6:.1f} MB; {sweep.name} now takes {disk_usage(sweep.root) / 1e6:.1f} MB")


# ---------------------------------------------------------------- MLflow


def sweep_store(name: str | None, results_dir: Path | None, tracking_uri: str | None):
    """(store, experiment name, sweep dir) for NAME, or for the results folder when no NAME is given."""
    if name is None:
        return stores.resolve(tracking_uri, None, results_root(results_dir)), None, None
    sweep = sweep_dir(results_dir, name)
    t = load_saved_spec(sweep).tracking
    store = stores.resolve(tracking_uri, t.uri, sweep.root.parent, t.artifact_location)
    return store, t.experiment or sweep.name, sweep


def report(name: str, tracking_uri: str | None, results_dir: Path | None) -> tuple[str, Path]:
    """A sweep's aggregated results: (the terminal's text, the report.md written)."""
    store, experiment, sweep = sweep_store(name, results_dir, tracking_uri)
    spec = load_saved_spec(sweep)
    records = saved_trial_records(sweep, histories=True)  # the experiment, read once: trials and histories
    frame = frame_of(records)
    result = publish.compute(frame, spec, sweep, histories=histories_of(records))
    mlflow_line = None
    if spec.tracking.enabled or tracking_uri:
        if tracking_uri or store.is_server:
            stores.check(store)
        experiment_id, parent = locate(store, experiment, sweep)
        if parent:
            mlflow_line = (f"MLflow: parent run {parent} in experiment {experiment!r} (id {experiment_id}), "
                           f"store {store.portable()}")
    text, markdown = reports.render(name, frame, spec, result, mlflow_line)
    table, state = confirmation_table(sweep)
    if table is not None:
        text += "\n" + reports.confirmation_text(table, state["seeds"]) + "\n"
        markdown += "\n" + "\n".join(reports.confirmation_markdown(table, state["seeds"]))
    return text, reports.write(sweep, markdown)


def ui(name: str | None, host: str, port: int, allowed_hosts: str | None, tracking_uri: str | None,
       results_dir: Path | None, say: Say) -> int:
    """Serves the MLflow UI on the sweeps' store until Ctrl-C (its pages for NAME's experiment when
    given) and returns the server's exit status; a store that is an MLflow server already is only
    pointed to."""
    store, experiment, sweep = sweep_store(name, results_dir, tracking_uri)
    stores.check(store)
    pages = [("MLflow UI", "/")]
    if sweep is not None:
        experiment_id, parent = locate(store, experiment, sweep)
        if experiment_id is None:
            raise ConfigError(f"sweep {name} has no MLflow experiment {experiment!r} in {store.describe()}; "
                              f"pass the --tracking-uri it was launched with")
        pages = [(f"sweep {name}", experiment_page(experiment_id))]
        if parent:
            pages.append(("its parent run (aggregated results)", experiment_page(experiment_id, parent)))
    if store.is_server:
        for label, page in pages:
            say(f"{label}: {page_url(store.shown.rstrip('/'), page)}")
        say("the store is an MLflow server already: nothing to start")
        return 0
    return serve(store, host, port, allowed_hosts, pages, echo=say, warn=partial(say, err=True))
