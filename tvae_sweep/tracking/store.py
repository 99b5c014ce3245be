"""Where runs are kept: the tracking URI, its artifact folder, a client, a sweep's experiment.

The URI comes from, in order: the --tracking-uri option, $MLFLOW_TRACKING_URI, the spec's
tracking.uri, else an SQLite store beside the sweeps (results/mlflow.db, artifacts in
results/mlartifacts). MLflow 3 refuses the old ./mlruns file store, so plain folders are refused here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError

ENV = "MLFLOW_TRACKING_URI"
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

    def describe(self) -> str:
        return f"{self.uri} (from {self.source})"


def sqlite_file(uri: str) -> Path | None:
    """The database file of an sqlite:/// URI (three slashes and a relative path, or four and an absolute one)."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    return Path(uri[len("sqlite:///"):]).absolute()


def default_uri(results_root: Path) -> str:
    return f"sqlite:///{Path(results_root).absolute() / DEFAULT_DB}"


def _normalise(uri: str, source: str) -> str:
    uri = uri.strip()
    if "://" not in uri and ":" not in uri.split("/")[0] and uri.endswith(".db"):
        return f"sqlite:///{Path(uri).expanduser().absolute()}"  # a path to a database file
    if uri.startswith("file:") or ("://" not in uri and not uri.startswith("databricks")):
        raise ConfigError(f"{source} {uri!r}: MLflow 3 refuses folder (file) stores; "
                          f"use sqlite:///PATH/mlflow.db or an MLflow server's http:// address")
    return uri


def resolve(option: str | None, spec_uri: str | None, results_root: Path,
            spec_artifacts: str | None = None) -> Store:
    """The store to use: --tracking-uri, else $MLFLOW_TRACKING_URI, else the spec's, else the default."""
    for value, source in ((option, "--tracking-uri"), (os.environ.get(ENV), ENV), (spec_uri, "tracking.uri")):
        if value:
            uri = _normalise(value, source)
            break
    else:
        uri, source = default_uri(results_root), "the default store under the results folder"
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
            raise ConfigError(f"{store.source} {store.uri}: cannot create {db.parent} ({e.strerror})") from None
        if not os.access(db.parent, os.W_OK):
            raise ConfigError(f"{store.source} {store.uri}: {db.parent} is not writable")
    elif store.is_server:
        import requests

        try:
            answer = requests.get(store.uri.rstrip("/") + "/health", timeout=10)
            answer.raise_for_status()
        except requests.RequestException as e:
            reason = type(e).__name__ if not getattr(e, "response", None) else f"HTTP {e.response.status_code}"
            raise ConfigError(f"{store.source} {store.uri}: no MLflow server answers there ({reason}); "
                              f"start it or pass another --tracking-uri") from None


def client(store: Store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store.uri)


def experiment_id(mlflow_client, name: str, artifact_root: str | None, create: bool = True) -> str | None:
    """The id of experiment `name`, created (with an explicit artifact location) or restored if need be."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        if not create:
            return None
        try:
            return mlflow_client.create_experiment(name, artifact_location=artifact_root, tags=EXPERIMENT_TAGS)
        except MlflowException:  # created meanwhile by another driver
            found = mlflow_client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        if not create:
            return None
        mlflow_client.restore_experiment(found.experiment_id)
    return found.experiment_id
