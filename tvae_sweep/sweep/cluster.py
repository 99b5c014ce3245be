"""Running on a Ray cluster: is anything answering at the address, why a join failed, and can every
node reach the sweep's storage.

Ray itself retries an unreachable address for minutes and reports a refused token as a generic
connection failure; these checks turn both into one line that says what to fix, and refuse storage
that only the driver's machine can read before any trial starts.
"""
from __future__ import annotations

import socket
from pathlib import Path

import ray
from ray.util.client import ray as client

from ..config import ConfigError, Setting
from .layout import SweepDir
from .spec import SweepSpec

ADDRESS = Setting("--address", "RAY_ADDRESS")  # else none: a cluster on this machine, for this command
REACH_TIMEOUT_S = 5.0
LOCAL_ADDRESSES = ("auto", "local")  # Ray finds (or starts) the cluster on this machine itself

TOKEN_HINT = ("a cluster with token authentication (`ray start --head` turns it on) accepts a driver "
              "that has RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN_PATH, RAY_AUTH_TOKEN "
              "or ~/.ray/auth_token (`ray get-auth-token` on the head prints it)")

STORAGE_HINT = ("set storage.path to an object store URI (s3://bucket/sweeps, gs://bucket/sweeps, "
                "abfss://container@account.dfs.core.windows.net/sweeps) or to a shared filesystem path "
                "mounted at the same place on every node, with storage.shared: true")


# ---------------------------------------------------------------- joining


def ray_address(address: str | None) -> tuple[str | None, str]:
    """The address to join (the option, else $RAY_ADDRESS, else None for a local cluster) and where it
    came from, for messages."""
    return ADDRESS.pick(address)


def host_port(address: str | None, label: str = "--address") -> tuple[str, int] | None:
    """(host, port) of a Ray address, `host:port` or `ray://host:port`; None for none, auto and local."""
    if not address or address in LOCAL_ADDRESSES:
        return None
    bare = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{label} {address!r}: not a Ray address; use HOST:PORT, e.g. 10.0.0.5:6379")
    return host.strip("[]"), int(port)


def check_reachable(address: str | None, label: str = "--address", timeout: float = REACH_TIMEOUT_S) -> None:
    """Raises ConfigError within `timeout` seconds when nothing listens at the address."""
    target = host_port(address, label)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        if isinstance(e, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        else:
            reason = (e.strerror or str(e)).lower()
        raise ConfigError(f"{label} {address}: no Ray cluster answers at {host}:{port} ({reason}); start "
                          f"one with `ray start --head --port {port}`, or check the host and port") from None


def join_error(address: str, label: str, error: BaseException) -> ConfigError:
    """One line for a failed ray.init against a listening address."""
    causes = []
    while error is not None and len(causes) < 5:
        causes.append(str(error))
        error = error.__cause__ or error.__context__
    text = " ".join(causes)
    if "InvalidAuthToken" in text or "Unauthenticated" in text or "authentication token" in text:
        return ConfigError(f"{label} {address}: the cluster refused this driver's token; {TOKEN_HINT}")
    if "version mismatch" in text.lower():
        first = next((line for line in text.splitlines() if "ersion" in line), text)[:300]
        return ConfigError(f"{label} {address}: {first.strip()}; install the cluster's Ray version here "
                           "(constraints.txt pins it)")
    return ConfigError(f"{label} {address}: cannot join the Ray cluster there ({causes[0][:300]})")


# ---------------------------------------------------------------- storage


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def storage_where(spec: SweepSpec, sweep: SweepDir) -> str:
    """Names the storage for messages: the spec's path, or the default sweep folder."""
    if spec.storage.path:
        return spec.storage.path
    return f"the default {Path(sweep.root)}"


def node_local(spec: SweepSpec) -> bool:
    """True when trials would write to a folder only the driver's machine has."""
    path = spec.storage.path
    if path and is_uri(path):
        return False
    return not spec.storage.shared


def alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def remote_driver() -> bool:
    """True when this driver reaches the cluster through Ray Client (ray://), from another machine."""
    return bool(client.is_connected())


def check_storage(spec: SweepSpec, sweep: SweepDir) -> None:
    """Refuses node-local storage on a cluster of several nodes (or from a remote driver), before any
    trial starts: other nodes cannot read the driver's disk, nor the driver theirs."""
    if not node_local(spec):
        return
    remote = remote_driver()
    nodes = alive_nodes()
    if nodes <= 1 and not remote:
        return
    where = storage_where(spec, sweep)
    cluster = "this driver reaches the cluster from another machine" if remote else \
        f"this Ray cluster has {nodes} nodes"
    raise ConfigError(f"storage.path: {where} is a folder on one machine's disk, but {cluster}: the others "
                      "cannot read or write it, and every trial's checkpoints and results must land where "
                      f"every node and the driver can read them; {STORAGE_HINT}")
