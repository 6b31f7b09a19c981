"""Pictures of a VAE: every function takes numpy arrays, saves a PNG and
returns its path. The only probvae module that imports matplotlib or seaborn.

Figures are drawn on matplotlib's Agg canvas directly (`Figure` +
`FigureCanvasAgg`, no pyplot), so plotting works without a display, never
changes the user's pyplot backend and leaves no open figures behind.

Images are floats in [0, 1], [..., h, w, c] with c = 1 (drawn grey, black 0
to white 1, always on that fixed scale) or c = 3 (RGB).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from typing import Optional, Sequence

import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "image_mosaic",
    "plot_latent_marginals",
    "plot_latent_summary",
    "plot_posterior_inspection",
    "plot_reconstructions",
    "plot_prior_samples",
    "plot_validation_curves",
    "plot_latent_scatter",
    "plot_manifold",
    "plot_interpolation",
    "plot_training_curves",
    "assemble_gif",
]

_STYLE = {
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "legend.fontsize": 9, "figure.titlesize": 12, "savefig.dpi": 110,
}
COLLAPSED_COLOUR = "#c0392b"
COLLAPSED_FACE = "#f9e0dd"


def _styled(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            return function(*args, **kwargs)
    return wrapper


def _figure(width: float, height: float, **kwargs) -> Figure:
    figure = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str, tight: bool = True) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, bbox_inches="tight" if tight else None, facecolor="white")
    return path


def _image(ax, image, title: Optional[str] = None) -> None:
    """Draw one [h, w, c] image on the fixed [0, 1] scale, without ticks."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def image_mosaic(images, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile images [rows, cols, h, w, c] into one [H, W, c] image with `pad` pixel gaps."""
    images = np.asarray(images, np.float32)
    rows, cols, height, width, channels = images.shape
    mosaic = np.full((rows * (height + pad) - pad, cols * (width + pad) - pad, channels), pad_value, np.float32)
    for r in range(rows):
        for c in range(cols):
            top, left = r * (height + pad), c * (width + pad)
            mosaic[top : top + height, left : left + width] = images[r, c]
    return mosaic


def _mosaic_figure(mosaics, target_pixels: int, left=90, right=30, bottom=90, top=70, gap=40):
    """A figure with one axes per mosaic, side by side, each drawing its
    mosaic at an exact whole-number zoom (so every image pixel and every gap
    is drawn the same size). Margins are in output pixels.

    Returns:
      (figure, [axes]) with the mosaics drawn; save with tight=False.
    """
    dpi = _STYLE["savefig.dpi"]
    heights = [m.shape[0] for m in mosaics]
    zoom = max(1, round(target_pixels / max(max(m.shape[:2]) for m in mosaics)))
    widths = [m.shape[1] * zoom for m in mosaics]
    height = max(heights) * zoom
    total_width = left + sum(widths) + gap * (len(mosaics) - 1) + right
    total_height = bottom + height + top
    figure = _figure(total_width / dpi, total_height / dpi, dpi=dpi)
    axes, x = [], left
    for mosaic, width in zip(mosaics, widths):
        ax = figure.add_axes([x / total_width, bottom / total_height, width / total_width,
                              mosaic.shape[0] * zoom / total_height])
        _image(ax, mosaic)
        axes.append(ax)
        x += width + gap
    return figure, axes


def _as_grid(images, cols: int) -> np.ndarray:
    """[n, h, w, c] -> [rows, cols, h, w, c], blank (white) cells after the last image."""
    images = np.asarray(images, np.float32)
    rows = math.ceil(len(images) / cols)
    grid = np.ones((rows * cols,) + images.shape[1:], np.float32)
    grid[: len(images)] = images
    return grid.reshape((rows, cols) + images.shape[1:])


def _standard_normal_pdf(t):
    return np.exp(-0.5 * t**2) / math.sqrt(2.0 * math.pi)


@_styled
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
        figure = _figure(3.4 * cols, 2.7 * rows + 0.6)
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
        paths.append(_save(figure, f"{path_prefix}{suffix}.png"))
    return paths


@_styled
def plot_latent_summary(ks, activity, kl, collapsed, threshold: float, path: str) -> str:
    """Bar charts per latent dimension: KS statistic, activity (log scale,
    with the collapse threshold) and marginal KL; collapsed dimensions in red."""
    latent_dim = len(ks)
    dims = np.arange(latent_dim)
    colours = [COLLAPSED_COLOUR if c else "tab:blue" for c in collapsed]
    figure = _figure(max(6.0, 0.32 * latent_dim + 2.0), 7.5)
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
    return _save(figure, path)


@_styled
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
    figure = _figure(image_width * (k + 1) + bar_width + heat_width + 0.8, row_height * n + 0.7)
    grid = figure.add_gridspec(n, k + 3, width_ratios=[image_width] * (k + 1) + [bar_width, heat_width])
    dims = np.arange(latent_dim)
    annotate = latent_dim <= 6
    for row in range(n):
        _image(figure.add_subplot(grid[row, 0]), inputs[row], f"input #{indices[row]}")
        for j in range(k):
            _image(figure.add_subplot(grid[row, j + 1]), reconstructions[row, j], f"from z sample {j + 1}")
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
    return _save(figure, path)


@_styled
def plot_reconstructions(rows: dict, path: str, title: str = "Reconstructions") -> str:
    """Image rows over each other, e.g. {"input": [n, h, w, c], "reconstruction": ...}.

    The dict order is the row order; the keys label the rows.
    """
    names = list(rows)
    n = len(rows[names[0]])
    figure = _figure(1.1 * n + 1.2, 1.2 * len(names) + 0.6)
    axes = figure.subplots(len(names), n, squeeze=False)
    for r, name in enumerate(names):
        for c in range(n):
            _image(axes[r, c], rows[name][c])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    for c in range(n):
        axes[-1, c].set_xlabel(f"#{c}", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


@_styled
def plot_prior_samples(means, path: str, samples=None, cols: int = 8, prior: str = "p(z)") -> str:
    """Decoded draws z ~ p(z): the means of p(x|z) and, if given, a draw x ~ p(x|z)
    of each; `prior` names the prior in the caption (e.g. "N(0, I)")."""
    panels = [("mean of p(x|z)", means)] + ([("a draw x ~ p(x|z)", samples)] if samples is not None else [])
    mosaics = [image_mosaic(_as_grid(images, cols)) for _, images in panels]
    figure, axes = _mosaic_figure(mosaics, target_pixels=450, left=30, bottom=50, top=80)
    for ax, (name, images) in zip(axes, panels):
        ax.set_title(name)
        ax.set_xlabel(f"{len(images)} latents z ~ {prior}")
    figure.suptitle("Samples from the model: decoded prior draws")
    return _save(figure, path, tight=False)


@_styled
def plot_latent_scatter(points, path: str, labels=None, class_names: Optional[Sequence[str]] = None,
                        dims=(0, 1), title: str = "Posterior means of held-out examples",
                        limit: Optional[float] = None, tight: bool = True) -> str:
    """Scatter of 2-D points [n, 2] (posterior means of dims `dims`), coloured
    by integer `labels` when given, with the prior's 1 and 2 sd circles.

    `limit` fixes both axes to [-limit, limit] (for frames of an animation);
    `tight=False` keeps the figure size fixed.
    """
    points = np.asarray(points)
    figure = _figure(7.2, 5.6)
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
    return _save(figure, path, tight=tight)


@_styled
def plot_manifold(images, values, path: str, dims=(0, 1), title: str = "Decoded latent grid") -> str:
    """A decoded grid images [rows, cols, h, w, c] (row 0 at the top, as
    `inspection.decode_grid` makes it) with the latent values on the axes."""
    rows, cols, height, width = images.shape[:4]
    pad = 1
    mosaic = image_mosaic(images, pad=pad)
    figure, (ax,) = _mosaic_figure([mosaic], target_pixels=1000, left=80, bottom=100, top=50)
    step = max(1, math.ceil(cols / 10))
    centres_x = np.arange(cols) * (width + pad) + (width - 1) / 2
    centres_y = np.arange(rows) * (height + pad) + (height - 1) / 2
    shown = np.arange(0, cols, step)
    ax.set_xticks(centres_x[shown])
    ax.set_xticklabels([f"{values[i]:.2f}" for i in shown], rotation=45)
    ax.set_yticks(centres_y[shown])
    ax.set_yticklabels([f"{values[::-1][i]:.2f}" for i in shown])
    ax.set_xlabel(f"z[{dims[0]}]")
    ax.set_ylabel(f"z[{dims[1]}]")
    ax.set_title(title)
    return _save(figure, path, tight=False)


@_styled
def plot_interpolation(start, end, decoded, t, path: str, names=("start", "end"),
                       title: str = "Interpolation between posterior means") -> str:
    """The input `start`, the decoded points decoded [steps, h, w, c] at
    fractions t [steps] of the way, and the input `end`."""
    steps = len(decoded)
    figure = _figure(1.05 * (steps + 2) + 0.4, 1.8)
    axes = figure.subplots(1, steps + 2)
    _image(axes[0], start, f"input\n{names[0]}")
    for ax, image, fraction in zip(axes[1:-1], decoded, t):
        _image(ax, image, f"t = {fraction:.2f}")
    _image(axes[-1], end, f"input\n{names[1]}")
    for ax in (axes[0], axes[-1]):
        for spine in ax.spines.values():
            spine.set_edgecolor("tab:orange")
            spine.set_linewidth(2.0)
    figure.suptitle(f"{title}: z = (1 - t) E[z|start] + t E[z|end], decoded to the mean of p(x|z)", fontsize=11)
    figure.tight_layout()
    return _save(figure, path)


@_styled
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


def plot_training_curves(curves: dict, path: str, test: Optional[dict] = None) -> str:
    """ELBO, reconstruction and KL per epoch for train and validation
    (`inspection.training_curves`), with the final test values as stars."""
    figure = _figure(13.0, 3.8)
    axes = figure.subplots(1, 3)
    epochs = curves["epoch"]
    panels = [("elbo", "ELBO"), ("reconstruction", "reconstruction E[log p(x|z)]"), ("kl", "KL(q(z|x) || p(z))")]
    for ax, (name, label) in zip(axes, panels):
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
    return _save(figure, path)


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


def plot_validation_curves(curves: dict, path: str) -> str:
    """Validation ELBO per epoch of several runs ({name: [ELBO per epoch]}), one line each."""
    figure = _figure(7.5, 4.5)
    ax = figure.subplots(1, 1)
    longest = max((len(values) for values in curves.values()), default=0)
    settled = []
    for name, values in curves.items():
        if values:
            ax.plot(np.arange(1, len(values) + 1), values, marker="o" if len(values) < 30 else None, markersize=3,
                    label=name)
            settled.append(np.asarray(values, np.float64))
    if settled and longest > 1:
        padded = np.full((len(settled), longest), np.nan)
        for row, values in enumerate(settled):
            padded[row, :len(values)] = values
        limits = _settled_range(padded, longest)
        if limits is not None:
            ax.set_ylim(*limits)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ELBO, nats per example")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("Validation ELBO per epoch")
    figure.tight_layout()
    return _save(figure, path)
