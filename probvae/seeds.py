"""The one seed scheme: every random draw of a run derives from its seed here.

A run has one integer seed (`TrainConfig.seed`). Each kind of randomness is a
named stream derived from it by a function of this module, and nowhere else:

    stream                         seed                                  used by
    weights                        seed (Keras' global generators)       `training.seed_process`
    data order of epoch e          (seed, e)                             `data.ArrayBatches.order`
    training binarization          (seed * 1000003 + e, step)            `data.pipelines`
    posterior sample of step s     (seed, s)                             the train step
    validation of epoch e          seed + e  (an evaluation seed)        the training loop
    final test evaluation          seed + 10000 (an evaluation seed)     the training loop
    held-out binarization          (binarization_seed, 0x5EED)           `data.binarize_fixed`
    held-out image i (streamed)    fold_in((binarization_seed, 0x5EED), i)  `data.evaluation_batches`
    pictures of epoch e            e                                     the training loop

An evaluation seed s (an int) draws batch b's samples from
`sample_seed((s, b), k)` (sample k of the batch).

Public functions that draw take `seed` as an int or a pair of ints (or an
int32 tensor of shape [2]), as TensorFlow Probability does
(`tfp.random.sanitize_seed`); `as_seed` turns either into the stateless
seed [2] that `tf.random.stateless_*` take. An int s means the pair (s, 0).
"""

from typing import Union

import tensorflow as tf

from probvae.errors import UserError

__all__ = [
    "Seed",
    "as_seed",
    "sample_seed",
    "split",
    "step_seed",
    "epoch_order_seed",
    "training_binarization_seed",
    "validation_seed",
    "test_seed",
    "HELD_OUT_SALT",
    "held_out_binarization_seed",
    "picture_seed",
]

Seed = Union[int, tuple, list, tf.Tensor]

# Second word of the held-out binarization's seed pair.
HELD_OUT_SALT = 0x5EED
# Offset of the final test evaluation's seed from the run seed (validation uses seed + epoch).
_TEST_OFFSET = 10_000
# Multiplier that separates epochs in the training binarization's seed.
_EPOCH_STRIDE = 1_000_003


def as_seed(seed: Seed) -> tf.Tensor:
    """A stateless seed: an int s -> [s, 0]; a pair -> itself; an int32 tensor of shape [2].

    Raises:
      UserError: anything that is not an integer or a pair of integers.
    """
    if isinstance(seed, bool) or seed is None:
        raise UserError(f"a seed is an integer or a pair of integers, got {seed!r}")
    try:
        seed = tf.convert_to_tensor(seed)
    except (TypeError, ValueError) as error:
        raise UserError(f"a seed is an integer or a pair of integers, got {seed!r}") from error
    if not (seed.dtype.is_integer):
        raise UserError(f"a seed is an integer or a pair of integers, got a {seed.dtype.name} tensor")
    seed = tf.cast(seed, tf.int32)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, 0])
    if seed.shape != (2,):
        raise UserError(f"a seed is an integer or a pair of integers (got shape {seed.shape})")
    return seed


def sample_seed(seed, k) -> tf.Tensor:
    """The stateless seed [2] of draw k under `seed` [2] (`stateless_fold_in`)."""
    return tf.random.experimental.stateless_fold_in(seed, k)


def split(seed, count: int):
    """`count` independent stateless seeds [2] from one (`stateless_split`), as a list."""
    return tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), count))


def step_seed(run_seed, step) -> tf.Tensor:
    """The posterior sample of training step `step`: (run_seed, step), int32 [2]."""
    return tf.stack([tf.cast(run_seed, tf.int32), tf.cast(step, tf.int32)])


def epoch_order_seed(run_seed: int, epoch) -> list:
    """The permutation of the training examples in `epoch`: (run_seed, epoch)."""
    return [run_seed, epoch]


def training_binarization_seed(run_seed, epoch, step) -> tf.Tensor:
    """The dynamic binarization of training step `step` of `epoch`:
    (run_seed * 1000003 + epoch, step), int64 [2]."""
    return tf.stack([tf.cast(run_seed, tf.int64) * _EPOCH_STRIDE + tf.cast(epoch, tf.int64),
                     tf.cast(step, tf.int64)])


def validation_seed(run_seed: int, epoch: int) -> int:
    """The evaluation seed of the validation pass after `epoch`."""
    return int(run_seed) + int(epoch)


def test_seed(run_seed: int) -> int:
    """The evaluation seed of the final test evaluation of a run."""
    return int(run_seed) + _TEST_OFFSET


def held_out_binarization_seed(binarization_seed: int) -> list:
    """The fixed binarization of a held-out set: (binarization_seed, 0x5EED)."""
    return [int(binarization_seed), HELD_OUT_SALT]


def picture_seed(epoch: int) -> int:
    """The prior samples drawn for the pictures of `epoch`."""
    return int(epoch)
