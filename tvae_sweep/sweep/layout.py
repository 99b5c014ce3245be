"""Where a sweep keeps its files: results/<name>/ and, for Ray's trials, the storage path."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, Setting

RESULTS = Setting("--results-dir", "TVAE_SWEEP_RESULTS")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def results_root(results_dir: str | Path | None) -> Path:
    """--results-dir, else $TVAE_SWEEP_RESULTS, else ./results."""
    return Path(RESULTS.pick(results_dir, default="results")[0]).absolute()


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (up to 100), "
                          "starting with a letter or digit")
    return name


@dataclass(frozen=True)
class SweepDir:
    """results/<name>/: the spec as launched, the sweep's state, the Optuna study, the tables."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def state(self) -> Path:
        return self.root / "sweep.json"

    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def trials(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def rungs(self) -> Path:
        """Multi-objective ASHA's rungs (sweep/mo_asha.py), for a resumed sweep."""
        return self.root / "rungs.json"

    def read_state(self) -> dict:
        if not self.state.is_file():
            raise FileNotFoundError(f"no sweep named {self.name!r} in {self.root.parent} "
                                    "(`tvae-sweep list` shows them)")
        return json.loads(self.state.read_text())

    def write_state(self, **updates) -> dict:
        state = json.loads(self.state.read_text()) if self.state.is_file() else {}
        state.update(updates, updated=time.time())
        write_whole_json(self.state, state)
        return state


def sweep_dir(results_dir: str | Path | None, name: str) -> SweepDir:
    return SweepDir(results_root(results_dir) / check_name(name))


def all_sweeps(results_dir: str | Path | None) -> list[SweepDir]:
    root = results_root(results_dir)
    if not root.is_dir():
        return []
    return sorted((SweepDir(p) for p in root.iterdir() if (p / "sweep.json").is_file()), key=lambda s: s.name)


def storage_location(spec_storage_path: str | None, sweep: SweepDir) -> str:
    """Ray's storage_path: the spec's (a shared folder or an object store URI), else the sweep folder."""
    if spec_storage_path:
        if "://" in spec_storage_path:
            return spec_storage_path
        return str(Path(spec_storage_path).expanduser().absolute())
    return str(sweep.root)


def disk_usage(path: Path) -> int:
    """Bytes under path (0 if it is not a local folder)."""
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def origin_of(sweep: SweepDir) -> tuple[SweepDir, str | None]:
    """(the sweep a folder's runs belong to, their stage): a later stage of a sweep (its confirmation,
    whose state names the stage) lives in the sweep's folder and is tracked under the sweep's parent
    run; a sweep is its own, with no stage."""
    stage = sweep.read_state().get("stage") if sweep.state.is_file() else None
    return (SweepDir(sweep.root.parent), stage) if stage else (sweep, None)


def title(sweep: SweepDir) -> str:
    """How the console names a sweep folder: 'sweep NAME', or 'sweep NAME, confirm stage'."""
    origin, stage = origin_of(sweep)
    return f"sweep {origin.name}, {stage} stage" if stage else f"sweep {sweep.name}"


def continue_command(sweep: SweepDir) -> str:
    """The command that continues a sweep folder that stopped: a later stage's is `tvae-sweep
    confirm` of the sweep it belongs to (whose spec may have no confirm section for resume to
    run), a sweep's own `tvae-sweep resume`."""
    origin, stage = origin_of(sweep)
    return f"tvae-sweep confirm {origin.name}" if stage else f"tvae-sweep resume {sweep.name}"


def write_whole_json(path: Path, data) -> None:
    """`data` as JSON at `path`, written beside it and renamed over it: a reader (or a crash) never
    sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
