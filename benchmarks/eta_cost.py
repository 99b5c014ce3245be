"""What the progress line's estimate costs the driver: one Eta.seconds_left (sweep/eta.py, built by
launch.sweep_eta from search_spaces/capsules.yaml) over N trials, ten of them running, the rest
finished, of the three capsule counts the space holds.

    python -m benchmarks.eta_cost [--trials 1000] [--calls 20]

prints the milliseconds of one call after the first (which prices each trial's epoch once).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from tvae_sweep.sweep.launch import sweep_eta
from tvae_sweep.sweep.records import RUNNING, TERMINATED, TrialRecord
from tvae_sweep.sweep.validation import load_spec

SPEC = Path(__file__).resolve().parent.parent / "search_spaces" / "capsules.yaml"


def trials(n: int, epochs: int) -> list[TrialRecord]:
    out = []
    for i in range(n):
        state = RUNNING if i >= n - 10 else TERMINATED
        out.append(TrialRecord(trial_id=f"t{i}", ray_id=f"t{i}", state=state, ray_state=state, last={},
                               config={"model.n_caps": 6 * (1 + i % 3), "model.cap_dim": 6},
                               epochs=epochs // 2 if state == RUNNING else epochs, time_s=30.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    eta = sweep_eta(load_spec(SPEC))
    eta.total = args.trials
    records = trials(args.trials, eta.epochs)
    eta.seconds_left(records)
    start = time.perf_counter()
    for _ in range(args.calls):
        eta.seconds_left(records)
    print(f"{args.trials} trials: {(time.perf_counter() - start) / args.calls * 1000:.1f} ms per estimate")


if __name__ == "__main__":
    main()
