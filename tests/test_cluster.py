"""Clusters: a real two-node Ray cluster started with `ray start` on this machine (token
authentication, one logical GPU on the head), sweeps launched against it with --address, the
storage rule, failures to join, and mechanical checks of the files in cluster/.

The cluster's processes run in sessions of their own and are stopped by process id at the end (not
`ray stop`, which stops every Ray process on the machine, other people's included).
"""
from __future__ import annotations

import copy
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from sweeps import cli_env, run_cli, sweep_spec, trials

from tvae_sweep.config import ConfigError
from tvae_sweep.sweep.cluster import host_port, join_error, node_local
from tvae_sweep.sweep.validation import load_spec

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT_S = 120
MAX_UNIX_SOCKET = 107  # Ray's socket paths live under --temp-dir ...
SESSION_SOCKET = 66  # ... as /session_<date>_<time>_<pid>/sockets/plasma_store.N

# ---------------------------------------------------------------- a two-node cluster on this machine

# Put on the nodes' PYTHONPATH: a GPU cannot exist on this CPU-only machine, so while the file `on`
# exists in $TVAE_TEST_FAKE_GPU, a trial that asked for a GPU runs on the CPU instead of refusing,
# and records the GPU ids Ray assigned it and when it ran.
SITECUSTOMIZE = '''
import importlib.abc
import importlib.machinery
import json
import os
import time
import uuid

ROOT = os.environ["TVAE_TEST_FAKE_GPU"]
TARGET = "tvae_sweep.sweep.trainable"


def _patch(module):
    real_device, real_train = module.trial_device, module.train_trial
    record = {}

    def trial_device(gpus):
        if not os.path.exists(os.path.join(ROOT, "on")):
            return real_device(gpus)
        import ray
        import torch
        from ray import tune

        record.clear()
        record.update(trial_id=tune.get_context().get_trial_id(), gpus=gpus,
                      gpu_ids=[str(i) for i in ray.get_gpu_ids()],
                      cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                      node_id=ray.get_runtime_context().get_node_id(), start=time.time())
        return torch.device("cpu")

    def train_trial(*args, **kwargs):
        try:
            return real_train(*args, **kwargs)
        finally:
            if record:
                record["end"] = time.time()
                path = os.path.join(ROOT, "records", uuid.uuid4().hex + ".json")
                with open(path, "w") as f:
                    json.dump(record, f)
                record.clear()

    module.trial_device, module.train_trial = trial_device, train_trial


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


import sys

sys.meta_path.insert(0, _PatchOnImport())
'''

NODES_SCRIPT = '''
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
print(json.dumps([{"id": n["NodeID"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]]))
'''

NO_GPU_SCRIPT = '''
import json, os, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")

@ray.remote(num_gpus=0.5, num_cpus=0)
def attempt():
    from tvae_sweep.sweep.trainable import trial_device
    try:
        return {"device": str(trial_device(0.5))}
    except RuntimeError as e:
        return {"error": str(e), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

print(json.dumps(ray.get(attempt.remote(), timeout=120)))
'''


def free_port_block(size: int) -> int:
    """A run of `size` ports, free now, below Linux's ephemeral range (so no outgoing connection
    takes one meanwhile)."""
    for _ in range(50):
        base = random.randrange(20000, 32000 - size)
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no block of free ports")


def descendants(pid: int) -> list[int]:
    """Every process below pid, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class LocalCluster:
    """A head and more nodes, each a `ray start --block` in a session of its own, sharing one token."""

    def __init__(self, root: Path, temp_dir: Path):
        self.root = root
        self.own_temp = None
        if len(str(temp_dir)) + SESSION_SOCKET > MAX_UNIX_SOCKET:  # too deep for Ray's sockets
            temp_dir = self.own_temp = Path(tempfile.mkdtemp(prefix="tvae-ray-"))
        self.temp_dir = temp_dir
        self.token = root / "auth_token"
        self.token.write_text(os.urandom(32).hex())
        self.token.chmod(0o600)
        self.fake_gpu = root / "fake_gpu"
        (self.fake_gpu / "site").mkdir(parents=True)
        (self.fake_gpu / "records").mkdir()
        (self.fake_gpu / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.procs: list[subprocess.Popen] = []
        from ray._private.services import get_node_ip_address

        self.ip = get_node_ip_address()
        self.address = ""  # the head's, once started
        self.head_id = ""  # Ray node ids, once the nodes joined
        self.node_ids: set[str] = set()

    # what a driver needs to join: the address, token mode and the token
    def driver_env(self) -> dict:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token)}

    def _node_env(self) -> dict:
        env = cli_env(**self.driver_env(), TVAE_TEST_FAKE_GPU=str(self.fake_gpu))
        env.pop("RAY_AUTH_TOKEN", None)
        paths = [str(self.fake_gpu / "site"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        return env

    def _start(self, args: list[str], name: str) -> None:
        base = free_port_block(60)
        ports = iter(range(base, base + 8))
        args += ["--node-manager-port", next(ports), "--object-manager-port", next(ports),
                 "--dashboard-agent-listen-port", next(ports), "--dashboard-agent-grpc-port", next(ports),
                 "--runtime-env-agent-port", next(ports), "--metrics-export-port", next(ports),
                 "--min-worker-port", base + 10, "--max-worker-port", base + 59,
                 "--temp-dir", self.temp_dir, "--object-store-memory", 100_000_000,
                 "--disable-usage-stats"]
        if not self.address:
            args += ["--port", next(ports), "--dashboard-port", next(ports)]
        log = self.root / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([str(RAY), "start", "--block", *map(str, args)], env=self._node_env(),
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        deadline = time.time() + START_TIMEOUT_S
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray start ({name}) did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        if not self.address:
            self.address = f"{self.ip}:{args[args.index('--port') + 1]}"

    def start_head(self, num_cpus: int, num_gpus: int) -> None:
        self._start(["--head", "--include-dashboard", "false", "--num-cpus", num_cpus, "--num-gpus", num_gpus],
                    "head")

    def add_node(self, num_cpus: int) -> None:
        self._start(["--address", self.address, "--num-cpus", num_cpus, "--num-gpus", 0], f"node{len(self.procs)}")

    def nodes(self) -> list[dict]:
        proc = subprocess.run([sys.executable, "-c", NODES_SCRIPT, self.address], capture_output=True, text=True,
                              timeout=120, env=cli_env(**self.driver_env()))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, count: int) -> list[dict]:
        deadline = time.time() + START_TIMEOUT_S
        while len(nodes := self.nodes()) < count:
            assert time.time() < deadline, f"{len(nodes)} of {count} nodes joined"
            time.sleep(2)
        return nodes

    def fake_gpu_on(self, on: bool) -> None:
        flag = self.fake_gpu / "on"
        flag.touch() if on else flag.unlink(missing_ok=True)

    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.fake_gpu / "records").glob("*.json"))]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to each node's session and every process it started."""
        pids = {pid for proc in self.procs for pid in [proc.pid, *descendants(proc.pid)]}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.procs:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + (3 if sig == signal.SIGTERM else 10)
            while any(alive(pid) for pid in pids) and time.time() < deadline:
                time.sleep(0.2)
        for proc in self.procs:
            proc.wait(timeout=10)
        left = [pid for pid in pids if alive(pid)]
        assert not left, f"Ray processes still running: {left}"
        if self.own_temp is not None:
            shutil.rmtree(self.own_temp, ignore_errors=True)


HEAD_RESOURCE = "node:__internal_head__"


@contextmanager
def two_node_cluster(cls, tmp_path_factory, head_gpus: int, node_cpus: int):
    """A head of one CPU (and `head_gpus` logical GPUs) and a second node of `node_cpus` CPUs, as
    separate `ray start` process trees of class `cls`; head_id and node_ids name them."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the test cluster reads /proc")
    cluster = cls(tmp_path_factory.mktemp("cluster"), tmp_path_factory.mktemp("r"))
    try:
        cluster.start_head(num_cpus=1, num_gpus=head_gpus)
        cluster.add_node(num_cpus=node_cpus)
        nodes = cluster.wait_for_nodes(2)
        cluster.head_id = next(n["id"] for n in nodes if HEAD_RESOURCE in n["resources"])
        cluster.node_ids = {n["id"] for n in nodes}
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    with two_node_cluster(LocalCluster, tmp_path_factory, head_gpus=1, node_cpus=2) as cluster:
        yield cluster


def launch(cluster: LocalCluster, spec: Path, results: Path, name: str, *args, **env):
    return run_cli("launch", spec, "--address", cluster.address, "--name", name, "--results-dir", results,
                   *args, **{**cluster.driver_env(), **env})


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("tvae-sweep: error:")]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


@pytest.mark.slow
def test_sweep_spreads_trials_over_both_nodes_with_shared_storage(ray_cluster, tmp_path):
    shared = tmp_path / "shared"  # both nodes are this machine: a folder they all read
    spec = sweep_spec(tmp_path, search={"num_trials": 3, "max_concurrent": 3, "scheduler": "fifo"},
                      train={"epochs": 2}, tracking={"enabled": False},
                      storage={"path": str(shared), "shared": True},
                      resources={"reuse_actors": False})  # placed by Ray's scheduler, not a reused worker
    results = tmp_path / "results"
    proc = launch(ray_cluster, spec, results, "spread")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = trials(results, "spread")
    assert len(frame) == 3 and set(frame["state"]) == {"TERMINATED"}
    assert set(frame["node_id"]) == ray_cluster.node_ids  # trials on the head and on the second node
    assert all(str(c).startswith(str(shared / "spread")) for c in frame["checkpoint"])
    state = json.loads((results / "spread" / "sweep.json").read_text())
    assert state["experiment_path"] == str(shared / "spread") and state["status"] == "finished"


@pytest.mark.slow
def test_gpu_fractions_share_the_logical_gpu_two_trials_at_a_time(ray_cluster, tmp_path):
    spec = sweep_spec(tmp_path, search={"num_trials": 4, "max_concurrent": 4, "scheduler": "fifo"},
                      train={"epochs": 2}, tracking={"enabled": False},
                      resources={"cpus_per_trial": 0.25, "gpus_per_trial": 0.5},
                      storage={"path": str(tmp_path / "shared"), "shared": True})
    results = tmp_path / "results"
    ray_cluster.fake_gpu_on(True)
    try:
        proc = launch(ray_cluster, spec, results, "fractions")
    finally:
        ray_cluster.fake_gpu_on(False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frame = trials(results, "fractions")
    assert len(frame) == 4 and set(frame["state"]) == {"TERMINATED"}
    assert set(frame["node_id"]) == {ray_cluster.head_id}  # the only node with a GPU
    records = ray_cluster.records()
    assert sorted(r["trial_id"] for r in records) == sorted(frame["trial_id"])
    for r in records:  # what Ray assigned: GPU 0 of the head, half of it
        assert r["gpus"] == 0.5 and r["gpu_ids"] == ["0"] and r["cuda_visible_devices"] == "0"
        assert r["node_id"] == ray_cluster.head_id
    # 1 GPU / 0.5 per trial: never more than two at once (CPUs would allow four), and two did share it
    assert max_overlap([(r["start"], r["end"]) for r in records]) == 2


@pytest.mark.slow
def test_a_trial_that_asked_for_a_gpu_and_sees_none_refuses_to_run(ray_cluster):
    proc = subprocess.run([sys.executable, "-c", NO_GPU_SCRIPT, ray_cluster.address], capture_output=True,
                          text=True, timeout=180, env=cli_env(**ray_cluster.driver_env()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "device" not in result, "ran on the CPU instead of refusing"
    assert result["cuda_visible_devices"] == "0"  # Ray gave it GPU 0; torch here has no CUDA
    assert "asked for 0.5 GPU but this worker sees none" in result["error"]
    assert "refusing to run on the CPU" in result["error"]


@pytest.mark.slow
def test_node_local_storage_is_refused_on_two_nodes_before_any_trial(ray_cluster, tmp_path):
    spec = sweep_spec(tmp_path, search={"num_trials": 2}, tracking={"enabled": False})
    results = tmp_path / "results"
    started = time.time()
    proc = launch(ray_cluster, spec, results, "local")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    [line] = error_lines(proc)
    assert f"storage.path: the default {results / 'local'}" in line
    assert "this Ray cluster has 2 nodes" in line
    assert "every node and the driver can read them" in line
    assert "s3://" in line and "storage.shared: true" in line
    assert not (results / "local").exists()  # refused before anything was written or started
    assert time.time() - started < 120

    plain = sweep_spec(tmp_path, name="plain.yaml", storage={"path": str(tmp_path / "mine")},
                       tracking={"enabled": False})
    proc = launch(ray_cluster, plain, results, "plain")
    assert proc.returncode == 2 and f"storage.path: {tmp_path / 'mine'} is a folder" in error_lines(proc)[0]


@pytest.mark.slow
def test_a_driver_without_the_clusters_token_is_told_how_to_join(ray_cluster, tmp_path):
    spec = sweep_spec(tmp_path, tracking={"enabled": False})
    proc = launch(ray_cluster, spec, tmp_path / "results", "token", RAY_AUTH_TOKEN="0" * 64)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    [line] = error_lines(proc)
    assert f"--address {ray_cluster.address}: the cluster refused this driver's token" in line
    assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN_PATH" in line


# ---------------------------------------------------------------- joining: no cluster there


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again once the socket is


def test_an_unreachable_address_fails_within_seconds(monkeypatch):
    import ray

    from tvae_sweep.sweep.launch import connect

    assert not ray.is_initialized()
    address = f"127.0.0.1:{closed_port()}"
    started = time.time()
    with pytest.raises(ConfigError, match=rf"--address {address}: no Ray cluster answers .*connection refused"):
        connect(address)
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ConfigError, match=rf"RAY_ADDRESS {address}: no Ray cluster answers"):
        connect(None)
    assert time.time() - started < 5
    assert not ray.is_initialized()


@pytest.mark.slow
def test_launch_against_an_unreachable_address_is_one_line_and_exit_2(tmp_path):
    spec = sweep_spec(tmp_path, tracking={"enabled": False})
    address = f"127.0.0.1:{closed_port()}"
    proc = run_cli("launch", spec, "--address", address, "--results-dir", tmp_path / "results", timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"tvae-sweep: error: --address {address}: no Ray cluster answers at {address} (connection refused); "
        f"start one with `ray start --head --port {address.split(':')[1]}`, or check the host and port"]


def test_addresses_are_parsed_or_named_wrong():
    assert host_port("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert host_port("ray://head.example:10001") == ("head.example", 10001)
    assert host_port("[fd00::2]:6379") == ("fd00::2", 6379)
    assert host_port("auto") is None
    with pytest.raises(ConfigError, match="RAY_ADDRESS 'head': not a Ray address; use HOST:PORT"):
        host_port("head", "RAY_ADDRESS")


def test_join_errors_name_the_fix():
    def chain(outer: str, inner: str) -> Exception:
        try:
            try:
                raise RuntimeError(inner)
            except RuntimeError as e:
                raise ConnectionError(outer) from e
        except ConnectionError as e:
            return e

    refused = chain("Failed to connect to Ray cluster at 10.0.0.5:6379",
                    "RPC error: InvalidAuthToken: Authentication token is missing or incorrect")
    assert "refused this driver's token" in str(join_error("10.0.0.5:6379", "--address", refused))
    other = chain("Failed to connect to Ray cluster at 10.0.0.5:6379", "GCS gone")
    assert str(join_error("10.0.0.5:6379", "--address", other)) == (
        "--address 10.0.0.5:6379: cannot join the Ray cluster there (Failed to connect to Ray cluster at 10.0.0.5:6379)")


# ---------------------------------------------------------------- the storage rule


@pytest.mark.parametrize("storage, local", [
    ({}, True),
    ({"path": "/data/sweeps"}, True),
    ({"path": "file:///data/sweeps"}, True),
    ({"path": "/nfs/sweeps", "shared": True}, False),
    ({"path": "file:///nfs/sweeps", "shared": True}, False),
    ({"path": "s3://bucket/sweeps"}, False),
    ({"path": "gs://bucket/sweeps"}, False),
    ({"path": "abfss://sweeps@account.dfs.core.windows.net/tvae"}, False),
])
def test_which_storage_only_one_machine_can_read(tmp_path, storage, local):
    spec = load_spec(sweep_spec(tmp_path, storage=storage))
    assert node_local(spec) is local


@pytest.mark.parametrize("storage, message", [
    ({"shared": True}, "storage.shared: true needs storage.path, the folder every node mounts"),
    ({"path": "s3://bucket/x", "shared": True}, "storage.shared: s3://bucket/x is an object store URI"),
])
def test_shared_needs_a_folder(tmp_path, storage, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_spec(sweep_spec(tmp_path, storage=storage))


# ---------------------------------------------------------------- the files in cluster/


def yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests() -> list[tuple[Path, dict]]:
    files = sorted((CLUSTER / "kuberay").glob("*.yaml")) + sorted((CLUSTER / "mlflow").glob("*.yaml"))
    assert files
    return [(f, doc) for f in files for doc in yaml_docs(f)]


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_ray_up_configs_pass_rays_own_validation(name):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / name).read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)
    config = prepare_config(copy.deepcopy(raw))  # what `ray up` does before it calls the cloud
    validate_config(config)

    types = config["available_node_types"]
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu = [k for k, v in workers.items()
           if v["resources"].get("GPU") or v["node_config"].get("guestAccelerators")
           or re.match(r"(g\d|p\d)", v["node_config"].get("InstanceType", v["node_config"].get("machineType", "")))]
    assert gpu, "no GPU worker type"
    assert all(workers[k]["max_workers"] > workers[k]["min_workers"] for k in gpu)  # the autoscaler grows them
    assert config["max_workers"] >= max(workers[k]["max_workers"] for k in gpu)
    # setup installs this project from the copied checkout with constraints.txt
    assert config["file_mounts"]["~/tvae-sweep"] == "."
    assert any("cluster/install.sh" in c for c in config["setup_commands"])
    # token authentication on every node
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token ray start" in c for c in config[key])


def test_install_script_pins_with_constraints():
    text = (CLUSTER / "install.sh").read_text()
    assert '--constraint "$REPO/constraints.txt"' in text and '--editable "$REPO"' in text


@pytest.mark.parametrize("path", sorted(p.relative_to(CLUSTER) for p in CLUSTER.rglob("*")
                                        if p.suffix in (".sh", ".sbatch")), ids=str)
def test_shell_scripts_parse(path):
    proc = subprocess.run(["bash", "-n", str(CLUSTER / path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_slurm_script_starts_ray_over_the_allocation_and_runs_a_sweep():
    text = (CLUSTER / "slurm" / "sweep.sbatch").read_text()
    assert re.search(r"^#SBATCH --nodes=\d+", text, re.M)
    assert "ray start --head --block" in text and "ray start --block --address=" in text
    assert text.count("srun ") >= 2 and "RAY_AUTH_MODE=token" in text
    assert 'tvae-sweep launch "$SPEC" --address "$ADDRESS"' in text
    assert "storage.shared=true" in text


def test_kubernetes_manifests_have_their_required_fields():
    docs = manifests()
    names = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    for path, doc in docs:
        where = f"{path.name}: {doc.get('kind')}"
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), where
        spec = doc.get("spec") or {}
        kind = doc["kind"]
        if kind == "RayCluster":
            check_ray_cluster_spec(spec, where)
        elif kind == "RayJob":
            assert spec["entrypoint"], where
            selector = spec.get("clusterSelector", {}).get("ray.io/cluster")
            assert spec.get("rayClusterSpec") or ("RayCluster", selector) in names, where
            if spec.get("rayClusterSpec"):
                check_ray_cluster_spec(spec["rayClusterSpec"], where)
        elif kind in ("Deployment", "StatefulSet"):
            labels = spec["template"]["metadata"]["labels"]
            assert spec["selector"]["matchLabels"].items() <= labels.items(), where
            assert all(c["name"] and c["image"] for c in spec["template"]["spec"]["containers"]), where
            if kind == "StatefulSet":
                assert ("Service", spec["serviceName"]) in names and spec["volumeClaimTemplates"], where
        elif kind == "Service":
            assert all(p["port"] for p in spec["ports"]), where
            selected = [d for _, d in docs if d["kind"] in ("Deployment", "StatefulSet")
                        and spec["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
            assert selected, f"{where} selects no pods"
        elif kind == "PersistentVolumeClaim":
            assert spec["accessModes"] and spec["resources"]["requests"]["storage"], where
        assert kind != "Secret", f"{where}: secrets are referenced, never written in the manifests"


def check_ray_cluster_spec(spec: dict, where: str) -> None:
    import ray

    assert spec["rayVersion"] == ray.__version__, where
    assert spec["authOptions"]["mode"] == "token", where
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and head["template"]["spec"]["containers"][0]["image"], where
    groups = spec["workerGroupSpecs"]
    for g in groups:
        assert g["groupName"] and isinstance(g["rayStartParams"], dict), where
        assert 0 <= g["minReplicas"] <= g["maxReplicas"], where
        assert g["template"]["spec"]["containers"][0]["image"], where
    gpu = [g for g in groups if any(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
                                    for c in g["template"]["spec"]["containers"])]
    assert gpu and spec.get("enableInTreeAutoscaling"), f"{where}: no autoscaled GPU worker group"


def test_secrets_in_manifests_come_by_reference():
    for path, doc in manifests():
        for container in _containers(doc):
            for var in container.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|KEY_ID", var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), f"{path.name}: {var['name']}"


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec") or {}
    templates = [spec.get("template")] if "template" in spec else []
    cluster = spec.get("rayClusterSpec") or (spec if doc["kind"] == "RayCluster" else None)
    if cluster:
        templates += [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    return [c for t in templates for c in t["spec"]["containers"]]


def test_rayjob_entrypoint_is_a_real_tvae_sweep_command():
    from tvae_sweep.cli import main

    [job] = [d for _, d in manifests() if d["kind"] == "RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    scripts = __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts and scripts[argv[0]] == "tvae_sweep.cli:entry_point"
    assert argv[1] in main.commands
    command = main.commands[argv[1]]
    with command.make_context(argv[1], argv[2:], resilient_parsing=False) as ctx:  # click parses it
        params = ctx.params
    assert (ROOT / params["spec_path"]).is_file() and str(params["spec_path"]).startswith("search_spaces/")
    spec = load_spec(ROOT / params["spec_path"], list(params["overrides"]))  # the spec, overridden, is valid
    assert not node_local(spec), "a multi-node sweep needs an object store or a shared folder"
    assert spec.resources.gpus_per_trial > 0


def test_mlflow_server_has_postgres_artifacts_and_allowed_hosts():
    docs = yaml_docs(CLUSTER / "mlflow" / "mlflow.yaml")
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = " ".join(container["args"])
    assert "--backend-store-uri=postgresql://" in args and "@mlflow-postgres:5432/" in args
    assert "--artifacts-destination=s3://" in args and "--serve-artifacts" in args
    hosts = re.search(r"--allowed-hosts=(\S+)", args).group(1).split(",")
    assert "mlflow:5000" in hosts and "*" not in hosts
    assert {d["kind"] for d in docs} >= {"StatefulSet", "Service", "Deployment"}


def test_dockerfile_builds_cuda_images_with_the_pinned_versions():
    text = (CLUSTER / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    bases = [args.get(m[2:-1], m) if m.startswith("$") else m
             for m in re.findall(r"^FROM (\S+) AS sweep", text, re.M)]
    assert bases and bases[0].startswith("nvidia/cuda:") and "cudnn" in bases[0]
    assert "COPY constraints.txt" in text
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all("--constraint" in line for line in installs)
    assert "torch.version.cuda" in text  # the build fails on a torch without CUDA
    assert re.search(r"^FROM \S+ AS mlflow", text, re.M)
    assert re.search(r"psycopg2-binary==[\d.]+ boto3==[\d.]+", text)


def test_readme_explains_every_file_ports_auth_and_storage():
    readme = (CLUSTER / "README.md").read_text()
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert str(path.relative_to(CLUSTER)) in readme, f"README does not explain {path.relative_to(CLUSTER)}"
    for needle in ("6379", "8265", "5000", "5432", "RAY_AUTH_MODE=token", "ray get-auth-token", "--allowed-hosts",
                   "shared: true", "s3://"):
        assert needle in readme, needle
