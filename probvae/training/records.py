"""What the training step records on the device, for the host to read when it reports.

- `StepTotals`: sums of the training metrics over an epoch's steps (checkpointed).
- `NonFiniteFaults`: the first step whose loss or gradients were not finite.
- `GradientNorms`: the global norm of each applied step's gradients, before
  any clipping: their mean and largest value over the epoch, and how many
  steps `--clip-norm` clipped. It is not a checkpoint object (a checkpoint
  written before it existed must still restore): its values travel in the
  checkpoint's JSON (`RunHistory.epoch_gradient_norms`, via `state` and `load`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from probvae.objectives import ElboParts

__all__ = ["StepTotals", "NonFiniteFaults", "GradientNorms"]


class StepTotals(tf.Module):
    """Sums of the training metrics over the steps of an epoch, kept on the device."""

    NAMES = ("loss", "elbo", "reconstruction", "kl")

    def __init__(self):
        super().__init__(name="step_totals")
        self.sums = {n: tf.Variable(0.0, dtype=tf.float64, trainable=False) for n in self.NAMES}
        self.count = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        # Batches skipped for a non-finite loss or gradient.
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False)

    @staticmethod
    def batch_sums(parts: ElboParts) -> ElboParts:
        """The float64 sums over a batch of its per-example ELBO parts."""
        return ElboParts(*[tf.reduce_sum(tf.cast(values, tf.float64)) for values in parts])

    def add(self, loss, sums: ElboParts, batch_size):
        """Add one step: `loss` its (global) batch's mean loss, `sums` its `batch_sums`."""
        n = tf.cast(batch_size, tf.float64)
        self.sums["loss"].assign_add(tf.cast(loss, tf.float64) * n)
        for name in ("elbo", "reconstruction", "kl"):
            self.sums[name].assign_add(getattr(sums, name))
        self.count.assign_add(n)

    def reset(self):
        for variable in list(self.sums.values()) + [self.count, self.skipped]:
            variable.assign(tf.zeros_like(variable))

    def means(self) -> dict:
        count = max(float(self.count.numpy()), 1.0)
        return {name: float(variable.numpy()) / count for name, variable in self.sums.items()}


class NonFiniteFaults(tf.Module):
    """The first training step whose loss or gradients were not finite, on the device."""

    # Bits of `terms`, in the order a cause shows up in the step.
    TERMS = (("reconstruction", 1), ("KL", 2), ("loss", 4), ("gradients", 8))

    def __init__(self):
        super().__init__(name="nonfinite_faults")
        self.terms = tf.Variable(0, dtype=tf.int32, trainable=False)  # 0: no fault yet
        self.step = tf.Variable(-1, dtype=tf.int64, trainable=False)  # steps done before it

    @staticmethod
    def check(loss, parts, gradients) -> tf.Tensor:
        """Bit mask (int32 scalar) of the terms that are not finite; 0 if all are."""
        def all_finite(values):
            return tf.reduce_all([tf.constant(True)] + [tf.reduce_all(tf.math.is_finite(v)) for v in values])

        flags = (all_finite([parts.reconstruction]), all_finite([parts.kl]), all_finite([loss]),
                 all_finite([g for g in gradients if g is not None]))
        return tf.add_n([tf.where(ok, 0, bit) for ok, (_, bit) in zip(flags, NonFiniteFaults.TERMS)])

    def record(self, terms, step):
        """Keep `terms` and `step` if no fault was recorded yet."""
        first = tf.equal(self.terms, 0)
        self.step.assign(tf.where(first, tf.cast(step, tf.int64), self.step))
        self.terms.assign(tf.where(first, terms, self.terms))

    @classmethod
    def describe(cls, terms: int) -> str:
        """Which term went wrong first: the reconstruction or KL term (which
        make the loss and gradients non-finite too), else the loss, else the gradients."""
        names = [name for name, bit in cls.TERMS if terms & bit]
        causes = [name for name in names if name in ("reconstruction", "KL")]
        if causes:
            return "the " + " and ".join(causes) + (" terms" if len(causes) > 1 else " term")
        return "the " + names[0] if names else "nothing"


class GradientNorms(tf.Module):
    """The global norms ||g|| of an epoch's applied steps' gradients (before clipping), on the device."""

    def __init__(self):
        super().__init__(name="gradient_norms")
        self.total = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.largest = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.steps = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.clipped = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._variables = (self.total, self.largest, self.steps, self.clipped)

    def add(self, norm, clip_norm: float = 0.0):
        """Add one applied step's norm; a non-finite one (a float16 step the
        loss scale skips) is left out."""
        norm = tf.cast(norm, tf.float64)
        finite = tf.math.is_finite(norm)
        self.total.assign_add(tf.where(finite, norm, tf.zeros_like(norm)))
        self.largest.assign(tf.where(finite, tf.maximum(self.largest, norm), self.largest))
        self.steps.assign_add(tf.cast(finite, tf.float64))
        if clip_norm:
            self.clipped.assign_add(tf.cast(tf.logical_and(finite, norm > clip_norm), tf.int64))

    def reset(self):
        for variable in self._variables:
            variable.assign(tf.zeros_like(variable))

    def means(self, clip_norm: float = 0.0) -> dict:
        """The epoch's record: mean and largest norm, None without an applied step
        (and the steps clipped, when clipping)."""
        steps = float(self.steps.numpy())
        values = {"gradient_norm": float(self.total.numpy()) / steps if steps else None,
                  "gradient_norm_max": float(self.largest.numpy()) if steps else None}
        if clip_norm:
            values["clipped_batches"] = int(self.clipped.numpy())
        return values

    def state(self) -> list:
        """The values, for the checkpoint's JSON."""
        return [variable.numpy().item() for variable in self._variables]

    def load(self, values: Optional[list]) -> None:
        """Set the values `state` gave (None, from a checkpoint without them: zeros)."""
        self.reset()
        for variable, value in zip(self._variables, values or ()):
            variable.assign(np.asarray(value).astype(variable.dtype.as_numpy_dtype))  # not tf.cast: via float32
