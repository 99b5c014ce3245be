"""`tvae-sweep report`: the aggregated tables in the terminal and as markdown (results/<name>/report.md)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..metrics import DERIVED, INIT, LEARNED
from ..sweep.layout import SweepDir
from ..sweep.results import hypervolume_line, pareto_trials
from ..sweep.spec import SweepSpec
from .curves import FILE as CURVES
from .curves import headline, shown_epochs
from .importance import Importance
from .publish import FOLDER, IMPORTANCE, Aggregates, objective
from .stats import excludes_zero

HEADER = ("mean", "std", "95% CI", "best", "n")  # an axis table's numbers, as shown
NO_INTERVAL = "none (n = 1)"

NOT_SAMPLED = "(not sampled)"
FIGURES = (("pareto.png", "Likelihood against equivariance ratio (Pareto front)"),
           ("metrics_by_axis.png", "The objectives and the summary metrics against each searched key"),
           ("best_traversals.png", "Traversals of the best trials"),
           ("forecasts.png", "Forecasts: each model's best trial, from half a test sequence (the paper's Figure 1)"),
           ("topographic_maps.png",
            "Topographic maps: each model's best trial, units coloured by the digit class they prefer (Figure 3)"))


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def ci(low, high) -> str:
    """A 95% interval as '[low, high]', or said to be absent (one seed)."""
    return NO_INTERVAL if missing(low) or missing(high) else f"[{fmt(low)}, {fmt(high)}]"


def rows(table: pd.DataFrame, key: str) -> list[list[str]]:
    """Table cells, the searched value shown once per group of metrics."""
    out, previous = [], object()
    for _, row in table.iterrows():
        shown = NOT_SAMPLED if missing(row[key]) else fmt(row[key])
        numbers = [fmt(row["mean"]), fmt(row["std"]), ci(row["ci_low"], row["ci_high"]), fmt(row["best"]),
                   fmt(row["count"])]
        out.append([shown if shown != previous else "", row["metric"], *numbers])
        previous = shown
    return out


def markdown(cells: list[list[str]], header: list[str], text_columns: int = 1) -> str:
    """A markdown table of preformatted cells: text columns left, numbers right."""
    align = ["left"] * text_columns + ["right"] * (len(header) - text_columns)
    return pd.DataFrame(cells, columns=header).to_markdown(index=False, colalign=align, disable_numparse=True)


def text_table(table: pd.DataFrame, key: str) -> str:
    """The terminal's table: the searched value and the metric's name left, numbers right (pandas'
    to_string right-aligns text too)."""
    cells = rows(table, key)
    if not cells:
        return f"{key}: no finished trial yet"
    return text_of(cells, [key, "metric", *HEADER], 2)


def text_of(cells: list[list[str]], header: list[str], text_columns: int) -> str:
    """Cells as aligned text: the first `text_columns` left, the others right."""
    widths = [max(len(c) for c in column) for column in zip(header, *cells, strict=True)]

    def align(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < text_columns else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return "\n".join([align(header), align(["-" * w for w in widths]), *map(align, cells)])


def markdown_table(table: pd.DataFrame, key: str) -> str:
    cells = rows(table, key)
    if not cells:
        return "No finished trial yet."
    return markdown(cells, [f"`{key}`", "metric", *HEADER], text_columns=2)


def wide_markdown(wide: pd.DataFrame, key: str) -> str:
    """The paper-style tables: one row per value of `key`, 'mean ± std [95% CI]' per metric and n.
    Metrics also measured at initialisation get a table of their own, each cell the trained value
    with the untrained model's and what training added (trained minus init) beside it, called
    learned only where its interval excludes 0."""
    metrics = [c.removesuffix("_mean") for c in wide.columns if c.endswith("_mean")]
    plain = [m for m in metrics if not m.endswith(DERIVED)]
    with_init = [m for m in plain if f"{m}{INIT}" in metrics]

    def cell(row: pd.Series, m: str) -> str:
        if missing(row[f"{m}_mean"]):  # a model without the metric (the VAE's kl_u)
            return "-"
        return f"{fmt(row[f'{m}_mean'])} ± {fmt(row[f'{m}_std'])} {ci(row[f'{m}_ci_low'], row[f'{m}_ci_high'])}"

    def twin(row: pd.Series, m: str) -> str:
        return f"{cell(row, m)} (init {cell(row, m + INIT)}; {learned(row, m + LEARNED)})"

    out = []
    for names, show in (([m for m in plain if m not in with_init], cell), (with_init, twin)):
        if not names:
            continue
        cells = [[fmt(row[key]), *(show(row, m) for m in names), fmt(row["count"])] for _, row in wide.iterrows()]
        out.append(markdown(cells, [f"`{key}`", *names, "n"]))
    return "\n\n".join(out)


def learned(row: pd.Series, name: str) -> str:
    """What training added: 'learned' only where its interval over seeds excludes 0."""
    if f"{name}_mean" not in row:
        return "learned -"
    low, high = row[f"{name}_ci_low"], row[f"{name}_ci_high"]
    change = f"{fmt(row[f'{name}_mean'])} ± {fmt(row[f'{name}_std'])} {ci(low, high)}"
    if excludes_zero(low, high):
        return f"learned {change}"
    return f"change {change}, not resolved from 0"


def comparison_cells(table: pd.DataFrame) -> list[list[str]]:
    return [[row["metric"], row["model"], fmt(row["n"]), fmt(row["diff"]), ci(row["ci_low"], row["ci_high"]),
             fmt(row["p"]), fmt(row["p_holm"]), row["verdict"]] for _, row in table.iterrows()]


COMPARISON_HEADER = ["metric", "model", "n", "diff", "95% CI", "p", "p (Holm)", "verdict"]


def comparisons_markdown(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return ["No two models share a seed yet.", ""]
    baseline = table["baseline"].iloc[0]
    return [f"Each model minus the baseline `{baseline}`, seed by seed (matched by train.seed): the mean "
            "difference over n seeds, its 95% interval (Student t), the paired t-test's p-value and that "
            f"p-value Holm-corrected across the {len(table)} comparisons of this report; the verdict "
            "(higher or lower, better or worse in the metric's direction) where the Holm p-value is below "
            "0.05.", "", markdown(comparison_cells(table), COMPARISON_HEADER, text_columns=2), ""]


def summary(frame: pd.DataFrame, spec: SweepSpec, result: Aggregates) -> list[str]:
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    lines = [f"{len(frame)} trials: " + (", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none")]
    metric, mode = objective(spec)
    if result.best is not None:
        best = result.best
        config = ", ".join(f"{k.removeprefix('config/')}={fmt(v)}" for k, v in best.items()
                           if k.startswith("config/") and fmt(v) != "-")
        value = fmt(best[f"final/{metric}"])
        lines.append(f"best trial by {metric} ({mode}): {best['trial_id']}, {metric} {value}; {config}")
    return lines


def front_lines(frame: pd.DataFrame, spec: SweepSpec, result: Aggregates) -> list[str]:
    """For several objectives: the Pareto front's size and its hypervolume, with the reference and
    where it came from."""
    volume = result.hypervolume
    if volume is None:
        return []
    s = spec.search
    objectives = ", ".join(f"{m} ({mode})" for m, mode in zip(s.metrics, s.modes, strict=True))
    if volume["value"] is None:
        return [f"Pareto front of {objectives}: no finished trial yet"]
    return [f"Pareto front of {objectives}: {len(pareto_trials(frame, s.metrics, s.modes))} trials, "
            f"{hypervolume_line(volume)}"]


IMPORTANCE_HEADER = ["objective", "searched key", "importance"]


def importance_sections(importance: Importance | None, figures: dict) -> tuple[list[str], list[str]]:
    """(terminal lines, markdown lines) of each objective's parameter importance and its notes."""
    if importance is None:
        return [], []
    table = importance.table
    cells = [[row["objective"], row["param"], f"{row['importance']:.3f}"] for _, row in table.iterrows()]
    text = ["which searched keys matter (fANOVA, share of each objective's variance):",
            text_of(cells, IMPORTANCE_HEADER, 2) if cells else "not assessed", *importance.notes, ""]
    md = ["## Which searched keys matter", ""]
    if cells:
        md += [f"Each objective's parameter importance over the {table['trials'].iloc[0]} finished trials: "
               "Optuna's fANOVA evaluator fits a random forest to the trials and gives each searched key "
               "the share of the objective's variance that it explains alone (interactions left out), "
               "summing to 1 per objective. With tens of trials this is a rough ranking, not a measurement.",
               "", markdown(cells, IMPORTANCE_HEADER, text_columns=2), ""]
    md += [f"- {note}" for note in importance.notes] + ([""] if importance.notes else [])
    if f"{IMPORTANCE}.png" in figures:
        md += [f"![Which searched keys matter]({FOLDER}/{IMPORTANCE}.png)", ""]
    return text, md


def curve_cell(row: pd.Series) -> str:
    """'mean [ci_low, ci_high] (n = k)', or the mean and no interval for one seed."""
    if missing(row["ci_low"]) or missing(row["ci_high"]):
        return f"{fmt(row['mean'])} {NO_INTERVAL}"
    return f"{fmt(row['mean'])} {ci(row['ci_low'], row['ci_high'])} (n = {row['n']})"


def curves_markdown(table: pd.DataFrame | None, figures: dict) -> list[str]:
    """The report's Learning curves section: per headline metric, a table of group x epoch (at
    most six evaluated epochs, curves.shown_epochs), and the figure."""
    if table is None:
        return []
    md = ["## Learning curves", ""]
    metrics = headline(table)
    if not metrics:
        return md + ["No finished trial has an evaluated epoch yet.", ""]
    epochs = shown_epochs(table["epoch"])
    md += [f"Each group's mean over its n seeds at evaluated epochs ({', '.join(map(str, epochs))} shown; "
           f"every evaluated epoch and metric in `{FOLDER}/{CURVES}.parquet`), with the mean's 95% interval "
           f"(Student t; {NO_INTERVAL} for one seed).", ""]
    for metric in metrics:
        rows = table[(table["metric"] == metric) & table["epoch"].isin(epochs)]
        columns = [e for e in epochs if e in set(rows["epoch"])]
        cells = []
        for group, curve in rows.groupby("group", sort=False):
            at = {row["epoch"]: curve_cell(row) for _, row in curve.iterrows()}
            cells.append([fmt(group), *(at.get(e, "-") for e in columns)])
        md += [f"### {metric}", "", markdown(cells, ["group", *(f"epoch {e}" for e in columns)]), ""]
    if f"{CURVES}.png" in figures:
        md += [f"![Learning curves]({FOLDER}/{CURVES}.png)", ""]
    return md


def render(name: str, frame: pd.DataFrame, spec: SweepSpec, result: Aggregates,
           mlflow_line: str | None) -> tuple[str, str]:
    """(terminal text, markdown) of a sweep's aggregated results."""
    head = summary(frame, spec, result) + front_lines(frame, spec, result) + ([mlflow_line] if mlflow_line else [])
    text = [f"sweep {name}", *head, ""]
    md = [f"# Sweep {name}", "", *(f"- {line}" for line in head), "",
          "Over finished trials, per searched value: mean, standard deviation, the mean's 95% interval "
          f"(Student t over the n trials; {NO_INTERVAL} for one), best and n of each final metric (lower "
          "equivariance error, ratio and roll NLL gap are better; higher log-likelihood, capsule "
          "correlation and topographic agreement are better). What training added (`_learned`) is "
          "called learned only where its interval excludes 0.", ""]
    for key, wide in result.wide.items():
        md += [f"## Mean ± standard deviation [95% interval] over seeds, per `{key}`", "",
               wide_markdown(wide, key), ""]
    if result.comparisons is not None:
        md += [f"## Paired comparisons with the baseline `{spec.baseline}`", "",
               *comparisons_markdown(result.comparisons)]
        cells = comparison_cells(result.comparisons)
        text += [f"against the baseline {spec.baseline}, seed by seed:",
                 text_of(cells, COMPARISON_HEADER, 2) if cells else "no two models share a seed yet", ""]
    for key, table in result.tables.items():
        text += [text_table(table, key), ""]
        md += [f"## {key}", "", markdown_table(table, key), ""]
    importance_text, importance_md = importance_sections(result.importance, result.figures)
    text, md = text + importance_text, md + importance_md + curves_markdown(result.curves, result.figures)
    for file, title in FIGURES:
        if file in result.figures:
            md += [f"## {title}", "", f"![{title}]({FOLDER}/{file})", ""]
    return "\n".join(text).rstrip() + "\n", "\n".join(md).rstrip() + "\n"


def write(sweep: SweepDir, markdown: str) -> Path:
    path = sweep.root / "report.md"
    path.write_text(markdown)
    return path


# ---------------------------------------------------------------- the confirmation (tracking/confirmation.py)

CONFIRMATION_HEADER = ["config", "metric", "in the search", "mean", "95% CI", "n", "diff", "95% CI of diff",
                       "p (Holm)", "verdict"]


def confirmation_cells(table: pd.DataFrame) -> list[list[str]]:
    """A confirmation table's cells, each config named once over its objectives' rows."""
    out, previous = [], None
    for _, row in table.iterrows():
        diff = "-" if missing(row["diff"]) else ci(row["diff_ci_low"], row["diff_ci_high"])
        out.append([row["config"] if row["config"] != previous else "", row["metric"], fmt(row["search"]),
                    fmt(row["mean"]), ci(row["ci_low"], row["ci_high"]), fmt(row["n"]), fmt(row["diff"]), diff,
                    fmt(row["p_holm"]), row["verdict"]])
        previous = row["config"]
    return out


def confirmation_intro(table: pd.DataFrame, seeds: list[int]) -> str:
    baseline = table["baseline"].dropna().iloc[0] if table["baseline"].notna().any() else None
    against = (f"`diff`: the paired difference from the baseline `{baseline}` over the shared seeds, its 95% "
               "interval, the paired t-test's p-value Holm-corrected across the comparisons of this table "
               "(every metric's are in `confirm/aggregates/comparisons.parquet`), and the verdict."
               if baseline else "No baseline was given, so nothing is compared.")
    return (f"The search's best configs and the baselines, retrained under the seeds "
            f"{', '.join(map(str, seeds))}, which the search never used (`confirm/`): each objective's mean "
            "over the n seeds and its 95% interval (Student t). `in the search`: the value the search reported "
            f"for the trial that chose the config (the best of many, so an optimistic one). {against}")


def confirmation_markdown(table: pd.DataFrame, seeds: list[int]) -> list[str]:
    """The report's Confirmation section."""
    cells = confirmation_cells(table)
    return ["## Confirmation", "", confirmation_intro(table, seeds), "",
            markdown(cells, CONFIRMATION_HEADER, text_columns=2) if cells else "No config to confirm.", ""]


def confirmation_text(table: pd.DataFrame, seeds: list[int]) -> str:
    """The confirmation's table in the terminal."""
    cells = confirmation_cells(table)
    head = f"confirmed under the new seeds {', '.join(map(str, seeds))}:"
    return head + "\n" + text_of(cells, CONFIRMATION_HEADER, 2) if cells else head + " no config"
