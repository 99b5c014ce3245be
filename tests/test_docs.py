"""The docs against the code they describe: the metric registry, the commands and their options,
the files they point to, and the examples they give."""
import math
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch

from tvae_sweep import cli
from tvae_sweep.config import VARIANTS
from tvae_sweep.metrics import REGISTRY, is_metric

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"
DOCS = [README, ROOT / "CONTRIBUTING.md", ROOT / "cluster" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# how docs/metrics.md names each scope of the registry (tvae_sweep.metrics.Metric)
SCOPE_WORDS = {"all": "every run", "latent_u": "models with u", "sequence": "sequence runs",
               "sequence_u": "sequence runs with u", "map": "map runs"}


def group() -> click.Group:
    """The `tvae-sweep` command group."""
    groups = [v for v in vars(cli).values() if isinstance(v, click.Group)]
    assert len(groups) == 1, groups
    return groups[0]


def code_snippets(text: str) -> list[str]:
    """Inline code spans, and the lines of fenced and indented code blocks."""
    snippets, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            snippets.append(line)
        else:
            snippets += re.findall(r"`([^`]+)`", line)
    return snippets


def named_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, its options) of every `tvae-sweep <command> ...` in the code of a doc."""
    named = []
    for snippet in code_snippets(text):
        for match in re.finditer(r"(?<![\w/~-])tvae-sweep ([a-z][a-z-]*)([^#;&|'`]*)", snippet):
            named.append((match.group(1), re.findall(r"(?<![\w-])--[a-z][a-z-]*", match.group(2))))
    return named


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert 0 < len(lines) <= 160, len(lines)


def test_the_readme_names_every_command():
    named = {command for command, _ in named_commands(README.read_text())}
    missing = set(group().commands) - named
    assert not missing, f"commands the README does not list: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_a_doc_names_exists_with_its_options(doc):
    commands = group().commands
    for command, options in named_commands(doc.read_text()):
        assert command in commands, f"{doc.name}: `tvae-sweep {command}` is no command; commands: {sorted(commands)}"
        known = {"--help"} | {o for p in commands[command].params for o in (*p.opts, *p.secondary_opts)}
        unknown = set(options) - known
        assert not unknown, f"{doc.name}: `tvae-sweep {command}` has no option {sorted(unknown)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_a_doc_points_to_exists(doc):
    pattern = r"(?<![\w./<>-])((?:docs|tests|tvae_sweep|benchmarks|search_spaces|configs|cluster|results)/[\w./-]+" \
              r"\.(?:md|py|yaml|toml|txt|sh|sbatch))(?![\w<>*])"
    for path in re.findall(pattern, doc.read_text()):
        assert (ROOT / path).exists() or (doc.parent / path).exists(), f"{doc.name} points to {path}, which is missing"


def metric_rows() -> dict[str, list[str]]:
    """docs/metrics.md's registry table: metric -> its cells."""
    rows = {}
    for line in METRICS_DOC.read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    return rows


def test_the_metrics_doc_lists_every_metric_of_the_registry_as_it_is():
    rows = metric_rows()
    assert list(rows) == [m.name for m in REGISTRY], "the table's metrics differ from the registry's, or their order"
    for m in REGISTRY:
        _, direction, reported_by, _, at_init = rows[m.name]
        assert direction == m.mode, f"{m.name}: the registry says {m.mode}, the doc {direction}"
        assert reported_by == SCOPE_WORDS[m.scope], f"{m.name}: scope {m.scope}, the doc says {reported_by!r}"
        assert at_init == ("yes" if m.at_init else "no"), f"{m.name}: at_init is {m.at_init}, the doc says {at_init}"


def test_every_metric_the_metrics_doc_names_is_reported():
    """A bare name in code (no section, no path) is a metric, a model variant or a direction."""
    words = {"min", "max", *VARIANTS}
    names = [s for s in re.findall(r"`([^`]+)`", METRICS_DOC.read_text()) if re.fullmatch(r"[a-z][a-z0-9_]*", s)]
    assert len(names) > len(REGISTRY)
    unknown = sorted({n for n in names if n not in words and not is_metric(n)})
    assert not unknown, f"docs/metrics.md names metrics the registry does not know: {unknown}"


def test_the_readme_spec_example_validates(tmp_path):
    spec = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert len(spec) == 1
    path = tmp_path / "example.yaml"
    path.write_text(spec[0])
    proc = subprocess.run([sys.executable, "-m", "tvae_sweep", "validate", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_notebook_example_runs():
    code = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "training.md").read_text(), re.S)
    assert len(code) == 1
    names: dict = {}
    torch.manual_seed(0)
    exec(code[0], names)
    out, x = names["out"], names["x"]
    assert math.isfinite(out.loss.item())
    assert out.t.shape == (*x.shape[:2], names["cfg"].n_caps, names["cfg"].cap_dim)
    assert names["model"].log_likelihood(x, n_samples=2).shape == (x.shape[0],)
