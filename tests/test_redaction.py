"""Tracking URIs with passwords: the password is used to connect and never shown or stored.

The sweep test puts a real `mlflow server` behind a reverse proxy that demands HTTP basic
authentication (alice / s3cret), so the runs reach MLflow only if the real URI is used to connect;
then it looks for the password in every file of the results folder, the server's database and
artifacts, Ray's session logs and everything the CLI printed.
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from sweeps import CLI, cli_env, sweep_spec

from tvae_sweep.cli import main
from tvae_sweep.config import ConfigError
from tvae_sweep.tracking.store import hidden_password, redact, resolve

pytestmark = pytest.mark.cost(86)  # seconds on 2 cores (measured): costliest files first

SECRET = "s3cret"
START_TIMEOUT_S = 240  # the MLflow server starts in seconds on a quiet machine, far slower on a busy one


@pytest.mark.parametrize("uri, shown", [
    ("http://alice:s3cret@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
    ("https://alice:s3cret@mlflow.example.org/prefix", "https://alice:***@mlflow.example.org/prefix"),
    ("postgresql://user:pw@db.example:5432/mlflow", "postgresql://user:***@db.example:5432/mlflow"),
    ("postgresql+psycopg2://user:p%40ss:word@db/mlflow?sslmode=require",
     "postgresql+psycopg2://user:***@db/mlflow?sslmode=require"),
    ("mysql://root:a@b@db/mlflow", "mysql://root:***@db/mlflow"),  # an unencoded @ in the password
    ("postgresql://db/mlflow?user=u&password=pw&sslmode=require", "postgresql://db/mlflow?user=u&password=***&sslmode=require"),
    ("http://alice@127.0.0.1:5000", "http://alice@127.0.0.1:5000"),  # a user without a password stays
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),  # host:port is not user:password
    ("http://127.0.0.1:5000/a:b@c", "http://127.0.0.1:5000/a:b@c"),  # nor is a path
    ("sqlite:////home/me/results/mlflow.db", "sqlite:////home/me/results/mlflow.db"),
    ("sqlite:///results/mlflow.db", "sqlite:///results/mlflow.db"),
    ("databricks://profile", "databricks://profile"),
])
def test_redact_hides_the_password_and_keeps_the_rest(uri, shown):
    assert redact(uri) == shown
    assert redact(shown) == shown
    assert hidden_password(redact(uri)) == (redact(uri) != uri)
    assert not hidden_password(uri)


def test_redact_finds_uris_inside_messages():
    message = ("API request to http://alice:s3cret@host:5000/api/2.0/mlflow/runs/get failed "
               "(backend 'postgresql://bob:hunter2@db/mlflow')")
    assert redact(message) == ("API request to http://alice:***@host:5000/api/2.0/mlflow/runs/get failed "
                               "(backend 'postgresql://bob:***@db/mlflow')")


def test_a_store_is_shown_without_its_password_and_connects_with_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = resolve("http://alice:s3cret@127.0.0.1:5000", None, tmp_path)
    assert store.uri == "http://alice:s3cret@127.0.0.1:5000"
    assert store.shown == "http://alice:***@127.0.0.1:5000"
    assert store.describe() == "http://alice:***@127.0.0.1:5000 (from --tracking-uri)"
    with pytest.raises(ConfigError) as refused:
        resolve("file://alice:s3cret@host/mlruns", None, tmp_path)
    assert SECRET not in str(refused.value) and "alice:***@host" in str(refused.value)


def test_a_saved_uri_without_its_password_asks_for_the_full_one(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match=r"tracking.uri http://alice:\*\*\*@h:1: its password was left out when it "
                                          r"was saved; pass the full URI with --tracking-uri"):
        resolve(None, "http://alice:***@h:1", tmp_path)
    assert resolve("http://alice:s3cret@h:1", "http://alice:***@h:1", tmp_path).uri == "http://alice:s3cret@h:1"


def test_an_unanswered_store_is_named_without_its_password(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = free_port()  # nothing listens there
    spec = sweep_spec(tmp_path)
    result = CliRunner().invoke(main, ["launch", str(spec), "--results-dir", str(tmp_path / "results"),
                                       "--tracking-uri", f"http://alice:{SECRET}@127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"tvae-sweep: error: --tracking-uri http://alice:***@127.0.0.1:{port}: no MLflow "
                                     f"server answers there (ConnectionError); start it or pass another --tracking-uri")
    assert SECRET not in result.output


# ---------------------------------------------------------------- a real server behind basic authentication


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AuthProxy:
    """Forwards every request to `upstream` if it carries basic auth alice:s3cret, else answers 401."""

    HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host",
           "authorization", "proxy-authorization", "te", "trailer", "upgrade"}

    def __init__(self, upstream: str, user: str, password: str):
        self.upstream = upstream
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.passed = self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def forward(self):
                if self.headers.get("Authorization") != proxy.expected:
                    proxy.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                proxy.passed += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in AuthProxy.HOP}
                answer = requests.request(self.command, proxy.upstream + self.path, headers=headers, data=body,
                                          timeout=120, allow_redirects=False)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in AuthProxy.HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite and a local artifact folder) and the authenticating proxy before it."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = root / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proxy = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        proxy = AuthProxy(f"http://127.0.0.1:{port}", "alice", SECRET)
        yield root, port, proxy
    finally:
        if proxy is not None:
            proxy.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def files_holding(folder: Path, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def check_runs_on_the_server(server_port: int, shown: str, tmp_path: Path) -> None:
    """The sweep's parent and trial runs are on the server, finished, their params, tags and logged
    spec without the password."""
    client = MlflowClient(f"http://127.0.0.1:{server_port}")
    experiment = client.get_experiment_by_name("redacted")
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get("tvae_sweep.role") == "trial"]
    assert len(runs) == 3 and len(trials) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    parent = next(r for r in runs if r.data.tags.get("tvae_sweep.role") == "sweep")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "spec.yaml" in artifacts
    logged_spec = client.download_artifacts(parent.info.run_id, "spec.yaml", str(tmp_path))
    assert yaml.safe_load(Path(logged_spec).read_text())["tracking"]["uri"] == shown
    for run in runs:  # params and tags, as MLflow serves them
        assert SECRET not in repr(run.data.params) + repr(run.data.tags) + repr(run.info)


def check_no_file_holds_the_password(results: Path, server_root: Path, ray_tmp: Path) -> None:
    """Not the results folder, the server's database and artifacts, nor Ray's session logs."""
    needle = SECRET.encode()
    assert len(list(results.rglob("*"))) > 20 and (results / "secret" / "tune").is_dir()
    assert files_holding(results, needle) == []
    assert (server_root / "mlflow.db").is_file() and any((server_root / "artifacts").rglob("*.png"))
    assert files_holding(server_root, needle) == []
    assert any(ray_tmp.rglob("*.log")) or any(ray_tmp.rglob("*.out")), "Ray wrote its logs elsewhere"
    assert files_holding(ray_tmp, needle) == []


@pytest.mark.slow
def test_a_sweep_tracked_through_an_authenticated_server_never_keeps_the_password(mlflow_server, tmp_path):
    server_root, server_port, proxy = mlflow_server
    uri = f"http://alice:{SECRET}@127.0.0.1:{proxy.port}"
    shown = f"http://alice:***@127.0.0.1:{proxy.port}"
    results = tmp_path / "results"
    spec = sweep_spec(tmp_path, search={"num_trials": 2, "max_concurrent": 1, "scheduler": "fifo"},
                      train={"epochs": 1}, tracking={"uri": uri, "experiment": "redacted"})
    ray_tmp = Path(tempfile.mkdtemp(prefix="tvae-ray-"))  # short: Ray's socket paths live under it
    env = cli_env(RAY_TMPDIR=str(ray_tmp))
    env.pop("MLFLOW_TRACKING_URI", None)
    printed = []
    try:
        def cli(*args, code=0):
            proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)
            printed.append(proc.stdout + proc.stderr)
            assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]
            return proc

        launched = cli("launch", spec, "--name", "secret", "--results-dir", results, "--tracking-uri", uri)
        assert f"store {shown} (from --tracking-uri)" in launched.stdout
        reported = cli("report", "secret", "--results-dir", results, "--tracking-uri", uri)
        assert f"store {shown}" in reported.stdout
        ui = cli("ui", "secret", "--results-dir", results, "--tracking-uri", uri)
        assert f"sweep secret: {shown}/#/experiments/" in ui.stdout
        # the saved spec has no password: a resume asks for the full URI instead of trying a wrong one
        again = cli("resume", "secret", "--results-dir", results, code=2)
        assert again.stderr.strip().splitlines() == [
            f"tvae-sweep: error: tracking.uri {shown}: its password was left out when it was saved; pass the full "
            "URI with --tracking-uri or $MLFLOW_TRACKING_URI"]
        saved = yaml.safe_load((results / "secret" / "spec.yaml").read_text())
        assert saved["tracking"]["uri"] == shown

        # the runs reached MLflow through the proxy, with the password, and never without it
        assert proxy.passed > 0 and proxy.refused == 0
        check_runs_on_the_server(server_port, shown, tmp_path)
        # and the password is in no file and no printed line
        check_no_file_holds_the_password(results, server_root, ray_tmp)
        for text in printed:
            assert SECRET not in text, text[-3000:]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
