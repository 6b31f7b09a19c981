"""Image arrays: the IDX reader, the checks and conversions of image and label
arrays, and the built-in procedural shapes.

Images are uint8 [n, height, width, channels] (0..255) until they enter a
pipeline; `to_uint8_images` and `to_unit_interval` accept uint8 0..255 or
floats in [0, 1] and refuse anything else with a `UserError`.
"""

from __future__ import annotations

import gzip
import struct
from typing import Optional

import numpy as np

from probvae.errors import UserError

__all__ = ["read_idx", "checked_images", "to_uint8_images", "to_unit_interval", "make_shapes", "labels_of"]


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (gzipped or not) of unsigned bytes into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise UserError(f"cannot read IDX file {path}: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {body.size}")
    return body.reshape(shape)


def _with_channels(x, what):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise UserError(f"{what} must be [n, height, width] or [n, height, width, channels], got shape {x.shape}")
    if 0 in x.shape[1:]:
        raise UserError(f"{what} have an empty axis (shape {x.shape}); pass images of at least 1x1 pixel and 1 channel")
    return x


def _check_range(x, what):
    floating = np.issubdtype(x.dtype, np.floating)
    if not (floating or np.issubdtype(x.dtype, np.integer)):  # the dtype, even of an empty array
        raise UserError(f"{what} have dtype {x.dtype}; pass uint8 0..255 or floats in [0, 1]")
    if x.dtype == np.uint8 or x.size == 0:
        return
    if floating:
        if not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0:
            raise UserError(f"{what} are floats outside [0, 1]; scale them to [0, 1] or pass uint8 0..255")
    elif x.min() < 0 or x.max() > 255:
        raise UserError(f"{what} are integers outside 0..255; pass uint8 0..255 or floats in [0, 1]")


def checked_images(x, what: str = "images") -> np.ndarray:
    """Images as they are, [n, h, w, c] (a 3-D array [n, h, w] gets a channel
    axis), if they are uint8 0..255 or floats in [0, 1]; a UserError otherwise."""
    x = _with_channels(x, what)
    _check_range(x, what)
    return x


def to_uint8_images(x, what: str = "images") -> np.ndarray:
    """Images as uint8 [n, h, w, c] from uint8 0..255 or float 0..1 arrays.

    A 3-D array [n, h, w] gets a channel axis. Raises UserError for other
    shapes or values outside those ranges.
    """
    x = checked_images(x, what)
    if np.issubdtype(x.dtype, np.floating):
        return np.round(x * 255.0).astype(np.uint8)
    return x.astype(np.uint8)


def to_unit_interval(x, what: str = "images") -> np.ndarray:
    """Images as float32 [n, h, w, c] in [0, 1] from uint8 0..255 or float 0..1
    arrays (floats are kept as they are, not quantised)."""
    x = checked_images(x, what)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    return x.astype(np.float32) / 255.0


def make_shapes(num_examples: int, seed: int = 0, size: int = 28):
    """Procedural grey-level shapes (0 square, 1 disc, 2 triangle, 3 cross).

    Returns:
      images uint8 [num_examples, size, size, 1] and labels int64 [num_examples].
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    labels = rng.integers(0, 4, num_examples)
    radius = rng.uniform(0.18, 0.32, num_examples) * size
    centre = rng.uniform(0.35, 0.65, (num_examples, 2)) * size
    intensity = rng.uniform(0.6, 1.0, num_examples)
    images = np.zeros((num_examples, size, size), np.float32)
    for i in range(num_examples):
        dy, dx = rows - centre[i, 0], cols - centre[i, 1]
        r = radius[i]
        if labels[i] == 0:
            mask = (np.abs(dy) < r) & (np.abs(dx) < r)
        elif labels[i] == 1:
            mask = dy**2 + dx**2 < r**2
        elif labels[i] == 2:
            mask = (dy < r) & (dy > -r) & (np.abs(dx) < (dy + r) / 2)
        else:
            mask = ((np.abs(dy) < r / 3) & (np.abs(dx) < r)) | ((np.abs(dx) < r / 3) & (np.abs(dy) < r))
        images[i][mask] = intensity[i]
    return np.round(images[..., None] * 255).astype(np.uint8), labels.astype(np.int64)


def labels_of(y, count: int, what: str, images: str) -> Optional[np.ndarray]:
    """Labels as int64 [count], or None; a UserError for labels that do not fit their images."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != count:
        raise UserError(f"{what} has shape {y.shape} but {images} holds {count} images; give one label per image "
                        f"(shape ({count},)) or leave the labels out")
    if np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise UserError(f"{what} holds {y.dtype} values; labels must be whole numbers (class indices) or left out")
