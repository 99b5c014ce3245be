import pytest
from helpers import tiny_raw

from tvae_sweep.config import run_config_from_dict


@pytest.fixture
def tiny_config():
    return lambda **sections: run_config_from_dict(tiny_raw(**sections))
