"""The `tvae-sweep` command line: one group, one command per verb."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import click

from .compat import run_exit_handlers
from .errors import ConfigError, redact
from .sweep import disk

# errors that are the user's to fix: one line, exit 2, no traceback
USER_ERRORS = (ConfigError, FileNotFoundError, FileExistsError, PermissionError)


class UserError(click.ClickException):
    """Input the user must fix: one line "tvae-sweep: error: ...", without passwords, and exit code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    def show(self, file=None) -> None:
        click.echo(f"tvae-sweep: error: {self.format_message()}", err=True, file=file)


class SweepStopped(UserError):
    """A sweep its machine stopped (a full disk), its trials saved: the same one line, exit code 1."""

    exit_code = disk.EXIT_CODE


@contextmanager
def user_errors() -> Iterator[None]:
    """Ends a command that raised one of USER_ERRORS (from any layer) as a UserError, and a sweep
    stopped by a full disk as SweepStopped, which click prints."""
    try:
        yield
    except USER_ERRORS as e:
        raise UserError(str(e)) from None
    except disk.DiskFull as e:
        raise SweepStopped(str(e)) from None


def settle_tracking() -> None:
    """At every command's end: no thread that opens a tracking store outlives the command."""
    from .tracking import store

    store.settle()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tvae-sweep")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Sweep the topographic structure of Topographic VAEs: capsules, neighbourhoods, coherence.

    Start with `tvae-sweep train configs/tvae_mnist.yaml --output runs/first`, or a whole sweep
    with `tvae-sweep launch search_spaces/capsules.yaml`.
    """
    ctx.call_on_close(settle_tracking)
    ctx.with_resource(user_errors())  # closed first: sees the command's exception


def entry_point() -> None:
    """The `tvae-sweep` console script: the command, then, when it succeeded, a prompt exit.

    By then everything is written; the exit handlers (Ray's shutdown among them) run as usual, and
    only the interpreter's teardown of the torch, Ray and MLflow modules is skipped: seconds on a
    small machine. A failed command exits the usual way.
    """
    try:
        main()
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@main.command()
@click.argument("configs", metavar="CONFIG...", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for config.yaml, metrics.json, checkpoint/ and traversal.png.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value, e.g. --set train.epochs=3 (repeatable).")
@click.option("--overwrite", is_flag=True, help="Start afresh even if OUTPUT holds a checkpoint.")
@click.option("--seeds", default=None, metavar="S,S,...",
              help="Train the config under each seed as one fused model, into OUTPUT/seed_<s>/.")
def train(configs: tuple[Path, ...], output: Path, overrides: tuple[str, ...], overwrite: bool,
          seeds: str | None) -> None:
    """Train one configuration (sections data, model, train) into OUTPUT.

    Several CONFIGs of one network shape (or --seeds) train as one fused model, each into
    OUTPUT/<its name>/. Running the same command into the same OUTPUT again resumes from the
    checkpoints.
    """
    from tqdm import tqdm

    from .checkpoints import CheckpointError
    from .data import check_sources
    from .train_folder import load_members, member_summary, train_to_directory
    from .training import steps_per_epoch

    members = load_members(list(configs), list(overrides), seeds)
    first = next(iter(members.values()))
    check_sources(first.data)
    steps = steps_per_epoch(first)
    bars = []  # the progress bar, shown from the first step on (not before a refused start)

    def progress():
        if not bars:
            bars.append(tqdm(total=first.train.epochs * steps, unit="step", dynamic_ncols=True, file=sys.stderr))
        return bars[0]

    def on_step(step: int, loss: float) -> None:
        bar = progress()
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.1f}", refresh=False)

    def on_epoch(by_member: dict[str, dict]) -> None:
        bar = progress()
        epoch = next(iter(by_member.values()))["epoch"]
        bar.n = epoch * steps
        parts = []  # a single run's headline metrics, or each member's training loss
        for name, metrics in by_member.items():
            keys = ("train_loss",) if name else ("train_loss", "log_likelihood", "equivariance_error",
                                                 "equivariance_ratio")
            parts += [f"{name + ' ' if name else ''}{k} {metrics[k]:.4g}" for k in keys if k in metrics]
        bar.write(f"epoch {epoch}: " + "  ".join(parts))

    try:
        outcome = train_to_directory(members, output, overwrite=overwrite, on_epoch=on_epoch, on_step=on_step)
    except CheckpointError as e:
        raise ConfigError(f"{e}; delete it, or pass --overwrite to start afresh") from None
    finally:
        if bars:
            bars[0].close()
    lines, failed = member_summary(outcome)
    written = f"{output}/metrics.json, {output}/traversal.png" if "" in members else \
        ", ".join(f"{output}/{name}/" for name in members)
    if lines or not failed:
        click.echo(f"done: {written}")
    for line in lines:
        click.echo(line)
    for name in failed:
        click.echo(f"tvae-sweep: error: {name + ': ' if name else ''}{outcome[name]}; "
                   "lower train.lr or set train.grad_clip", err=True)
    if failed:
        sys.exit(1)


# ---------------------------------------------------------------- sweeps

results_dir_option = click.option(
    "--results-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder of all sweeps [default: $TVAE_SWEEP_RESULTS or ./results].")
tracking_uri_option = click.option(
    "--tracking-uri", default=None, metavar="URI",
    help="MLflow store, e.g. http://mlflow.example:5000 or sqlite:///path/mlflow.db; wins over "
         "$MLFLOW_TRACKING_URI, which wins over the spec's tracking.uri [default: "
         "sqlite:///<results-dir>/mlflow.db, artifacts in <results-dir>/mlartifacts].")


profile_option = click.option(
    "--profile", default=None, metavar="NAME",
    help="Apply one of the spec's profiles, e.g. cpu or full [default: the spec's profile key, else its first].")


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec value (repeatable).")
@profile_option
def validate(spec_path: Path, overrides: tuple[str, ...], profile: str | None) -> None:
    """Check a sweep spec without launching anything."""
    from .sweep.fusion import ray_trials
    from .sweep.space import num_trials
    from .sweep.validation import load_spec

    spec = load_spec(spec_path, overrides, profile)
    s = spec.search
    shown = f" (profile {spec.profile})" if spec.profile else ""
    together = f" (trained as {ray_trials(spec)} fused trials)" if s.fuse else ""
    seeds = f", each under {s.replicates} seeds" if s.replicates > 1 else ""
    c = spec.confirm
    confirm = f"; then the best {c.top} confirmed under {c.seeds} new seeds" if c else ""
    click.echo(f"{spec_path}{shown}: valid; {num_trials(spec)} trials{together}{seeds} of "
               f"{', '.join(spec.space) or 'the base config'} by {s.algorithm} with {s.scheduler}, "
               f"optimising {', '.join(f'{m} ({d})' for m, d in zip(s.metrics, s.modes, strict=True))}{confirm}")


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="Sweep name [default: the spec's name, else its file name].")
@results_dir_option
@click.option("--address", default=None, help="Ray cluster to join [default: $RAY_ADDRESS, else a local one].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a spec value, e.g. --set search.num_trials=4 (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace an existing sweep of the same name.")
@profile_option
@tracking_uri_option
def launch(spec_path: Path, name: str | None, results_dir: Path | None, address: str | None,
           overrides: tuple[str, ...], overwrite: bool, profile: str | None, tracking_uri: str | None) -> None:
    """Run the sweep of SPEC: Optuna proposes configs, Ray Tune runs them as trials."""
    from . import sweeping

    _ended(sweeping.launch(spec_path, list(overrides), profile, name, results_dir, address, overwrite,
                           tracking_uri, say=click.echo))


@main.command()
@click.argument("name")
@results_dir_option
@click.option("--address", default=None, help="Ray cluster to join [default: $RAY_ADDRESS, else a local one].")
@tracking_uri_option
def resume(name: str, results_dir: Path | None, address: str | None, tracking_uri: str | None) -> None:
    """Continue a sweep after a crash or Ctrl-C; finished trials are not run again."""
    from . import sweeping

    _ended(sweeping.resume(name, results_dir, address, tracking_uri, say=click.echo))


def _exit_if_stopped(outcome) -> None:
    """A sweep or stage that stopped before its end: how to continue it, and exit 130."""
    from .sweep.layout import continue_command, title

    sweep = outcome.sweep
    if not outcome.finished:
        click.echo(f"{title(sweep)} stopped before its end; continue it with: {continue_command(sweep)}")
        sys.exit(130)


def _ended(outcome) -> None:
    """The end of a sweep: its summary (and its confirmation last), or how to continue it (exit 130)."""
    from .sweeping import best_lines

    sweep = outcome.sweep
    _exit_if_stopped(outcome)
    search = outcome.spec.search
    for line in best_lines(outcome.frame, search.metrics, search.modes, search.hypervolume_reference):
        click.echo(line)
    click.echo(f"trials table: {sweep.trials}")
    for line in outcome.confirmation:
        click.echo(line)


@main.command()
@click.argument("name")
@click.option("--top", type=int, default=None, metavar="K",
              help="The best K configs by the objective, or up to K of the Pareto front of several "
                   "(the K best by the first objective) [default: the spec's confirm.top, else 3].")
@click.option("--seeds", type=int, default=None, metavar="N",
              help="New seeds each config is retrained under [default: the spec's confirm.seeds, else 3].")
@click.option("--baseline", "baselines", multiple=True, metavar="PRESET_OR_CONFIG",
              help="A preset of the sweep's space or a config file (what export-best writes), retrained beside "
                   "them; the first is the one they are compared with (repeatable) [default: the spec's "
                   "confirm.baselines, else its baseline].")
@click.option("--overwrite", is_flag=True, help="Run a confirmation that has run again.")
@results_dir_option
@click.option("--address", default=None, help="Ray cluster to join [default: $RAY_ADDRESS, else a local one].")
@tracking_uri_option
def confirm(name: str, top: int | None, seeds: int | None, baselines: tuple[str, ...], overwrite: bool,
            results_dir: Path | None, address: str | None, tracking_uri: str | None) -> None:
    """Retrain a stopped sweep's best configs and its baselines under N seeds the search never used,
    into results/NAME/confirm/: each config's objectives with n and a 95% interval, and its paired
    difference from the baseline, in report.md. Run it again to continue a confirmation that stopped."""
    from . import sweeping

    outcome = sweeping.confirm(name, top, seeds, list(baselines), results_dir, address, overwrite, tracking_uri,
                               say=click.echo)
    _exit_if_stopped(outcome)
    for line in outcome.confirmation:
        click.echo(line)


@main.command(name="list")
@results_dir_option
def list_sweeps(results_dir: Path | None) -> None:
    """List the sweeps in the results folder."""
    from .sweep.layout import all_sweeps, results_root

    sweeps = all_sweeps(results_dir)
    if not sweeps:
        click.echo(f"no sweeps in {results_root(results_dir)}")
    for sweep in sweeps:
        state = sweep.read_state()
        click.echo(f"{sweep.name:30s} {state.get('status', '?'):12s} {state.get('num_trials', '?')} trials")


@main.command()
@click.argument("name", required=False)
@results_dir_option
def status(name: str | None, results_dir: Path | None) -> None:
    """Show a sweep's trials (or every sweep's state), with its disk footprint."""
    from . import sweeping

    sweeping.status(name, results_dir, say=click.echo)


@main.command()
@click.argument("name")
@click.option("--keep-best", required=True, type=click.IntRange(min=0), metavar="K",
              help="Keep the weights of the best K finished trials (0: none).")
@click.option("--metric", default=None, help="Rank by this metric [default: the sweep's first objective].")
@click.option("--yes", is_flag=True, help="Do not ask before removing.")
@results_dir_option
def prune(name: str, keep_best: int, metric: str | None, yes: bool, results_dir: Path | None) -> None:
    """Remove the model weights of all but the best K finished trials of a stopped sweep.

    Their configs, metrics and pictures stay: `export-best` and `train` retrain any of them.
    """
    from . import sweeping

    sweeping.prune(name, keep_best, metric, results_dir, say=click.echo,
                   confirm=None if yes else partial(click.confirm, abort=True))


@main.command()
@click.argument("name")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A .parquet or .csv file.")
@results_dir_option
def results(name: str, out: Path, results_dir: Path | None) -> None:
    """Write a sweep's trials table: config, final and best metrics, state and run time per trial."""
    from .sweep.launch import load_saved_spec, saved_trials
    from .sweep.layout import sweep_dir
    from .sweep.results import write_trials

    sweep = sweep_dir(results_dir, name)
    frame = saved_trials(sweep)
    write_trials(frame, load_saved_spec(sweep), out)  # a parquet file keeps the front's hypervolume
    click.echo(f"{len(frame)} trials -> {out}")


@main.command(name="export-best")
@click.argument("name")
@click.option("--metric", default=None, help="Rank by this metric [default: the sweep's first objective].")
@click.option("--top", default=1, show_default=True, type=click.IntRange(min=1), help="How many configs.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the YAML files.")
@results_dir_option
def export_best_cmd(name: str, metric: str | None, top: int, out: Path, results_dir: Path | None) -> None:
    """Export the best trials' configs as YAML files that `tvae-sweep train` runs as they are."""
    from .sweep.launch import load_saved_spec, saved_trials
    from .sweep.layout import sweep_dir
    from .sweep.results import export_best

    sweep = sweep_dir(results_dir, name)
    spec = load_saved_spec(sweep)
    frame = saved_trials(sweep)
    for path in export_best(spec, frame, metric or spec.search.metrics[0], top, out):
        click.echo(path)



# ---------------------------------------------------------------- MLflow

@main.command()
@click.argument("name", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but localhost exposes the UI (no login) to the network.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--allowed-hosts", default=None, metavar="HOSTS",
              help="Host headers MLflow accepts when --host is not local "
                   "[default: this machine's names and addresses].")
@tracking_uri_option
@results_dir_option
def ui(name: str | None, host: str, port: int, allowed_hosts: str | None, tracking_uri: str | None,
       results_dir: Path | None) -> None:
    """Start the MLflow UI on the sweeps' store and print the address to open (NAME's experiment
    when given); Ctrl-C stops it."""
    from . import sweeping

    sys.exit(sweeping.ui(name, host, port, allowed_hosts, tracking_uri, results_dir, say=click.echo))


@main.command()
@click.argument("name")
@tracking_uri_option
@results_dir_option
def report(name: str, tracking_uri: str | None, results_dir: Path | None) -> None:
    """Print a sweep's aggregated equivariance results, per searched key, and write them with
    figures to results/NAME/report.md (tables as parquet in results/NAME/aggregates/)."""
    from .sweeping import report as sweep_report

    text, path = sweep_report(name, tracking_uri, results_dir)
    click.echo(text, nl=False)
    click.echo(f"report: {path}")


@main.command()
@click.argument("runs", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--spec", "spec_path", required=True, metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path),
              help="The spec whose grid the runs in DIR trained.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec value (repeatable).")
@profile_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the results [default: <results-dir>/<the spec's name>].")
@results_dir_option
def collect(runs: Path, spec_path: Path, overrides: tuple[str, ...], profile: str | None, out: Path | None,
            results_dir: Path | None) -> None:
    """Collect a grid trained outside a sweep into a sweep's results: DIR/group_<g>/point_<i>/, the
    folders `tvae-sweep train` wrote for each point of SPEC's grid (its fused groups one after
    another, as `search.fuse` makes them; tvae_sweep.collect.Grid.write_configs writes their
    configs), become trials.parquet, report.md and its figures."""
    from .collect import Grid
    from .collect import collect as collect_runs
    from .sweep.layout import sweep_dir

    grid = Grid.load(spec_path, overrides, profile)
    folder = out or sweep_dir(results_dir, grid.name or spec_path.stem).root
    click.echo(f"report: {collect_runs(grid, runs, folder)}")
