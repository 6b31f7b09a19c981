"""Pictures of the latent space: the aggregate posterior's marginals
against N(0, 1), per-dimension summaries, the posterior of single examples,
scatters of posterior means and their animation over the epochs.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Optional, Sequence

import numpy as np
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from probvae.analysis.plot_canvas import draw_image, new_figure, save, styled

__all__ = [
    "COLLAPSED_COLOUR",
    "COLLAPSED_FACE",
    "assemble_gif",
    "plot_latent_marginals",
    "plot_latent_scatter",
    "plot_latent_summary",
    "plot_posterior_inspection",
]

COLLAPSED_COLOUR = "#c0392b"
COLLAPSED_FACE = "#f9e0dd"


def _standard_normal_pdf(t):
    return np.exp(-0.5 * t**2) / math.sqrt(2.0 * math.pi)


@styled
def plot_latent_marginals(samples, ks, mean, std, collapsed, path_prefix: str, per_page: int = 16,
                          title: str = "Aggregate posterior marginals against N(0, 1)") -> list:
    """Histograms of samples [N, d] per dimension with the N(0, 1) density over them.

    Each panel's title gives the KS statistic, mean and standard deviation;
    collapsed dimensions get a tinted panel and a red "collapsed" title. More
    than `per_page` dimensions go to several PNGs.

    Returns:
      The paths: PATH_PREFIX.png for one page, PATH_PREFIX_pageK.png for more.
    """
    samples = np.asarray(samples)
    latent_dim = samples.shape[1]
    pages = math.ceil(latent_dim / per_page)
    low = min(-4.0, float(np.percentile(samples, 0.1)))
    high = max(4.0, float(np.percentile(samples, 99.9)))
    t = np.linspace(low, high, 300)
    paths = []
    for page in range(pages):
        dims = range(page * per_page, min((page + 1) * per_page, latent_dim))
        cols = min(4, len(dims))
        rows = math.ceil(len(dims) / cols)
        figure = new_figure(3.4 * cols, 2.7 * rows + 0.6)
        axes = figure.subplots(rows, cols, squeeze=False)
        for ax in axes.flat[len(dims):]:
            ax.set_visible(False)
        for ax, u in zip(axes.flat, dims):
            sns.histplot(x=samples[:, u], stat="density", bins=40, binrange=(low, high), ax=ax,
                         color="tab:blue", alpha=0.55, edgecolor="none", label="q(z) samples")
            ax.plot(t, _standard_normal_pdf(t), color="black", linewidth=1.4, label="N(0, 1)")
            ax.set_xlim(low, high)
            ax.set_xlabel("")
            ax.set_ylabel("")
            text = f"z[{u}]: KS {ks[u]:.3f}\nmean {mean[u]:+.2f}, sd {std[u]:.2f}"
            if collapsed[u]:
                ax.set_facecolor(COLLAPSED_FACE)
                for spine in ax.spines.values():
                    spine.set_edgecolor(COLLAPSED_COLOUR)
                    spine.set_linewidth(2.0)
                ax.set_title(f"{text}  (collapsed)", color=COLLAPSED_COLOUR, fontsize=9)
            else:
                ax.set_title(text, fontsize=9)
        axes.flat[0].legend(loc="upper left", fontsize=7, frameon=False)
        page_note = f" (page {page + 1} of {pages})" if pages > 1 else ""
        figure.suptitle(f"{title}{page_note}")
        figure.supxlabel("latent value")
        figure.supylabel("density")
        figure.tight_layout()
        suffix = f"_page{page + 1}" if pages > 1 else ""
        paths.append(save(figure, f"{path_prefix}{suffix}.png"))
    return paths


@styled
def plot_latent_summary(ks, activity, kl, collapsed, threshold: float, path: str) -> str:
    """Bar charts per latent dimension: KS statistic, activity (log scale,
    with the collapse threshold) and marginal KL; collapsed dimensions in red."""
    latent_dim = len(ks)
    dims = np.arange(latent_dim)
    colours = [COLLAPSED_COLOUR if c else "tab:blue" for c in collapsed]
    figure = new_figure(max(6.0, 0.32 * latent_dim + 2.0), 7.5)
    axes = figure.subplots(3, 1, sharex=True)
    axes[0].bar(dims, ks, color=colours)
    axes[0].set_ylabel("KS vs N(0, 1)")
    axes[0].set_title("Per-dimension fit of the aggregate posterior to N(0, 1)")
    axes[1].bar(dims, np.maximum(activity, 1e-8), color=colours, bottom=0)
    axes[1].set_yscale("log")
    axes[1].axhline(threshold, color="black", linestyle="--", linewidth=1.0,
                    label=f"collapse threshold {threshold:g}")
    floor = max(1e-8, min(threshold / 3.0, float(np.min(activity)) / 2.0))
    axes[1].set_ylim(floor, max(threshold, float(np.max(activity))) * 30.0)  # room for the legend
    axes[1].set_ylabel("activity Var[E(z|x)]")
    axes[1].legend(loc="upper right", frameon=False)
    axes[2].bar(dims, kl, color=colours)
    axes[2].set_ylabel("mean KL (nats)")
    axes[2].set_xlabel("latent dimension (red: collapsed)")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(latent_dim, 32)))
    axes[2].set_xlim(-0.6, latent_dim - 0.4)
    figure.tight_layout()
    return save(figure, path)


@styled
def plot_posterior_inspection(inputs, reconstructions, loc, stddev, correlation, path: str,
                              indices: Optional[Sequence[int]] = None) -> str:
    """One row per example: the input, reconstructions from z ~ q(z|x), the
    posterior mean +- 1 standard deviation per dimension and the posterior
    correlation matrix.

    Args:
      inputs: [n, h, w, c]; reconstructions: [n, k, h, w, c]; loc, stddev: [n, d];
      correlation: [n, d, d]; indices: example numbers for the titles.
    """
    n, k = reconstructions.shape[:2]
    latent_dim = loc.shape[1]
    indices = list(range(n)) if indices is None else list(indices)
    row_height = min(4.0, max(2.0, 0.12 * latent_dim + 1.2))
    bar_width = max(3.0, 0.22 * latent_dim + 1.0)
    heat_width = row_height + 0.9  # a square matrix and its colour bar
    tick_step = max(1, math.ceil(latent_dim / 8))
    image_width = min(1.8, max(1.25, 0.6 * row_height))
    figure = new_figure(image_width * (k + 1) + bar_width + heat_width + 0.8, row_height * n + 0.7)
    grid = figure.add_gridspec(n, k + 3, width_ratios=[image_width] * (k + 1) + [bar_width, heat_width])
    dims = np.arange(latent_dim)
    annotate = latent_dim <= 6
    for row in range(n):
        draw_image(figure.add_subplot(grid[row, 0]), inputs[row], f"input #{indices[row]}")
        for j in range(k):
            draw_image(figure.add_subplot(grid[row, j + 1]), reconstructions[row, j], f"from z sample {j + 1}")
        bars = figure.add_subplot(grid[row, k + 1])
        bars.axhspan(-1.0, 1.0, color="0.9", zorder=0)
        bars.errorbar(dims, loc[row], yerr=stddev[row], fmt="o", color="tab:blue", markersize=4, capsize=3)
        bars.axhline(0.0, color="0.5", linewidth=0.8)
        bars.set_xlabel("latent dimension")
        bars.set_ylabel("z")
        bars.set_title("posterior mean +- 1 sd\n(grey: prior +- 1 sd)", fontsize=9)
        bars.set_xlim(-0.6, latent_dim - 0.4)
        bars.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(latent_dim, 16)))
        heat = figure.add_subplot(grid[row, k + 2])
        with warnings.catch_warnings():  # seaborn 0.13 calls a colormap method matplotlib 3.11 deprecates
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            sns.heatmap(correlation[row], vmin=-1.0, vmax=1.0, center=0.0, cmap="RdBu_r", square=True,
                        annot=annotate, fmt=".2f", annot_kws={"fontsize": 7}, ax=heat,
                        cbar_kws={"label": "correlation", "shrink": 0.8},
                        xticklabels=tick_step, yticklabels=tick_step)
        heat.set_xlabel("dimension")
        heat.set_ylabel("dimension")
        heat.set_title("posterior correlation")
    figure.suptitle("Posterior q(z|x) of held-out examples")
    figure.tight_layout()
    return save(figure, path)


@styled
def plot_latent_scatter(points, path: str, labels=None, class_names: Optional[Sequence[str]] = None,
                        dims=(0, 1), title: str = "Posterior means of held-out examples",
                        limit: Optional[float] = None, tight: bool = True) -> str:
    """Scatter of 2-D points [n, 2] (posterior means of dims `dims`), coloured
    by integer `labels` when given, with the prior's 1 and 2 sd circles.

    `limit` fixes both axes to [-limit, limit] (for frames of an animation);
    `tight=False` keeps the figure size fixed.
    """
    points = np.asarray(points)
    figure = new_figure(7.2, 5.6)
    ax = figure.subplots()
    if labels is not None:
        labels = np.asarray(labels)
        present = np.unique(labels)
        names = [class_names[v] if class_names is not None and v < len(class_names) else str(v) for v in present]
        palette = sns.color_palette("tab10" if len(present) <= 10 else "husl", len(present))
        for value, name, colour in zip(present, names, palette):
            chosen = labels == value
            ax.scatter(points[chosen, 0], points[chosen, 1], s=5, alpha=0.6, color=colour, linewidths=0, label=name)
    else:
        ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.6, color="tab:blue", linewidths=0,
                   label="posterior mean")
    angle = np.linspace(0, 2 * np.pi, 200)
    for radius in (1.0, 2.0):
        ax.plot(radius * np.cos(angle), radius * np.sin(angle), color="0.3", linestyle="--", linewidth=0.8,
                label="prior: 1 and 2 sd" if radius == 1.0 else None)
    legend = ax.legend(title="label" if labels is not None else None, loc="center left",
                       bbox_to_anchor=(1.01, 0.5), frameon=False, markerscale=3)
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    if limit is not None:
        outside = int(np.sum(np.any(np.abs(points) > limit, axis=1)))
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        if outside:
            title = f"{title}\n({outside} points outside the axes)"
    ax.set_aspect("equal", adjustable="datalim" if limit is None else "box")
    ax.set_xlabel(f"z[{dims[0]}] (posterior mean)")
    ax.set_ylabel(f"z[{dims[1]}] (posterior mean)")
    ax.set_title(title)
    if tight:
        figure.tight_layout()
    else:
        figure.subplots_adjust(left=0.1, right=0.78, bottom=0.1, top=0.92)
    return save(figure, path, tight=tight)


def assemble_gif(frame_paths: Sequence[str], path: str, seconds_per_frame: float = 0.6) -> str:
    """An animated GIF from PNG frames (resized to the first frame's size), looping forever."""
    from PIL import Image

    if not frame_paths:
        raise ValueError("assemble_gif needs at least one frame")
    frames = []
    for frame_path in frame_paths:
        with Image.open(frame_path) as image:
            frames.append(image.convert("RGB"))
    size = frames[0].size
    frames = [f if f.size == size else f.resize(size) for f in frames]
    # Hold the last frame longer so the final state is visible.
    durations = [int(1000 * seconds_per_frame)] * (len(frames) - 1) + [int(3000 * seconds_per_frame)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path
