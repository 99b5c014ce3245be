"""How right the progress line's ETA was: each estimate a launch's log printed against the true time
left to its stage's end (the search's last trial event; then the confirmation's).

    python -m benchmarks.eta_accuracy launch.log
    python -m benchmarks.eta_accuracy launch.log --replay results/capsules [--every 10]
    python -m benchmarks.eta_accuracy launch.log --replay results/capsules/confirm

prints, per stage, one row per progress line (time, share of the epochs done, ETA, true time left,
error) and how many estimates past 10% of the epochs were within 25% of the truth. With --replay
(the stage's sweep folder: its spec and Ray experiment), the ETA is the one the current code
(sweep/eta.py) gives at the same moments, from the reports the stage's trials saved (each trial's
result.json) and the log's trial events: an estimator changed after a sweep is measured on that
sweep; with --every, at a moment every that many seconds rather than at the log's progress lines;
with --known-configs, a sampler's trials priced as if their configs were known from the start.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from tvae_sweep.sweep.confirm import CONFIRM
from tvae_sweep.sweep.eta import Eta, done_epochs
from tvae_sweep.sweep.launch import load_saved_spec, sweep_eta
from tvae_sweep.sweep.layout import SweepDir
from tvae_sweep.sweep.records import RUNNING, TERMINATED, TrialRecord, records_of

STAMP = r"(\d\d:\d\d:\d\d)  "
PROGRESS = re.compile(STAMP + r".*?; (\d+)/(\d+) epochs; .*?, about (?:(\d+)h)?(\d+)m(?:(\d+)s)? to go")
TRIAL_EVENT = re.compile(STAMP + r"trial (\S+) (started|finished|failed|stopped)")
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


def configs_in_order(reports: dict[str, list[dict]]) -> list[list[dict]]:
    """Each saved trial's config (a point's), in the order the trials started."""
    started = sorted(reports.values(), key=lambda saved: saved[-1]["timestamp"] - saved[-1]["time_total_s"])
    return [[saved[0]["config"]] for saved in started]


def events(lines: list[str]) -> list[tuple[str, str, str]]:
    """(time, Ray trial id, what) of each trial event (a fused trial's points give their trial's)."""
    return [(m.group(1), re.sub(r"_p\d+$", "", m.group(2)), m.group(3))
            for line in lines if (m := TRIAL_EVENT.match(line))]


def records_at(when: str, happened: list[tuple[str, str, str]], reports: dict[str, list[dict]]) -> list[TrialRecord]:
    """The stage's trials as the console saw them at `when`: started, ended, their last report, made
    into records by the sweep's own reader (records_of) from Ray trials as the log and reports tell."""
    state = {}
    for at, trial_id, what in happened:
        if at <= when:
            state[trial_id] = RUNNING if what == "started" else TERMINATED
    trials = []
    for trial_id, status in state.items():
        saved = reports.get(trial_id, [])
        seen = [r for r in saved if datetime.fromtimestamp(r["timestamp"]).strftime("%H:%M:%S") <= when]
        trials.append(SimpleNamespace(trial_id=trial_id, status=status, last_result=seen[-1] if seen else {},
                                      checkpoint=None, config=saved[0]["config"] if saved else {}, path=""))
    return records_of(trials)


def most_running(happened: list[tuple[str, str, str]], until: str) -> int:
    """The most Ray trials running at once by `until`, from the log's trial events."""
    running, most = set(), 0
    for at, trial_id, what in happened:
        if at <= until:
            (running.add if what == "started" else running.discard)(trial_id)
            most = max(most, len(running))
    return most


def replayed(lines: list[str], reports: dict[str, list[dict]], eta: Eta,
             every: float | None = None) -> list[tuple[str, float, float, float]]:
    """rows() with each ETA replaced by the current estimator's at the same moment; with `every`,
    at a moment every that many seconds from the stage's first trial event to its last."""
    happened = events(lines)
    measured = rows(lines)
    if every:
        first, end = clock(happened[0][0]), clock(happened[-1][0])
        moments = [first + timedelta(seconds=every * i) for i in range(int((end - first).total_seconds() / every))]
        measured = [(m.strftime("%H:%M:%S"), math.nan, math.nan, (end - m).total_seconds()) for m in moments]
    out = []
    for t, done, _, true in measured:
        eta.observe(most_running(happened, t))  # the console counts them as each trial starts
        records = records_at(t, happened, reports)
        left = eta.seconds_left(records)
        if every:
            done = done_epochs(records) / eta.planned(records)
        out.append((t, done, math.nan if left is None else left, true))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log")
    parser.add_argument("--replay", type=Path, help="the stage's sweep folder (results/NAME, or results/NAME/confirm)")
    parser.add_argument("--every", type=float, help="replay every that many seconds, not at the log's lines")
    parser.add_argument("--known-configs", action="store_true",
                        help="price a sampler's trials as if their configs were known from the start (as a grid's "
                             "are): the error left is the rates'")
    args = parser.parse_args()
    stage = "confirm" if args.replay and args.replay.name == CONFIRM else "search"
    for name, lines in stages(Path(args.log).read_text().splitlines()).items():
        if args.replay and name == stage:
            sweep = SweepDir(args.replay)
            reports = saved_reports(sweep.root / "tune")
            eta = sweep_eta(load_saved_spec(sweep), configs_in_order(reports) if args.known_configs else None)
            measured = replayed(lines, reports, eta, args.every)
        else:
            measured = rows(lines)
        if measured:
            print(table(name, measured), end="\n\n")


if __name__ == "__main__":
    main()
