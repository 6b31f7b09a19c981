"""How the training step is made fast: XLA compilation and mixed precision.

XLA (`tf.function(jit_compile=True)`) fuses the step into a few kernels. On
a CPU it wins for dense networks and loses for convolutional ones, whose
convolutions TensorFlow's own kernels run faster than XLA's (measured by
`scripts/bench.py`; see docs/performance.md). `use_jit_compile` turns that
measurement into the default: XLA for the MLP everywhere, for the
convolutional model only on a GPU.

Mixed precision (GPU): layers compute in float16 with float32 variables
(the tf-keras `mixed_float16` policy). The distributions stay in float32:
the final layers of the networks and the posterior and likelihood layers set
dtype float32, so every log-density, the KL and the ELBO are float32 sums.
Gradients of float16 activations can underflow, so the loss is multiplied by
a dynamic loss scale before differentiation and the gradients divided by it
afterwards (`keras.mixed_precision.LossScaleOptimizer`):

    g = (d (s * loss) / d theta) / s,   s halved on non-finite g, doubled
                                         after 2000 finite steps.

Example:

    with mixed_precision_policy(True):
        model = VAE(config)            # layers built under mixed_float16
    optimizer = loss_scaled(keras.optimizers.Adam(1e-3))
"""

from __future__ import annotations

import contextlib
from typing import Optional

import tensorflow as tf

from probvae._keras import keras
from probvae.registry import NETWORKS

__all__ = [
    "MIXED_POLICY",
    "use_jit_compile",
    "mixed_precision_policy",
    "loss_scaled",
    "is_loss_scaled",
    "scale_loss",
    "unscale_gradients",
]

MIXED_POLICY = "mixed_float16"


def _has_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def use_jit_compile(arch: str, jit_compile: Optional[bool] = None, gpu: Optional[bool] = None) -> bool:
    """Whether to compile the training step with XLA.

    Args:
      arch: a registered network (`probvae.registry.NETWORKS`).
      jit_compile: an explicit choice (returned as is), or None for the default:
        True where the network's `xla_on_cpu` trait says XLA wins on a CPU
        (the dense families), else only on a GPU.
      gpu: whether a GPU computes; None asks TensorFlow.
    """
    if jit_compile is not None:
        return bool(jit_compile)
    if NETWORKS[arch].trait("xla_on_cpu", False):
        return True
    return _has_gpu() if gpu is None else bool(gpu)


@contextlib.contextmanager
def mixed_precision_policy(enabled: bool = True):
    """Build layers under `mixed_float16` if `enabled` (else leave the policy
    alone); the previous global policy is restored on exit. Layers keep the
    policy they were built with."""
    if not enabled:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(MIXED_POLICY)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def loss_scaled(optimizer):
    """`optimizer` wrapped in a dynamic `LossScaleOptimizer` (for float16 gradients)."""
    if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
        return optimizer
    return keras.mixed_precision.LossScaleOptimizer(optimizer)


def is_loss_scaled(optimizer) -> bool:
    """Whether `optimizer` scales the loss (a `LossScaleOptimizer`)."""
    return isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)


def scale_loss(optimizer, loss):
    """The loss to differentiate: s * loss under loss scaling, else the loss.
    Call it inside the `GradientTape`."""
    if is_loss_scaled(optimizer):
        return optimizer.get_scaled_loss(loss)
    return loss


def unscale_gradients(optimizer, gradients):
    """Gradients of `scale_loss(optimizer, loss)` divided by the loss scale."""
    if is_loss_scaled(optimizer):
        return optimizer.get_unscaled_gradients(gradients)
    return gradients
