"""Files from elsewhere are read without running code: YAML with safe loaders only, checkpoints with
torch.load(weights_only=True), npz files without pickles. Checked in the source, and for real with
a spec and a checkpoint that would run code if they were loaded unsafely."""
from __future__ import annotations

import ast
import pickle
from pathlib import Path

import torch
import yaml
from click.testing import CliRunner
from helpers import tiny_raw

from tvae_sweep.cli import main
from tvae_sweep.config import dump_yaml, load_run_config

PACKAGE = Path(__file__).resolve().parents[1] / "tvae_sweep"
SAFE_YAML = {"safe_load", "safe_load_all", "safe_dump", "safe_dump_all", "YAMLError"}


def calls(module: str) -> list[tuple[Path, ast.Call, str]]:
    """(file, call, attribute) of every `<module>.<attribute>(...)` call in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == module:
                found.append((path, node, node.func.attr))
    return found


def keyword(call: ast.Call, name: str):
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else None


def test_yaml_is_read_with_safe_loaders_only():
    used = {attr for _, _, attr in calls("yaml")}
    assert "safe_load" in used
    assert used <= SAFE_YAML, used - SAFE_YAML
    for path in PACKAGE.rglob("*.py"):
        assert "Loader=" not in path.read_text(), path


def test_checkpoints_and_arrays_are_read_without_pickles():
    loads = [(p, c) for p, c, attr in calls("torch") if attr == "load"]
    assert loads
    for path, call in loads:
        assert keyword(call, "weights_only") is True, f"{path}:{call.lineno}"
    for path, call, attr in calls("np"):
        if attr == "load":
            assert keyword(call, "allow_pickle") is False, f"{path}:{call.lineno}"
    for module in ("pickle", "cloudpickle", "dill", "marshal"):
        assert not calls(module), module
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in ("eval", "exec")), f"{path}:{node.lineno}"


def test_a_spec_with_a_python_tag_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_raw()) + f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"tvae-sweep: error: {spec}: YAML syntax error at line")
    assert "python/object/apply:os.system" in result.stderr
    assert not marker.exists()


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(train={"epochs": 1})))
    output = tmp_path / "run"
    (output / "checkpoint").mkdir(parents=True)
    dump_yaml(load_run_config(config).to_dict(), output / "config.yaml")
    state = output / "checkpoint" / "state.pt"
    torch.save({"model": _RunsCode(marker)}, state)  # torch.save pickles the object as it is
    pickle.loads(pickle.dumps(_RunsCode(tmp_path / "control")))  # unpickled unsafely, it does run
    assert (tmp_path / "control").exists()
    before = state.read_bytes()
    result = CliRunner().invoke(main, ["train", str(config), "--output", str(output)])
    assert result.exit_code == 2, result.output
    [line] = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert line.startswith(f"tvae-sweep: error: {state}: not a readable tvae-sweep checkpoint (UnpicklingError)")
    assert not marker.exists()
    assert state.read_bytes() == before
