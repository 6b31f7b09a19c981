"""Speed, utilisation and memory of probvae against the plain tf-keras recipe.

Contenders, on the same architecture, batch, optimiser (Adam) and data
(procedural shapes, dynamically binarized by `probvae.data.training_batches`):

- probvae: the training loop of `probvae.training.fit` (the compiled step of
  `make_train_step` over one epoch of tf.data batches, metrics read once at
  the end), with XLA on and off; "probvae" is the default
  (`probvae.training.precision.use_jit_compile`);
- keras_fit: the standard TFP-layers recipe a user writes: a tf-keras model
  ending in `tfpl.MultivariateNormalTriL` with a `KLDivergenceRegularizer`
  and `tfpl.IndependentBernoulli`, trained with
  `model.compile(loss=lambda x, p: -p.log_prob(x))` and `model.fit`.

Figures (see `probvae.benchmarks.measure` for how they are timed):

- training throughput (images/s) and the speed-up over keras_fit;
- utilisation: achieved GFLOP/s of the training step (3x the forward FLOPs
  per image, counted by formula) over the GFLOP/s of a 2048^2 float32 matmul
  timed in the same rounds;
- a timing breakdown of the step: encoder and sampling, decoder, likelihood,
  the rest of the loss (KL), backward pass, optimizer;
- evaluation: ELBO images/s at the evaluation and the training batch size;
  IWAE (image x sample)/s over the raw forward throughput of the decoder at
  the same number of rows (images x sample chunk): the IWAE efficiency;
- the gain of several steps per compiled call: the default loop over the
  same loop at one step per call;
- peak memory of training and of IWAE at two K, each in its own process
  (`probvae.benchmarks.memory`);
- time to the first training step (tracing and compilation) and the number
  of traces of each compiled step after the first and the last epoch;
- the evaluation workloads of the targets (IWAE at K = 5000 on 10 000
  images, AIS at T = 1000 x 16 chains on 1 000), projected from a slice,
  with the floor the matmul rate sets (`probvae.benchmarks.workloads`);
- each figure that has a target (`TARGETS`, docs/performance.md) against it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from probvae import data, evaluation
from probvae._keras import keras
from probvae.benchmarks import measure
from probvae.benchmarks.contenders import BenchConfig, fit_trainer, probvae_trainer
from probvae.benchmarks.memory import measure_peaks
from probvae.benchmarks.workloads import Workloads, measure_workloads
from probvae.model import VAE
from probvae.replicas import default_device
from probvae.training import precision

__all__ = ["TARGETS", "run", "against_targets", "format_table"]

# The speed targets (docs/performance.md, "Against the targets"): training speed-up over the keras recipe's
# `fit` per network (wall time, higher is better) and the evaluation workloads' projected wall seconds (lower
# is better). Time to quality has its own, `probvae.benchmarks.quality.TARGET_SPEEDUP`.
TARGETS = {"train_speedup_vs_fit": {"mlp": 2.2, "conv": 2.0},
           "workload_seconds": {"iwae": 240.0, "ais": 600.0}}


def step_stages(model: VAE, x, jit_compile: bool, train_step) -> Dict[str, Callable]:
    """Compiled functions doing cumulative parts of a training step on batch x.

    encoder: q(z|x) and a sample; decoder: the decoder on fixed z;
    likelihood: decoder and log p(x|z); loss: the training loss; gradients:
    loss and its gradients; step: the training step (with Adam and metrics).
    """
    seed = tf.constant([1, 2])
    z = tf.random.stateless_normal([x.shape[0], model.latent_dim], seed=[3, 4])
    variables = model.trainable_variables

    def gradients():
        with tf.GradientTape() as tape:
            loss, _ = model.training_loss(x, seed=seed)
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, variables)])

    stages = {
        "encoder": lambda: tf.reduce_sum(model.posterior(x, training=True).sample(seed=seed)),
        "decoder": lambda: tf.reduce_sum(model.decoder(z, training=True)),
        "likelihood": lambda: tf.reduce_sum(model.likelihood(z, training=True).log_prob(x)),
        "loss": lambda: model.training_loss(x, seed=seed)[0],
        "gradients": gradients,
    }
    stages = {name: tf.function(fn, jit_compile=jit_compile) for name, fn in stages.items()}
    stages["step"] = lambda: train_step(x)
    return stages


def breakdown(stages: Dict[str, Callable], repeats: int, calls: int = 5) -> dict:
    """Milliseconds per step of each part, wall and CPU (all threads), from
    medians of alternating runs of `stages`. Parts are differences of
    separately compiled functions, so they are approximate (and noisy)."""
    def timed(fn):
        def run():
            for _ in range(calls):
                result = fn()
            np.asarray(result)
            return calls
        return run

    rates = measure.alternate({name: timed(fn) for name, fn in stages.items()}, repeats)
    result = {}
    for clock, values in (("", "values"), ("cpu_", "cpu_values")):
        ms = {name: 1000.0 / statistics.median(getattr(r, values)) for name, r in rates.items()}
        result[f"cumulative_{clock}ms"] = ms
        result[f"parts_{clock}ms"] = {
            "encoder_and_sampling": ms["encoder"],
            "decoder": ms["decoder"],
            "likelihood": ms["likelihood"] - ms["decoder"],
            "kl_and_rest_of_loss": ms["loss"] - ms["encoder"] - ms["likelihood"],
            "backward": ms["gradients"] - ms["loss"],
            "optimizer_and_metrics": ms["step"] - ms["gradients"],
        }
    return result


def _eval_contenders(model: VAE, bench: BenchConfig, held_out: np.ndarray) -> dict:
    """ELBO at two batch sizes, IWAE and the raw decoder forward (XLA and
    graph) at the IWAE's rows."""
    def elbo_at(batch_size):
        batches = data.evaluation_batches(held_out, batch_size, binarize=True, seed=bench.seed)
        return lambda: len(evaluation.elbo_per_example(model, batches, seed=bench.seed)["elbo"])

    x = tf.constant(data.binarize_fixed(held_out[: bench.iwae_images], bench.seed))
    rows = bench.iwae_images * bench.sample_chunk
    chunks = -(-bench.num_samples // bench.sample_chunk)
    z = tf.random.stateless_normal([rows, model.latent_dim], seed=[5, 6])

    def iwae():
        evaluation.log_likelihood(model, x, bench.num_samples, bench.seed, sample_chunk=bench.sample_chunk).numpy()
        return bench.iwae_images * bench.num_samples

    def decoder(jit_compile):
        forward = tf.function(lambda z: tf.reduce_sum(model.decoder(z)), jit_compile=jit_compile)

        def run():
            for _ in range(chunks):
                total = forward(z)
            total.numpy()
            return rows * chunks
        return run

    return {"elbo": elbo_at(bench.eval_batch_size), "elbo_train_batch": elbo_at(bench.batch_size),
            "iwae": iwae, "decoder_xla": decoder(True), "decoder_graph": decoder(False)}


def _trainers(config, bench: BenchConfig, images: np.ndarray, jit: bool) -> tuple:
    """({name: VAE}, {name: contender}): probvae with XLA, without, one step per
    call (each from the same initial weights), and the tf-keras recipe."""
    models, trainers = {}, {}
    for name, jit_compile, steps_per_call in (("probvae_xla", True, 0), ("probvae_graph", False, 0),
                                              ("probvae_one_step", jit, 1)):
        keras.utils.set_random_seed(bench.seed)
        with precision.compute_policy(bench.precision_of(config.arch)):
            models[name] = VAE(config)
        trainers[name] = probvae_trainer(models[name], bench, images, jit_compile, steps_per_call=steps_per_call)
    trainers["keras_fit"] = fit_trainer(config, bench, images)
    return models, trainers


def measure_arch(arch: str, bench: BenchConfig, matmul: Callable, log=print) -> dict:
    """Every figure of one architecture (memory aside)."""
    config = bench.model_config(arch)
    images, _ = data.make_shapes(bench.steps(arch) * bench.batch_size, seed=bench.seed, size=bench.image_size)
    held_out, _ = data.make_shapes(bench.eval_images, seed=bench.seed + 1, size=bench.image_size)
    jit = precision.use_jit_compile(arch)
    models, trainers = _trainers(config, bench, images, jit)
    default = "probvae_xla" if jit else "probvae_graph"
    log(f"{arch}: timing training ({bench.repeats} rounds of {bench.steps(arch)} steps)")
    contenders = {name: t.run for name, t in trainers.items()}
    contenders["matmul"] = matmul
    train_rates = measure.alternate(contenders, bench.repeats)

    model = models[default]
    flops = measure.forward_flops(model)
    train_flops = measure.TRAINING_FLOPS_PER_FORWARD * (flops["encoder"] + flops["decoder"])
    step_gflops = train_rates[default].median * train_flops / 1e9
    matmul_gflops = train_rates["matmul"].median / 1e9
    log(f"{arch}: timing the parts of a step")
    x = next(iter(data.training_batches(images, bench.batch_size, binarize=True, seed=bench.seed, epoch=0)))
    parts = breakdown(step_stages(model, x, jit, trainers[default].step), bench.repeats)
    parts["top_ops"] = measure.top_ops(lambda: trainers[default].step(x).numpy(), calls=3)
    log(f"{arch}: timing evaluation")
    eval_rates = measure.alternate(_eval_contenders(model, bench, held_out), bench.repeats)
    # The decoder's raw forward throughput: the faster of XLA and graph, round by round.
    eval_rates["decoder"] = measure.best_of(eval_rates["decoder_xla"], eval_rates["decoder_graph"])
    return {
        "model": config.to_dict(),
        "jit_compile": jit,
        "default": default,
        "train_images_per_s": {name: train_rates[name].to_dict() for name in trainers},
        "train_speedup_vs_fit": measure.paired_ratio(train_rates[default], train_rates["keras_fit"]),
        "train_speedup_vs_fit_per_cpu_second": measure.paired_ratio(train_rates[default], train_rates["keras_fit"],
                                                                    cpu=True),
        "steps_per_call_speedup": measure.paired_ratio(train_rates[default], train_rates["probvae_one_step"]),
        "xla_speedup": measure.paired_ratio(train_rates["probvae_xla"], train_rates["probvae_graph"]),
        "xla_speedup_per_cpu_second": measure.paired_ratio(train_rates["probvae_xla"], train_rates["probvae_graph"],
                                                           cpu=True),
        "time_to_first_step_s": {name: t.first_step_seconds for name, t in trainers.items()},
        "tracing_counts": {name: {"after_first_epoch": t.tracing_counts[0], "after_last_epoch": t.tracing_counts[-1],
                                  "epochs": len(t.tracing_counts)} for name, t in trainers.items()},
        "forward_mflops_per_image": {k: v / 1e6 for k, v in flops.items()},
        "train_mflops_per_image": train_flops / 1e6,
        "step_gflops": step_gflops,
        "matmul_gflops": matmul_gflops,
        "utilisation": step_gflops / matmul_gflops,
        "step_breakdown": parts,
        "eval_per_s": {name: r.to_dict() for name, r in eval_rates.items()},
        "elbo_eval_batch_speedup": measure.paired_ratio(eval_rates["elbo"], eval_rates["elbo_train_batch"]),
        "iwae_efficiency": measure.paired_ratio(eval_rates["iwae"], eval_rates["decoder"]),
        "iwae_efficiency_per_cpu_second": measure.paired_ratio(eval_rates["iwae"], eval_rates["decoder"], cpu=True),
        "iwae_decoder_rows": bench.iwae_images * bench.sample_chunk,
    }


def device_info() -> dict:
    """What the figures were measured on."""
    from tensorflow.python.util import _pywrap_util_port

    return {
        "device": default_device(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "tensorflow": tf.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")
        + f" (mkl build: {_pywrap_util_port.IsMklEnabled()})",
        "load_average": list(os.getloadavg()),
    }


def run(bench: BenchConfig, memory: bool = True, workloads: Optional[Workloads] = None, log=print) -> dict:
    """All figures for `bench.archs` (and the evaluation `workloads`, if
    given), as the JSON-ready dict bench.py writes."""
    info = device_info()
    # The first XLA compilation of a process also starts XLA; keep that out of the first-step times.
    started = time.perf_counter()
    tf.function(lambda x: x + 1, jit_compile=True)(tf.constant(1.0)).numpy()
    info["xla_start_s"] = time.perf_counter() - started
    matmul = measure.matmul_contender(bench.matmul_size)
    archs = {arch: measure_arch(arch, bench, matmul, log) for arch in bench.archs}
    peak = {}
    if memory:
        for arch in bench.archs:
            log(f"{arch}: peak memory (one process per figure)")
            peak[arch] = measure_peaks(bench, arch)
    evaluated = measure_workloads(workloads, matmul, log) if workloads is not None else None
    info["load_average_end"] = list(os.getloadavg())
    first = next(iter(archs.values()))
    result = {
        "device": info["device"],
        "machine": info,
        "config": dataclasses.asdict(bench) | {"precision": {a: bench.precision_of(a) for a in bench.archs},
                                               "baseline_precision": {a: bench.baseline_precision(a)
                                                                      for a in bench.archs}},
        "iwae_implementation": "probvae.evaluation.log_likelihood",
        "train_speedup_vs_fit": {a: r["train_speedup_vs_fit"] for a, r in archs.items()},
        "utilisation": {a: r["utilisation"] for a, r in archs.items()},
        "iwae_efficiency": {a: r["iwae_efficiency"] for a, r in archs.items()},
        "peak_memory_mb": peak,
        "matmul_gflops": first["matmul_gflops"],
        "archs": archs,
        "workloads": evaluated,
    }
    result["targets"] = against_targets(result)
    return result


def against_targets(result: dict) -> list:
    """Each figure of `result` that has a target in `TARGETS`: a list of
    {figure, measured, target, met} (and the floor, for a workload)."""
    rows = []
    for arch, target in TARGETS["train_speedup_vs_fit"].items():
        if arch in result["archs"]:
            measured = result["archs"][arch]["train_speedup_vs_fit"]
            rows.append({"figure": f"{arch} training speed-up over keras fit", "measured": measured, "unit": "x",
                         "target": target, "met": measured >= target})
    for name, target in TARGETS["workload_seconds"].items():
        if result.get("workloads"):
            workload = result["workloads"][name]
            rows.append({"figure": f"{workload['what']}, projected", "measured": workload["projected_seconds"],
                         "unit": "s", "target": target, "met": workload["projected_seconds"] <= target,
                         "floor": workload["floor_seconds"]})
    return rows


def _precisions(config: dict) -> str:
    """"mlp bfloat16 (keras float32), ..." from a result's config."""
    ours, theirs = config.get("precision", {}), config.get("baseline_precision", {})
    if not isinstance(ours, dict):  # results written before --precision: a mixed-precision flag
        return "float16" if config.get("mixed_precision") else "float32"
    return ", ".join(f"{arch} {p} (keras {theirs.get(arch, p)})" for arch, p in ours.items())


def format_table(result: dict) -> str:
    """The figures of `run` as aligned text tables."""
    m = result["machine"]
    lines = [f"device {result['device']} ({m['cpu_count']} cores, {m['processor']}), TensorFlow {m['tensorflow']}, "
             f"oneDNN {m['onednn']}, precision {_precisions(result['config'])}, "
             f"load average {m['load_average'][0]:.1f} -> {m['load_average_end'][0]:.1f}",
             f"IWAE through {result['iwae_implementation']}", ""]
    header = ("arch", "probvae img/s", "xla", "graph", "1 step/call", "fit img/s", "speedup", "per CPU s",
              "1st step s", "fit 1st s", "traces", "GFLOP/s", "matmul", "util")
    rows = []
    for arch, r in result["archs"].items():
        t = r["train_images_per_s"]
        traces = r["tracing_counts"][r["default"]]
        rows.append((arch, f"{t[r['default']]['median']:.0f}", f"{t['probvae_xla']['median']:.0f}",
                     f"{t['probvae_graph']['median']:.0f}", f"{t['probvae_one_step']['median']:.0f}",
                     f"{t['keras_fit']['median']:.0f}",
                     f"{r['train_speedup_vs_fit']:.2f}x", f"{r['train_speedup_vs_fit_per_cpu_second']:.2f}x",
                     f"{r['time_to_first_step_s'][r['default']]:.1f}",
                     f"{r['time_to_first_step_s']['keras_fit']:.1f}",
                     f"{traces['after_first_epoch']}->{traces['after_last_epoch']}", f"{r['step_gflops']:.1f}",
                     f"{r['matmul_gflops']:.1f}", f"{r['utilisation']:.2f}"))
    lines += _aligned(header, rows) + [""]
    header = ("arch", "CPU ms: encoder", "decoder", "likelihood", "KL+rest", "backward", "optimizer", "step",
              "top ops (share of op time)")
    rows = []
    for arch, r in result["archs"].items():
        p, c = r["step_breakdown"]["parts_cpu_ms"], r["step_breakdown"]["cumulative_cpu_ms"]
        ops = ", ".join(f"{name} {share:.0%}" for name, share in r["step_breakdown"]["top_ops"][:3])
        rows.append((arch,) + tuple(f"{v:.1f}" for v in list(p.values()) + [c["step"]]) + (ops,))
    lines += _aligned(header, rows) + [""]
    header = ("arch", "ELBO img/s", "at train batch", "IWAE img*K/s", "decoder rows/s", "IWAE eff", "per CPU s")
    rows = []
    for arch, r in result["archs"].items():
        e = r["eval_per_s"]
        rows.append((arch, f"{e['elbo']['median']:.0f}", f"{e['elbo_train_batch']['median']:.0f}",
                     f"{e['iwae']['median']:.0f}", f"{e['decoder']['median']:.0f}", f"{r['iwae_efficiency']:.2f}",
                     f"{r['iwae_efficiency_per_cpu_second']:.2f}"))
    lines += _aligned(header, rows)
    if result["peak_memory_mb"]:
        lines.append("")
        header = ("arch", "peak MB: start", "training") + tuple(
            f"IWAE K={k}" for k in result["config"]["memory_samples"])
        rows = []
        for arch, p in result["peak_memory_mb"].items():
            rows.append((arch, f"{p['start']:.0f}", f"{p['training']:.0f}") + tuple(
                f"{p['iwae'][str(k)]:.0f}" for k in result["config"]["memory_samples"]))
        lines += _aligned(header, rows)
    lines += _workload_lines(result) + _target_lines(result)
    return "\n".join(lines)


def _workload_lines(result: dict) -> list:
    """The evaluation workloads' table (none if they were skipped)."""
    if not result.get("workloads"):
        return []
    w = result["workloads"]
    lines = ["", f"evaluation workloads ({w['model']}; decoder {w['decoder_mflops']:.2f} MFLOP per pass, "
                 f"matmul {w['matmul_gflops']:.1f} GFLOP/s)"]
    header = ("workload", "measured on", "projected s", "TFLOP", "achieved GFLOP/s", "floor s")
    rows = [(w["iwae"]["what"], f"{w['iwae']['measured_images']} images", f"{w['iwae']['projected_seconds']:.0f}",
             f"{w['iwae']['tflops']:.1f}", f"{w['iwae']['achieved_gflops']:.1f}",
             f"{w['iwae']['floor_seconds']:.0f}"),
            (w["ais"]["what"], f"{w['ais']['chunk_rows']} rows at T = {w['ais']['measured_steps']}",
             f"{w['ais']['projected_seconds']:.0f}", f"{w['ais']['tflops']:.1f}",
             f"{w['ais']['achieved_gflops'] or 0:.1f}", f"{w['ais']['floor_seconds']:.0f}")]
    return lines + _aligned(header, rows)


def _target_lines(result: dict) -> list:
    """Each figure with a target against it."""
    if not result.get("targets"):
        return []
    header = ("figure", "measured", "target", "met", "floor")
    rows = []
    for row in result["targets"]:
        fmt = (lambda v: f"{v:.2f}x") if row["unit"] == "x" else (lambda v: f"{v:.0f} s")
        rows.append((row["figure"], fmt(row["measured"]), ("<= " if row["unit"] == "s" else ">= ")
                     + fmt(row["target"]), "yes" if row["met"] else "no",
                     fmt(row["floor"]) if "floor" in row else ""))
    return ["", "against the targets (floor: the workload's FLOPs at the matmul rate)"] + _aligned(header, rows)


def _aligned(header, rows):
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    return ["  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)) for row in [header] + rows]
