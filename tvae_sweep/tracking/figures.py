"""Figures of a sweep's results, drawn with matplotlib's Agg canvas (no display, no pyplot state)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from ..metrics import INIT, LEARNED, SUMMARY
from ..sweep.spec import SweepSpec
from .aggregate import axis_values, finished, pareto_front, seed_metrics

NOT_SAMPLED = "(not sampled)"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def pareto_figure(frame: pd.DataFrame) -> Figure | None:
    """Log-likelihood against equivariance ratio, the Pareto front (high likelihood, low ratio) drawn."""
    done = finished(frame)
    x, y = "final/equivariance_ratio", "final/log_likelihood"
    if x not in done or y not in done or done[[x, y]].dropna().empty:
        return None
    points = done[[x, y, "trial_id"]].dropna()
    front = pareto_front(done)
    fig = _figure(6, 4.5)
    ax = fig.add_subplot()
    ax.scatter(points[x], points[y], s=25, color="0.6", label="finished trials")
    ax.plot(front[x], front[y], "o-", color="tab:red", drawstyle="steps-post", label="Pareto front")
    for _, row in front.iterrows():
        ax.annotate(row["trial_id"], (row[x], row[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("equivariance ratio (lower: rolls with the transformation)")
    ax.set_ylabel("log-likelihood (nats per image)")
    ax.set_title(f"Likelihood against equivariance, {len(points)} trials")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def axes_figure(frame: pd.DataFrame, spec: SweepSpec) -> Figure | None:
    """The objectives and the summary metrics (metrics.SUMMARY), each with what training added to it
    (rows), against each searched key (columns): trials as dots, the mean as a line. The other
    metrics, a metric's value at initialisation and a replicated trial's seeds are left to the
    aggregates' tables (each row costs a second of drawing on a 6-key sweep)."""
    done = finished(frame)
    shown = [m for m in seed_metrics(done) if not m.endswith(INIT)]
    summary = [m for m in shown if m.removesuffix(LEARNED) in SUMMARY and m not in spec.search.metrics]
    metrics = [m for m in spec.search.metrics if m in shown] + summary
    keys = list(spec.space)
    if done.empty or not metrics or not keys:
        return None
    fig = _figure(2.6 * len(keys) + 0.8, 2.1 * len(metrics) + 0.6)
    grid = fig.subplots(len(metrics), len(keys), squeeze=False)
    rng = np.random.default_rng(0)
    for j, key in enumerate(keys):
        labels = axis_values(done, key, spec.space[key]).map(lambda v: NOT_SAMPLED if pd.isna(v) else v)
        order = _order(labels)
        position = labels.map({v: i for i, v in enumerate(order)}).astype(float)
        for i, metric in enumerate(metrics):
            ax = grid[i][j]
            values = done[f"final/{metric}"]
            jitter = rng.uniform(-0.12, 0.12, len(position))
            ax.scatter(position + jitter, values, s=14, alpha=0.7)
            means = values.groupby(position).mean()
            ax.plot(means.index, means.values, "_-", color="tab:red", markersize=14)
            ax.set_xticks(range(len(order)), [_short(v) for v in order], fontsize=7, rotation=30)
            ax.set_xlim(-0.5, len(order) - 0.5)
            ax.tick_params(axis="y", labelsize=7)
            if j == 0:
                ax.set_ylabel(metric, fontsize=8)
            if i == len(metrics) - 1:
                ax.set_xlabel(key, fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle(f"Final metrics per searched value ({len(done)} finished trials)", fontsize=10)
    return fig


def _order(labels: pd.Series) -> list:
    present = list(dict.fromkeys(labels))
    if isinstance(labels.dtype, pd.CategoricalDtype):
        return [c for c in labels.cat.categories if c in present]
    tail = [NOT_SAMPLED] if NOT_SAMPLED in present else []
    rest = [v for v in present if v != NOT_SAMPLED]
    try:
        rest = sorted(rest)
    except TypeError:
        rest = sorted(rest, key=str)
    return rest + tail


def _short(value) -> str:
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 14 else text[:13] + "…"


def traversals_figure(images: list[tuple[str, Path]], columns: int | None = None) -> Figure | None:
    """Pictures (traversals, forecasts, maps) in a grid of `columns` (default: one row), each titled."""
    images = [(title, Path(p)) for title, p in images if p and Path(p).is_file()]
    if not images:
        return None
    pictures = [np.asarray(Image.open(p).convert("RGB")) for _, p in images]
    columns = min(columns or len(pictures), len(pictures))
    rows = -(-len(pictures) // columns)
    height = max(p.shape[0] for p in pictures) / 100 + 0.45  # inches per row, with its title
    width = max(p.shape[1] for p in pictures) / 100 + 0.2
    scale = min(1.0, 14 / (width * columns))
    fig = _figure(scale * width * columns, scale * height * rows + 0.2)
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes:
        ax.axis("off")
    for ax, (title, _), picture in zip(axes, images, pictures, strict=False):  # the grid's last row may have gaps
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    return fig


def importance_figure(table: pd.DataFrame) -> Figure | None:
    """Each objective's parameter importance (an importance table: objective, param, importance,
    evaluator, trials) as bars, one panel per objective, the most important key on top."""
    if table.empty:
        return None
    objectives = list(dict.fromkeys(table["objective"]))
    keys = table["param"].nunique()
    fig = _figure(3.6 * len(objectives) + 0.6, 0.35 * keys + 1.4)
    axes = fig.subplots(1, len(objectives), squeeze=False)[0]
    for ax, objective in zip(axes, objectives, strict=True):
        rows = table[table["objective"] == objective].sort_values("importance")
        ax.barh(rows["param"], rows["importance"], color="tab:blue")
        ax.set_xlim(0, 1)
        ax.set_title(objective, fontsize=9)
        ax.set_xlabel("share of the variance", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    first = table.iloc[0]
    fig.suptitle(f"Which searched keys matter ({first['evaluator']}, {first['trials']} finished trials)", fontsize=10)
    return fig


def curves_figure(table: pd.DataFrame | None, metrics: list[str]) -> Figure | None:
    """Learning curves (a curves table: group, epoch, metric, n, mean, ..., ci_low, ci_high), one
    panel per metric of `metrics`: each group's mean against the epoch, its 95% interval a band."""
    if table is None or table.empty or not metrics:
        return None
    fig = _figure(3.6 * len(metrics) + 0.6, 3.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for group, curve in table[table["metric"] == metric].groupby("group", sort=False):
            line, = ax.plot(curve["epoch"], curve["mean"], "o-", markersize=3, label=_short(group))
            ax.fill_between(curve["epoch"], curve["ci_low"].astype(float), curve["ci_high"].astype(float),
                            color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Learning curves: each group's mean over its seeds, the band its 95% interval", fontsize=10)
    return fig
