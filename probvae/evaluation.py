"""Held-out evaluation: per-example ELBO over a dataset, with standard errors.

The ELBO of each held-out example is the one-sample estimate
log p(x|z) - KL(q(z|x) || p(z)), z ~ q(z|x), with the analytic KL where TFP
has one. Reported: the mean over examples and its standard error
sd / sqrt(n), in nats per example.

Bernoulli models are evaluated on one fixed binarization of the held-out
images, drawn from a recorded seed (see `probvae.data.binarize_fixed`).

Under a tf.distribute strategy of several replicas, batch k goes to replica
k mod R with the seed it has on one device, (seed, k), and the per-example
results are gathered in order (`probvae.distribute.map_batches`): the same
numbers as one device.
"""

from __future__ import annotations

import math
from typing import Dict

import numpy as np
import tensorflow as tf

from probvae import data as data_lib
from probvae import distribute

__all__ = ["mean_and_stderr", "elbo_per_example", "evaluate_elbo"]


def mean_and_stderr(values) -> tuple:
    """(mean, standard error of the mean) of a 1-D array, as floats."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def _elbo_fn(model):
    """The model's compiled per-batch ELBO function (built once per model)."""
    fn = getattr(model, "_probvae_elbo_fn", None)
    if fn is None:
        spec = tf.TensorSpec([None] + list(model.image_shape), tf.float32)

        def elbo(x, seed):
            return model.elbo(x, seed=seed)

        fn = tf.function(elbo, input_signature=[spec, tf.TensorSpec([2], tf.int32)])
        model._probvae_elbo_fn = fn
    return fn


def _distributed_elbo_fn(model, strategy):
    """The model's compiled ELBO of one batch per replica (built once per model and strategy)."""
    cache = model.__dict__.setdefault("_probvae_distributed_elbo_fns", {})
    if id(strategy) not in cache:
        def elbo(x, index, seed):
            return model.elbo(x, seed=tf.stack([seed, tf.cast(index, tf.int32)]))._asdict()

        cache[id(strategy)] = distribute.gathered(strategy, elbo)
    return cache[id(strategy)]


def elbo_per_example(model, batches: tf.data.Dataset, seed: int, strategy=None) -> Dict[str, np.ndarray]:
    """ELBO, reconstruction and KL of every example in `batches`, [n] each, nats.

    With a `strategy` of several replicas the batches are spread over them;
    the numbers are those of one device.
    """
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        run = _distributed_elbo_fn(model, strategy)
        return distribute.map_batches(strategy, run, batches, tf.constant(seed, tf.int32))
    fn = _elbo_fn(model)
    parts = {"elbo": [], "reconstruction": [], "kl": []}
    for index, x in enumerate(batches):
        result = fn(x, tf.constant([seed, index], tf.int32))
        for name in parts:
            parts[name].append(getattr(result, name).numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def evaluate_elbo(model, images: np.ndarray, *, seed: int, batch_size: int = 1000,
                  binarization_seed: int = 0, strategy=None) -> dict:
    """Mean held-out ELBO and its parts, with standard errors, in nats.

    Args:
      model: a `VAE`.
      images: uint8 images [n, h, w, c], or a `probvae.data.ImageStream`
        (then images that fail to decode are left out and counted).
      seed: seed of the posterior samples.
      batch_size: examples per evaluation step.
      binarization_seed: seed of the fixed binarization (Bernoulli models).
      strategy: a tf.distribute strategy the model was built under, or None.
    """
    binarize = model.likelihood_head.binarize
    batches = data_lib.evaluation_batches(images, batch_size, binarize=binarize, seed=binarization_seed)
    parts = elbo_per_example(model, batches, seed, strategy=strategy)
    summary = {"n_examples": int(len(parts["elbo"]))}
    if isinstance(images, data_lib.ImageStream):
        summary["skipped_images"] = images.skipped
    for name, values in parts.items():
        summary[name], summary[f"{name}_stderr"] = mean_and_stderr(values)
    summary["binarization"] = f"fixed, seed {binarization_seed}" if binarize else "none"
    return summary
