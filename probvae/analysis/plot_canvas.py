"""The canvas the pictures are drawn on: matplotlib's Agg canvas used
directly (`Figure` + `FigureCanvasAgg`, no pyplot), so plotting works without
a display, never changes the user's pyplot backend and leaves no open figures
behind; the one text style; saving; images and mosaics of images.

Images are floats in [0, 1], [..., h, w, c] with c = 1 (drawn grey, black 0
to white 1, always on that fixed scale) or c = 3 (RGB).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Optional

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["STYLE", "as_grid", "draw_image", "image_mosaic", "mosaic_figure", "new_figure", "save", "styled"]

STYLE = {
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "legend.fontsize": 9, "figure.titlesize": 12, "savefig.dpi": 110,
}


def styled(function):
    """Run a plotting function under the text style `STYLE`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return function(*args, **kwargs)
    return wrapper


def new_figure(width: float, height: float, **kwargs) -> Figure:
    """A figure of width x height inches on its own Agg canvas."""
    figure = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: str, tight: bool = True) -> str:
    """Write `figure` to `path` (folders made as needed) on white; returns `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, bbox_inches="tight" if tight else None, facecolor="white")
    return path


def draw_image(ax, image, title: Optional[str] = None) -> None:
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


def mosaic_figure(mosaics, target_pixels: int, left=90, right=30, bottom=90, top=70, gap=40):
    """A figure with one axes per mosaic, side by side, each drawing its
    mosaic at an exact whole-number zoom (so every image pixel and every gap
    is drawn the same size). Margins are in output pixels.

    Returns:
      (figure, [axes]) with the mosaics drawn; save with tight=False.
    """
    dpi = STYLE["savefig.dpi"]
    heights = [m.shape[0] for m in mosaics]
    zoom = max(1, round(target_pixels / max(max(m.shape[:2]) for m in mosaics)))
    widths = [m.shape[1] * zoom for m in mosaics]
    height = max(heights) * zoom
    total_width = left + sum(widths) + gap * (len(mosaics) - 1) + right
    total_height = bottom + height + top
    figure = new_figure(total_width / dpi, total_height / dpi, dpi=dpi)
    axes, x = [], left
    for mosaic, width in zip(mosaics, widths):
        ax = figure.add_axes([x / total_width, bottom / total_height, width / total_width,
                              mosaic.shape[0] * zoom / total_height])
        draw_image(ax, mosaic)
        axes.append(ax)
        x += width + gap
    return figure, axes


def as_grid(images, cols: int) -> np.ndarray:
    """[n, h, w, c] -> [rows, cols, h, w, c], blank (white) cells after the last image."""
    images = np.asarray(images, np.float32)
    rows = math.ceil(len(images) / cols)
    grid = np.ones((rows * cols,) + images.shape[1:], np.float32)
    grid[: len(images)] = images
    return grid.reshape((rows, cols) + images.shape[1:])
