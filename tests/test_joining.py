"""Joining a Ray cluster and the storage rule, without a cluster: addresses parsed or named wrong, the
errors of a refused join, an address where nothing listens, and which storage only one machine reads."""
from __future__ import annotations

import re
import socket
import time

import pytest
import ray
from sweeps import run_cli, sweep_spec

from tvae_sweep.config import ConfigError
from tvae_sweep.sweep.cluster import host_port, join_error, node_local
from tvae_sweep.sweep.launch import connect
from tvae_sweep.sweep.validation import load_spec


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again once the socket is


def test_an_unreachable_address_fails_within_seconds(monkeypatch):
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
        "--address 10.0.0.5:6379: cannot join the Ray cluster there "
        "(Failed to connect to Ray cluster at 10.0.0.5:6379)")


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
