"""The two evaluation workloads of the speed targets, timed on a slice and
projected to their full size, next to the floor the machine's matmul rate sets.

- IWAE: K = 5000 on the 10 000 Fashion-MNIST test images, as
  `probvae evaluate RUN_DIR --iwae-samples 5000` runs it (1000-image batches
  through `probvae.evaluation.per_example`);
- AIS: T = 1000 with 16 chains and 10 leapfrog steps on the first 1 000 test
  images (`probvae.evaluation.ais_log_likelihood`).

Both on the default Fashion-MNIST model (`ModelConfig()` on 28 x 28 images).
Their cost does not depend on the weights or the images (a fixed number of
decoder passes, every one computed), so a freshly initialised model and the
built-in shapes stand in for a trained model and the test set.

Projection. IWAE: the images x samples per second of `iwae_images` images at
the full K, times the 5 x 10^7 pairs. AIS: one full compiled chunk
(`chunk_rows` chains x images) at two short schedules T1 < T2 gives the cost
of one transition (the difference over T2 - T1) and the fixed cost of a chunk;
the projection is the full run's chunks at T = 1000.

Floor: the full workload's FLOPs at the GFLOP/s of the float32 matmul timed
here. An IWAE pair is one decoder forward pass (the encoder runs once per
image, about 1/K of it). An AIS chain is one evaluation of log p(z) p(x|z)
and its gradient with respect to z, then T - 1 transitions of
`num_leapfrog_steps` more; each is a decoder forward pass and a backward
pass to the input (about 2 forward passes: no weight gradients).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from probvae import data, evaluation
from probvae.benchmarks import measure
from probvae.config import ModelConfig
from probvae.evaluation.chains import _chunks
from probvae.evaluation.estimators import AIS_CHUNK_ROWS, AISSettings
from probvae.model import VAE

__all__ = ["Workloads", "QUICK_WORKLOADS", "measure_workloads"]

# Forward-pass equivalents of one evaluation of a log density and its gradient with respect to the input.
VALUE_AND_INPUT_GRADIENT_FORWARDS = 2


@dataclasses.dataclass(frozen=True)
class Workloads:
    # The full IWAE workload: K samples on this many images, in batches as evaluate.py runs them.
    iwae_samples: int = 5000
    iwae_total_images: int = 10_000
    iwae_batch_size: int = 1000
    # Images actually evaluated at the full K (one batch of them), per timed round.
    iwae_images: int = 40
    # The full AIS workload.
    ais_steps: int = 1000
    ais_chains: int = 16
    ais_leapfrog_steps: int = 10
    ais_total_images: int = 1000
    # The two short schedules timed on one full chunk.
    ais_short_steps: tuple = (10, 30)
    chunk_rows: int = AIS_CHUNK_ROWS
    # Timed rounds per figure (medians).
    repeats: int = 3
    image_size: int = 28
    seed: int = 0


QUICK_WORKLOADS = Workloads(iwae_samples=50, iwae_total_images=100, iwae_images=4, ais_steps=20, ais_chains=2,
                            ais_leapfrog_steps=2, ais_total_images=10, ais_short_steps=(2, 4), chunk_rows=8,
                            repeats=1, image_size=8)


def _model(workloads: Workloads) -> VAE:
    """The default Fashion-MNIST model, untrained, at the workloads' image size."""
    return VAE(ModelConfig(image_shape=(workloads.image_size, workloads.image_size, 1)))


def _timed(run: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of `run` over `repeats` rounds, after one untimed call."""
    run()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def _iwae(model: VAE, images: np.ndarray, workloads: Workloads, decoder_flops: int, gflops: float) -> dict:
    batches = data.evaluation_batches(images[: workloads.iwae_images], workloads.iwae_batch_size, binarize=True,
                                      seed=workloads.seed)
    seconds = _timed(lambda: evaluation.per_example(model, batches, workloads.seed,
                                                    iwae_samples=workloads.iwae_samples), workloads.repeats)
    pairs = workloads.iwae_total_images * workloads.iwae_samples
    rate = workloads.iwae_images * workloads.iwae_samples / seconds
    flops = pairs * decoder_flops
    return {"what": f"IWAE K = {workloads.iwae_samples} on {workloads.iwae_total_images} images",
            "measured_images": workloads.iwae_images, "measured_seconds": seconds, "pairs_per_s": rate,
            "projected_seconds": pairs / rate, "tflops": flops / 1e12, "floor_seconds": flops / (gflops * 1e9),
            "achieved_gflops": flops / (pairs / rate) / 1e9}


def _ais(model: VAE, images: np.ndarray, workloads: Workloads, decoder_flops: int, gflops: float) -> dict:
    chains = workloads.ais_chains
    settings = AISSettings(num_steps=workloads.ais_steps, num_chains=chains,
                           num_leapfrog_steps=workloads.ais_leapfrog_steps, chunk_rows=workloads.chunk_rows)
    # The full run's compiled chunks, as ais_log_likelihood cuts them; the first one is timed.
    chunks = _chunks(workloads.ais_total_images, settings)
    start, stop, first, last = chunks[0]
    chains_per_call, x = last - first, images[start:stop]

    def run(steps):
        return lambda: evaluation.ais_log_likelihood(
            model, x, num_steps=steps, num_chains=chains_per_call, seed=workloads.seed,
            num_leapfrog_steps=workloads.ais_leapfrog_steps, chunk_rows=workloads.chunk_rows, force=True)

    short, long = workloads.ais_short_steps
    seconds_short, seconds_long = (_timed(run(steps), workloads.repeats) for steps in (short, long))
    per_transition = max(seconds_long - seconds_short, 0.0) / (long - short)
    fixed = max(seconds_short - short * per_transition, 0.0)
    rows, full_rows = workloads.ais_total_images * chains, (stop - start) * chains_per_call
    projected = len(chunks) * fixed + workloads.ais_steps * per_transition * rows / full_rows
    # One evaluation at the start, then T - 1 transitions of L leapfrog evaluations each (probvae.annealing).
    evaluations = 1 + (workloads.ais_steps - 1) * workloads.ais_leapfrog_steps
    flops = rows * evaluations * VALUE_AND_INPUT_GRADIENT_FORWARDS * decoder_flops
    return {"what": f"AIS T = {workloads.ais_steps} x {chains} chains x {workloads.ais_leapfrog_steps} leapfrog "
                    f"steps on {workloads.ais_total_images} images",
            "chunk_rows": full_rows, "measured_steps": [short, long], "measured_seconds": [seconds_short, seconds_long],
            "seconds_per_transition_per_chunk": per_transition, "fixed_seconds_per_chunk": fixed, "chunks": len(chunks),
            "projected_seconds": projected, "tflops": flops / 1e12, "floor_seconds": flops / (gflops * 1e9),
            "achieved_gflops": flops / projected / 1e9 if projected else None}


def measure_workloads(workloads: Workloads, matmul: Callable[[], float], log=print) -> dict:
    """Both workloads' projections and floors, with the matmul GFLOP/s measured here."""
    model = _model(workloads)
    decoder_flops = measure.forward_flops(model)["decoder"]
    images, _ = data.make_shapes(max(workloads.iwae_images, workloads.chunk_rows), seed=workloads.seed,
                                 size=workloads.image_size)
    gflops = measure.alternate({"matmul": matmul}, max(workloads.repeats, 3))["matmul"].median / 1e9
    log(f"evaluation workloads: IWAE K = {workloads.iwae_samples} on {workloads.iwae_images} images, "
        f"projected to {workloads.iwae_total_images}")
    iwae = _iwae(model, images, workloads, decoder_flops, gflops)
    log(f"evaluation workloads: AIS on one chunk of {workloads.chunk_rows} rows at T = "
        f"{workloads.ais_short_steps[0]} and {workloads.ais_short_steps[1]}, projected to T = {workloads.ais_steps}")
    ais = _ais(model, images, workloads, decoder_flops, gflops)
    return {"model": "ModelConfig() (the default Fashion-MNIST model), untrained",
            "decoder_mflops": decoder_flops / 1e6, "matmul_gflops": gflops, "iwae": iwae, "ais": ais,
            "settings": dataclasses.asdict(workloads)}
