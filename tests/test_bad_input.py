"""Broken inputs through the real CLI.

Every case is refused with exit code 2 and exactly one line on stderr, "tvae-sweep: error: ...",
that names the field, file or setting to fix; no traceback anywhere; nothing started (no sweep
folder, no Ray) and nothing that existed changed. Most cases run the CLI in this process (the same
code path, without the start-up of a new interpreter); a few run it as a real subprocess to show
the same end to end.
"""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import helpers
import pytest
import ray
import yaml
from click.testing import CliRunner
from helpers import tiny_raw
from sweeps import CLI, cli_env

from tvae_sweep.checkpoints import CHECKPOINT_FILE
from tvae_sweep.cli import main
from tvae_sweep.config import dump_yaml, load_run_config
from tvae_sweep.sweep.launch import create
from tvae_sweep.sweep.layout import sweep_dir
from tvae_sweep.sweep.validation import spec_from_dict
from tvae_sweep.tracking import store as stores
from tvae_sweep.training import Trainer

PREFIX = "tvae-sweep: error:"
NAME = "bad"
SEARCH = {"algorithm": "random", "metric": "log_likelihood", "mode": "max", "num_trials": 2,
          "max_concurrent": 1, "seed": 0, "scheduler": "fifo"}


def spec_raw(**sections) -> dict:
    return helpers.spec_raw(**{"search": SEARCH, **sections})


def write_spec(folder: Path, raw: dict | str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(code: int, stdout: str, stderr: str, expected: str) -> str:
    """Checks the refusal; returns its line."""
    assert code == 2, (code, stdout[-2000:], stderr[-2000:])
    assert "Traceback" not in stdout + stderr, stdout[-3000:] + stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(PREFIX), lines[0]
    assert expected in lines[0], lines[0]
    return lines[0]


def cli(*args) -> str:
    """Runs the CLI in this process; the whole of stderr must be the one line."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert not (result.exception and not isinstance(result.exception, SystemExit)), repr(result.exception)
    return result


def refused(expected: str, *args) -> str:
    result = cli(*args)
    return one_line_error(result.exit_code, result.stdout, result.stderr, expected)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in ("MLFLOW_TRACKING_URI", "TVAE_SWEEP_RESULTS", "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(autouse=True)
def no_ray_started():
    """No refused command may start (or join) Ray in this process."""
    assert not ray.is_initialized()
    yield
    started = ray.is_initialized()
    if started:
        ray.shutdown()  # so that the next case starts clean
    assert not started, "a refused command started Ray"


# ---------------------------------------------------------------- broken specs, checked by validate and launch

def _set(path: str, value):
    def change(raw):
        node = raw
        *parents, last = path.split(".") if not path.startswith("space:") else ["space", path[6:]]
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return change


# (id, change to a valid spec, text the one line must contain)
BROKEN_SPECS = [
    ("unknown top-level key", _set("colour", 1), "colour: unknown key; allowed:"),
    ("unknown search key", _set("search.pruner", "median"), "search.pruner: unknown key; allowed: algorithm, metric"),
    ("unknown resources key", _set("resources.gpus", 1), "resources.gpus: unknown key; allowed: cpus_per_trial"),
    ("unknown model key", _set("model.colour", 1), "model.colour: unknown key; allowed:"),
    ("unknown key of a searched key", _set("space:model.n_caps", {"type": "int", "low": 1, "high": 2, "steps": 1}),
     "space.model.n_caps.steps: unknown key; allowed: type, low, high, step, log"),
    ("text for a number", _set("search.num_trials", "many"), "search.num_trials: must be an integer, got 'many'"),
    ("true for a number of trials", _set("search.num_trials", True), "search.num_trials: must be an integer, got True"),
    ("a number for a switch", _set("search.fuse", 1), "search.fuse: must be true or false, got 1"),
    ("a number for a searched key", _set("space:model.n_caps", 4),
     "space.model.n_caps: must be a mapping of keys to values, got 4"),
    ("text for a bound of a searched key", _set("space:model.n_caps", {"type": "int", "low": "one", "high": 4}),
     "space.model.n_caps.low: must be a number, got 'one'"),
    ("a number for an objective", _set("search.metric", 3), "search.metric: must be a string or a list, got 3"),
    ("text for an integer config value", _set("model.n_caps", "four"), "model.n_caps: must be an integer, got 'four'"),
    ("a string for a list", _set("data.transforms", "rotation"), "data.transforms: must be a list"),
    ("a list for a number", _set("resources.cpus_per_trial", [1]),
     "resources.cpus_per_trial: must be a number, got [1]"),
    ("a fraction of a GPU above one", _set("resources.gpus_per_trial", 1.5), "resources.gpus_per_trial"),
    ("no trials", _set("search.num_trials", 0), "search.num_trials: must be >= 1, got 0"),
    ("test fraction above one", _set("data.test_fraction", 1.5), "data.test_fraction: must be between 0 and 1"),
    ("negative learning rate", _set("train.lr", -1.0), "train.lr: must be > 0"),
    ("empty integer range", _set("space:model.n_caps", {"type": "int", "low": 8, "high": 2}),
     "space.model.n_caps: empty range: low 8 > high 2"),
    ("empty list of values", _set("space:model.variant", {"type": "categorical", "values": []}), "non-empty"),
    ("coherence window longer than the sequence", _set("model.coherence_window", 9),
     "model.coherence_window: must be between 1 and model.seq_len (6), got 9"),
    ("a searched window that can exceed the sequence",
     _set("space:model.coherence_window", {"type": "int", "low": 1, "high": 9}), "impossible"),
    ("a grid over a float range without a step",
     lambda r: r["search"].update(algorithm="grid")
     or r.update(space={"train.lr": {"type": "float", "low": 1e-4, "high": 1e-3}}),
     "space.train.lr: a grid needs finite values: give a step, or use categorical"),
    ("unknown search algorithm", _set("search.algorithm", "bayes"),
     "search.algorithm: must be one of tpe, gp, cmaes, random, grid, got 'bayes'"),
    ("unknown scheduler", _set("search.scheduler", "hyperband"),
     "search.scheduler: must be one of asha, fifo, pbt, got 'hyperband'"),
    ("an unknown mode among several",
     lambda r: r["search"].update(metric=["log_likelihood", "kl_z"], mode=["max", "up"]),
     "search.mode[1]: must be one of min, max, got 'up'"),
    ("an objective no trial reports", _set("search.metric", "accuracy"), "search.metric: no trial reports 'accuracy'"),
    ("kl_u in a sweep of VAEs",
     lambda r: (r["model"].update(variant="vae"), r["space"].pop("model.variant"),
                r["space"]["model.shift"].pop("when"), r["search"].update(metric="kl_u", mode="max")),
     "search.metric: no trial reports 'kl_u'"),
    ("kl_u where some trials are VAEs",
     lambda r: r["search"].update(metric="kl_u", mode="max")
     or r.update(space={"model.variant": {"type": "categorical", "values": ["vae", "tvae"]}}),
     "search.metric: trials with model.variant=vae"),
    ("shared storage without a folder", _set("storage.shared", True),
     "storage.shared: true needs storage.path, the folder every node mounts"),
    ("no space to search", lambda r: r.pop("space"), "space: the spec searches nothing; give the keys to search, "
                                                     "or run one config with `tvae-sweep train CONFIG --output DIR`"),
    ("an empty space", _set("space", {}), "space: the spec searches nothing"),
    ("no replicates", _set("search.replicates", 0), "search.replicates: must be >= 1, got 0"),
    ("fusing a search that is no grid", _set("search.fuse", True),
     "search.fuse: needs search.algorithm grid (the points to fuse are known before the sweep), got random"),
    ("fusing a grid that asha stops early",
     lambda r: r["search"].update(fuse=True, algorithm="grid", scheduler="asha"),
     "search.fuse: fused points train to their end together: needs search.scheduler fifo, got asha"),
    ("replicated trials whose seed is searched too",
     lambda r: r["search"].update(replicates=2)
     or r["space"].update({"train.seed": {"type": "int", "low": 0, "high": 9}}),
     "space.train.seed: search.replicates trains each trial under train.seed, train.seed + 1"),
    ("replicated trials whose presets set the seed",
     lambda r: r["search"].update(replicates=3) or r["space"].update(
         {"model.preset": {"type": "preset", "values": {"a": {"train.seed": 0}, "b": {"train.seed": 5}}}}),
     "space.train.seed: search.replicates"),
    ("an asha reduction factor below 2", _set("search.reduction_factor", 1.5),
     "search.reduction_factor: must be >= 2, got 1.5"),
    ("an asha grace period beyond the epochs", lambda r: r["search"].update(scheduler="asha", grace_period=50),
     "search.grace_period: 50 epochs before ASHA may stop a trial, but trials train for"),
    ("pbt comparing trials at an epoch that evaluates no objective",
     lambda r: r["search"].update(scheduler="pbt", mutate=["train.lr"], perturbation_interval=3)
     or r["train"].update(eval_every=2),
     "search.perturbation_interval: PBT compares trials every 3 epochs, but they evaluate the objective every 2"),
    ("a hypervolume reference of the wrong length",
     lambda r: r["search"].update(metric=["log_likelihood", "kl_z"], mode=["max", "min"],
                                  hypervolume_reference=[-500.0]),
     "search.hypervolume_reference: give one value per objective (log_likelihood, kl_z), got 1"),
    ("a hypervolume reference that is not finite",
     lambda r: r["search"].update(metric=["log_likelihood", "kl_z"], mode=["max", "min"],
                                  hypervolume_reference=[-500.0, float("inf")]),
     "search.hypervolume_reference[1]: must be a finite number, got inf"),
    ("a hypervolume reference for one objective", _set("search.hypervolume_reference", [-500.0]),
     "search.hypervolume_reference: the hypervolume is of a front of several objectives"),
    ("an unknown training precision", _set("train.precision", "fp16"),
     "train.precision: must be one of fp32, tf32, bf16, got 'fp16'"),
    ("a confirmation under one seed", _set("confirm", {"seeds": 1}), "confirm.seeds: must be >= 2, got 1"),
    ("a confirmation's baseline that is not there", _set("confirm", {"baselines": ["nope.yaml"]}),
     "confirm.baselines nope.yaml: neither a preset of the sweep's space (its presets: none) nor a config file"),
    ("a confirmation's inline baseline with a bad key", _set("confirm", {"baselines": [{"wide": {"caps": 4}}]}),
     "confirm.baselines wide.caps: not a config key; use section.field"),
]


@pytest.mark.parametrize("change, expected", [c[1:] for c in BROKEN_SPECS], ids=[c[0] for c in BROKEN_SPECS])
def test_a_broken_spec_is_one_line_from_validate_and_launch(tmp_path, change, expected):
    raw = spec_raw()
    change(raw)
    spec = write_spec(tmp_path, raw)
    results = tmp_path / "results"
    refused(expected, "validate", spec)
    # a closed --address: had the spec passed, launch would stop there, not start a local Ray
    refused(expected, "launch", spec, "--results-dir", results, "--address", f"127.0.0.1:{closed_port()}")
    assert not results.exists()


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    spec = write_spec(tmp_path, "search: {algorithm: tpe\nspace: [\n")
    line = refused(f"{spec}: YAML syntax error at line", "launch", spec, "--results-dir", tmp_path / "results")
    assert "column" in line
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_an_empty_spec_starts_nothing(tmp_path, text):
    spec = write_spec(tmp_path, text)
    refused("the spec is empty", "validate", spec)
    refused("the spec is empty", "launch", spec, "--results-dir", tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_a_spec_that_is_not_a_mapping(tmp_path):
    spec = write_spec(tmp_path, "- data\n- model\n")
    refused(f"{spec}: must be a YAML mapping", "validate", spec)


def test_a_refused_command_settles_the_store_it_started_opening(tmp_path):
    """Whatever way a command ends, no thread opening a tracking store outlives it."""
    stores.prepare(stores.resolve(None, None, tmp_path))  # what launch does before Ray starts
    refused("no such file", "validate", tmp_path / "nope.yaml")
    assert not [t for t in threading.enumerate() if t.name.startswith("mlflow-open")]
    assert (tmp_path / "mlflow.db").stat().st_size > 0  # opened to its end, not abandoned half-way


def test_a_missing_spec_file(tmp_path):
    refused(f"{tmp_path / 'nope.yaml'}: no such file", "launch", tmp_path / "nope.yaml",
            "--results-dir", tmp_path / "results")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("option, expected", [
    (["--set", "search.num_trials"], "--set search.num_trials: expected section.key=value"),
    (["--set", "epochs=3"], "--set epochs=3: the key must name a section and a field"),
    (["--set", "search.num_trials=[1"], "--set search.num_trials=[1: the value is not valid YAML"),
    (["--name", "../elsewhere"], "--name '../elsewhere': use letters, digits"),
])
def test_bad_options_are_one_line(tmp_path, option, expected):
    spec = write_spec(tmp_path, spec_raw())
    refused(expected, "launch", spec, "--results-dir", tmp_path / "results", *option)
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- data, folders, stores and clusters that are not there


@pytest.mark.parametrize("make_folder, message", [
    (False, "is not a directory (set data.download: true"),
    (True, "has no train-images-idx3-ubyte or train-images-idx3-ubyte.gz"),
])
def test_missing_mnist_files(tmp_path, make_folder, message):
    folder = tmp_path / "mnist"
    if make_folder:
        folder.mkdir()
    raw = spec_raw(data={**tiny_raw()["data"], "dataset": "mnist", "path": str(folder)})
    refused(f"data.path: {folder} {message}",
            "launch", write_spec(tmp_path, raw), "--results-dir", tmp_path / "results")
    assert not (tmp_path / "results" / "spec").exists()


def test_missing_dsprites_npz(tmp_path):
    missing = tmp_path / "dsprites.npz"
    raw = spec_raw(data={"dataset": "dsprites", "transforms": ["x", "y"], "train_sequences": 16,
                         "test_sequences": 8, "path": str(missing)},
                   model={**tiny_raw()["model"], "seq_len": 6})
    refused(f"data.path: no dsprites npz at {missing}", "launch", write_spec(tmp_path, raw),
            "--results-dir", tmp_path / "results")
    assert not (tmp_path / "results" / "spec").exists()


def test_unwritable_results_folder(tmp_path):
    spec = write_spec(tmp_path, spec_raw())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    results = blocker / "results"  # cannot be made, for root as for anyone
    refused(f"results folder {results}: cannot be created: {blocker} is a file, not a folder; "
            "pass another --results-dir", "launch", spec, "--results-dir", results)
    assert blocker.read_text() == "not a folder"


def test_read_only_results_folder(tmp_path):
    """A folder without write permission; root may write anywhere, so for root a path under a file."""
    spec = write_spec(tmp_path, spec_raw())
    results = tmp_path / "results"
    results.mkdir()
    if os.geteuid() == 0:
        (results / "file").write_text("x")
        target = results / "file" / "sweeps"
        expected = f"results folder {target}: cannot be created"
    else:
        results.chmod(0o500)
        target, expected = results, f"results folder {results}: {results} is not writable; pass another --results-dir"
    try:
        refused(expected, "launch", spec, "--results-dir", target)
    finally:
        results.chmod(0o700)
    assert [p.name for p in results.iterdir()] == (["file"] if os.geteuid() == 0 else [])


def test_unreachable_ray_address_fails_within_seconds(tmp_path):
    spec = write_spec(tmp_path, spec_raw())
    address = f"127.0.0.1:{closed_port()}"
    started = time.monotonic()
    refused(f"--address {address}: no Ray cluster answers at {address} (connection refused); start one with "
            f"`ray start --head --port {address.split(':')[1]}`", "launch", spec, "--results-dir",
            tmp_path / "results", "--address", address)
    assert time.monotonic() - started < 10
    # the address is probed before anything is written or opened: no sweep, no tracking store
    assert not (tmp_path / "results" / "spec").exists()
    assert not (tmp_path / "results" / "mlflow.db").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("mlflow-open")]


def test_unreachable_tracking_server_is_refused_before_ray_and_before_any_folder(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    spec = write_spec(tmp_path, spec_raw())
    refused(f"--tracking-uri {uri}: no MLflow server answers there (ConnectionError); start it or pass another "
            "--tracking-uri", "launch", spec, "--results-dir", tmp_path / "results", "--tracking-uri", uri)
    assert not (tmp_path / "results").exists()  # no sweep folder; and no_ray_started: no Ray either


def test_a_folder_store_is_refused(tmp_path):
    spec = write_spec(tmp_path, spec_raw(tracking={"uri": str(tmp_path / "mlruns")}))
    refused(f"tracking.uri '{tmp_path / 'mlruns'}': MLflow 3 refuses folder (file) stores", "launch", spec,
            "--results-dir", tmp_path / "results")
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- sweeps that exist, or do not


@pytest.fixture
def existing(tmp_path):
    """A sweep as `launch` leaves it before its first trial: results/bad/{spec.yaml, sweep.json}, plus a table."""
    raw = spec_raw()
    results = tmp_path / "results"
    sweep = sweep_dir(results, NAME)
    create(spec_from_dict(raw), sweep, raw, overwrite=False)
    (sweep.root / "trials.parquet").write_bytes(b"PAR1 stands in for a results table")
    return results, sweep, snapshot(sweep.root)


def test_an_existing_sweep_is_never_overwritten(tmp_path, existing):
    results, sweep, before = existing
    spec = write_spec(tmp_path, spec_raw(search={**spec_raw()["search"], "num_trials": 3}))
    refused(f"a sweep named '{NAME}' exists in {results}: `tvae-sweep resume {NAME}` continues it, or pass --overwrite",
            "launch", spec, "--name", NAME, "--results-dir", results)
    assert snapshot(sweep.root) == before


def test_resume_against_an_unreachable_tracking_server_changes_nothing(existing):
    results, sweep, before = existing
    uri = f"http://127.0.0.1:{closed_port()}"
    refused(f"--tracking-uri {uri}: no MLflow server answers there", "resume", NAME, "--results-dir", results,
            "--tracking-uri", uri)
    assert snapshot(sweep.root) == before


@pytest.mark.parametrize("command", [
    ["status", NAME],
    ["results", NAME, "--out", "{tmp}/t.csv"],
    ["export-best", NAME, "--out", "{tmp}/best"],
    ["report", NAME],
    ["confirm", NAME],
], ids=lambda c: c[0])
def test_a_sweep_that_stopped_before_its_first_trial_is_one_line(tmp_path, existing, command):
    results, sweep, before = existing
    command = [c.format(tmp=tmp_path) for c in command]
    refused(f"sweep {NAME} has no trials saved in {sweep.root / 'tune'} yet", *command, "--results-dir", results)
    assert snapshot(sweep.root) == before


@pytest.mark.parametrize("command", [
    ["resume", "nothing"],
    ["confirm", "nothing"],
    ["status", "nothing"],
    ["results", "nothing", "--out", "{tmp}/t.csv"],
    ["export-best", "nothing", "--out", "{tmp}/best"],
    ["report", "nothing"],
    ["ui", "nothing"],
], ids=lambda c: c[0])
def test_an_unknown_sweep_is_one_line(tmp_path, command):
    command = [c.format(tmp=tmp_path) for c in command]
    (tmp_path / "results").mkdir()
    refused(f"no sweep named 'nothing' in {tmp_path / 'results'} (`tvae-sweep list` shows them)",
            *command, "--results-dir", tmp_path / "results")
    assert list((tmp_path / "results").iterdir()) == []


# (id, change to the existing sweep, arguments of `confirm NAME`, text the one line must contain)
CONFIRM_REFUSALS = [
    ("no config", None, ["--top", "0"], "--top 0: confirm at least 1 config"),
    ("one seed", None, ["--seeds", "1"], "--seeds 1: an interval needs at least 2 seeds"),
    ("a running sweep", lambda sweep: sweep.write_state(status="running", pid=os.getpid()), [],
     f"sweep {NAME} is running (driver pid {os.getpid()}); wait for it to stop, or stop it first"),
    ("an unknown baseline", None, ["--baseline", "vae"],
     "--baseline vae: neither a preset of the sweep's space (its presets: none) nor a config file"),
    ("a baseline file that is no config", lambda sweep: (sweep.root.parent / "empty.yaml").write_text("a: 1\n"),
     ["--baseline", "{results}/empty.yaml"], "empty.yaml: not a config (no data, model or train section)"),
]


@pytest.mark.parametrize("change, args, expected", [c[1:] for c in CONFIRM_REFUSALS],
                         ids=[c[0] for c in CONFIRM_REFUSALS])
def test_a_confirmation_that_cannot_run_is_one_line(existing, change, args, expected):
    results, sweep, _ = existing
    if change:
        change(sweep)
    before = snapshot(sweep.root)
    refused(expected, "confirm", NAME, *[a.format(results=results) for a in args], "--results-dir", results)
    assert snapshot(sweep.root) == before  # no confirm/ folder, nothing changed


# ---------------------------------------------------------------- train: a checkpoint that cannot be read


def train_config(tmp_path: Path) -> Path:
    return write_spec(tmp_path, tiny_raw(train={"epochs": 1}), "config.yaml")


def broken_checkpoint(tmp_path: Path, config: Path, truncated: bool) -> Path:
    """An output folder holding the config and a checkpoint/state.pt: garbage, or a real one cut in half."""
    cfg = load_run_config(config)
    output = tmp_path / "run"
    dump_yaml(cfg.to_dict(), output.mkdir() or output / "config.yaml")
    state = output / "checkpoint" / CHECKPOINT_FILE
    if truncated:
        Trainer(cfg).save_checkpoint(state.parent)
        data = state.read_bytes()
        state.write_bytes(data[: len(data) // 2])
    else:
        state.parent.mkdir()
        state.write_bytes(bytes(range(256)) * 8)
    return output


def test_truncated_checkpoint_names_the_file_and_the_way_out(tmp_path):
    config = train_config(tmp_path)
    output = broken_checkpoint(tmp_path, config, truncated=True)
    before = snapshot(output)
    refused(f"{output / 'checkpoint' / 'state.pt'}: not a readable tvae-sweep checkpoint",
            "train", config, "--output", output)
    assert snapshot(output) == before


def test_missing_data_for_train(tmp_path):
    config = write_spec(tmp_path, tiny_raw(data={"dataset": "mnist", "path": str(tmp_path / "none")}), "config.yaml")
    refused(f"data.path: {tmp_path / 'none'} is not a directory", "train", config, "--output", tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- end to end, in a new process


def subprocess_cases(tmp_path: Path) -> dict:
    """(argv, expected text, check afterwards) of the cases run as real processes."""
    spec = write_spec(tmp_path, spec_raw())
    results = tmp_path / "results"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    uri = f"http://127.0.0.1:{closed_port()}"
    mnist = spec_raw(data={**tiny_raw()["data"], "dataset": "mnist", "path": str(tmp_path / "mnist")})
    return {
        "yaml": (["validate", write_spec(tmp_path, "a: [1, 2\n", "broken.yaml")], "YAML syntax error at line 2"),
        "tracking": (["launch", spec, "--results-dir", results, "--tracking-uri", uri],
                     f"--tracking-uri {uri}: no MLflow server answers there"),
        "data": (["launch", write_spec(tmp_path, mnist, "mnist.yaml"), "--results-dir", results],
                 f"data.path: {tmp_path / 'mnist'} is not a directory"),
        "results": (["launch", spec, "--results-dir", blocker / "results"],
                    f"results folder {blocker / 'results'}: cannot be created"),
    }


@pytest.mark.parametrize("case", ["yaml", "tracking", "data", "results", "checkpoint"])
def test_end_to_end_in_a_new_process(tmp_path, case):
    if case == "checkpoint":
        config = train_config(tmp_path)
        output = broken_checkpoint(tmp_path, config, truncated=False)
        args, expected = ["train", config, "--output", output], f"{output / 'checkpoint' / 'state.pt'}: not a readable"
    else:
        args, expected = subprocess_cases(tmp_path)[case]
        output = None
    before = snapshot(tmp_path)
    started = time.monotonic()
    env = cli_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("TVAE_SWEEP_RESULTS", None)
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    line = one_line_error(proc.returncode, proc.stdout, proc.stderr, expected)
    assert time.monotonic() - started < 120  # refused before any Ray cluster could start
    assert snapshot(tmp_path) == before  # nothing written, nothing changed
    if case == "checkpoint":
        assert line.endswith("; delete it, or pass --overwrite to start afresh")
