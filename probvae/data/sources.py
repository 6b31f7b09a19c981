"""Datasets and tf.data pipelines.

Images are kept as uint8 arrays [n, height, width, channels] (0..255) until
they enter a pipeline, which scales them to [0, 1] in float32 and, for a
Bernoulli likelihood, binarizes them:

- training: dynamic binarization, a fresh draw x_bin ~ Bernoulli(x) for every
  example in every epoch, inside the tf.data graph, from a stateless seed
  (seed, epoch, step) so a run is repeatable and can resume mid-epoch;
- evaluation: one fixed binarization of the held-out set from a recorded seed,
  so two evaluations of the same data are comparable.

Sources, by name: the entries of `probvae.registry.DATASETS`, each with its
builder here and its traits (TFDS name, IDX folder, class names):
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
import os
from typing import Any, Iterator, Mapping, NamedTuple, Optional

import numpy as np

from probvae.config import DataConfig
from probvae.data.arrays import checked_images, labels_of, make_shapes, read_idx, to_uint8_images, to_unit_interval
from probvae.data.folders import ImageStream, TfdsImages, folder_splits
from probvae.errors import UserError
from probvae.registry import DATASETS, Entry

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "IDX_FILES",
    "SYSTEM_IDX_DIRS",
    "Splits",
    "Arrays",
    "checked_images",
    "DataRequest",
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

class _Trait(Mapping):
    """{dataset name: one trait of its `DATASETS` entry}, for the entries that state it (read live)."""

    def __init__(self, trait: str):
        self.trait = trait

    def _items(self) -> dict:
        return {e.name: e.trait(self.trait) for e in DATASETS.entries() if e.trait(self.trait) is not None}

    def __getitem__(self, name: str) -> Any:
        return self._items()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())


# Where Debian's dataset packages put the IDX files, and the names of the integer labels (for legends).
SYSTEM_IDX_DIRS = _Trait("idx_dir")
CLASS_NAMES = _Trait("class_names")


class DataRequest(NamedTuple):
    """What a dataset's builder (`probvae.registry.DATASETS`) is asked for."""

    name: str  # as a config spells it, e.g. "npz:~/data.npz"
    entry: Entry
    path: Optional[str]  # the PATH of "name:PATH", user-expanded; None for other datasets
    data_dir: Optional[str]
    validation_fraction: float
    split_seed: int
    max_train_examples: Optional[int]
    image_shape: Optional[tuple]


class Arrays(NamedTuple):
    """Training and test images (and labels or None) of an array source; `load_dataset` splits them."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    source: str  # where they came from, for the user


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

    def labelled(self, name: str, count: Optional[int] = None):
        """(uint8 images [m, h, w, c], int labels [m] or None) of the first `count`
        images (default all) of split `name`, each label with its own image: a
        streamed image that no longer decodes is left out with its label
        (`ImageStream.labelled`), so labels never shift onto other images."""
        images, labels = self.split(name)
        index = slice(None, count)
        if isinstance(images, ImageStream):
            return images.labelled(index)
        return images[index], None if labels is None else labels[index]


def _from_idx(directory: str):
    arrays = {key: read_idx(os.path.join(directory, name)) for key, name in IDX_FILES.items()}
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def _idx_directory(request: DataRequest) -> Optional[str]:
    name, data_dir = request.entry.name, request.data_dir
    candidates = []
    if data_dir:
        candidates += [data_dir, os.path.join(data_dir, name), os.path.join(data_dir, name.replace("_", "-"))]
    if request.entry.trait("idx_dir"):
        candidates.append(request.entry.trait("idx_dir"))
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


def tfds_streams(request: DataRequest) -> "Splits":
    """A TFDS dataset (trait `tfds_name`) as `Splits` of `TfdsImages` streams, using its own
    splits (trait `splits`), resized to the request's image shape (else the trait `image_shape`)."""
    name, splits = request.entry.trait("tfds_name"), request.entry.trait("splits")
    shape = tuple(request.image_shape) if request.image_shape is not None else request.entry.trait("image_shape")
    datasets = _tfds_load(name, request.data_dir, splits)
    if request.max_train_examples is not None:
        datasets[0] = datasets[0].take(request.max_train_examples)
    streams = [TfdsImages(d, shape, int(d.cardinality().numpy())) for d in datasets]
    for split, stream in zip(splits, streams):
        if len(stream) < 1:
            raise UserError(f"TFDS {name} split {split} has no examples (or an unknown size); re-prepare it")
    return Splits(name=request.name, source=f"TFDS {name}, streamed, resized and centre-cropped to "
                  f"{shape[0]}x{shape[1]}x{shape[2]}", x_train=streams[0], y_train=None,
                  x_validation=streams[1], y_validation=None, x_test=streams[2], y_test=None)


def tfds_arrays(request: DataRequest) -> Arrays:
    """The IDX files of a dataset with the trait `idx` (in --data-dir, then the trait
    `idx_dir`), else its TFDS train and test splits (trait `tfds_name`), as arrays."""
    directory = _idx_directory(request) if request.entry.trait("idx") else None
    if directory:
        return Arrays(*_from_idx(directory), f"IDX files in {directory}")
    import tensorflow_datasets as tfds

    name = request.entry.trait("tfds_name")
    train, test = _tfds_load(name, request.data_dir, ["train", "test"], as_supervised=True)

    def arrays(split):
        images, labels = zip(*tfds.as_numpy(split.batch(10_000)))
        return np.concatenate(images), np.concatenate(labels)

    return Arrays(*arrays(train), *arrays(test), f"TFDS {name}")


def shapes_arrays(request: DataRequest) -> Arrays:
    """The built-in shapes: 2500 training and 500 test images."""
    x, y = make_shapes(3000, seed=1234)
    return Arrays(x[:2500], y[:2500], x[2500:], y[2500:], "built-in procedural shapes")


def npz_arrays(request: DataRequest) -> Arrays:
    """The arrays of an .npz file ("npz:PATH")."""
    path = request.path
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
        raise UserError(f"{path} lacks array(s) {', '.join(missing)}; "
                        "it needs x_train and x_test (y_train, y_test optional)")
    return Arrays(arrays["x_train"], arrays.get("y_train"), arrays["x_test"], arrays.get("y_test"), f"npz file {path}")


def folder_streams(request: DataRequest) -> "Splits":
    """The image files of a folder ("folder:PATH") as `Splits` of `ImageFiles` streams."""
    train, validation, test, source = folder_splits(
        request.path, request.image_shape, request.validation_fraction, request.split_seed,
        request.max_train_examples)
    return Splits(name=request.name, source=source, x_train=train, y_train=train.labels,
                  x_validation=validation, y_validation=validation.labels, x_test=test, y_test=test.labels)


def load_dataset(name: str, data_dir: Optional[str] = None, validation_fraction: float = 0.1,
                 split_seed: int = 0, max_train_examples: Optional[int] = None,
                 image_shape=None) -> Splits:
    """Load a dataset by name (`probvae.registry.DATASETS`) into train / validation / test `Splits`.

    Args:
      image_shape: [h, w, c] that streamed datasets (folder:PATH, celeb_a) are
        resized and cropped to; None: a folder's first image, celeb_a 64x64x3.
        Array datasets keep their shape (the model must match it).

    Raises:
      UserError: values a `DataConfig` refuses (an unknown name, listing the
        known ones; a fraction outside (0, 1)), unreadable or empty data.
    """
    DataConfig(dataset=name, data_dir=data_dir, validation_fraction=validation_fraction, split_seed=split_seed,
               max_train_examples=max_train_examples)  # the config's checks
    _check_request(data_dir, image_shape)
    entry = DATASETS[name]
    path = os.path.expanduser(name.partition(":")[2]) if entry.trait("path") else None
    built = entry.load()(DataRequest(name, entry, path, data_dir, validation_fraction, split_seed,
                                     max_train_examples, None if image_shape is None else tuple(image_shape)))
    if isinstance(built, Splits):
        return built
    return _split_arrays(name, built, validation_fraction, split_seed, max_train_examples)


def _check_request(data_dir, image_shape) -> None:
    """What `DataConfig` leaves to `load_dataset`: the folder's type, the image shape's form."""
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise UserError(f"data_dir is a folder path, got {data_dir!r}")
    if image_shape is not None:
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else None
        if shape is None or len(shape) != 3 or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape):
            raise UserError(f"image_shape must be [height, width, channels], three whole numbers of at least 1 "
                            f"(got {image_shape!r})")


def _split_arrays(name: str, arrays: Arrays, validation_fraction: float, split_seed: int,
                  max_train_examples: Optional[int]) -> Splits:
    """Checked uint8 arrays, the training set split into train and validation by a seeded permutation."""
    x_train, y_train, x_test, y_test, source = arrays
    x_train = to_uint8_images(x_train, f"{name} training images")
    x_test = to_uint8_images(x_test, f"{name} test images")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"{name}: training images {x_train.shape[1:]} and test images {x_test.shape[1:]} "
                        "differ in shape")
    if len(x_train) < 2 or len(x_test) < 1:
        raise UserError(f"{name} has too few images ({len(x_train)} train, {len(x_test)} test); "
                        "it needs at least 2 and 1")
    order = np.random.default_rng(split_seed).permutation(len(x_train))
    num_validation = max(1, int(round(validation_fraction * len(x_train))))
    validation, train = order[:num_validation], order[num_validation:]
    if max_train_examples is not None:
        train = train[:max_train_examples]
    y_train = labels_of(y_train, len(x_train), f"{name} y_train", "x_train")
    y_test = labels_of(y_test, len(x_test), f"{name} y_test", "x_test")
    labels = lambda y, index: None if y is None else y[index]  # noqa: E731
    return Splits(name=name, source=source, x_train=x_train[train], y_train=labels(y_train, train),
                  x_validation=x_train[validation], y_validation=labels(y_train, validation),
                  x_test=x_test, y_test=y_test)


def load_config_dataset(config) -> Splits:
    """The splits a `RunConfig` trains and is evaluated on: its data section's
    dataset, split and size, with images resized to its model's `image_shape`
    where the source resizes (folders, celeb_a). The one way from a run's
    config to its data, for training, evaluation and inspection alike."""
    d = config.data
    return load_dataset(d.dataset, d.data_dir, d.validation_fraction, d.split_seed, d.max_train_examples,
                        image_shape=config.model.image_shape)
