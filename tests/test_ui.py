"""`tvae-sweep ui`: a real MLflow server on the shared tracked sweep, its REST API, and the page in
headless Chromium (Debian's chromium, driven by Playwright)."""
from __future__ import annotations

import queue
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import ctrl_c_as_from_a_terminal
from test_tracking import CLI, NAME, cli, env, shared_sweep

from tvae_sweep.tracking.store import Store
from tvae_sweep.tracking.ui import command

pytestmark = pytest.mark.cost(21)  # seconds on 2 cores (measured): costliest files first

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 240  # the server starts in seconds on a quiet machine, far slower on a busy one


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return shared_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def server(sweep, tmp_path_factory):
    """`tvae-sweep ui NAME` running; yields (base URL, {label: URL}); stopped with Ctrl-C after."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "server.log"
    proc = subprocess.Popen([*CLI, "ui", NAME, "--port", str(port), "--results-dir", sweep["results"]],
                            stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env(),
                            preexec_fn=ctrl_c_as_from_a_terminal)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    urls, seen, deadline = {}, [], time.monotonic() + START_TIMEOUT_S
    while "Ctrl-C" not in "".join(seen):
        assert proc.poll() is None, "".join(seen) + log.read_text()[-3000:]
        assert time.monotonic() < deadline, "".join(seen) + log.read_text()[-3000:]
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if ": http://" in line:
            label, _, url = line.strip().partition(": ")
            urls[label] = url
    yield f"http://127.0.0.1:{port}", urls
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert not port_open(port), "the MLflow server outlived `tvae-sweep ui`"


@pytest.mark.slow
def test_ui_prints_the_sweep_page_on_localhost(server):
    base, urls = server
    page = urls[f"sweep {NAME}"]
    assert page.startswith(base + "/#/experiments/") and "workflowType=machine_learning" in page
    assert requests.get(base + "/", timeout=30).status_code == 200


@pytest.mark.slow
def test_rest_api_lists_the_sweep_runs(server, sweep):
    base, _ = server
    experiment = requests.get(f"{base}/api/2.0/mlflow/experiments/get-by-name",
                              params={"experiment_name": NAME}, timeout=60).json()["experiment"]
    found = requests.post(f"{base}/api/2.0/mlflow/runs/search",
                          json={"experiment_ids": [experiment["experiment_id"]], "max_results": 100}, timeout=60)
    assert found.ok, found.text
    runs = found.json()["runs"]
    names = {r["info"]["run_name"] for r in runs}
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    trials = {t.get("tvae_sweep.trial_id") for t in tags} - {None}
    assert NAME in names and len(trials) == 3 and names == {NAME, *(f"trial-{t}" for t in trials)}
    assert "RUNNING" not in {r["info"]["status"] for r in runs}


@pytest.mark.slow
def test_experiment_page_in_headless_chromium(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium: apt-get install chromium")
    base, urls = server
    runs = requests.post(f"{base}/api/2.0/mlflow/runs/search",
                         json={"experiment_ids": [urls[f"sweep {NAME}"].split("/experiments/")[1].split("/")[0]]},
                         timeout=60).json()["runs"]
    trial_names = sorted(r["info"]["run_name"] for r in runs if r["info"]["run_name"] != NAME)
    shot = tmp_path / "experiment.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(urls[f"sweep {NAME}"])
            parent = page.get_by_role("link", name=NAME, exact=True).first
            parent.wait_for(timeout=120_000)
            # child runs are folded under their parent: open it
            page.locator("[role=row]", has=parent).first.locator("[role=gridcell] button").first.click()
            for name in trial_names:
                page.get_by_role("link", name=name, exact=True).wait_for(timeout=60_000)
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


@pytest.mark.slow
def test_exposed_host_warns_and_a_busy_port_is_a_one_line_error(sweep, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("ui", NAME, "--host", "0.0.0.0", "--port", port, "--results-dir", sweep["results"])
    assert result.exit_code == 2, result.output
    assert "reachable from other machines" in result.stderr and "Accepted Host headers" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"tvae-sweep: error: --port {port}: cannot listen")


@pytest.mark.slow
def test_unknown_sweep_is_a_one_line_error(sweep):
    result = cli("ui", "no-such-sweep", "--results-dir", sweep["results"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"tvae-sweep: error: no sweep named 'no-such-sweep' in {sweep['results']} "
                                     f"(`tvae-sweep list` shows them)")


def test_server_command_matches_the_store_and_guards_exposure(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/mlflow.db", "default", (tmp_path / "mlartifacts").as_uri())
    local, env = command(store, "127.0.0.1", 5000, None)
    assert env == {"MLFLOW_BACKEND_STORE_URI": store.uri, "MLFLOW_DEFAULT_ARTIFACT_ROOT": store.artifact_root,
                   "MLFLOW_ARTIFACTS_DESTINATION": store.artifact_root}
    assert "--allowed-hosts" not in local
    # a database URI with a password stays out of the command line that `ps` shows everyone
    secret = Store("postgresql://sweeper:s3cret@db.example.org/mlflow", "--tracking-uri", None)
    cmd, env = command(secret, "127.0.0.1", 5000, None)
    assert env == {"MLFLOW_BACKEND_STORE_URI": secret.uri} and "s3cret" not in " ".join(cmd)
    exposed, _ = command(store, "0.0.0.0", 5000, "ui.example.org")
    assert exposed[exposed.index("--allowed-hosts") + 1] == "ui.example.org"
