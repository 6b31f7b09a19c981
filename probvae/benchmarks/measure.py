"""Measuring instruments for benchmarks: alternating timers, FLOP counts,
the machine's matmul rate and peak memory.

Timing on a shared machine: contenders are run in turn, round after round
(A, B, C, A, B, C, ...), after one untimed warm-up each, so a change in the
machine's load falls on all of them alike. A rate is the median over rounds;
a ratio of two contenders is the median of the per-round ratios, each taken
from two runs seconds apart.

FLOPs are counted by formula from the layers (2 per multiply-add):

    Dense             2 * inputs * units
    Conv2D            2 * out_h * out_w * k_h * k_w * in_c * out_c
    Conv2DTranspose   2 * in_h * in_w * k_h * k_w * in_c * out_c

and a training step costs about 3 forward passes (the backward pass computes
gradients with respect to both the activations and the weights, each about
one forward pass of multiply-adds).
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List

import numpy as np
import tensorflow as tf

from probvae._keras import keras

__all__ = [
    "TRAINING_FLOPS_PER_FORWARD",
    "Rates",
    "alternate",
    "paired_ratio",
    "best_of",
    "layer_flops",
    "forward_flops",
    "matmul_contender",
    "peak_memory_mb",
    "top_ops",
]

# Training FLOPs per forward FLOP: forward, gradient wrt activations, gradient wrt weights.
TRAINING_FLOPS_PER_FORWARD = 3


@dataclasses.dataclass
class Rates:
    """The rates of one contender, one per round: units per second of wall
    time and, less sensitive to other processes, per second of this process's
    CPU time (all its threads)."""

    values: List[float]
    cpu_values: List[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def to_dict(self) -> dict:
        values = {"median": self.median, "min": min(self.values), "max": max(self.values), "runs": self.values}
        if self.cpu_values:
            values["per_cpu_second"] = {"median": statistics.median(self.cpu_values), "runs": self.cpu_values}
        return values


def alternate(contenders: Dict[str, Callable[[], float]], repeats: int) -> Dict[str, Rates]:
    """Run each contender once untimed, then `repeats` rounds in turn.

    Each contender does some work, waits for it to finish and returns how many
    units it did (images, image x sample pairs, FLOPs).

    Returns:
      {name: Rates} in units per second.
    """
    for run in contenders.values():
        run()
    rates = {name: Rates([], []) for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            units = run()
            rates[name].values.append(units / (time.perf_counter() - started))
            rates[name].cpu_values.append(units / max(time.process_time() - cpu_started, 1e-9))
    return rates


def paired_ratio(numerator: Rates, denominator: Rates, cpu: bool = False) -> float:
    """Median over rounds of numerator / denominator, each pair from the same
    round; of the rates per CPU second if `cpu`."""
    pairs = zip(numerator.cpu_values, denominator.cpu_values) if cpu else zip(numerator.values, denominator.values)
    return statistics.median(a / b for a, b in pairs)


def best_of(first: Rates, second: Rates) -> Rates:
    """Round by round, the faster of two ways of doing the same work."""
    return Rates(list(map(max, first.values, second.values)), list(map(max, first.cpu_values, second.cpu_values)))


def layer_flops(layer) -> int:
    """Forward FLOPs per example of a dense or convolution layer, or of the
    layers inside a model or a composite layer (e.g. `GatedDense`) summed (0
    for layers without multiply-adds)."""
    if isinstance(layer, keras.Model):
        return sum(layer_flops(inner) for inner in layer.layers)
    if isinstance(layer, keras.layers.Dense):
        return 2 * int(np.prod(layer.kernel.shape))
    if isinstance(layer, keras.layers.Conv2DTranspose):
        _, height, width, _ = layer.input_shape
        return 2 * height * width * int(np.prod(layer.kernel.shape))
    if isinstance(layer, keras.layers.Conv2D):
        _, height, width, _ = layer.output_shape
        return 2 * height * width * int(np.prod(layer.kernel.shape))
    return sum(layer_flops(inner) for inner in layer._flatten_layers(include_self=False, recursive=False))


def forward_flops(model) -> Dict[str, int]:
    """Forward FLOPs per example of a `VAE`'s encoder (with the posterior
    parameter layer) and decoder."""
    encoder = layer_flops(model.encoder) + layer_flops(model.posterior_params)
    return {"encoder": encoder, "decoder": layer_flops(model.decoder)}


def matmul_contender(size: int = 2048) -> Callable[[], float]:
    """A contender for `alternate`: one [size, size] float32 matmul on the
    default device; returns its FLOPs (2 size^3), so its rate is FLOP/s."""
    a = tf.random.stateless_normal([size, size], seed=[1, 2])
    b = tf.random.stateless_normal([size, size], seed=[3, 4])
    product = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))

    def run():
        product(a, b).numpy()
        return 2.0 * size**3

    return run


def peak_memory_mb() -> float:
    """Peak memory of this process in MiB: the device peak on a GPU, else the
    peak resident set size.

    On Linux the peak RSS is VmHWM of /proc/self/status: `ru_maxrss` is not
    reset by exec, so a child process started from a large parent would
    report at least the parent's size. Elsewhere, ru_maxrss.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_memory_info(gpus[0].name)["peak"] / 2**20
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024.0  # bytes on macOS, KiB on Linux


def top_ops(fn: Callable[[], object], calls: int = 3, count: int = 8) -> List[tuple]:
    """The op types that take the most time in `calls` calls of `fn` (a warm
    compiled function), from the profiler's trace: a list of (op type, share
    of all op time), TensorFlow op types or, under XLA, kernel kinds
    ("fusion", "MatMul"). Empty if the trace cannot be read."""
    import collections
    import glob
    import re
    import tempfile

    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        return []
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(calls):
                fn()
        finally:
            tf.profiler.experimental.stop()
        paths = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
        if not paths:
            return []
        space = xplane_pb2.XSpace()
        with open(paths[0], "rb") as stream:
            space.ParseFromString(stream.read())
    seconds = collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not (line.name.startswith("tf_Compute") or "Eigen" in line.name):  # threads that run ops
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if "::" in name or not name:  # executor and runtime frames, not ops
                    continue
                # TensorFlow ops are "scope/name:OpType"; XLA kernels "fusion.12", "MatMul.40".
                kind = name.rsplit(":", 1)[1] if ":" in name else re.sub(r"\.\d+$", "", name)
                seconds[kind] += event.duration_ps * 1e-12
    total = sum(seconds.values())
    return [(name, value / total) for name, value in seconds.most_common(count)] if total else []
