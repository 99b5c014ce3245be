"""Shared test configs."""
import copy
import signal


def tiny_raw(**sections):
    """A config small enough to train in about a second on one core."""
    raw = {
        "data": {"dataset": "mnist5k", "transforms": ["rotation", "hue", "scale"],
                 "train_sequences": 16, "test_sequences": 8},
        "model": {"variant": "tvae", "n_caps": 3, "cap_dim": 6, "seq_len": 6, "coherence_window": 3,
                  "n_off_diag": 1, "shift": 1, "mu_init": 30.0},
        "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "optimizer": "adam", "seed": 0,
                  "device": "cpu", "ll_samples": 2, "num_threads": 1},
    }
    for section, values in sections.items():
        raw[section].update(values)
    return raw


def ctrl_c_as_from_a_terminal() -> None:
    """preexec_fn of a command a test stops with SIGINT: Ctrl-C's default action, as a terminal
    gives it, even when the test run was started in the background by a non-interactive shell
    (which makes it, and every process it starts, ignore SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# a space with every kind of key: a condition, a tie, a bound taken from another key, a log range
SPACE = {
    "model.variant": {"type": "categorical", "values": ["vae", "tvae"]},
    "model.shift": {"type": "int", "low": 0, "high": 2, "when": {"model.variant": ["tvae"]}},
    "model.cap_dim": {"type": "categorical", "values": [4, 6]},
    "model.seq_len": {"same_as": "model.cap_dim"},
    "model.coherence_window": {"type": "int", "low": 1, "high": 6, "max_from": "model.seq_len"},
    "train.lr": {"type": "float", "low": 1e-5, "high": 3e-3, "log": True},
}


def spec_raw(search: dict | None = None, **sections) -> dict:
    """A sweep spec of tiny_raw's config over SPACE; keyword sections replace the defaults."""
    raw = tiny_raw()
    raw["space"] = copy.deepcopy(SPACE)
    default = {"algorithm": "tpe", "metric": "log_likelihood", "mode": "max", "num_trials": 4, "max_concurrent": 2,
               "seed": 0, "scheduler": "fifo"}
    raw["search"] = copy.deepcopy(search) if search else default
    raw["resources"] = {"cpus_per_trial": 1, "gpus_per_trial": 0}
    raw.update(copy.deepcopy(sections))
    return raw
