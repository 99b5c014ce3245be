"""How right the progress line's ETA was: each estimate a launch's log printed against the true time
left to its stage's end (the search's last trial event; then the confirmation's).

    python -m benchmarks.eta_accuracy launch.log
    python -m benchmarks.eta_accuracy launch.log --replay results/capsules/tune --epochs 16 --warm-starts 2

prints, per stage, one row per progress line (time, share of the epochs done, ETA, true time left,
error) and how many estimates past 10% of the epochs were within 25% of the truth. With --replay,
the ETA is the one the current code (sweep/eta.py) gives at the same moments, from the reports the
stage's trials saved (each trial's result.json) and the log's trial events: an estimator changed
after a sweep is measured on that sweep.
"""
from __future__ import annotations

import argparse
import json
import re
from datetime import datetime, timedelta
from pathlib import Path

from tvae_sweep.sweep.eta import Eta
from tvae_sweep.sweep.records import RUNNING, TERMINATED, TrialRecord

STAMP = r"(\d\d:\d\d:\d\d)  "
PROGRESS = re.compile(STAMP + r".*?; (\d+)/(\d+) epochs; .*?, about (?:(\d+)h)?(\d+)m(?:(\d+)s)? to go")
TRIAL_EVENT = re.compile(STAMP + r"trial (\S+) (started|finished|failed|stopped)")
TOTAL = re.compile(r"^sweep \S+(?:, \w+ stage)?: (\d+) trials")
STAGE = re.compile(r"^sweep \S+, (\w+) stage:")
WITHIN, PAST = 0.25, 0.10


def clock(text: str) -> datetime:
    return datetime.strptime(text, "%H:%M:%S")


def stages(lines: list[str]) -> dict[str, list[str]]:
    """The log's lines by stage: the search, then each later stage its launch announced."""
    out, name = {"search": []}, "search"
    for line in lines:
        if m := STAGE.match(line):
            name = m.group(1)
            out[name] = []
        out[name].append(line)
    return out


def rows(lines: list[str]) -> list[tuple[str, float, float, float]]:
    """(time, share of epochs done, ETA s, true s) for each progress line of one stage."""
    ends = [clock(m.group(1)) for line in lines if (m := TRIAL_EVENT.match(line)) and m.group(3) != "started"]
    if not ends:
        return []
    end, out = ends[-1], []
    for line in lines:
        if m := PROGRESS.match(line):
            at = clock(m.group(1))
            h, mins, s = (int(g or 0) for g in m.groups()[3:])
            eta = timedelta(hours=h, minutes=mins, seconds=s).total_seconds()
            out.append((m.group(1), int(m.group(2)) / int(m.group(3)), eta, (end - at).total_seconds()))
    return out


def table(name: str, measured: list[tuple[str, float, float, float]]) -> str:
    lines = [f"{name}:", "", "| time | epochs done | ETA s | true s | error |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {t} | {done:.0%} | {eta:.0f} | {true:.0f} | {eta / true - 1:+.0%} |" if true > 0 else
              f"| {t} | {done:.0%} | {eta:.0f} | {true:.0f} | |" for t, done, eta, true in measured]
    past = [(eta, true) for _, done, eta, true in measured if done >= PAST and true > 0]
    good = sum(abs(eta / true - 1) <= WITHIN for eta, true in past)
    lines += ["", f"past {PAST:.0%} of the epochs: {good} of {len(past)} estimates within {WITHIN:.0%}"]
    return "\n".join(lines)


def saved_reports(experiment: Path) -> dict[str, list[dict]]:
    """Each trial's reports (its result.json lines), by Ray's trial id."""
    out = {}
    for path in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            out[lines[0]["trial_id"]] = lines
    return out


def records_at(when: str, lines: list[str], reports: dict[str, list[dict]]) -> list[TrialRecord]:
    """The stage's trials as the console saw them at `when`: started, ended, their last report."""
    state = {}
    for line in lines:
        if (m := TRIAL_EVENT.match(line)) and m.group(1) <= when:
            state[m.group(2)] = RUNNING if m.group(3) == "started" else TERMINATED
    out = []
    for trial_id, status in state.items():
        seen = [r for r in reports.get(trial_id, [])
                if datetime.fromtimestamp(r["timestamp"]).strftime("%H:%M:%S") <= when]
        last = seen[-1] if seen else {}
        out.append(TrialRecord(trial_id=trial_id, ray_id=trial_id, state=status, config={}, last=last,
                               epochs=last.get("training_iteration", 0), time_s=last.get("time_total_s", float("nan")),
                               ray_state=status))
    return out


def most_running(lines: list[str], until: str) -> int:
    """The most trials running at once by `until`, from the log's trial events."""
    running, most = set(), 0
    for line in lines:
        if (m := TRIAL_EVENT.match(line)) and m.group(1) <= until:
            (running.add if m.group(3) == "started" else running.discard)(m.group(2))
            most = max(most, len(running))
    return most


def replayed(lines: list[str], reports: dict[str, list[dict]], epochs: int,
             given: int = 0) -> list[tuple[str, float, float, float]]:
    """rows() with each ETA replaced by the current Eta's at the same moment."""
    total = next(int(m.group(1)) for line in lines if (m := TOTAL.match(line)))
    eta = Eta(total, epochs, given)
    out = []
    for t, done, _, true in rows(lines):
        eta.observe(most_running(lines, t))  # the console counts them as each trial starts
        left = eta.seconds_left(records_at(t, lines, reports))
        out.append((t, done, float("nan") if left is None else left, true))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log")
    parser.add_argument("--replay", type=Path, help="the search stage's Ray experiment folder (results/NAME/tune)")
    parser.add_argument("--epochs", type=int, help="train.epochs of the replayed sweep")
    parser.add_argument("--warm-starts", type=int, default=0, help="search.warm_start's points of the replayed sweep")
    args = parser.parse_args()
    for name, lines in stages(Path(args.log).read_text().splitlines()).items():
        if args.replay and name == "search":
            measured = replayed(lines, saved_reports(args.replay), args.epochs, args.warm_starts)
        else:
            measured = rows(lines)
        if measured:
            print(table(name, measured), end="\n\n")


if __name__ == "__main__":
    main()
