"""Where runs are kept: the tracking URI, its artifact folder, a client, a sweep's experiment.

The URI comes from, in order: the --tracking-uri option, $MLFLOW_TRACKING_URI, the spec's
tracking.uri, else an SQLite store beside the sweeps (results/mlflow.db, artifacts in
results/mlartifacts). MLflow 3 refuses the old ./mlruns file store, so plain folders are refused here.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from ..config import Setting
from ..errors import HIDDEN, ConfigError, hidden_password, redact  # noqa: F401 (re-exported)

URI = Setting("--tracking-uri", "MLFLOW_TRACKING_URI", "tracking.uri")
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
# tells the MLflow 3 UI that this is a model-training experiment (it asks otherwise)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
REMOTE_SCHEMES = ("http://", "https://")
@dataclass(frozen=True)
class Store:
    uri: str
    source: str  # the setting that chose the URI, named in errors
    artifact_root: str | None  # where new experiments keep artifacts; None lets the server decide

    @property
    def is_server(self) -> bool:
        return self.uri.startswith(REMOTE_SCHEMES)

    @property
    def shown(self) -> str:
        """The URI as printed and stored: without its password."""
        return redact(self.uri)

    def describe(self) -> str:
        return f"{self.shown} (from {self.source})"

    def portable(self) -> str:
        """The URI as written into a report: an SQLite file under the working folder as a relative
        sqlite:/// URI (valid from that folder, and free of this machine's paths), others as shown."""
        db = sqlite_file(self.uri)
        if db is not None and db.is_relative_to(Path.cwd()):
            return f"sqlite:///{db.relative_to(Path.cwd())}"
        return self.shown


def sqlite_file(uri: str) -> Path | None:
    """The database file of an sqlite:/// URI (three slashes and a relative path, or four and an absolute one)."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    return Path(uri[len("sqlite:///"):]).absolute()


def default_uri(results_root: Path) -> str:
    return f"sqlite:///{Path(results_root).absolute() / DEFAULT_DB}"


def _normalise(uri: str, source: str) -> str:
    uri = uri.strip()
    if hidden_password(uri):
        raise ConfigError(f"{source} {uri}: its password was left out when it was saved; pass the full URI "
                          f"with --tracking-uri or $MLFLOW_TRACKING_URI")
    if "://" not in uri and ":" not in uri.split("/")[0] and uri.endswith(".db"):
        return f"sqlite:///{Path(uri).expanduser().absolute()}"  # a path to a database file
    if uri.startswith("file:") or ("://" not in uri and not uri.startswith("databricks")):
        raise ConfigError(f"{source} {redact(uri)!r}: MLflow 3 refuses folder (file) stores; "
                          f"use sqlite:///PATH/mlflow.db or an MLflow server's http:// address")
    return uri


def resolve(option: str | None, spec_uri: str | None, results_root: Path,
            spec_artifacts: str | None = None) -> Store:
    """The store to use: --tracking-uri, else $MLFLOW_TRACKING_URI, else the spec's, else the default."""
    uri, source = URI.pick(option, spec_uri, default_source="the default store under the results folder")
    uri = default_uri(results_root) if uri is None else _normalise(uri, source)
    return Store(uri, source, artifact_root(uri, spec_artifacts))


def artifact_root(uri: str, explicit: str | None = None) -> str | None:
    """An explicit location, else a folder beside an SQLite database, else None (the server decides)."""
    if explicit:
        return explicit if "://" in explicit else Path(explicit).expanduser().absolute().as_uri()
    db = sqlite_file(uri)
    return (db.parent / DEFAULT_ARTIFACTS).as_uri() if db else None


def check(store: Store) -> None:
    """Fails with one line when the store cannot be used: a server that does not answer, a folder
    where the database cannot be written."""
    db = sqlite_file(store.uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{store.source} {store.shown}: cannot create {db.parent} ({e.strerror})") from None
        if not os.access(db.parent, os.W_OK):
            raise ConfigError(f"{store.source} {store.shown}: {db.parent} is not writable")
    elif store.is_server:
        try:
            answer = requests.get(store.uri.rstrip("/") + "/health", timeout=10)
            answer.raise_for_status()
        except requests.RequestException as e:
            response = getattr(e, "response", None)
            if response is not None and response.status_code in (401, 403):
                raise ConfigError(f"{store.source} {store.shown}: the MLflow server refused these credentials "
                                  f"(HTTP {response.status_code}); check the user and password") from None
            reason = type(e).__name__ if response is None else f"HTTP {response.status_code}"
            raise ConfigError(f"{store.source} {store.shown}: no MLflow server answers there ({reason}); "
                              f"start it or pass another --tracking-uri") from None


_opening: dict[str, Future] = {}  # clients being opened by prepare(), by URI


def prepare(store: Store) -> None:
    """Starts opening the store on a thread: importing MLflow and opening its store (a new SQLite
    database runs its migrations) take seconds, which then overlap Ray's start-up. The next
    `client(store)` takes the result, or raises what opening it raised."""
    if store.uri not in _opening:
        pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow-open")
        _opening[store.uri] = pool.submit(_new_client, store)
        pool.shutdown(wait=False)


def client(store: Store):
    pending = _opening.pop(store.uri, None)
    return pending.result() if pending is not None else _new_client(store)


def settle() -> None:
    """Waits for the stores prepare() is still opening, for a command that stopped before it used
    them: no thread of it outlives it."""
    while _opening:
        _opening.popitem()[1].exception()


def _new_client(store: Store):
    from mlflow import MlflowClient  # noqa: PLC0415 imported on prepare()'s thread, while Ray starts

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial ... tables"

    if store.shown != store.uri:  # MLflow prints each closed run's page on the URI as given, password and all
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow_client = MlflowClient(tracking_uri=store.uri)
    mlflow_client.search_experiments(max_results=1)  # opens the store: connects, creates or migrates a database
    return mlflow_client


def experiment_id(mlflow_client, name: str, artifact_root: str | None, create: bool = True) -> str | None:
    """The id of experiment `name`, created (with an explicit artifact location) or restored if need be."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        if not create:
            return None
        try:
            return mlflow_client.create_experiment(name, artifact_location=artifact_root, tags=EXPERIMENT_TAGS)
        except Exception:  # created meanwhile by another driver (MLflow's error), else raised again below
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        if not create:
            return None
        mlflow_client.restore_experiment(found.experiment_id)
    return found.experiment_id


def preflight(tracking, tracking_uri: str | None, results_root: Path) -> None:
    """A tracked sweep's store answers before anything is written; it then starts opening (MLflow's
    import and a new database's migrations) on a thread while Ray starts."""
    if not tracking.enabled:
        return
    store = resolve(tracking_uri, tracking.uri, results_root, tracking.artifact_location)
    check(store)
    prepare(store)
