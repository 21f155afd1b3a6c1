"""PNG plots of evaluation reports.

matplotlib is imported lazily and used through ``Figure`` + the Agg canvas (no pyplot global
state), so this is safe in headless, multi-threaded runs.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from deer_reid_assets.core.evaluation.report import EvaluationReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_SAME_COLOUR = "tab:green"
_DIFFERENT_COLOUR = "tab:red"
_ASSIGN_COLOUR = "tab:blue"


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def evaluation_plot(report: EvaluationReport, title: str) -> bytes:
    """Top: same- vs different-deer similarity histograms with the threshold; below it: assignment
    rate and false-match rate against the threshold, with the FMR budget and thresholds marked.
    Stacked, so the plot fits the width of the Dagster UI's metadata dialog."""
    figure = _new_figure(7.5, 8.4)
    figure.suptitle(title)
    hist_ax, sweep_ax = figure.subplots(2, 1)

    same, different = report.same_similarities, report.different_similarities
    both = np.concatenate([same, different])
    low = min(-0.2, float(both.min())) if both.size else -0.2
    bins = np.linspace(low, 1.0, 61)
    for values, colour, label in (
        (different, _DIFFERENT_COLOUR, "different deer"),
        (same, _SAME_COLOUR, "same deer"),
    ):
        if values.size:
            hist_ax.hist(values, bins=bins, density=True, alpha=0.55, color=colour,
                         label=f"{label} (n={values.size:,})")
    hist_ax.axvline(report.threshold, color="black", linestyle="--",
                    label=f"threshold {report.threshold:.2f}")
    hist_ax.set_xlabel("cosine similarity to profile")
    hist_ax.set_ylabel("density")
    hist_ax.set_title("Similarity to deer profiles")
    hist_ax.legend(loc="upper left", fontsize="small")

    sweep = report.sweep
    sweep_ax.plot(sweep["threshold"], sweep["assignment_rate"], color=_ASSIGN_COLOUR,
                  label="assignment rate")
    sweep_ax.plot(sweep["threshold"], sweep["false_match_rate"], color=_DIFFERENT_COLOUR,
                  label="false-match rate")
    sweep_ax.axhline(report.max_false_match_rate, color=_DIFFERENT_COLOUR, linestyle=":",
                     label=f"{report.max_false_match_rate:.0%} FMR budget")
    sweep_ax.axvline(report.threshold, color="black", linestyle="--",
                     label=f"threshold {report.threshold:.2f}: "
                           f"{report.assignment['assignment_rate']:.0%} assigned, "
                           f"{report.assignment['false_match_rate']:.1%} FMR")
    if report.best is not None:
        sweep_ax.plot([report.best["threshold"]], [report.best["assignment_rate"]], "o",
                      color=_ASSIGN_COLOUR, markeredgecolor="black",
                      label=f"best {report.best['threshold']:.2f}: "
                            f"{report.best['assignment_rate']:.0%} assigned")
    sweep_ax.set_xlim(0, 1)
    sweep_ax.set_ylim(0, 1.02)
    sweep_ax.set_xlabel("threshold")
    sweep_ax.set_ylabel("rate")
    sweep_ax.set_title(f"Assignment vs threshold ({report.assignment['n_queries']:,} queries)")
    sweep_ax.grid(alpha=0.3)
    sweep_ax.legend(loc="upper right", fontsize="small")
    return _png(figure)


def comparison_plot(reports: dict[str, EvaluationReport]) -> bytes:
    """Assignment rate against false-match rate over the threshold sweep, one curve per model,
    with each model's operating threshold marked."""
    figure = _new_figure(7, 5)
    ax = figure.subplots()
    budgets = set()
    for model, report in reports.items():
        sweep = report.sweep
        (line,) = ax.plot(sweep["false_match_rate"], sweep["assignment_rate"], label=model)
        ax.plot([report.assignment["false_match_rate"]], [report.assignment["assignment_rate"]],
                "o", color=line.get_color(), markeredgecolor="black")
        budgets.add(report.max_false_match_rate)
    for budget in sorted(budgets):
        ax.axvline(budget, color="grey", linestyle=":", label=f"{budget:.0%} FMR budget")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false-match rate")
    ax.set_ylabel("assignment rate")
    ax.set_title("Assignment rate vs false-match rate (dots: operating threshold)")
    ax.grid(alpha=0.3)
    if reports:
        ax.legend(loc="lower right", fontsize="small")
    return _png(figure)


def ensemble_curve_plot(curve, chosen_weight: float) -> bytes:
    """What the ensemble weight search saw on the validation queries: rank-1, mAP and (where a
    threshold met the budget) the assignment rate against the multi-scale weight w."""
    figure = _new_figure(7, 4)
    ax = figure.subplots()
    for column, label in (("rank1", "rank-1"), ("mAP", "mAP"), ("assignment_rate", "assignment rate within budget")):
        if column in curve:
            ax.plot(curve["weight"], curve[column], marker="o", markersize=3, label=label)
    ax.axvline(chosen_weight, color="black", linestyle="--", label=f"chosen w = {chosen_weight:.2f}")
    ax.axvline(0.6, color="grey", linestyle=":", label="roadmap w = 0.6")
    ax.set_xlabel("weight of multi-scale ResNet50 (1 - w on EfficientNet-B0)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Ensemble weight search (validation queries)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _png(figure)


def training_curve_plot(history) -> bytes:
    """Loss terms, validation rank-1 / mAP and the same/different-deer cosines per epoch of a training
    run (epoch 0 = the untrained network)."""
    figure = _new_figure(11, 3.6)
    loss_ax, val_ax, cos_ax = figure.subplots(1, 3)
    for column in ("loss", "id_loss", "triplet_loss"):
        if column in history:
            loss_ax.plot(history["epoch"], history[column], marker="o", markersize=3, label=column)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_title("Training loss")
    loss_ax.grid(alpha=0.3)
    loss_ax.legend(loc="best", fontsize="small")
    validated = history.dropna(subset=["val_mAP"])  # with val_every > 1 some epochs are not validated
    val_ax.plot(validated["epoch"], validated["val_mAP"], marker="o", markersize=3, label="val mAP")
    val_ax.plot(validated["epoch"], validated["val_rank1"], marker="o", markersize=3, label="val rank-1")
    val_ax.set_xlabel("epoch")
    val_ax.set_ylim(0, 1.02)
    val_ax.set_title("Validation retrieval")
    val_ax.grid(alpha=0.3)
    val_ax.legend(loc="best", fontsize="small")
    for column in ("same_cosine", "different_cosine"):
        if column in history:
            cos_ax.plot(validated["epoch"], validated[column], marker="o", markersize=3, label=column)
    cos_ax.axhline(0.8, color="grey", linestyle="--", linewidth=1, label="collapse line")
    cos_ax.set_xlabel("epoch")
    cos_ax.set_title("Mean pair cosine (validation)")
    cos_ax.grid(alpha=0.3)
    cos_ax.legend(loc="best", fontsize="small")
    return _png(figure)
