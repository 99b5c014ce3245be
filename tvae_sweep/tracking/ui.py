"""`tvae-sweep ui`: the MLflow UI on the sweeps' store, as an `mlflow server` subprocess.

It binds 127.0.0.1 unless told otherwise. Bound to another address the UI has no login, so a
warning is printed and MLflow's allowed-hosts check is given the names this machine answers to.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import requests

from ..config import ConfigError
from .store import Store

LOCAL = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT_S = 90


def exposed(host: str) -> bool:
    return host not in LOCAL


def default_allowed_hosts(host: str) -> str:
    """Host headers to accept when the UI is reachable from other machines."""
    names = {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
    if host not in ("0.0.0.0", "::"):
        names.add(host)
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return ",".join(sorted(n for name in names for n in (name, f"{name}:*")))


def command(store: Store, host: str, port: int, allowed_hosts: str | None) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and the environment that names its stores: a URI in the
    environment, unlike one on the command line, is not shown to every user of the machine by `ps`."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1"]
    env = {"MLFLOW_BACKEND_STORE_URI": store.uri}
    if store.artifact_root:
        # new experiments made in the UI, and proxied uploads, go where the sweeps' artifacts are
        env |= {"MLFLOW_DEFAULT_ARTIFACT_ROOT": store.artifact_root,
                "MLFLOW_ARTIFACTS_DESTINATION": store.artifact_root}
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    return cmd, env


def url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); "
                              "pass another --port") from None


def wait_until_up(process: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"the MLflow server stopped at start (exit code {process.returncode}); "
                              f"see its messages above")
        try:
            if requests.get(f"{base}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop(process)
    raise ConfigError(f"the MLflow server did not answer at {base} within {START_TIMEOUT_S} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def page_url(base: str, page: str) -> str:
    return f"{base}/#{page}"


def experiment_page(experiment_id: str, run_id: str | None = None) -> str:
    """The runs table of an experiment (in the UI's model-training view), or one run's page."""
    if run_id:
        return f"/experiments/{experiment_id}/runs/{run_id}"
    return f"/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(store: Store, host: str, port: int, allowed_hosts: str | None, pages: list[tuple[str, str]],
          echo=print, warn=print) -> int:
    """Runs the MLflow server until Ctrl-C or SIGTERM (or until it stops by itself).

    `pages` are (label, path after '#') pairs printed once the server answers."""
    if exposed(host):
        allowed_hosts = allowed_hosts or default_allowed_hosts(host)
        warn(f"tvae-sweep: warning: the MLflow UI on {host}:{port} is reachable from other machines and has no "
             f"login: whoever reaches it can read and change every run. Accepted Host headers: {allowed_hosts}")
    check_port(host, port)
    cmd, stores = command(store, host, port, allowed_hosts)
    env = {**os.environ, **stores}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # background jobs serve GenAI features only
    previous = signal.signal(signal.SIGTERM, _interrupt)
    process = subprocess.Popen(cmd, stdout=sys.stderr, env=env,
                               start_new_session=True)  # its own group: stopped as a whole below
    local = "127.0.0.1" if host == "0.0.0.0" else "[::1]" if host == "::" else url_host(host)
    base = f"http://{url_host(host)}:{port}"
    try:
        wait_until_up(process, f"http://{local}:{port}")
        for label, page in pages or [("MLflow UI", "/")]:
            echo(f"{label}: {page_url(base, page)}")
        echo(f"store: {store.describe()}; Ctrl-C stops the server")
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(process)
        signal.signal(signal.SIGTERM, previous)
