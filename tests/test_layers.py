"""The architecture as contracts: the layers of pyproject.toml's [tool.importlinter], and a core
that runs where only PyTorch is installed."""
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold():
    """The core imports no Ray, Optuna, MLflow or pandas; sweeps do not import tracking; nothing
    imports the CLI; no circles."""
    proc = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_training_a_model_loads_none_of_the_sweep_stack():
    code = ("import sys; import tvae_sweep, tvae_sweep.training, tvae_sweep.train_folder, tvae_sweep.metrics; "
            "print(sorted(m for m in ('ray', 'optuna', 'mlflow', 'pandas') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_the_trial_log_runs_without_ray():
    """The tracking callback is a thin adapter of Tune's hooks; what writes MLflow needs no Ray."""
    code = "import sys; import tvae_sweep.tracking.trial_log; print('ray' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stdout + proc.stderr


def test_every_module_is_in_a_layer():
    """A new module must be placed in the contracts: each top-level module or package in the
    package's layers, each module of a package with a layers contract in one of its layers."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layered: dict[str, set[str]] = {}  # container -> the modules its layers name
    for contract in (c for c in contracts if c["type"] == "layers"):
        for container in contract.get("containers", ["tvae_sweep"]):
            names = {n.strip().strip("()") for layer in contract["layers"] for n in layer.split("|")}
            layered.setdefault(container, set()).update(n.removeprefix(f"{container}.") for n in names)
    package = ROOT / "tvae_sweep"
    top = {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in package.glob("*/__init__.py")}
    assert top - layered["tvae_sweep"] == set()
    for sub in (p.parent for p in package.glob("*/__init__.py")):
        modules = {p.stem for p in sub.glob("*.py") if p.stem != "__init__"}
        assert modules - layered[f"tvae_sweep.{sub.name}"] == set(), sub.name
