import shutil
import tempfile
from collections import defaultdict

import pytest
from clusters import LocalCluster, two_node_cluster
from helpers import tiny_raw

from tvae_sweep.config import run_config_from_dict


@pytest.fixture
def tiny_config():
    return lambda **sections: run_config_from_dict(tiny_raw(**sections))


@pytest.fixture(scope="module")
def ray_temp():
    """A temporary folder of Ray's own (short: Ray's socket paths must stay under 108 characters)."""
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A head of one CPU and one logical GPU, and a second node of two CPUs (tests/clusters.py): one
    cluster for the session's cluster and GPU-placement tests."""
    with two_node_cluster(LocalCluster, tmp_path_factory, head_gpus=1, node_cpus=2) as cluster:
        yield cluster


SLOW_TEST_S = 10.0  # what a slow test of a file without a `cost` mark is taken to cost


def file_cost(items) -> float:
    """A file's seconds on 2 cores: its `cost` mark (measured, for the files that run sweeps), else
    SLOW_TEST_S per slow test."""
    mark = items[0].get_closest_marker("cost")
    if mark:
        return float(mark.args[0])
    return SLOW_TEST_S * sum(1 for item in items if item.get_closest_marker("slow"))


def pytest_collection_modifyitems(config, items):
    """The costliest files first, each file's tests together and in their order: under `make test`'s
    `--dist loadfile` each worker takes the next file as it frees, so the long sweep files start
    early, the quick files fill in at the end and the two workers finish together."""
    by_file = defaultdict(list)
    for item in items:
        by_file[item.path].append(item)
    cost = {path: file_cost(tests) for path, tests in by_file.items()}
    first_seen = {path: i for i, path in enumerate(by_file)}
    items.sort(key=lambda item: (-cost[item.path], first_seen[item.path]))
