from collections import Counter

import pytest
from clusters import LocalCluster, two_node_cluster
from helpers import tiny_raw

from tvae_sweep.config import run_config_from_dict


@pytest.fixture
def tiny_config():
    return lambda **sections: run_config_from_dict(tiny_raw(**sections))


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A head of one CPU and one logical GPU, and a second node of two CPUs (tests/clusters.py): one
    cluster for the session's cluster and GPU-placement tests."""
    with two_node_cluster(LocalCluster, tmp_path_factory, head_gpus=1, node_cpus=2) as cluster:
        yield cluster


def pytest_collection_modifyitems(config, items):
    """The files with the most slow tests first, each file's tests together and in their order:
    under `make test`'s `--dist loadfile` the sweeps start early and the quick files fill in at
    the end, so the two workers finish together instead of one waiting on a late sweep file."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    first_seen = {path: i for i, path in enumerate(dict.fromkeys(item.path for item in items))}
    items.sort(key=lambda item: (-slow[item.path], first_seen[item.path]))
