import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from probvae import data, evaluation
from probvae._keras import keras
from probvae.benchmarks import bench as benchmark
from probvae.benchmarks import contenders, memory
from probvae.model import VAE

from conftest import command_here, iwae_reference, tiny_model_config

# Trains through the commands or for many steps: left out of the inner loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "scripts", "bench.py")


def test_the_memory_working_set_counts_the_decoder_outputs():
    model = VAE(tiny_model_config(arch="mlp"))
    # Decoder outputs per row: dense 7, dense 64, reshape 64; likelihood 64 log-densities.
    assert memory.working_set_mb(model, rows=2**20 // 4) == pytest.approx(7 + 64 + 64 + 64)


def test_the_benchmark_times_the_iwae_estimator_evaluate_py_uses(monkeypatch):
    """The IWAE contender the benchmark times computes, on its images, the
    log p(x) evaluate.py reports for them, and that is the importance-weighted
    bound written out in NumPy."""
    bench = contenders.QUICK  # K = 20 samples, 2 images, chunks of 5
    keras.utils.set_random_seed(0)
    model = VAE(bench.model_config("mlp"))
    held_out, _ = data.make_shapes(6, seed=5, size=bench.image_size)
    timed = []
    original = evaluation.log_likelihood

    def recording(*args, **kwargs):
        values = original(*args, **kwargs)
        timed.append(values.numpy())
        return values

    monkeypatch.setattr(evaluation, "log_likelihood", recording)
    units = benchmark._eval_contenders(model, bench, held_out)["iwae"]()
    assert units == bench.iwae_images * bench.num_samples == 40
    (values,) = timed
    assert values.shape == (bench.iwae_images,)
    # What evaluate.py computes for those images: one batch, seed (seed, 0),
    # the fixed binarization from the evaluation's binarization seed.
    images = held_out[: bench.iwae_images]
    reported = evaluation.evaluate(model, images, iwae_samples=bench.num_samples, batch_size=len(images),
                                   seed=bench.seed, binarization_seed=bench.seed)
    assert float(values.astype(np.float64).mean()) == pytest.approx(reported["log_likelihood"], rel=1e-6)
    # The estimator by hand: the images binarized as x_bin = [u < x / 255], u ~ U(0, 1) from (seed, 0x5EED).
    uniform = tf.random.stateless_uniform(images.shape, seed=[bench.seed, 0x5EED]).numpy()
    x = (uniform < images / 255.0).astype(np.float32)
    expected, _ = iwae_reference(model, x, bench.num_samples, seed=[bench.seed, 0])
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_bench_quick_runs_end_to_end_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    # One architecture keeps the test short; the conv path runs the same code.
    result = command_here("bench", "--quick", "--arch", "mlp", "--json", out)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert {"device", "train_speedup_vs_fit", "utilisation", "iwae_efficiency", "peak_memory_mb",
            "archs", "machine"} <= set(figures)
    for arch in ("mlp",):
        assert figures["train_speedup_vs_fit"][arch] > 0 and figures["iwae_efficiency"][arch] > 0
        assert 0 < figures["utilisation"][arch] < 1
        r = figures["archs"][arch]
        assert {"probvae_xla", "probvae_graph", "probvae_one_step", "keras_fit"} == set(r["train_images_per_s"])
        assert r["steps_per_call_speedup"] > 0
        assert r["time_to_first_step_s"]["keras_fit"] > 0
        # No retracing after the first epoch, for any contender; probvae's step traces once.
        for name, counts in r["tracing_counts"].items():
            assert counts["after_first_epoch"] == counts["after_last_epoch"] and counts["epochs"] == 2
            assert counts["after_last_epoch"] == 1 or name == "keras_fit"
        peaks = figures["peak_memory_mb"][arch]
        assert peaks["training"] >= peaks["start"] > 0 and set(peaks["iwae"]) == {"5", "20"}
        assert r["step_breakdown"]["parts_cpu_ms"]["decoder"] > 0
    assert figures["config"]["archs"] == ["mlp"]
    assert "speedup" in result.stdout and "IWAE eff" in result.stdout
    # The evaluation workloads, projected, and each figure with a target against it.
    for name in ("iwae", "ais"):
        workload = figures["workloads"][name]
        assert workload["projected_seconds"] > 0 and workload["floor_seconds"] > 0
    assert [row["figure"].split()[0] for row in figures["targets"]] == ["mlp", "IWAE", "AIS"]
    assert "against the targets" in result.stdout


def test_bench_refuses_a_bad_batch_size_in_one_line():
    result = subprocess.run([sys.executable, BENCH, "--batch-size", "0"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --batch-size must be at least 1 (got 0)"


def test_the_keras_recipe_at_half_kl_weight_minimises_the_negative_elbo():
    """Stock tfpl.MultivariateNormalTriL adds its KL regularizer twice (the
    same one-sample estimate log q(z) - log p(z)), so at weight 1/2 the
    recipe's added losses are an unbiased estimate of the KL, once."""
    import tensorflow_probability as tfp

    from probvae.benchmarks.baseline import keras_recipe

    config = contenders.QUICK.model_config("mlp")
    keras.utils.set_random_seed(1)
    recipe = keras_recipe(config, 1e-3, kl_weight=0.5)
    x = data.binarize_fixed(data.make_shapes(5, seed=2, size=contenders.QUICK.image_size)[0], 0)
    totals = []
    for _ in range(100):
        recipe(x)
        assert len(recipe.losses) == 2 and float(recipe.losses[0]) == float(recipe.losses[1])
        totals.append(float(tf.add_n(recipe.losses)))
    posterior = recipe.layers[2](recipe.layers[1](recipe.layers[0](x)))
    prior = tfp.distributions.MultivariateNormalDiag(tf.zeros(config.latent_dim), tf.ones(config.latent_dim))
    kl = float(tf.reduce_mean(tfp.distributions.kl_divergence(posterior, prior)))
    assert abs(np.mean(totals) - kl) < 5 * np.std(totals) / np.sqrt(len(totals)) + 1e-6


def test_time_to_quality_times_both_trainings_to_the_elbo_keras_reaches(monkeypatch):
    from probvae.benchmarks.quality import QUICK_QUALITY, format_quality, time_to_quality

    lines = []
    result = time_to_quality(contenders.QUICK, QUICK_QUALITY, log=lines.append)
    keras_curve, probvae_curve = result["keras_fit"]["curve"], result["probvae"]["curve"]
    assert len(keras_curve) == QUICK_QUALITY.epochs and 1 <= len(probvae_curve) <= 2 * QUICK_QUALITY.epochs
    assert result["target_elbo"] == keras_curve[-1]["elbo"] and result["dataset"] == "shapes"
    for curve in (keras_curve, probvae_curve):
        seconds = [point["seconds"] for point in curve]
        assert all(0 < a < b for a, b in zip(seconds, seconds[1:])) and all(np.isfinite(p["elbo"]) for p in curve)
    reached = result["probvae"]["reached"]
    if reached is None:  # then it trained every epoch it was allowed, all below the target
        assert len(probvae_curve) == 2 * QUICK_QUALITY.epochs and result["speedup"] is None
    else:
        assert reached["elbo"] >= result["target_elbo"] and reached is probvae_curve[-1]
        assert result["speedup"] == pytest.approx(result["keras_fit"]["reached"]["seconds"] / reached["seconds"])
    assert result["keras_fit"]["reached"]["elbo"] >= result["target_elbo"]
    assert "time to quality" in format_quality(result) and len(lines) == len(keras_curve) + len(probvae_curve)


def test_the_probvae_contender_cuts_its_calls_where_fits_loop_does(monkeypatch):
    """The contender runs its epochs through the loop's own `run_steps`: a change
    to the loop's cadence (here fault checks every 3 steps) changes its calls."""
    from probvae.training import StepLoop
    from probvae.training import epoch as epoch_lib

    bench = dataclasses.replace(contenders.QUICK, batch_size=4)
    images, _ = data.make_shapes(7 * 4, seed=0, size=bench.image_size)  # 7 steps an epoch
    keras.utils.set_random_seed(0)
    model = VAE(bench.model_config("mlp"))
    sizes, original = [], StepLoop.run

    def run(self, iterator, n):
        sizes.append(n)
        return original(self, iterator, n)

    monkeypatch.setattr(StepLoop, "run", run)
    monkeypatch.setattr(epoch_lib, "FAULT_CHECK_EVERY", 3)
    trainer = contenders.probvae_trainer(model, bench, images, jit_compile=False, steps_per_call=100)
    sizes.clear()
    assert trainer.run() == 7 * 4
    assert sizes == [3, 3, 1]  # calls end at steps 3 and 6 and at the epoch's end


def test_the_workloads_project_their_timings_and_floors_by_hand_arithmetic(monkeypatch):
    """A fake clock: the IWAE slice takes 2 s, an AIS chunk 0.5 s plus 0.01 s per
    step, the matmul 1 s per 1e11 FLOPs; the projections and floors are then
    numbers written out here for the default Fashion-MNIST model."""
    import time

    from probvae.benchmarks import workloads

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    def advance(seconds):
        clock[0] += seconds

    monkeypatch.setattr(workloads.evaluation, "per_example", lambda *args, **kwargs: advance(2.0))
    steps_seen = []

    def fake_ais(model, x, num_steps, num_chains, **kwargs):
        steps_seen.append((len(x), num_steps, num_chains, kwargs["num_leapfrog_steps"], kwargs["chunk_rows"]))
        advance(0.5 + 0.01 * num_steps)

    monkeypatch.setattr(workloads.evaluation, "ais_log_likelihood", fake_ais)

    def matmul():
        advance(1.0)
        return 1e11

    result = workloads.measure_workloads(workloads.Workloads(), matmul, log=lambda line: None)
    # gated 300-300 decoder from 40 to 784 pixels: two dense layers per gated layer.
    decoder = 2 * (2 * 40 * 300 + 2 * 300 * 300) + 2 * 300 * 784
    assert result["decoder_mflops"] * 1e6 == pytest.approx(decoder) and result["matmul_gflops"] == pytest.approx(100)
    iwae = result["iwae"]
    assert iwae["pairs_per_s"] == pytest.approx(40 * 5000 / 2.0)
    assert iwae["projected_seconds"] == pytest.approx(10_000 * 5000 / 1e5)
    assert iwae["floor_seconds"] == pytest.approx(10_000 * 5000 * decoder / 1e11)
    # 2048 rows per chunk = 128 images x 16 chains, timed at T = 10 and 30; 1000 images make 8 chunks.
    assert set(steps_seen) == {(128, 10, 16, 10, 2048), (128, 30, 16, 10, 2048)}
    ais = result["ais"]
    assert ais["seconds_per_transition_per_chunk"] == pytest.approx(0.01)
    assert ais["fixed_seconds_per_chunk"] == pytest.approx(0.5) and ais["chunks"] == 8
    assert ais["projected_seconds"] == pytest.approx(8 * 0.5 + 1000 * 0.01 * 16_000 / 2048)
    assert ais["floor_seconds"] == pytest.approx(16_000 * (1 + 999 * 10) * 2 * decoder / 1e11)


def test_the_table_sets_each_figure_against_its_target():
    archs = {"mlp": {"train_speedup_vs_fit": 2.5}, "conv": {"train_speedup_vs_fit": 1.1}}
    workloads = {"iwae": {"what": "IWAE", "projected_seconds": 300.0, "floor_seconds": 250.0},
                 "ais": {"what": "AIS", "projected_seconds": 500.0, "floor_seconds": 400.0}}
    rows = {row["figure"]: row for row in benchmark.against_targets({"archs": archs, "workloads": workloads})}
    assert [(r["measured"], r["target"], r["met"]) for r in rows.values()] == [
        (2.5, 2.2, True), (1.1, 2.0, False), (300.0, 240.0, False), (500.0, 600.0, True)]
    assert rows["IWAE, projected"]["floor"] == 250.0
    assert benchmark.against_targets({"archs": {"gated": {"train_speedup_vs_fit": 9.0}}, "workloads": None}) == []
    # A figure exactly at its target meets it ("at least 2x", "at most 4 minutes").
    at_target = {"archs": {"conv": {"train_speedup_vs_fit": 2.0}},
                 "workloads": {"iwae": {"what": "IWAE", "projected_seconds": 240.0, "floor_seconds": 1.0},
                               "ais": {"what": "AIS", "projected_seconds": 600.0, "floor_seconds": 1.0}}}
    assert [row["met"] for row in benchmark.against_targets(at_target)] == [True, True, True]
