"""Pictures of decoded images: reconstructions, decoded prior draws, the
decoded grid over two latent dimensions and interpolations between inputs.
"""

from __future__ import annotations

import math

import numpy as np

from probvae.analysis.plot_canvas import as_grid, draw_image, image_mosaic, mosaic_figure, new_figure, save, styled

__all__ = ["plot_interpolation", "plot_manifold", "plot_prior_samples", "plot_reconstructions"]


@styled
def plot_reconstructions(rows: dict, path: str, title: str = "Reconstructions") -> str:
    """Image rows over each other, e.g. {"input": [n, h, w, c], "reconstruction": ...}.

    The dict order is the row order; the keys label the rows.
    """
    names = list(rows)
    n = len(rows[names[0]])
    figure = new_figure(1.1 * n + 1.2, 1.2 * len(names) + 0.6)
    axes = figure.subplots(len(names), n, squeeze=False)
    for r, name in enumerate(names):
        for c in range(n):
            draw_image(axes[r, c], rows[name][c])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    for c in range(n):
        axes[-1, c].set_xlabel(f"#{c}", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return save(figure, path)


@styled
def plot_prior_samples(means, path: str, samples=None, cols: int = 8, prior: str = "p(z)") -> str:
    """Decoded draws z ~ p(z): the means of p(x|z) and, if given, a draw x ~ p(x|z)
    of each; `prior` names the prior in the caption (e.g. "N(0, I)")."""
    panels = [("mean of p(x|z)", means)] + ([("a draw x ~ p(x|z)", samples)] if samples is not None else [])
    mosaics = [image_mosaic(as_grid(images, cols)) for _, images in panels]
    figure, axes = mosaic_figure(mosaics, target_pixels=450, left=30, bottom=50, top=80)
    for ax, (name, images) in zip(axes, panels):
        ax.set_title(name)
        ax.set_xlabel(f"{len(images)} latents z ~ {prior}")
    figure.suptitle("Samples from the model: decoded prior draws")
    return save(figure, path, tight=False)


@styled
def plot_manifold(images, values, path: str, dims=(0, 1), title: str = "Decoded latent grid") -> str:
    """A decoded grid images [rows, cols, h, w, c] (row 0 at the top, as
    `inspection.decode_grid` makes it) with the latent values on the axes."""
    rows, cols, height, width = images.shape[:4]
    pad = 1
    mosaic = image_mosaic(images, pad=pad)
    figure, (ax,) = mosaic_figure([mosaic], target_pixels=1000, left=80, bottom=100, top=50)
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
    return save(figure, path, tight=False)


@styled
def plot_interpolation(start, end, decoded, t, path: str, names=("start", "end"),
                       title: str = "Interpolation between posterior means") -> str:
    """The input `start`, the decoded points decoded [steps, h, w, c] at
    fractions t [steps] of the way, and the input `end`."""
    steps = len(decoded)
    figure = new_figure(1.05 * (steps + 2) + 0.4, 1.8)
    axes = figure.subplots(1, steps + 2)
    draw_image(axes[0], start, f"input\n{names[0]}")
    for ax, image, fraction in zip(axes[1:-1], decoded, t):
        draw_image(ax, image, f"t = {fraction:.2f}")
    draw_image(axes[-1], end, f"input\n{names[1]}")
    for ax in (axes[0], axes[-1]):
        for spine in ax.spines.values():
            spine.set_edgecolor("tab:orange")
            spine.set_linewidth(2.0)
    figure.suptitle(f"{title}: z = (1 - t) E[z|start] + t E[z|end], decoded to the mean of p(x|z)", fontsize=11)
    figure.tight_layout()
    return save(figure, path)
