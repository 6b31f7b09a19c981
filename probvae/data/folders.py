"""Image sets too big for memory, read lazily through tf.data.

An `ImageStream` stands in for the uint8 array [n, h, w, c] of a split in
`probvae.data.Splits`: it has `len()`, `shape` and `dtype`, indexing it reads
those images into an array, and `dataset()` streams every image once as uint8
[h, w, c]. `probvae.data.training_batches` and `evaluation_batches` accept a
stream wherever they accept an array.

Sources:
- `ImageFiles`: JPEG and PNG files of a folder ("folder:PATH"), found
  recursively; with class subfolders (PATH/cat/1.jpg, PATH/dog/2.png) the
  sorted subfolder names are the labels 0, 1, ....
- `TfdsImages`: a TFDS split (celeb_a), never turned into an array.

Every image is decoded as grey (1 channel) or RGB (3), resized so it covers
the target height x width with its aspect ratio kept (bilinear, antialiased),
and its centre cropped to exactly that size (`resize_and_crop`).

Unreadable files never stop a pass, and never part an image from its label.
Listing a folder leaves out, counts and names (`ImageFiles.unreadable`) the
files whose first bytes are not a JPEG or PNG signature or that lack its end
marker (empty, truncated, other formats), then decodes every other file once
(in parallel, `DECODE_CHECK_PROGRESS_SECONDS` between progress lines on a long
pass) and leaves out those that fail (a corrupt body). So a split's length,
its labels and its images agree. A file that stops decoding later (changed
on disk during a run) is dropped inside the pipeline by
`Dataset.ignore_errors`, and `stream.skipped` counts it in the latest pass
(`stream.failing()` names the files that fail now).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from probvae.errors import UserError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageStream",
    "ImageFiles",
    "TfdsImages",
    "resize_and_crop",
    "list_image_files",
    "decodable",
    "folder_splits",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Bytes at the end of a file searched for the format's end marker (some writers pad after it).
_TAIL_BYTES = 64
# Shuffle buffer of streams that cannot be permuted by index (TFDS).
_SHUFFLE_BUFFER = 10_000
# Seconds between the progress lines of a folder's decode check (none on a shorter check).
DECODE_CHECK_PROGRESS_SECONDS = 10.0
# Files decoded per progress update of the decode check.
_DECODE_CHECK_CHUNK = 512


def resize_and_crop(image, height: int, width: int) -> tf.Tensor:
    """uint8 image [H, W, c] -> uint8 [height, width, c]: scale to cover, crop the centre.

    The scale is max(height / H, width / W), so the shorter side (relative to
    the target) fits exactly and the other is cropped evenly on both sides.
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.reduce_max(tf.constant([height, width], tf.float32) / shape)
    size = tf.maximum(tf.cast(tf.math.ceil(shape * scale - 1e-3), tf.int32), [height, width])
    resized = tf.image.resize(image, size, antialias=True)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    cropped = resized[top:top + height, left:left + width]
    cropped = tf.cast(tf.round(tf.clip_by_value(cropped, 0.0, 255.0)), tf.uint8)
    return tf.ensure_shape(cropped, [height, width, image.shape[-1]])


class ImageStream:
    """A split of images read on demand; behaves like a uint8 array for len/shape/indexing."""

    dtype = np.dtype(np.uint8)
    ndim = 4
    labels = None  # int labels [n] in the fixed order, or None

    def __init__(self, image_shape: Sequence[int], num_examples: int):
        self.image_shape = tuple(int(s) for s in image_shape)
        if self.image_shape[-1] not in (1, 3):
            raise UserError(
                f"streamed images are read as grey (1 channel) or RGB (3), not {self.image_shape[-1]} channels; "
                "set image_shape to [height, width, 1] or [height, width, 3]"
            )
        self.num_examples = int(num_examples)
        self._attempted = None
        self._decoded = None

    def __len__(self) -> int:
        return self.num_examples

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        return (self.num_examples,) + self.image_shape

    @property
    def skipped(self) -> int:
        """Images that failed to decode in the latest (complete) pass."""
        if self._attempted is None:
            return 0
        return int(self._attempted.numpy() - self._decoded.numpy())

    def _raw(self, order: Optional[Tuple[int, int]], start: int) -> tf.data.Dataset:
        """Encoded examples from position `start`, shuffled by `order` = (seed, epoch) if given."""
        raise NotImplementedError

    def _decode(self, example) -> tf.Tensor:
        raise NotImplementedError

    def dataset(self, order: Optional[Tuple[int, int]] = None, start: int = 0,
                positions: bool = False) -> tf.data.Dataset:
        """Every image once as uint8 [h, w, c], skipping ones that fail to decode.

        Args:
          order: (seed, epoch) for a repeatable shuffled order; None: the fixed order.
          start: leave out the first `start` images of that order (resuming).
          positions: yield (position, image) pairs, the position (int64) of each
            image in that order carried through the decoding, so an image that
            fails to decode takes its position (and so its label) with it.
        """
        if self._attempted is None:
            self._attempted = tf.Variable(0, dtype=tf.int64, trainable=False)
            self._decoded = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._attempted.assign(0)
        self._decoded.assign(0)

        def attempt(position, example):
            self._attempted.assign_add(1)
            return position, example

        def decode(position, example):
            return position, self._decode(example)

        def decoded(position, image):
            self._decoded.assign_add(1)
            return (position, image) if positions else image

        return (
            self._raw(order, start)
            .enumerate(start)
            .map(attempt)
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .ignore_errors()
            .map(decoded)
        )

    def read(self, index) -> Tuple[np.ndarray, np.ndarray]:
        """(images uint8 [m, h, w, c], their positions int [m]) at `index` (int, slice or
        integer array) in the fixed order; an image that no longer decodes is left out."""
        positions = np.atleast_1d(np.arange(self.num_examples)[index])
        wanted = set(int(p) for p in positions)
        found = {}
        if wanted:
            for position, image in self.dataset(positions=True).take(max(wanted) + 1).as_numpy_iterator():
                if int(position) in wanted:
                    found[int(position)] = image
        kept = np.array([p for p in positions if p in found], np.int64)
        images = np.stack([found[p] for p in kept]) if len(kept) else np.zeros((0,) + self.image_shape, np.uint8)
        return images, kept

    def failing(self) -> list:
        """The files of the split that fail to decode now, for messages; a stream
        that cannot name its images (TFDS) gives []."""
        return []

    def labelled(self, index) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(images, labels) at `index`: the labels of the images that decoded, paired by
        the positions carried through the pipeline (labels None without classes)."""
        images, positions = self.read(index)
        return images, None if self.labels is None else np.asarray(self.labels)[positions]

    def __getitem__(self, index) -> np.ndarray:
        """The images at `index` (int, slice or integer array) in the fixed order, uint8."""
        images, _ = self.read(index)
        return images[0] if np.ndim(index) == 0 and not isinstance(index, slice) and len(images) else images

    def __array__(self, dtype=None, copy=None):
        array = self[:]
        return array if dtype is None else array.astype(dtype)


class ImageFiles(ImageStream):
    """JPEG/PNG files streamed as images of `image_shape`.

    Args:
      paths: image files, in their fixed order.
      image_shape: [height, width, channels], channels 1 (grey) or 3 (RGB).
      labels: int labels [n] or None.
      unreadable: files left out when listing (for the report).
    """

    def __init__(self, paths: Sequence[str], image_shape, labels=None, unreadable=()):
        super().__init__(image_shape, len(paths))
        self.paths = np.asarray(list(paths), dtype=object)
        self.labels = labels
        self.unreadable = tuple(unreadable)

    def failing(self) -> list:
        """The paths of the files that fail to decode now (each decoded once more)."""
        return [str(path) for path, ok in zip(self.paths, decodable(self.paths)) if not ok]

    def subset(self, index) -> "ImageFiles":
        """The files at `index` as a new stream (labels kept)."""
        labels = None if self.labels is None else np.asarray(self.labels)[index]
        return ImageFiles(self.paths[index], self.image_shape, labels)

    def _raw(self, order, start):
        paths = tf.constant([str(p) for p in self.paths], tf.string)
        if order is not None:
            seed = tf.constant(order, tf.int32)
            paths = tf.gather(paths, tf.argsort(tf.random.stateless_uniform([self.num_examples], seed=seed)))
        return tf.data.Dataset.from_tensor_slices(paths[start:])

    def _decode(self, path):
        height, width, channels = self.image_shape
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False,
                                   dtype=tf.uint8)
        return resize_and_crop(image, height, width)


class TfdsImages(ImageStream):
    """The images of a TFDS split, streamed and resized; shuffled with a seeded buffer."""

    def __init__(self, dataset: tf.data.Dataset, image_shape, num_examples: int, feature: str = "image"):
        super().__init__(image_shape, num_examples)
        self._source = dataset
        self.feature = feature

    def _raw(self, order, start):
        images = self._source.map(lambda example: example[self.feature])
        if order is not None:
            seed = int(order[0]) * 1_000_003 + int(order[1])
            images = images.shuffle(min(self.num_examples, _SHUFFLE_BUFFER), seed=seed,
                                    reshuffle_each_iteration=False)
        return images.skip(start)

    def _decode(self, image):
        height, width, channels = self.image_shape
        if image.shape[-1] != channels:
            image = tf.image.rgb_to_grayscale(image) if channels == 1 else tf.image.grayscale_to_rgb(image)
        return resize_and_crop(image, height, width)


def _looks_like_an_image(path: str) -> bool:
    """A JPEG or PNG signature at the start and its end marker near the end
    (a JPEG's EOI, a PNG's IEND chunk): truncated files fail here, before
    the decoder, which would print its own complaint for each."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - _TAIL_BYTES))
            tail = handle.read(_TAIL_BYTES)
    except OSError:
        return False
    if head.startswith(b"\xff\xd8\xff"):
        return b"\xff\xd9" in tail
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" in tail
    return False


def decodable(paths: Sequence[str], log: Optional[Callable[[str], None]] = None) -> np.ndarray:
    """bool [n]: which files decode as images (each decoded once, in parallel).

    A check of `DECODE_CHECK_PROGRESS_SECONDS` or more reports done/total with
    an ETA through `log` (stderr when None) at that interval.
    """
    paths = [str(p) for p in paths]
    ok = np.zeros(len(paths), bool)
    if not paths:
        return ok

    def attempt(position, path):
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        return position, tf.size(image)  # the size needs the whole decode

    checked = (tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), tf.constant(paths)))
               .map(attempt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors()
               .batch(_DECODE_CHECK_CHUNK))
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    started = last_report = time.time()
    done = 0
    # Positions that decode arrive in chunks; files that fail leave no position,
    # so progress counts decoded files (a lower bound on files checked).
    for positions, _ in checked.as_numpy_iterator():
        ok[positions] = True
        done += len(positions)
        now = time.time()
        if now - last_report >= DECODE_CHECK_PROGRESS_SECONDS:
            last_report = now
            left = (now - started) * (len(paths) - done) / max(done, 1)
            log(f"checking that the images decode: {done}/{len(paths)} ({now - started:.0f} s, "
                f"about {left:.0f} s left)")
    return ok


def list_image_files(root: str, log: Optional[Callable[[str], None]] = None):
    """(readable, unreadable, labels, class_names) of the JPEG/PNG files under `root`.

    Files are sorted by path relative to `root`. Labels come from top-level
    subfolders when every image lies in one (else None). A file is unreadable
    when its first bytes are no JPEG or PNG signature, it lacks the format's
    end marker (a truncated file), or it fails to decode (`decodable`; `log`
    gets that check's progress).

    Raises:
      UserError: `root` is not a folder, or holds no readable image.
    """
    if not os.path.isdir(root):
        raise UserError(f"image folder {root} does not exist; pass --dataset folder:PATH to a folder of images")
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        found += [os.path.join(directory, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    found.sort(key=lambda p: os.path.relpath(p, root))
    keep = np.array([_looks_like_an_image(p) for p in found], bool)
    if keep.any():
        keep[keep] = decodable([p for p, ok in zip(found, keep) if ok], log)
    readable = [p for p, ok in zip(found, keep) if ok]
    unreadable = [p for p, ok in zip(found, keep) if not ok]
    if not readable:
        raise UserError(
            f"image folder {root} holds no readable JPEG or PNG images "
            f"({len(found)} files named {', '.join(IMAGE_EXTENSIONS)} found, {len(unreadable)} unreadable); "
            "put images there or check the path"
        )
    tops = [os.path.relpath(p, root).split(os.sep)[0] for p in readable]
    in_subfolders = all(os.sep in os.path.relpath(p, root) for p in readable)
    class_names = sorted(set(tops)) if in_subfolders else []
    labels = np.array([class_names.index(t) for t in tops], np.int64) if in_subfolders else None
    return readable, unreadable, labels, class_names


def _image_shape_of(path: str) -> Tuple[int, int, int]:
    """[h, w, 1 or 3] of an image file that decodes."""
    height, width, channels = tf.io.decode_image(tf.io.read_file(path), expand_animations=False).shape
    return int(height), int(width), 1 if channels in (1, 2) else 3


def folder_splits(root: str, image_shape=None, validation_fraction: float = 0.1, split_seed: int = 0,
                  max_train_examples: Optional[int] = None):
    """(train, validation, test, source) `ImageFiles` of a folder.

    A seeded permutation of the files holds out `validation_fraction` of them
    (at least one) for validation and as many again for test. Without an
    `image_shape`, the first image gives height, width and channels.
    """
    paths, unreadable, labels, class_names = list_image_files(root)
    num_held_out = max(1, int(round(validation_fraction * len(paths))))
    if len(paths) < 2 * num_held_out + 1:
        raise UserError(
            f"image folder {root} has {len(paths)} readable images; it needs at least {2 * num_held_out + 1} "
            "for train, validation and test splits"
        )
    shape = tuple(image_shape) if image_shape is not None else _image_shape_of(paths[0])
    everything = ImageFiles(paths, shape, labels, unreadable)
    order = np.random.default_rng(split_seed).permutation(len(paths))
    validation, test, train = order[:num_held_out], order[num_held_out:2 * num_held_out], order[2 * num_held_out:]
    if max_train_examples is not None:
        train = train[:max_train_examples]
    source = f"image folder {root} ({len(paths)} images"
    if class_names:
        more = ", ..." if len(class_names) > 10 else ""
        source += f" in {len(class_names)} classes: {', '.join(class_names[:10])}{more}"
    if unreadable:
        names = ", ".join(os.path.relpath(p, root) for p in unreadable[:5])
        source += f"; {len(unreadable)} unreadable files skipped: {names}{', ...' if len(unreadable) > 5 else ''}"
    source += f"; resized and centre-cropped to {shape[0]}x{shape[1]}x{shape[2]})"
    return everything.subset(train), everything.subset(validation), everything.subset(test), source
