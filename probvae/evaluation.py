"""Held-out evaluation: per-example ELBO over a dataset, with standard errors.

The ELBO of each held-out example is the one-sample estimate
log p(x|z) - KL(q(z|x) || p(z)), z ~ q(z|x), with the analytic KL where TFP
has one. Reported: the mean over examples and its standard error
sd / sqrt(n), in nats per example.

Bernoulli models are evaluated on one fixed binarization of the held-out
images, drawn from a recorded seed (see `probvae.data.binarize_fixed`).
"""

from __future__ import annotations

import math
from typing import Dict

import numpy as np
import tensorflow as tf

from probvae import data as data_lib

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


def elbo_per_example(model, batches: tf.data.Dataset, seed: int) -> Dict[str, np.ndarray]:
    """ELBO, reconstruction and KL of every example in `batches`, [n] each, nats."""
    fn = _elbo_fn(model)
    parts = {"elbo": [], "reconstruction": [], "kl": []}
    for index, x in enumerate(batches):
        result = fn(x, tf.constant([seed, index], tf.int32))
        for name in parts:
            parts[name].append(getattr(result, name).numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def evaluate_elbo(model, images: np.ndarray, *, seed: int, batch_size: int = 1000,
                  binarization_seed: int = 0) -> dict:
    """Mean held-out ELBO and its parts, with standard errors, in nats.

    Args:
      model: a `VAE`.
      images: uint8 images [n, h, w, c], or a `probvae.data.ImageStream`
        (then images that fail to decode are left out and counted).
      seed: seed of the posterior samples.
      batch_size: examples per evaluation step.
      binarization_seed: seed of the fixed binarization (Bernoulli models).
    """
    binarize = model.likelihood_head.binarize
    batches = data_lib.evaluation_batches(images, batch_size, binarize=binarize, seed=binarization_seed)
    parts = elbo_per_example(model, batches, seed)
    summary = {"n_examples": int(len(parts["elbo"]))}
    if isinstance(images, data_lib.ImageStream):
        summary["skipped_images"] = images.skipped
    for name, values in parts.items():
        summary[name], summary[f"{name}_stderr"] = mean_and_stderr(values)
    summary["binarization"] = f"fixed, seed {binarization_seed}" if binarize else "none"
    return summary
