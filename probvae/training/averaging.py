"""Weight averaging: an exponential moving average of the trained weights.

With `--weight-average D` (0 < D < 1), every applied training step also updates

    a <- D a + (1 - D) w

for each trainable weight w; a starts as w when the run starts (or its
initial weights are loaded with `--init-from`). Skipped steps (a non-finite
loss) leave the averages alone, as they leave the weights; under float16, a
step whose gradients the loss scale rejects (inside the optimizer) leaves the
weights but still moves the averages a little toward them. The average over
the last ~1 / (1 - D) steps smooths away the step-to-step noise of the
optimizer, so that held-out figures of the averaged weights are usually
better than those of the last iterate (Polyak & Juditsky 1992; the
exponential form is what Kingma et al. 2016 and later VAEs evaluate).

The averaged weights are the run's published weights. Validation, the best
epoch, the final test, and the model weights of every checkpoint are the
averages; so `load_run`, `evaluate`, `export` and `--init-from` read them
without knowing about averaging. The weights being trained travel in the
checkpoint beside them (the `weight_average` object), and a resumed run
swaps them back, so resuming is exact. Swapping is plain assignment, so the
numbers are unchanged by it, bit for bit.

`WeightAverage.published()` is the context in which the model holds the
averages (re-entrant); outside it the model holds the weights being trained.
"""

from __future__ import annotations

import contextlib
from typing import List

import tensorflow as tf

__all__ = ["WeightAverage"]


class WeightAverage:
    """The moving averages of `variables` (trainable weights), made under
    `strategy`'s scope so that they live where the weights live."""

    def __init__(self, variables: List[tf.Variable], decay: float, strategy=None):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.strategy = strategy or tf.distribute.get_strategy()
        self._weights = list(variables)
        self.module = tf.Module(name="weight_average")  # what the checkpoint tracks
        with self.strategy.scope():
            self.module.held = [tf.Variable(w.read_value(), trainable=False, name=w.name.split(":")[0] + "/average")
                                for w in self._weights]
        self.swapped = False  # whether the model holds the averages now (and `held` the weights being trained)

    @property
    def held(self) -> List[tf.Variable]:
        return self.module.held

    def update(self) -> None:
        """One step of the average (inside the compiled step, after the update is applied)."""
        decay = self.decay

        def step(average, weight):
            return average.assign(decay * average + (1.0 - decay) * weight)

        for average, weight in zip(self.held, self._weights):
            self.strategy.extended.update(average, step, args=(weight,), group=False)

    def reset(self) -> None:
        """Start the averages afresh at the current weights (after loading initial weights)."""
        for average, weight in zip(self.held, self._weights):
            average.assign(weight.read_value())

    def swap(self) -> None:
        """Exchange the model's weights and the held ones."""
        for average, weight in zip(self.held, self._weights):
            value = tf.identity(weight.read_value())
            weight.assign(average.read_value())
            average.assign(value)
        self.swapped = not self.swapped

    def restored(self) -> None:
        """After restoring a checkpoint (which holds the averages in the model's
        place): put the weights being trained back in the model."""
        self.swapped = True
        self.swap()

    @contextlib.contextmanager
    def published(self):
        """The model holds the averages inside; nested uses do nothing more."""
        if self.swapped:
            yield
            return
        self.swap()
        try:
            yield
        finally:
            self.swap()

    def publish(self) -> None:
        """Put the averages in the model for good (training is over)."""
        if not self.swapped:
            self.swap()
