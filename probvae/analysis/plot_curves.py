"""Curves over the epochs: one run's training curves and several runs'
validation ELBO (and importance-weighted bound) side by side; the y-axis
leaves out the first epochs when they dwarf the rest.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from matplotlib.ticker import MaxNLocator

from probvae.analysis.plot_canvas import new_figure, save, styled

__all__ = ["plot_training_curves", "plot_validation_curves"]


def _settled_range(values, epochs: int):
    """y-limits [lo, hi] of the last 90% of the epochs of `values` [curves,
    epochs], or None when the first epochs do not dwarf them (under 20
    epochs, or a full range under three times theirs)."""
    values = np.asarray(values, np.float64).reshape(-1, epochs)
    if epochs < 20:
        return None
    settled = values[:, epochs // 10:]
    low, high = np.nanmin(settled), np.nanmax(settled)
    if not np.isfinite(low) or np.nanmax(values) - np.nanmin(values) < 3 * (high - low):
        return None
    margin = 0.05 * (high - low) or 1.0
    return low - margin, high + margin


@styled
def plot_training_curves(curves: dict, path: str, test: Optional[dict] = None) -> str:
    """ELBO, reconstruction and KL per epoch for train and validation
    (`inspection.training_curves`), with the final test values as stars; and,
    when the curves have them, the training gradients' global norm per epoch
    (mean and largest, log scale), where an unstable step shows."""
    norms = curves.get("gradient_norm")
    figure = new_figure(17.0 if norms else 13.0, 3.8)
    axes = figure.subplots(1, 4 if norms else 3)
    epochs = curves["epoch"]
    if norms:
        _plot_gradient_norms(axes[3], epochs, norms)
    panels = [("elbo", "ELBO"), ("reconstruction", "reconstruction E[log p(x|z)]"), ("kl", "KL(q(z|x) || p(z))")]
    for ax, (name, label) in zip(axes[:3], panels):
        ax.plot(epochs, curves["train"][name], marker="o", markersize=4, label="train")
        ax.plot(epochs, curves["validation"][name], marker="s", markersize=4, label="validation")
        if test is not None and name in test:
            ax.plot([epochs[-1]], [test[name]], marker="*", markersize=11, linestyle="none",
                    color="tab:red", label="test (final)")
        limits = _settled_range(np.stack([curves["train"][name], curves["validation"][name]]), len(epochs))
        if limits is not None:
            ax.set_ylim(*limits)
            label += "\n(axis fitted to the last 90% of epochs)"
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per example")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False)
    figure.suptitle("Training curves")
    figure.tight_layout()
    return save(figure, path)


def _plot_gradient_norms(ax, epochs, norms: dict) -> None:
    ax.plot(epochs, norms["mean"], marker="o", markersize=3, label="mean")
    ax.plot(epochs, norms["max"], marker="^", markersize=3, label="largest")
    ax.set_yscale("log")
    ax.set_title("training gradient norm ||g|| (before clipping)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)


@styled
def plot_validation_curves(curves: dict, path: str, bounds: Optional[dict] = None) -> str:
    """Validation ELBO per epoch of several runs ({name: [ELBO per epoch]}), one
    line each; `bounds` ({name: (label, [bound per epoch])}) adds a run's
    importance-weighted bound as a dashed line of its colour."""
    figure = new_figure(7.5, 4.5)
    ax = figure.subplots(1, 1)
    bounds = bounds or {}
    longest = max((len(values) for values in [*curves.values(), *(b for _, b in bounds.values())]), default=0)
    settled = []
    for name, values in curves.items():
        lines = [(name, values, "-")] + ([(*bounds[name], "--")] if name in bounds else [])
        colour = None
        for label, series, style in lines:
            if len(series):
                drawn, = ax.plot(np.arange(1, len(series) + 1), series, style, color=colour, label=label,
                                 marker="o" if len(series) < 30 else None, markersize=3)
                colour = drawn.get_color()
                settled.append(np.asarray(series, np.float64))
    if settled and longest > 1:
        padded = np.full((len(settled), longest), np.nan)
        for row, values in enumerate(settled):
            padded[row, :len(values)] = values
        limits = _settled_range(padded, longest)
        if limits is not None:
            ax.set_ylim(*limits)
    ax.set_xlabel("epoch")
    ax.set_ylabel(("validation ELBO (IWAE bound dashed)" if bounds else "validation ELBO") + ", nats per example")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("Validation ELBO" + (" and IWAE bound" if bounds else "") + " per epoch")
    figure.tight_layout()
    return save(figure, path)
