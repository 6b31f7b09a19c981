"""tf.data pipelines: images in, float32 batches in [0, 1] out, binarized for
a Bernoulli likelihood.

- training: dynamic binarization, a fresh draw x_bin ~ Bernoulli(x) for every
  example in every epoch, inside the tf.data graph, from a stateless seed
  (seed, epoch, step) so a run is repeatable and can resume mid-epoch;
- evaluation: one fixed binarization of the held-out set from a recorded seed,
  so two evaluations of the same data are comparable.

Every binarization is `binarized(x, seed)`; only the seed differs.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from probvae import checks, seeds
from probvae.data.folders import ImageStream
from probvae.data.sources import to_unit_interval
from probvae.errors import UserError

__all__ = ["binarized", "binarize_fixed", "training_batches", "ArrayBatches", "ArrayEpoch", "evaluation_batches"]


# v / 255 in float32, correctly rounded, for every uint8 value v.
_UNIT_VALUES = np.arange(256, dtype=np.float32) / np.float32(255)


def _scale(images):
    """uint8 images -> float32 in [0, 1], v / 255 correctly rounded: a table
    lookup, the same in a tf.data map, eagerly and in a tf.function (whose
    graph optimizer would turn a division by 255 into a multiplication by
    1/255, which differs for 126 of the 256 values and so flips the odd
    binarized pixel)."""
    if images.dtype == tf.uint8:
        return tf.gather(tf.constant(_UNIT_VALUES), tf.cast(images, tf.int32))
    return tf.cast(images, tf.float32) / 255.0


def binarized(x, seed) -> tf.Tensor:
    """x_bin ~ Bernoulli(x): float32 {0, 1} of the shape of x (float32 in [0, 1]),
    drawn from the stateless seed `seed` (shape [2]). The same seed gives the same draw."""
    return tf.cast(tf.random.stateless_uniform(tf.shape(x), seed=seed) < x, tf.float32)


def binarize_fixed(images: np.ndarray, seed: int) -> np.ndarray:
    """One seeded binarization of images (uint8 0..255 or float 0..1), as a
    float32 {0, 1} array: `binarized` with the seed (seed, 0x5EED)."""
    seed = checks.whole_number("binarization_seed", seed)
    return binarized(tf.constant(to_unit_interval(images)), seeds.held_out_binarization_seed(seed)).numpy()


def _binarize_step(x, seed: int, epoch, step):
    """The dynamic binarization of training step `step`: seed (seed * 1000003 + epoch, step)."""
    return binarized(x, seeds.training_binarization_seed(seed, epoch, step))


def training_batches(images, batch_size: int, *, binarize: bool, seed: int, epoch: int,
                     start_step: int = 0) -> tf.data.Dataset:
    """One epoch of shuffled float32 batches [batch_size, h, w, c] in [0, 1].

    The permutation comes from (seed, epoch) and the binarization of step i
    from (seed, epoch, i), all stateless, so `start_step` resumes an epoch at
    the batch it reached. Incomplete last batches are dropped, so every step
    has the same shape and the step function traces once.

    `images` is a uint8 array or an `ImageStream` (streamed from disk; a
    stream whose files stop decoding after the listing has fewer steps, and resuming it skips
    start_step * batch_size files of the epoch's order).
    """
    checks.positive_int("batch_size", batch_size)
    num_examples = len(images)
    steps = num_examples // batch_size
    if steps < 1:
        raise UserError(
            f"batch size {batch_size} is larger than the {num_examples} training examples; lower --batch-size"
        )
    if isinstance(images, ImageStream):
        def prepare(step, x):
            x = _scale(x)
            return _binarize_step(x, seed, epoch, step + start_step) if binarize else x

        batches = images.dataset(order=(seed, epoch), start=start_step * batch_size)
        return (
            batches.batch(batch_size, drop_remainder=True)
            .enumerate()
            .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
        )
    source = ArrayBatches(images, batch_size, binarize=binarize, seed=seed)
    order = source.order(epoch)
    return (
        tf.data.Dataset.range(start_step, steps)
        .map(lambda step: source.batch(order, epoch, step), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


class ArrayBatches:
    """The training batches of an in-memory uint8 array as a function of
    (epoch, step): `batch(order(epoch), epoch, step)` is element `step` of
    `training_batches(images, batch_size, binarize=..., seed=..., epoch=epoch)`
    (which is built from it), computed by the same ops. A compiled training
    loop takes its batches from here, without tf.data (`StepLoop.run`).
    The images are held once, as a tensor.
    """

    def __init__(self, images: np.ndarray, batch_size: int, *, binarize: bool, seed: int):
        self.data = tf.constant(images)
        self.batch_size, self.binarize, self.seed = batch_size, binarize, seed
        self.steps = len(images) // batch_size

    def order(self, epoch) -> tf.Tensor:
        """The permutation of the examples in `epoch` (from (seed, epoch))."""
        return tf.argsort(tf.random.stateless_uniform([int(self.data.shape[0])], seed=[self.seed, epoch]))

    def batch(self, order, epoch, step) -> tf.Tensor:
        """Batch `step` of the epoch with permutation `order`: float32 [batch_size, h, w, c]."""
        index = order[step * self.batch_size : (step + 1) * self.batch_size]
        x = _scale(tf.gather(self.data, index))
        return _binarize_step(x, self.seed, epoch, step) if self.binarize else x

    def epoch(self, epoch: int, start_step: int = 0) -> "ArrayEpoch":
        """The batches of `epoch` from `start_step` on, as an iterator."""
        return ArrayEpoch(self, epoch, start_step)


class ArrayEpoch:
    """An iterator over one epoch of `ArrayBatches` from a step on (eager
    batches); a compiled loop reads `source`, `order`, `epoch` and `position`
    and computes its batches itself, then `advance`s the position."""

    def __init__(self, source: ArrayBatches, epoch: int, start_step: int = 0):
        self.source, self.epoch, self.position = source, epoch, start_step
        self.order = source.order(epoch)

    def __iter__(self):
        return self

    def __next__(self) -> tf.Tensor:
        if self.position >= self.source.steps:
            raise StopIteration
        self.position += 1
        return self.source.batch(self.order, self.epoch, self.position - 1)

    def remaining(self) -> int:
        return max(0, self.source.steps - self.position)

    def advance(self, steps: int) -> None:
        self.position += steps


def evaluation_batches(images, batch_size: int, *, binarize: bool, seed: int) -> tf.data.Dataset:
    """Every held-out example once, in order, float32 [<= batch_size, h, w, c];
    binarized once from `seed` when `binarize` is set.

    For an `ImageStream` nothing is cached: the image at position i of the
    split is binarized from fold_in((seed, 0x5EED), i) (`seeds.sample_seed`), the same on
    every pass and whatever the batch size.
    """
    checks.positive_int("batch_size", batch_size)
    seed = checks.whole_number("binarization_seed", seed)
    if isinstance(images, ImageStream):
        base = tf.constant(seeds.held_out_binarization_seed(seed), tf.int64)

        def prepare(position, x):
            x = _scale(x)
            return binarized(x, seeds.sample_seed(base, position)) if binarize else x

        return images.dataset(positions=True).map(prepare).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    x = binarize_fixed(images, seed) if binarize else to_unit_interval(images, "images")  # floats in [0, 1] kept
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)
