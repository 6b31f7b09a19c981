"""Shared fixtures: seeded randomness and tiny, distinct sizes.

Sizes are deliberately all different (batch 3, latent 2, 8x8 images, 4
filters, 5 dense units) so that a swapped axis fails loudly.
"""

import fcntl
import os
import random
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One thread per operation, in the test processes and the commands they start:
# each number then comes from one way of splitting a sum, whatever the cores
# of the machine (tests/test_reference_runs.py pins its runs the same way).
# pytest-xdist already runs one worker per core; the suite took as long with
# one thread per worker as with two (10:56 against 11:05 on 2 cores).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
# TensorFlow started as the commands start it (probvae.cli.common.prepare_process), in the test
# processes and the ones they start: without Keras 3, which it otherwise loads, for nothing, in
# 0.6-0.9 of its 4-5 CPU seconds of start-up.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from probvae.config import ModelConfig  # noqa: E402

IMAGE_SHAPE = (8, 8, 1)
LATENT_DIM = 2
BATCH = 3


@pytest.fixture(autouse=True)
def seeded():
    """Seed Python, NumPy and TensorFlow before every test."""
    random.seed(0)
    np.random.seed(0)
    tf.random.set_seed(0)
    yield


def tiny_model_config(**changes) -> ModelConfig:
    values = dict(
        arch="conv",
        latent_dim=LATENT_DIM,
        image_shape=IMAGE_SHAPE,
        conv_filters=(4, 6),
        dense_units=5,
        hidden_units=(7,),
        posterior="full",
    )
    values.update(changes)
    return ModelConfig(**values)


@pytest.fixture
def binary_images():
    """A batch [3, 8, 8, 1] of binary float32 images."""
    rng = np.random.default_rng(1)
    return (rng.uniform(size=(BATCH,) + IMAGE_SHAPE) < 0.4).astype(np.float32)


def reparameterized_sample(posterior, seed, offset=0, total=None) -> np.ndarray:
    """The documented posterior sample, in NumPy: z_n = loc_n + chol(cov_n) eps_n
    with eps rows offset .. offset + n - 1 of transpose(stateless_normal([d, total], seed))."""
    loc = posterior.mean().numpy().astype(np.float64)  # [n, d]
    n, d = loc.shape
    eps = tf.random.stateless_normal([d, n if total is None else total], seed=seed).numpy().T[offset: offset + n]
    scale = np.linalg.cholesky(posterior.covariance().numpy().astype(np.float64))  # [n, d, d]
    return loc + np.einsum("nij,nj->ni", scale, eps.astype(np.float64))


# --- NumPy references: the densities and estimators written out by hand ------

LOG_2PI = float(np.log(2.0 * np.pi))
# Floor of the Normal likelihood's standard deviation: scale = softplus(raw) + 1e-3.
NORMAL_SCALE_FLOOR_BY_HAND = 1e-3


def mvn_log_density(z, loc, covariance) -> np.ndarray:
    """log N(z; loc, covariance) over the last axis, float64: z [..., n, d],
    loc [n, d], covariance [n, d, d] (broadcast over leading axes of z)."""
    z, loc, covariance = (np.asarray(a, np.float64) for a in (z, loc, covariance))
    cholesky = np.linalg.cholesky(covariance)  # [n, d, d]
    solved = np.linalg.solve(cholesky, (z - loc)[..., None])[..., 0]  # L^-1 (z - loc)
    log_det = np.sum(np.log(np.diagonal(cholesky, axis1=-2, axis2=-1)), -1)
    return -0.5 * np.sum(solved**2, -1) - log_det - 0.5 * loc.shape[-1] * LOG_2PI


def standard_normal_log_density(z) -> np.ndarray:
    """log N(z; 0, I) over the last axis, float64."""
    z = np.asarray(z, np.float64)
    return -0.5 * np.sum(z**2, -1) - 0.5 * z.shape[-1] * LOG_2PI


def gaussian_kl_to_standard_normal(loc, covariance) -> np.ndarray:
    """KL(N(loc, cov) || N(0, I)) = 0.5 (tr cov + |loc|^2 - d - log det cov), per row, float64."""
    loc, covariance = np.asarray(loc, np.float64), np.asarray(covariance, np.float64)
    _, log_det = np.linalg.slogdet(covariance)
    return 0.5 * (np.trace(covariance, axis1=-2, axis2=-1) + np.sum(loc**2, -1) - loc.shape[-1] - log_det)


def continuous_bernoulli_log_density_from_logits(x, logits) -> np.ndarray:
    """Per pixel log CB(x; sigmoid(l)) = log C + x l - softplus(l), float64.

    With lambda = sigmoid(l): 1 - 2 lambda = -tanh(l / 2) and artanh(1 - 2 lambda) = -l / 2,
    so C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) = l / tanh(l / 2) (-> 2 + l^2 / 6 near 0),
    and log lambda^x (1 - lambda)^(1 - x) = x l - softplus(l).
    """
    x, logits = np.asarray(x, np.float64), np.asarray(logits, np.float64)
    small = np.abs(logits) < 1e-4
    safe = np.where(small, 1.0, logits)
    constant = np.where(small, 2.0 + logits**2 / 6.0, safe / np.tanh(safe / 2.0))
    return np.log(constant) + x * logits - np.logaddexp(0.0, logits)


def pixel_log_likelihood(model, z, x) -> np.ndarray:
    """log p(x|z) per row [m], float64, from the decoder's outputs at z [m, d]
    and the likelihood's density written out by hand; x [m, h, w, c]."""
    params = model.decoder(tf.constant(np.asarray(z), tf.float32)).numpy().astype(np.float64)
    x = np.asarray(x, np.float64)
    kind = model.config.likelihood
    if kind == "bernoulli":  # x l - softplus(l)
        per_pixel = x * params - np.logaddexp(0.0, params)
    elif kind == "normal":
        import scipy.stats

        raw = model.likelihood_head.raw_scale.numpy().astype(np.float64)
        scale = np.logaddexp(0.0, raw) + NORMAL_SCALE_FLOOR_BY_HAND
        per_pixel = scipy.stats.norm.logpdf(x, loc=params, scale=scale)
    elif kind == "continuous_bernoulli":
        per_pixel = continuous_bernoulli_log_density_from_logits(x, params)
    else:
        raise AssertionError(f"no reference for the {kind} likelihood")
    return per_pixel.reshape(len(params), -1).sum(-1)


def iwae_reference(model, x, num_samples, seed, log_prior=standard_normal_log_density):
    """The K-sample importance-weighted log p(x) in NumPy, as evaluation documents it:
    sample k is z_k = loc + chol(cov) eps_k drawn with seed fold_in(seed, k), and

        log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x),  LL = logsumexp_k log w_k - log K.

    Args:
      x: model-ready images [n, h, w, c] (binarized for a Bernoulli model).
      seed: the stateless seed pair of the batch.
      log_prior: z [n, d] -> log p(z) [n], float64.

    Returns:
      (LL [n], log weights [K, n]), float64.
    """
    import scipy.special

    x = np.asarray(x, np.float32)
    q = model.posterior(tf.constant(x))
    loc, covariance = q.mean().numpy(), q.covariance().numpy()
    log_weights = []
    for k in range(num_samples):
        sample_seed = tf.random.experimental.stateless_fold_in(tf.constant(seed, tf.int32), k)
        z = reparameterized_sample(q, sample_seed)  # [n, d]
        log_weights.append(pixel_log_likelihood(model, z, x) + log_prior(z) - mvn_log_density(z, loc, covariance))
    log_weights = np.stack(log_weights)  # [K, n]
    return scipy.special.logsumexp(log_weights, axis=0) - np.log(num_samples), log_weights


# Tiny trained runs of each model family, shared by the tests that need a
# trained run of a kind (analysis, export): each is trained once per test
# session, on first use, by whichever worker process asks first (the others
# wait for it; the tests only read the runs).
_FAMILY_MODELS = {
    "diag_gaussian": ("shapes", dict(latent_dim=3, prior="diag_gaussian")),
    "mixture-normal": ("shapes", dict(latent_dim=3, prior="mixture", likelihood="normal")),
    "vamp-continuous_bernoulli": ("shapes", dict(latent_dim=3, prior="vamp", likelihood="continuous_bernoulli")),
    "hierarchy-vamp": ("shapes", dict(latent_dim=(2, 3), latent_layers=2, level_units=6, prior="vamp",
                                      posterior="diag")),
    "folder-image-shape": ("folder", dict(latent_dim=2, image_shape=(8, 6, 1))),
}


@pytest.fixture(scope="session")
def family_run(tmp_path_factory):
    """name -> the run directory of a tiny trained run of that family (`_FAMILY_MODELS`)."""
    base = tmp_path_factory.getbasetemp()
    # Under pytest-xdist each worker has its own base folder inside the session's.
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "families"
    root.mkdir(exist_ok=True)

    def run(name):
        run_dir, done = root / name, root / f"{name}.done"
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                shutil.rmtree(run_dir, ignore_errors=True)  # what a worker that failed left
                _train_family(name, root, str(run_dir))
                done.touch()
        return str(run_dir)

    return run


def _train_family(name, root, run_dir):
    from probvae.config import DataConfig, RunConfig, TrainConfig
    from probvae.training import fit

    dataset, model = _FAMILY_MODELS[name]
    if dataset == "folder":
        folder = root / "pictures"
        shutil.rmtree(folder, ignore_errors=True)
        for label in ("a", "b"):
            (folder / label).mkdir(parents=True)
            for i in range(40):
                tf.io.write_file(str(folder / label / f"{i}.png"),
                                 tf.io.encode_png(np.full((9, 7, 1), 3 * i + 100 * (label == "b"), np.uint8)))
        dataset = f"folder:{folder}"
    fit(RunConfig(data=DataConfig(dataset=dataset, max_train_examples=60, validation_fraction=0.25),
                  model=ModelConfig(arch="mlp", hidden_units=(12,), **model),
                  # Without XLA: compiling the step would take longer than these few steps.
                  train=TrainConfig(epochs=1, batch_size=20, test_iwae_samples=2, jit_compile=False)),
        run_dir, log=lambda _: None)


# --- commands run in this process ---------------------------------------------------------------------------

def command_here(name, *args):
    """Run command `name` (fit, evaluate, inspect, bench, compare, export) with `args` in this process,
    through `probvae.cli.main.run_command` as scripts/NAME.py does, its usage and messages naming the
    script; a subprocess.CompletedProcess with the exit code, stdout and stderr.

    It saves a TensorFlow start-up (about 5 CPU seconds) per command. The tests that are about the
    process itself (signals, a fresh import of a run, TensorFlow's start-up lines) start the scripts.
    `--deterministic` is refused here: op determinism, once on, stays on for the rest of the worker.
    """
    import contextlib
    import io
    import subprocess

    from tensorflow.python.framework import config as tf_config

    from probvae.cli.main import COMMANDS, run_command

    argv = [str(arg) for arg in args]
    assert "--deterministic" not in argv, "run a --deterministic command as a subprocess"
    out, err, code = io.StringIO(), io.StringIO(), 0
    deterministic_before = tf_config.is_op_determinism_enabled()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_command(name, argv, prog=f"{COMMANDS[name][0]}.py")  # scripts/MODULE.py
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    assert deterministic_before or not tf_config.is_op_determinism_enabled(), \
        "this command turned op determinism on for the rest of the worker: run it (a --resume of a deterministic " \
        "run?) as a subprocess"
    return subprocess.CompletedProcess([name, *argv], code, out.getvalue(), err.getvalue())


# Runs fit.py's command line for each (name, argv) of a JSON list, one after another in one process,
# as the script does (probvae.cli.main.run_command).
_FIT_DRIVER = """
import json, sys
from probvae.cli.main import run_command
for name, argv in json.loads(sys.argv[1]):
    print(f"run {name}", flush=True)
    run_command("fit", argv, prog="fit.py")
"""


def fit_one_after_another(commands, env=None, timeout=1800):
    """Run fit.py with each argv of {name: argv} in order, in one fresh process (one TensorFlow
    start-up for all: cheaper than a process each, and still apart from the test's process, so
    `--deterministic` may be among them). `env`: the process's environment (default: this one's)."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    listed = [[name, [str(arg) for arg in argv]] for name, argv in commands.items()]
    result = subprocess.run([sys.executable, "-c", _FIT_DRIVER, json.dumps(listed)], capture_output=True, text=True,
                            timeout=timeout, env=env, cwd=root)
    assert result.returncode == 0, f"fit failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

