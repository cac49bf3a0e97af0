"""The report's and the sweep summary's figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

if TYPE_CHECKING:  # the sweep summary draws without importing torch and scikit-learn
    from cnnlab.evaluation.metrics import RocCurve
    from cnnlab.inference import Predictions

# above this many classes, cell values and bar labels would overlap
MAX_ANNOTATED_CLASSES = 25
# more learning-rate changes than this (a schedule that changes it every epoch) are not marked on the curves
MAX_MARKED_LR_CHANGES = 10


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG and free it."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _class_ticks(ax, names: list[str], positions) -> None:
    """Class names under the x axis, slanted when they would collide."""
    slant = sum(len(n) for n in names) > 40
    ax.set_xticks(positions, names, rotation=45 if slant else 0, ha="right" if slant else "center")


def confusion_matrix_figure(confusion: np.ndarray, class_names: list[str]) -> Figure:
    """Row-normalized confusion matrix (each true class sums to 1), class names on both axes."""
    k = len(class_names)
    rows = confusion.sum(axis=1, keepdims=True)
    normalized = np.divide(confusion, rows, out=np.zeros(confusion.shape, float), where=rows > 0)
    side = min(4 + 0.5 * k, 24)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    names = [_short(n) for n in class_names]
    _class_ticks(ax, names, range(k))
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (row-normalized)")
    if k <= MAX_ANNOTATED_CLASSES:
        for i in range(k):
            for j in range(k):
                value = normalized[i, j]
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value > 0.5 else "black",
                )
    return fig


def roc_curves_figure(roc: dict[str, RocCurve], auroc_macro: float) -> Figure:
    """One-vs-rest ROC curve per class, AUC in the legend."""
    fig, ax = plt.subplots(figsize=(7, 6))
    colors = plt.get_cmap("tab20" if len(roc) > 10 else "tab10")
    for i, (name, curve) in enumerate(roc.items()):
        ax.plot(curve.fpr, curve.tpr, color=colors(i % colors.N), lw=1.5, label=f"{_short(name)} (AUC {curve.auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"ROC one-vs-rest (macro AUC {auroc_macro:.3f})",
    )
    ax.legend(loc="lower right", fontsize=7, ncol=1 if len(roc) <= 12 else 2)
    ax.grid(alpha=0.3)
    return fig


def learning_curves_figure(history: dict[str, dict[int, float]], best_epoch: int | None) -> Figure:
    """Loss and accuracy per epoch (train vs val) and the learning rate; the best epoch and the LR's steps
    (up to :data:`MAX_MARKED_LR_CHANGES`) are marked with vertical lines on all panels."""
    lr_keys = sorted(k for k in history if k.startswith("lr-"))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, quantity in zip(axes, ("loss", "acc")):
        for stage, style in (("train", "o-"), ("val", "s-")):
            series = history.get(f"{stage}/{quantity}", {})
            if series:
                ax.plot(list(series), list(series.values()), style, ms=3, label=stage)
        ax.set(xlabel="epoch", ylabel=quantity, title={"loss": "Loss", "acc": "Accuracy"}[quantity])
    lr_changes: list[int] = []
    for key in lr_keys:
        epochs, values = list(history[key]), list(history[key].values())
        axes[2].step(epochs, values, where="post", marker=".", label=key.removeprefix("lr-"))
        lr_changes += [e for e, prev, cur in zip(epochs[1:], values, values[1:]) if not np.isclose(prev, cur)]
    axes[2].set(xlabel="epoch", ylabel="learning rate", title="Learning rate")
    if lr_keys and all(v > 0 for k in lr_keys for v in history[k].values()):
        axes[2].set_yscale("log")
    # marked where the schedule steps (plateau drops, two-stage unfreezing); a schedule that changes the rate
    # every epoch (cosine) has its own panel, and a line per epoch would hide the curves
    changes = sorted(set(lr_changes)) if len(set(lr_changes)) <= MAX_MARKED_LR_CHANGES else []
    for ax in axes:
        for i, epoch in enumerate(changes):
            ax.axvline(epoch, color="grey", ls=":", lw=1, label="LR change" if i == 0 else None)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:red", ls="--", lw=1, label=f"best epoch ({best_epoch})")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def per_class_metrics_figure(per_class: dict[str, list[float]], class_names: list[str]) -> Figure:
    """Grouped bars of precision, recall and F1 per class."""
    k = len(class_names)
    x = np.arange(k)
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * k + 2), 4.5))
    for i, (metric, values) in enumerate(per_class.items()):
        ax.bar(x + (i - 1) * width, values, width, label=metric)
    _class_ticks(ax, [_short(n) for n in class_names], x)
    ax.set(ylim=(0, 1.05), ylabel="score")
    ax.set_title("Per-class precision, recall and F1", pad=24)
    ax.legend(ncol=3, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _displayable(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 to something ``imshow`` draws: grayscale for 1 channel, else the first 3."""
    return image[0] if image.shape[0] == 1 else image[:3].transpose(1, 2, 0)


def misclassified_figure(predictions: Predictions, max_images: int = 25) -> Figure:
    """The most confident mistakes, each titled with predicted class, confidence and true class."""
    all_wrong = np.flatnonzero(predictions.predicted != predictions.labels)
    confidence = predictions.confidence
    wrong = all_wrong[np.argsort(-confidence[all_wrong])][:max_images]
    if len(wrong) == 0:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        ax.axis("off")
        return fig
    cols = min(5, len(wrong))
    rows = -(-len(wrong) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.6 * rows), squeeze=False)
    names = predictions.class_names
    for ax, index in zip(axes.flat, wrong):
        ax.imshow(_displayable(predictions.images[index]), cmap="gray", interpolation="nearest")
        predicted, true = names[predictions.predicted[index]], names[predictions.labels[index]]
        title = f"pred {_short(predicted)} ({confidence[index]:.0%})\ntrue {_short(true)}"
        ax.set_title(title, fontsize=8, color="darkred")
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"Misclassified: the {len(wrong)} most confident of {len(all_wrong)}")
    fig.tight_layout()
    return fig


def _is_numeric(values: list[str]) -> bool:
    try:
        [float(v) for v in values]
    except ValueError:
        return False
    return True


def sweep_figure(rows: list[dict], swept: list[str], metric: str) -> Figure:
    """``metric`` against the swept parameters: a heatmap of the mean for exactly two parameters,
    otherwise one panel per parameter (line through the means for numeric values, bars for categories)."""
    done = [r for r in rows if isinstance(r.get(metric), float) and not np.isnan(r[metric])]
    if len(swept) == 2:
        return _sweep_heatmap(done, swept, metric)
    fig, axes = plt.subplots(1, max(1, len(swept)), figsize=(5.5 * max(1, len(swept)), 4), squeeze=False)
    for ax, key in zip(axes.flat, swept or ["run"]):
        groups: dict[str, list[float]] = {}
        for row in done:
            groups.setdefault(str(row.get(key, "")), []).append(row[metric])
        labels = list(groups)
        if labels and _is_numeric(labels):
            labels.sort(key=float)
            x = [float(v) for v in labels]
            ax.plot(x, [np.mean(groups[v]) for v in labels], "o-", label="mean")
            for xv, v in zip(x, labels):
                ax.scatter([xv] * len(groups[v]), groups[v], color="grey", s=12, zorder=3)
            if min(x) > 0 and max(x) / min(x) >= 10:
                ax.set_xscale("log")
        else:
            means = [np.mean(groups[v]) for v in labels]
            stds = [np.std(groups[v]) for v in labels]
            ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="tab:blue")
            ax.set_xticks(range(len(labels)), [_short(v, 20) for v in labels], rotation=30, ha="right")
        ax.set(xlabel=key, ylabel=metric, title=f"{metric} by {key}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _sweep_heatmap(rows: list[dict], swept: list[str], metric: str) -> Figure:
    def ordered(key: str) -> list[str]:
        values = sorted({str(r.get(key, "")) for r in rows})
        return sorted(values, key=float) if values and _is_numeric(values) else values

    ys, xs = ordered(swept[0]), ordered(swept[1])
    grid = np.full((len(ys), len(xs)), np.nan)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            values = [r[metric] for r in rows if str(r.get(swept[0])) == y and str(r.get(swept[1])) == x]
            if values:
                grid[i, j] = np.mean(values)
    fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 3, 0.8 * len(ys) + 2.5))
    image = ax.imshow(grid, cmap="viridis")
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_xticks(range(len(xs)), [_short(x, 20) for x in xs], rotation=30, ha="right")
    ax.set_yticks(range(len(ys)), [_short(y, 20) for y in ys])
    ax.set(xlabel=swept[1], ylabel=swept[0], title=f"{metric} (mean)")
    low, high = np.nanmin(grid), np.nanmax(grid)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if not np.isnan(grid[i, j]):
                bright = high > low and (grid[i, j] - low) / (high - low) > 0.6  # viridis turns yellow
                color = "black" if bright else "white"
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    return fig
