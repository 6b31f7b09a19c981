"""Datasets and tf.data pipelines.

Images are kept as uint8 arrays [n, height, width, channels] (0..255) until
they enter a pipeline, which scales them to [0, 1] in float32 and, for a
Bernoulli likelihood, binarizes them:

- training: dynamic binarization, a fresh draw x_bin ~ Bernoulli(x) for every
  example in every epoch, inside the tf.data graph, from a stateless seed
  (seed, epoch, step) so a run is repeatable and can resume mid-epoch;
- evaluation: one fixed binarization of the held-out set from a recorded seed,
  so two evaluations of the same data are comparable.

Sources, by name:
- "mnist", "fashion_mnist": the IDX files (train-images-idx3-ubyte.gz, ...)
  in --data-dir, then in the system folder of Debian's dataset package
  (/usr/share/datasets/fashion-mnist), otherwise TFDS (which downloads);
- "kmnist", "cifar10": TFDS;
- "shapes": procedurally drawn 28x28 shapes, seeded, no download;
- "npz:PATH": arrays x_train, x_test (uint8 0..255 or float 0..1) and optional
  y_train, y_test;
- "folder:PATH": JPEG/PNG files in a folder (class subfolders give labels),
  and "celeb_a" (TFDS): streamed, never loaded whole (`probvae.data.folders`);
  their splits are `ImageStream`s instead of arrays, resized and centre-cropped
  to the model's image shape. A folder holds out validation_fraction of its
  files for validation and as many again for test.
The validation split is carved from the training set with a fixed seed.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from typing import Optional

import numpy as np
from probvae.config import DATASETS, check_dataset_name
from probvae.errors import UserError
from probvae.data.folders import ImageStream, TfdsImages, folder_splits

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "IDX_FILES",
    "SYSTEM_IDX_DIRS",
    "Splits",
    "ImageStream",
    "load_dataset",
    "load_config_dataset",
    "read_idx",
    "make_shapes",
    "to_uint8_images",
    "to_unit_interval",
]


IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}

# Where Debian's dataset packages put the IDX files.
SYSTEM_IDX_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}

# Names of the integer labels, for legends.
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"),
    "mnist": tuple(str(digit) for digit in range(10)),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "shapes": ("square", "disc", "triangle", "cross"),
}

_TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "kmnist": "kmnist", "cifar10": "cifar10"}
# TFDS datasets streamed rather than loaded: name -> (train, validation, test) splits.
_TFDS_STREAMED = {"celeb_a": ("train", "validation", "test")}
# Image shape of streamed TFDS datasets when the model does not set one.
_DEFAULT_STREAM_SHAPES = {"celeb_a": (64, 64, 3)}


@dataclasses.dataclass(frozen=True)
class Splits:
    """A dataset as uint8 image arrays [n, h, w, c] (or `ImageStream`s that
    behave like them) and int labels [n] (or None)."""

    name: str
    source: str  # where the data came from, for the user
    x_train: np.ndarray
    y_train: Optional[np.ndarray]
    x_validation: np.ndarray
    y_validation: Optional[np.ndarray]
    x_test: np.ndarray
    y_test: Optional[np.ndarray]

    @property
    def image_shape(self):
        return tuple(int(s) for s in self.x_train.shape[1:])

    def split(self, name: str):
        """(images, labels) of "train", "validation" or "test"."""
        if name not in ("train", "validation", "test"):
            raise UserError(f"unknown split {name!r}; choose one of: train, validation, test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


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


def to_uint8_images(x, what: str = "images") -> np.ndarray:
    """Images as uint8 [n, h, w, c] from uint8 0..255 or float 0..1 arrays.

    A 3-D array [n, h, w] gets a channel axis. Raises UserError for other
    shapes or values outside those ranges.
    """
    x = _with_channels(x, what)
    _check_range(x, what)
    if np.issubdtype(x.dtype, np.floating):
        return np.round(x * 255.0).astype(np.uint8)
    return x.astype(np.uint8)


def to_unit_interval(x, what: str = "images") -> np.ndarray:
    """Images as float32 [n, h, w, c] in [0, 1] from uint8 0..255 or float 0..1
    arrays (floats are kept as they are, not quantised)."""
    x = _with_channels(x, what)
    _check_range(x, what)
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


def _from_idx(directory: str):
    arrays = {key: read_idx(os.path.join(directory, name)) for key, name in IDX_FILES.items()}
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def _idx_directory(name: str, data_dir: Optional[str]) -> Optional[str]:
    candidates = []
    if data_dir:
        candidates += [data_dir, os.path.join(data_dir, name), os.path.join(data_dir, name.replace("_", "-"))]
    if name in SYSTEM_IDX_DIRS:
        candidates.append(SYSTEM_IDX_DIRS[name])
    for directory in candidates:
        if all(os.path.isfile(os.path.join(directory, f)) for f in IDX_FILES.values()):
            return directory
    return None


def _tfds_load(name: str, data_dir: Optional[str], splits, **kwargs):
    import tensorflow_datasets as tfds

    try:
        return tfds.load(name, split=list(splits), data_dir=data_dir, **kwargs)
    except Exception as error:  # download or preparation failed: say what to do
        raise UserError(
            f"could not load {name!r} through TFDS ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            "check the network or put the data under --data-dir"
        ) from None


def _streamed_tfds(name: str, data_dir: Optional[str], image_shape, max_train_examples: Optional[int]) -> Splits:
    """A TFDS dataset as `Splits` of `TfdsImages` streams, using its own splits."""
    shape = tuple(image_shape) if image_shape is not None else _DEFAULT_STREAM_SHAPES[name]
    datasets = _tfds_load(name, data_dir, _TFDS_STREAMED[name])
    if max_train_examples is not None:
        datasets[0] = datasets[0].take(max_train_examples)
    streams = [TfdsImages(d, shape, int(d.cardinality().numpy())) for d in datasets]
    for split, stream in zip(_TFDS_STREAMED[name], streams):
        if len(stream) < 1:
            raise UserError(f"TFDS {name} split {split} has no examples (or an unknown size); re-prepare it")
    return Splits(name=name, source=f"TFDS {name}, streamed, resized and centre-cropped to "
                  f"{shape[0]}x{shape[1]}x{shape[2]}", x_train=streams[0], y_train=None,
                  x_validation=streams[1], y_validation=None, x_test=streams[2], y_test=None)


def _from_tfds(name: str, data_dir: Optional[str]):
    import tensorflow_datasets as tfds

    train, test = _tfds_load(_TFDS_NAMES[name], data_dir, ["train", "test"], as_supervised=True)

    def arrays(split):
        images, labels = zip(*tfds.as_numpy(split.batch(10_000)))
        return np.concatenate(images), np.concatenate(labels)

    return arrays(train) + arrays(test)


def _from_npz(path: str):
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not an .npz file; pass --dataset npz:PATH to a file made by numpy.savez")
    if not os.path.isfile(path):
        raise UserError(f"npz file {path} does not exist; pass --dataset npz:PATH to an existing .npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:
        raise UserError(f"cannot read {path} as .npz ({type(error).__name__}); save it with numpy.savez") from None
    missing = [key for key in ("x_train", "x_test") if key not in arrays]
    if missing:
        raise UserError(f"{path} lacks array(s) {', '.join(missing)}; it needs x_train and x_test (y_train, y_test optional)")
    return arrays["x_train"], arrays.get("y_train"), arrays["x_test"], arrays.get("y_test")


def load_dataset(name: str, data_dir: Optional[str] = None, validation_fraction: float = 0.1,
                 split_seed: int = 0, max_train_examples: Optional[int] = None,
                 image_shape=None) -> Splits:
    """Load a dataset by name into train / validation / test `Splits`.

    Args:
      image_shape: [h, w, c] that streamed datasets (folder:PATH, celeb_a) are
        resized and cropped to; None: a folder's first image, celeb_a 64x64x3.
        Array datasets keep their shape (the model must match it).

    Raises:
      ValueError: unknown name (listing the known ones), unreadable or empty data.
    """
    check_dataset_name(name)
    if name.startswith("folder:"):
        train, validation, test, source = folder_splits(
            os.path.expanduser(name[len("folder:"):]), image_shape, validation_fraction, split_seed,
            max_train_examples)
        return Splits(name=name, source=source, x_train=train, y_train=train.labels,
                      x_validation=validation, y_validation=validation.labels, x_test=test, y_test=test.labels)
    if name in _TFDS_STREAMED:
        return _streamed_tfds(name, data_dir, image_shape, max_train_examples)
    if name.startswith("npz:"):
        path = os.path.expanduser(name[4:])
        arrays, source = _from_npz(path), f"npz file {path}"
    elif name == "shapes":
        x, y = make_shapes(3000, seed=1234)
        arrays, source = (x[:2500], y[:2500], x[2500:], y[2500:]), "built-in procedural shapes"
    elif name in _TFDS_NAMES:
        directory = _idx_directory(name, data_dir) if name in ("mnist", "fashion_mnist") else None
        if directory:
            arrays, source = _from_idx(directory), f"IDX files in {directory}"
        else:
            arrays, source = _from_tfds(name, data_dir), f"TFDS {_TFDS_NAMES[name]}"
    else:
        check_dataset_name(name)
        raise AssertionError(f"no loader for dataset {name!r}")

    x_train, y_train, x_test, y_test = arrays
    x_train = to_uint8_images(x_train, f"{name} training images")
    x_test = to_uint8_images(x_test, f"{name} test images")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"{name}: training images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ in shape")
    if len(x_train) < 2 or len(x_test) < 1:
        raise UserError(f"{name} has too few images ({len(x_train)} train, {len(x_test)} test); it needs at least 2 and 1")
    order = np.random.default_rng(split_seed).permutation(len(x_train))
    num_validation = max(1, int(round(validation_fraction * len(x_train))))
    validation, train = order[:num_validation], order[num_validation:]
    if max_train_examples is not None:
        train = train[:max_train_examples]
    y_train = _labels(y_train, len(x_train), f"{name} y_train", "x_train")
    y_test = _labels(y_test, len(x_test), f"{name} y_test", "x_test")
    labels = lambda y, index: None if y is None else y[index]  # noqa: E731
    return Splits(
        name=name,
        source=source,
        x_train=x_train[train],
        y_train=labels(y_train, train),
        x_validation=x_train[validation],
        y_validation=labels(y_train, validation),
        x_test=x_test,
        y_test=y_test,
    )


def _labels(y, count: int, what: str, images: str) -> Optional[np.ndarray]:
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


def load_config_dataset(config) -> Splits:
    """The splits a `RunConfig` trains and is evaluated on: its data section's
    dataset, split and size, with images resized to its model's `image_shape`
    where the source resizes (folders, celeb_a). The one way from a run's
    config to its data, for training, evaluation and inspection alike."""
    d = config.data
    return load_dataset(d.dataset, d.data_dir, d.validation_fraction, d.split_seed, d.max_train_examples,
                        image_shape=config.model.image_shape)
