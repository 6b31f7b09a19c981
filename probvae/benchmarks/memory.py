"""Peak memory of training and of IWAE evaluation, each in a fresh process.

A process's peak (ru_maxrss on a CPU, the allocator's peak on a GPU) only
grows, so every figure comes from its own Python process: it imports
TensorFlow, builds the model and the data, records the peak so far
("start"), does the work and records the peak again.

IWAE memory: images are evaluated `iwae_images` at a time and samples
`sample_chunk` at a time, so the working set is that of one chunk,
iwae_images x sample_chunk decoder rows (`working_set_mb` estimates it from
the decoder's layer outputs), whatever K and however many images. Measuring
two K (500 and 5000 by default) shows the peak does not grow with K.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np

__all__ = ["measure_peaks", "working_set_mb", "child"]

_CHILD = "import sys; from probvae.benchmarks import memory; memory.child(sys.argv[1])"


def working_set_mb(model, rows: int) -> float:
    """Float32 MiB of the decoder's layer outputs for `rows` rows, and the
    likelihood's log-densities per pixel: a rough size of one IWAE chunk."""
    floats = sum(int(np.prod(layer.output_shape[1:])) for layer in model.decoder.layers)
    floats += int(np.prod(model.image_shape))
    return rows * floats * 4 / 2**20


def _run_child(spec: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True,
                            env=dict(os.environ), timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement {spec['task']} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_peaks(bench, arch: str) -> dict:
    """Peak MiB of training and of IWAE at each K in `bench.memory_samples`."""
    spec = dataclasses.asdict(bench) | {"arch": arch, "precision": bench.precision_of(arch)}
    specs = [spec | {"task": "training"}] + [spec | {"task": "iwae", "num_samples": k} for k in bench.memory_samples]
    # The processes run side by side: each measures only its own peak.
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(specs)) as pool:
        training, *results = pool.map(_run_child, specs)
    iwae = {str(k): r for k, r in zip(bench.memory_samples, results)}
    return {
        "start": training["start"],
        "training": training["peak"],
        "iwae": {k: r["peak"] for k, r in iwae.items()},
        "iwae_start": {k: r["start"] for k, r in iwae.items()},
        "iwae_images": bench.memory_images,
        "iwae_decoder_rows": bench.iwae_images * bench.sample_chunk,
        "working_set_mb": training["working_set_mb"],
    }


def child(spec_json: str) -> None:
    """Do one task of `measure_peaks` and print {"start": MiB, "peak": MiB} as JSON."""
    import tensorflow as tf

    from probvae import data, evaluation
    from probvae._keras import keras
    from probvae.benchmarks import measure
    from probvae.benchmarks.contenders import BenchConfig, probvae_trainer
    from probvae.model import VAE
    from probvae.training import precision

    spec = json.loads(spec_json)
    bench = BenchConfig(**{
        k: tuple(tuple(i) if isinstance(i, list) else i for i in v) if isinstance(v, list) else v
        for k, v in spec.items() if k not in ("arch", "task")
    })
    keras.utils.set_random_seed(bench.seed)
    with precision.compute_policy(bench.precision_of(spec["arch"])):
        model = VAE(bench.model_config(spec["arch"]))
    jit_compile = precision.use_jit_compile(spec["arch"])
    if spec["task"] == "training":
        images, _ = data.make_shapes(bench.steps(spec["arch"]) * bench.batch_size, seed=bench.seed,
                                     size=bench.image_size)
        start = measure.peak_memory_mb()
        probvae_trainer(model, bench, images, jit_compile).run()
    else:
        images, _ = data.make_shapes(bench.memory_images, seed=bench.seed + 1, size=bench.image_size)
        batches = data.evaluation_batches(images, bench.iwae_images, binarize=True, seed=bench.seed)
        start = measure.peak_memory_mb()
        results = [evaluation.log_likelihood(model, x, bench.num_samples, bench.seed, sample_chunk=bench.sample_chunk)
                   for x in batches]
        assert np.all(np.isfinite(tf.concat(results, 0).numpy()))
    rows = bench.iwae_images * bench.sample_chunk
    print(json.dumps({"start": start, "peak": measure.peak_memory_mb(), "working_set_mb": working_set_mb(model, rows)}))
