"""A real Ray cluster of several nodes on this machine, each a `ray start` in a session of its own,
for the tests of clusters, GPU placement and node failures.

The nodes run with token authentication and TVAE_SWEEP_FAKE_GPU (tvae_sweep/sweep/fake_gpu.py): a
GPU cannot exist on this CPU-only machine, so a trial that asked for one runs on the CPU and records
the GPU ids Ray assigned it. The cluster's processes are stopped by process id at the end (not
`ray stop`, which stops every Ray process on the machine, other people's included).
"""
from __future__ import annotations

import json
import os
import random
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
from ray._private.services import get_node_ip_address
from sweeps import cli_env, run_cli

from tvae_sweep.sweep.fake_gpu import ENV as FAKE_GPU

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT_S = 120
MAX_UNIX_SOCKET = 107  # Ray's socket paths live under --temp-dir ...
SESSION_SOCKET = 66  # ... as /session_<date>_<time>_<pid>/sockets/plasma_store.N

NODES_SCRIPT = '''
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
print(json.dumps([{"id": n["NodeID"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]]))
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
        self.fake_gpu = root / "fake_gpu"  # the trials' placement records (tvae_sweep/sweep/fake_gpu.py)
        self.fake_gpu.mkdir()
        self.procs: list[subprocess.Popen] = []
        self.ip = get_node_ip_address()
        self.address = ""  # the head's, once started
        self.head_id = ""  # Ray node ids, once the nodes joined
        self.node_ids: set[str] = set()

    # what a driver needs to join: the address, token mode and the token
    def driver_env(self) -> dict:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token)}

    def _node_env(self) -> dict:
        env = cli_env(**self.driver_env(), **{FAKE_GPU: str(self.fake_gpu)})
        env.pop("RAY_AUTH_TOKEN", None)
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

    def records(self) -> list[dict]:
        """Where the trials that asked for a GPU ran, each as its trial wrote it."""
        return [json.loads(p.read_text()) for p in sorted(self.fake_gpu.glob("*.json"))]

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
