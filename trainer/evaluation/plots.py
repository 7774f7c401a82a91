"""The reports' pictures (matplotlib, PNG): learning curves, MAE per true age or decade, predicted against true
age (``age-train``'s run folder); MAE per group and interval coverage (``age-evaluate --plots``).

Figures are drawn with ``matplotlib.figure.Figure`` directly (no pyplot state, no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def plot_learning_curves(history: pd.DataFrame, out: Path) -> None:
    """Loss and MAE (years) per epoch, training against validation, side by side."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, key, title in zip(fig.subplots(1, 2), ("loss", "mae"), ("CORAL loss", "MAE (years)"), strict=True):
        epochs = history["epoch"] + 1 if "epoch" in history else []
        for prefix, label in (("", "train"), ("val_", "validation")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], marker="o", label=label)
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(out, dpi=100)


def plot_mae_per_age(true_ages: np.ndarray, predicted_ages: np.ndarray, out: Path) -> None:
    """Bar chart of the MAE for each true age (years), with the number of test images per age behind it."""
    table = pd.DataFrame({"age": true_ages, "error": np.abs(predicted_ages - true_ages)})
    per_age = table.groupby("age")["error"].agg(["mean", "count"])
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.subplots()
    ax.bar(per_age.index, per_age["mean"], color="tab:blue", label="MAE")
    ax.set(xlabel="true age (years)", ylabel="MAE (years)", title="Test MAE per true age")
    twin = ax.twinx()
    twin.plot(per_age.index, per_age["count"], color="tab:gray", alpha=0.6, label="images")
    twin.set_ylabel("test images")
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=100)


def plot_predicted_vs_true(true_ages: np.ndarray, predicted_ages: np.ndarray, out: Path) -> None:
    """Scatter of predicted against true age (years) with the identity line."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(true_ages, predicted_ages, s=6, alpha=0.4)
    low = float(min(true_ages.min(), predicted_ages.min())) if true_ages.size else 0.0
    high = float(max(true_ages.max(), predicted_ages.max())) if true_ages.size else 1.0
    ax.plot([low, high], [low, high], color="tab:red", linewidth=1)
    ax.set(xlabel="true age (years)", ylabel="predicted age (years)", title="Test predictions")
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=100)


def plot_mae_per_decade(per_decade: dict[str, dict[str, float | int]], out: Path, title: str) -> None:
    """Bar chart of the MAE (years) per decade of true age, each bar labelled with its number of images.

    ``per_decade`` is ``age_metrics(...)["mae_per_decade"]``: ``{"0-9": {"mae": float, "n": int}, ...}``.
    """
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    labels = list(per_decade)
    bars = ax.bar(labels, [float(per_decade[k]["mae"]) for k in labels], color="tab:blue")
    ax.bar_label(bars, labels=[f"n={per_decade[k]['n']}" for k in labels], fontsize=8)
    ax.set(xlabel="true age (years)", ylabel="MAE (years)", title=title)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(out, dpi=100)


def write_plots(run_dir: Path, history: pd.DataFrame, true_ages: np.ndarray, predicted_ages: np.ndarray) -> list[Path]:
    """All three PNGs into ``run_dir`` (``history``: the per-epoch logs); returns their paths."""
    paths = [run_dir / "learning_curves.png", run_dir / "mae_per_age.png", run_dir / "predicted_vs_true.png"]
    plot_learning_curves(history, paths[0])
    plot_mae_per_age(true_ages, predicted_ages, paths[1])
    plot_predicted_vs_true(true_ages, predicted_ages, paths[2])
    return paths


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
