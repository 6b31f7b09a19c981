"""Speed, utilisation and memory of probvae against the plain tf-keras recipe.

Contenders, on the same architecture, batch, optimiser and binarized data:

- probvae: the compiled training step of `probvae.training.make_train_step`;
- keras-fit: the standard TFP-layers recipe a user writes, a tf-keras model
  ending in `tfpl.MultivariateNormalTriL` with a `KLDivergenceRegularizer`
  and `tfpl.IndependentBernoulli`, trained with
  `model.compile(loss=lambda x, p: -p.log_prob(x))` and `model.fit`.

Figures:

- training throughput (images/s) of both and their ratio;
- utilisation: achieved GFLOP/s of the training step over the GFLOP/s of a
  large float32 matmul on the same device. Training FLOPs are counted by
  formula, 3x the forward FLOPs of the dense and convolution layers
  (2 * multiply-adds; backward costs about twice the forward);
- IWAE efficiency: (image x sample)/s of the importance-weighted bound over
  the decoder's raw forward throughput at the same batch;
- peak memory: resident set size (CPU) or device peak (GPU).

Every figure is a median over `repeats` alternating runs after a warm-up.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from probvae import networks
from probvae._keras import keras
from probvae.config import ModelConfig
from probvae.distributions import posterior_params_size
from probvae.model import VAE

tfd = tfp.distributions
tfpl = tfp.layers

__all__ = [
    "keras_recipe",
    "forward_flops",
    "matmul_gflops",
    "median_rate",
    "peak_memory_mb",
]


def keras_recipe(config: ModelConfig, learning_rate: float) -> keras.Model:
    """The plain TFP-layers VAE as the tutorials write it, compiled for `fit`.

    Note: stock `tfpl.MultivariateNormalTriL` adds its KL regularizer twice
    (tensorflow/probability#1215); that changes the loss, not the work.
    """
    d, shape = config.latent_dim, tuple(config.image_shape)
    prior = tfd.Independent(tfd.Normal(loc=tf.zeros(d), scale=1.0), reinterpreted_batch_ndims=1)
    encoder = keras.Sequential([
        keras.layers.InputLayer(input_shape=shape),
        networks.encoder(config),
        keras.layers.Dense(tfpl.MultivariateNormalTriL.params_size(d)),
        tfpl.MultivariateNormalTriL(d, activity_regularizer=tfpl.KLDivergenceRegularizer(prior, weight=1.0)),
    ])
    decoder = keras.Sequential([
        networks.decoder(config, shape[-1]),
        keras.layers.Flatten(),
        tfpl.IndependentBernoulli(shape, tfd.Bernoulli.logits),
    ])
    model = keras.Model(inputs=encoder.inputs, outputs=decoder(encoder.outputs[0]))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=lambda x, p: -p.log_prob(x))
    return model


def _layer_flops(layer) -> int:
    """Forward FLOPs (2 x multiply-adds) of one dense or convolution layer, per example."""
    if isinstance(layer, keras.Sequential):
        return sum(_layer_flops(inner) for inner in layer.layers)
    if isinstance(layer, keras.layers.Dense):
        return 2 * int(np.prod(layer.kernel.shape))
    if isinstance(layer, keras.layers.Conv2DTranspose):
        _, height, width, _ = layer.input_shape
        return 2 * height * width * int(np.prod(layer.kernel.shape))
    if isinstance(layer, keras.layers.Conv2D):
        _, height, width, _ = layer.output_shape
        return 2 * height * width * int(np.prod(layer.kernel.shape))
    return 0


def forward_flops(model: VAE) -> Dict[str, int]:
    """Forward FLOPs per example of the encoder (with the posterior parameters) and decoder."""
    encoder = _layer_flops(model.encoder) + _layer_flops(model.posterior_params)
    return {"encoder": encoder, "decoder": _layer_flops(model.decoder)}


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Achieved GFLOP/s of a [size, size] float32 matmul on the default device (median)."""
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    product = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    product(a, b).numpy()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        product(a, b).numpy()
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def median_rate(contenders: Dict[str, Callable[[], int]], repeats: int) -> Dict[str, List[float]]:
    """Run each contender `repeats` times, alternating; return its rates (units per second).

    Each contender is a function that does some work and returns how many
    units (images, image x sample pairs) it processed; the first call of each
    is a warm-up and is not timed.
    """
    for run in contenders.values():
        run()
    rates = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            started = time.perf_counter()
            units = run()
            rates[name].append(units / (time.perf_counter() - started))
    return rates


def peak_memory_mb() -> float:
    """Peak memory of this process: device peak on a GPU, else the peak RSS."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_memory_info(gpus[0].name)["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclasses.dataclass
class Rates:
    """Median and spread of a list of rates."""

    values: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def to_dict(self) -> dict:
        return {"median": self.median, "min": min(self.values), "max": max(self.values), "runs": self.values}
