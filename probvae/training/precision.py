"""How the training step is made fast: XLA compilation and reduced precision.

XLA (`tf.function(jit_compile=True)`) fuses the step into a few kernels. On
a CPU it wins for dense networks and loses for convolutional ones, whose
convolutions TensorFlow's own kernels run faster than XLA's (measured by
`scripts/bench.py`; see docs/performance.md). `use_jit_compile` turns that
measurement into the default: XLA for the MLP everywhere, for the
convolutional model only on a GPU.

Precision (`TrainConfig.precision`): "float32", or the networks computing in
"bfloat16" or "float16" with float32 variables (the tf-keras
`mixed_bfloat16` / `mixed_float16` policies). The distributions stay in
float32 whatever the precision: the final layers of the networks and the
posterior and likelihood layers set dtype float32, so every log-density, the
KL and the ELBO are float32 sums. float16's narrow exponent lets gradients
underflow, so under float16 the loss is multiplied by a dynamic loss scale
before differentiation and the gradients divided by it afterwards
(`keras.mixed_precision.LossScaleOptimizer`):

    g = (d (s * loss) / d theta) / s,   s halved on non-finite g, doubled
                                         after 2000 finite steps.

bfloat16 has float32's exponent and needs no scale. Its units: CPUs with
AVX-512 BF16 or AMX (oneDNN's bfloat16 kernels), GPUs of compute capability
8.0 and newer. `default_precision` picks float32 or bfloat16 by the device
and by what the network gains there (the family's `bfloat16_on_cpu` trait,
from docs/performance.md's measurements); a run records the precision it
chose, so a resumed run computes as it started.

Example:

    with compute_policy("float16"):
        model = VAE(config)            # layers built under mixed_float16
    optimizer = loss_scaled(keras.optimizers.Adam(1e-3))
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import tensorflow as tf

from probvae._keras import keras
from probvae.config.sections import PRECISIONS
from probvae.registry import NETWORKS

__all__ = [
    "PRECISIONS",
    "MIXED_POLICY",
    "use_jit_compile",
    "cpu_has_bfloat16",
    "gpu_has_bfloat16",
    "default_precision",
    "resolve",
    "needs_loss_scale",
    "compute_policy",
    "mixed_precision_policy",
    "loss_scaled",
    "is_loss_scaled",
    "scale_loss",
    "unscale_gradients",
]

_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
MIXED_POLICY = _POLICIES["float16"]

# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA) from which its bfloat16 kernels run natively.
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX",
              "AVX10_1_512_AMX_FP16", "ALL")


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


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 units oneDNN uses (AVX-512 BF16 or AMX
    BF16 in the flags of `cpuinfo`), and `ONEDNN_MAX_CPU_ISA`, if set, does
    not cap oneDNN below them. False where the system does not say."""
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if capped and capped not in _BF16_ISAS:
        return False
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as stream:
            flags = next((line.split(":", 1)[1].split() for line in stream if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_has_bfloat16() -> bool:
    """Whether every visible GPU computes bfloat16 natively (compute capability 8.0 or newer)."""
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability") for gpu in gpus]
    return bool(gpus) and all(c is not None and tuple(c) >= (8, 0) for c in capabilities)


def default_precision(arch: str, gpu: Optional[bool] = None, cpu_bfloat16: Optional[bool] = None) -> str:
    """The precision a run of network `arch` computes in when none is asked for:
    bfloat16 on GPUs that have it; on a CPU, bfloat16 where the CPU has the
    units (`cpu_has_bfloat16`) and the family's `bfloat16_on_cpu` trait says
    its step gains from them; else float32. `gpu`, `cpu_bfloat16`: the
    device's answers, None to ask this machine."""
    gpu = _has_gpu() if gpu is None else bool(gpu)
    if gpu:
        return "bfloat16" if gpu_has_bfloat16() else "float32"
    if not NETWORKS[arch].trait("bfloat16_on_cpu", False):
        return "float32"
    return "bfloat16" if (cpu_has_bfloat16() if cpu_bfloat16 is None else cpu_bfloat16) else "float32"


def resolve(precision: Optional[str], arch: str) -> str:
    """`precision` if given, else `default_precision(arch)`."""
    return default_precision(arch) if precision is None else precision


def needs_loss_scale(precision: str) -> bool:
    """Whether training in `precision` needs a dynamic loss scale (float16 only)."""
    return precision == "float16"


@contextlib.contextmanager
def compute_policy(precision: Optional[str]):
    """Build layers computing in `precision` ("float32", "bfloat16" or
    "float16"; None leaves the policy alone); the previous global policy is
    restored on exit. Layers keep the policy they were built with."""
    if precision is None:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(_POLICIES[precision])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def mixed_precision_policy(enabled: bool = True):
    """`compute_policy("float16")` if `enabled`, else leave the policy alone."""
    return compute_policy("float16" if enabled else None)


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
