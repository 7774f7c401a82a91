"""Scores broken down by the columns of a labelled CSV (``age-evaluate --groups``), and their charts.

``group_metrics`` gives, for every value of each column (UTKFace's ``Gender``, ``Race``, ...), the MAE and RMSE
in years, the share of true ages inside the interval (``coverage``) and the number of faces ``n``; the charts show
the MAE per value with its coverage, and the interval coverage asked for against the one observed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def group_metrics(
    table: pd.DataFrame, error: np.ndarray, covered: np.ndarray, columns: Sequence[str]
) -> dict[str, dict[str, dict[str, float | int]]]:
    """``{column: {value: {"mae", "rmse", "coverage", "n"}}}`` over the rows of ``table`` (one per scored face).

    ``error`` ``(N,)`` is predicted minus true age (years), ``covered`` ``(N,)`` whether the interval held the true
    age. Values are keyed by their text; a missing value is ``"(missing)"``.
    """
    frame = pd.DataFrame({"abs": np.abs(error), "sq": np.square(error), "covered": covered.astype(float)})
    groups: dict[str, dict[str, dict[str, float | int]]] = {}
    for column in columns:
        keys = table[column].astype("string").fillna("(missing)").to_numpy()
        cells: dict[str, dict[str, float | int]] = {}
        for value, part in frame.groupby(keys, sort=True):
            cells[str(value)] = {
                "mae": round(float(part["abs"].mean()), 4),
                "rmse": round(float(np.sqrt(part["sq"].mean())), 4),
                "coverage": round(float(part["covered"].mean()), 4),
                "n": len(part),
            }
        groups[column] = cells
    return groups


def plot_groups(groups: dict[str, dict[str, dict[str, float | int]]], out: Path, title: str) -> None:
    """One bar chart per column: MAE (years) per value, each bar labelled with its coverage and n."""
    fig = Figure(figsize=(5 * max(1, len(groups)), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(groups))))
    for ax, (column, cells) in zip(axes, groups.items(), strict=False):
        labels = list(cells)
        bars = ax.bar(labels, [float(cells[k]["mae"]) for k in labels], color="tab:blue")
        notes = [f"cov {float(cells[k]['coverage']):.0%}\nn={cells[k]['n']}" for k in labels]
        ax.bar_label(bars, labels=notes, fontsize=8)
        ax.margins(y=0.15)  # room for the two-line labels under the title
        ax.set(xlabel=column, ylabel="MAE (years)", title=f"{title}: {column}")
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(out, dpi=100)


def plot_coverage(intervals: dict[str, dict[str, float | None]], out: Path, title: str) -> None:
    """Observed against requested interval coverage (``intervals``: ``{"0.9": {"coverage", "mean_width"}}``)."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    asked = [float(key) for key in intervals]
    seen = [float(cell["coverage"] or 0.0) for cell in intervals.values()]
    ax.plot([0, 1], [0, 1], color="tab:gray", linewidth=1)
    ax.plot(asked, seen, marker="o")
    for x, y, cell in zip(asked, seen, intervals.values(), strict=True):
        ax.annotate(f"width {cell['mean_width']}", (x, y), textcoords="offset points", xytext=(-60, 6), fontsize=8)
    ax.set(xlabel="requested coverage", ylabel="observed coverage", title=title, xlim=(0.4, 1), ylim=(0.4, 1))
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=100)


def write_evaluation_report(
    folder: Path,
    result: dict[str, Any],
    scores: dict[str, Any],
    truth: np.ndarray,
    predicted: np.ndarray,
    intervals: dict[str, dict[str, float | None]],
    widths: np.ndarray,
    names: tuple[str, str, bool],
) -> None:
    """``age-evaluate --plots``: ``metrics.json`` (``result`` plus MAE per decade, ``intervals`` at 50/80/90/95% and
    the mean interval width per decade of true age) and the PNG charts; ``names``: model, CSV, calibrated."""
    from trainer.report import plot_mae_per_decade, plot_predicted_vs_true

    model_name, csv_name, calibrated = names
    folder.mkdir(parents=True, exist_ok=True)
    per_decade = pd.Series(widths).groupby((truth // 10 * 10).astype(int)).mean().round(3)
    report = result | {
        "mae_per_decade": scores["mae_per_decade"],
        "intervals": intervals,
        "mean_interval_width_per_decade": {f"{d}-{d + 9}": float(w) for d, w in per_decade.items()},
    }
    (folder / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_mae_per_decade(
        scores["mae_per_decade"], folder / "mae_per_decade.png", f"{model_name}: MAE per decade on {csv_name}"
    )
    plot_predicted_vs_true(truth, predicted, folder / "predicted_vs_true.png")
    state = "calibrated" if calibrated else "uncalibrated"
    plot_coverage(intervals, folder / "coverage.png", f"{model_name} ({state}) on {csv_name}")
    if result.get("groups"):
        plot_groups(result["groups"], folder / "groups.png", model_name)
