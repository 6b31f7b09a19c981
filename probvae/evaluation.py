"""Held-out evaluation: ELBO, importance-weighted log-likelihood, bits/dim,
active units and per-dimension KL, each with what makes it trustworthy.

For each held-out image x_j (j = 1..n), with q = q(z|x_j) and z_jk ~ q:

    ELBO_j   = log p(x_j|z_j0) - KL(q || p(z))                      (analytic KL)
    log w_jk = log p(x_j|z_jk) + log p(z_jk) - log q(z_jk|x_j),      k = 0..K-1
    LL_j     = log (1/K) sum_k exp(log w_jk)                         (Burda et al., 2015)

LL_j is the K-sample importance-weighted estimate of log p(x_j): a stochastic
lower bound, E[LL_j] <= log p(x_j), whose gap shrinks as K grows. Reported are
means over the n examples with the standard error sd_j / sqrt(n), in nats per
example, and

    bits_per_dim = -mean_j LL_j / (D ln 2),   D = height * width * channels,

from LL and (as `elbo_bits_per_dim`) from the ELBO. The Monte Carlo part of
the error of LL comes from the effective sample size of the weights,
ESS_j = (sum_k w_jk)^2 / sum_k w_jk^2, by the delta method:
Var(LL_j | x_j) ~ 1/ESS_j - 1/K.

Active units (Burda et al., 2015, section 5.2): dimension i is active when
A_i = Var_x(E_q[z_i | x]) > 0.01. The per-dimension KL is the KL of each
marginal q(z_i|x) to p(z_i) plus, for a full-covariance posterior, the total
correlation of q; they add up to the KL (see `probvae.distributions.analysis`).

Memory. The log weights are computed in chunks of S samples for a batch of B
examples (S * B decoder rows at a time), and a running logsumexp of log w
(and of 2 log w, for the ESS) carries the sum from chunk to chunk, so memory
does not depend on K: K x n x pixels is never held. Without an explicit
`sample_chunk`, S = max(1, CHUNK_ROWS // B).

Randomness. Batch b of an evaluation uses the stateless seed (seed, b), and
sample k of a batch is drawn by the posterior's own sampler from
`sample_seed((seed, b), k)`. The numbers are therefore a function of the
weights, the data (and its fixed binarization seed), seed, K and the batch
size, but not of the sample chunk. The ELBO uses sample 0, so the K = 1
estimate LL is the ELBO estimator with the KL replaced by its one-sample
estimate log q(z_0|x) - log p(z_0) at the same z_0.

The compiled functions take the batch, seed, K and chunk as tensors with a
fixed signature, so each traces once per model.

Several devices. Under a tf.distribute strategy of R > 1 replicas
(`strategy=`), batch b goes to replica b mod R with the seed it has on one
device, (seed, b), and the per-example results are gathered in batch order
(`probvae.replicas.map_batches`): every number is the one a single device
computes.

References:
  Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from typing import Callable, Dict, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from probvae import annealing, checks, objectives, replicas, runs
from probvae import data as data_lib
from probvae.errors import UserError
# The run directory's evaluation files (kept here too: part of this module's API).
from probvae.runs import estimator_label, evaluation_name, evaluation_path, read_evaluations  # noqa: F401

__all__ = [
    "ACTIVE_UNIT_THRESHOLD",
    "unit_activity",
    "active_units",
    "DEFAULT_IWAE_SAMPLES",
    "SPLITS",
    "BatchStatistics",
    "mean_and_stderr",
    "importance_sampling",
    "log_likelihood",
    "per_example",
    "elbo_per_example",
    "evaluate_elbo",
    "evaluate",
    "estimator_label",
    "evaluation_name",
    "evaluation_path",
    "read_evaluations",
    "evaluate_run",
    "ESTIMATORS",
    "MAX_DECODER_PASSES",
    "decoder_passes",
    "API_NAMES",
    "check_cost",
    "AIS_INITIAL",
    "AISSettings",
    "AISEstimate",
    "ais_log_likelihood",
    "BDMCResult",
    "simulate",
    "bdmc",
]

# A latent dimension is active when Var_x(E_q[z_i|x]) exceeds this (Burda et al., 2015);
# `analysis.inspection.latent_marginals` calls the others collapsed.
ACTIVE_UNIT_THRESHOLD = 0.01
# Decoder passes an evaluation may ask for unless forced: 2000 times a K = 5000
# evaluation of 10,000 images (5e7 passes, minutes to an hour on a CPU).
MAX_DECODER_PASSES = 10**11
# K of scripts/evaluate.py unless --iwae-samples says otherwise.
DEFAULT_IWAE_SAMPLES = 1000
SPLITS = ("test", "validation", "train")


class BatchStatistics(NamedTuple):
    """Per-example statistics of a batch, nats: [n] or [n, d]."""

    elbo: tf.Tensor  # [n]
    reconstruction: tf.Tensor  # [n]
    kl: tf.Tensor  # [n], analytic
    kl_per_dimension: tf.Tensor  # [n, d], KL(q(z_i|x) || p(z_i))
    total_correlation: tf.Tensor  # [n], kl - sum_i kl_per_dimension
    posterior_mean: tf.Tensor  # [n, d], E_q[z|x]


def unit_activity(posterior_means) -> np.ndarray:
    """A_i = Var_x(E_q[z_i|x]) [d], float64, from posterior means [n, d]."""
    return np.var(np.asarray(posterior_means, np.float64), axis=0)


def active_units(activity, threshold: float = ACTIVE_UNIT_THRESHOLD) -> np.ndarray:
    """Which dimensions are active, [d] bool: A_i > threshold (Burda et al., 2015, section 5.2)."""
    return np.asarray(activity) > threshold


def mean_and_stderr(values) -> tuple:
    """(mean, standard error of the mean) of a 1-D array, as floats."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def _elbo_terms(model, x, seed):
    """The model's ELBO terms of batch x: its sample is sample 0 of the importance samples."""
    return model.elbo_terms(x, objectives.sample_seed(seed, 0))


def _statistics(model, terms) -> BatchStatistics:
    """`BatchStatistics` of a batch's `ElboTerms` (the per-dimension KL at the ELBO's z)."""
    latent = model.latent_statistics(terms)
    return BatchStatistics(
        *terms.parts,
        kl_per_dimension=latent.kl_per_dimension,
        total_correlation=latent.total_correlation,
        posterior_mean=latent.location,
    )


def _batch_statistics(model, x, seed) -> BatchStatistics:
    return _statistics(model, _elbo_terms(model, x, seed))


class _Compiled:
    """A model's compiled evaluation functions, traced once each (kept per
    model in `_COMPILED`, which holds the model weakly)."""

    def __init__(self, model):
        image = tf.TensorSpec([None] + list(model.image_shape), tf.float32)
        seed = tf.TensorSpec([2], tf.int32)
        reference = weakref.ref(model)
        self.statistics = tf.function(
            lambda x, seed: _batch_statistics(reference(), x, seed), input_signature=[image, seed], autograph=False
        )
        self._model, self._distributed = reference, {}

    def distributed(self, strategy, with_importance_sampling: bool) -> Callable:
        """Both functions of one batch per replica of `strategy`, gathered in
        replica order (see `probvae.replicas.gathered`); built once per strategy."""
        key = (id(strategy), with_importance_sampling)
        if key not in self._distributed:
            reference = self._model

            def statistics(x, index, seed, num_samples, sample_chunk):
                model = reference()
                batch_seed = tf.stack([seed, tf.cast(index, tf.int32)])
                terms = _elbo_terms(model, x, batch_seed)
                results = _statistics(model, terms)._asdict()
                if with_importance_sampling:
                    results.update(objectives.importance_sampling(
                        x, terms.posterior, terms.prior, model.likelihood, batch_seed, num_samples,
                        sample_chunk)._asdict())
                return results

            self._distributed[key] = replicas.gathered(strategy, statistics)
        return self._distributed[key]


_COMPILED = weakref.WeakKeyDictionary()


def _compiled(model) -> _Compiled:
    if model not in _COMPILED:
        _COMPILED[model] = _Compiled(model)
    return _COMPILED[model]


def importance_sampling(model, x, num_samples: int, seed,
                        sample_chunk: Optional[int] = None) -> objectives.ImportanceEstimate:
    """The K-sample importance-weighted log p(x) and the effective sample size.

    Args:
      model: a `VAE` (anything with `prior`, `posterior(x)`, `likelihood(z)`
        and `image_shape`).
      x: a batch of preprocessed float32 images [n, h, w, c] (binarized for a
        Bernoulli likelihood).
      num_samples: K >= 1, importance samples per example.
      seed: an int or a stateless seed pair.
      sample_chunk: samples per compiled chunk; default max(1, CHUNK_ROWS // n).
        Memory grows with sample_chunk * n, not with K; the result does not
        depend on it.

    Returns:
      `ImportanceEstimate` of [n] tensors.
    """
    num_samples = objectives.whole_number("num_samples", num_samples)
    sample_chunk = 0 if sample_chunk is None else objectives.whole_number("sample_chunk", sample_chunk)
    return model.importance_sampling(x, tf.constant(num_samples), objectives.as_seed(seed), tf.constant(sample_chunk))


def log_likelihood(model, x, num_samples: int, seed, sample_chunk: Optional[int] = None) -> tf.Tensor:
    """Importance-weighted estimate of log p(x) per example, [n] float32, nats.

    LL = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), with
    K = num_samples; see `importance_sampling` for the arguments.
    """
    return importance_sampling(model, x, num_samples, seed, sample_chunk).log_likelihood


def per_example(model, batches: tf.data.Dataset, seed: int, iwae_samples: int = 0,
                sample_chunk: Optional[int] = None, on_batch: Optional[Callable[[int], None]] = None,
                strategy=None) -> Dict[str, np.ndarray]:
    """Every `BatchStatistics` field over `batches`, concatenated ([n] or [n, d]);
    with `iwae_samples` K >= 1 also `log_likelihood` and `effective_sample_size`.
    `on_batch(examples_done)` is called after each batch (each round of R
    batches under a `strategy` of R > 1 replicas, which spreads the batches
    over its replicas with the numbers of one device)."""
    compiled = _compiled(model)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        sample_chunk = 0 if sample_chunk is None else objectives.whole_number("sample_chunk", sample_chunk)
        run = compiled.distributed(strategy, bool(iwae_samples))
        return replicas.map_batches(strategy, run, batches, tf.constant(seed, tf.int32),
                                      tf.constant(int(iwae_samples)), tf.constant(sample_chunk), on_round=on_batch)
    values, done = {}, 0
    for index, x in enumerate(batches):
        batch_seed = tf.constant([seed, index], tf.int32)
        results = compiled.statistics(x, batch_seed)._asdict()
        if iwae_samples:
            results.update(importance_sampling(model, x, iwae_samples, batch_seed, sample_chunk)._asdict())
        for name, value in results.items():
            values.setdefault(name, []).append(value.numpy())
        done += int(x.shape[0])
        if on_batch is not None:
            on_batch(done)
    return {name: np.concatenate(parts) for name, parts in values.items()}


def elbo_per_example(model, batches: tf.data.Dataset, seed: int, strategy=None) -> Dict[str, np.ndarray]:
    """ELBO, reconstruction and KL of every example in `batches`, [n] each, nats
    (spread over the replicas of `strategy`, if given, with the same numbers)."""
    values = per_example(model, batches, seed, strategy=strategy)
    return {name: values[name] for name in ("elbo", "reconstruction", "kl")}


ESTIMATORS = ("iwae", "ais")
# The start of the annealing path: q(z|x) or p(z).
AIS_INITIAL = ("posterior", "prior")
# Chains x examples per compiled AIS call: memory stays flat in chains and images.
AIS_CHUNK_ROWS = 2048


class AISSettings(NamedTuple):
    """How `ais_log_likelihood` and `bdmc` anneal (docs/evaluation.md)."""

    num_steps: int = 1000  # T: intermediate distributions, b_0 = 0 .. b_T = 1
    num_chains: int = 16  # C: independent chains per example
    num_leapfrog_steps: int = 10  # per HMC transition
    step_size: float = 0.5  # initial HMC step size, in the preconditioned coordinates
    schedule: str = "sigmoid"  # see probvae.annealing.SCHEDULES
    initial: str = "posterior"  # pi_0: "posterior" q(z|x) or "prior" p(z)
    adapt: bool = True  # adapt each example's step size toward 0.65 acceptance
    chunk_rows: int = AIS_CHUNK_ROWS  # chains x examples per compiled call

    def checked(self) -> "AISSettings":
        """These settings, or a UserError naming the first that is out of range."""
        for name in ("num_steps", "num_chains", "num_leapfrog_steps", "chunk_rows"):
            objectives.whole_number(name, getattr(self, name))
        if not (isinstance(self.step_size, (int, float)) and 0 < self.step_size < np.inf):
            raise UserError(f"step_size must be a positive number (got {self.step_size!r})")
        checks.choice("schedule", self.schedule, tuple(annealing.SCHEDULES))
        checks.choice("initial distribution", self.initial, AIS_INITIAL)
        return self._replace(num_steps=int(self.num_steps), num_chains=int(self.num_chains),
                             num_leapfrog_steps=int(self.num_leapfrog_steps), chunk_rows=int(self.chunk_rows),
                             step_size=float(self.step_size), adapt=bool(self.adapt))


def _log_mean_exp(log_weights: np.ndarray) -> np.ndarray:
    """log (1/C) sum_c exp(w_c) over axis 0 of [C, n], float64."""
    top = log_weights.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    return top + np.log(np.mean(np.exp(log_weights - top), axis=0))


class AISEstimate(NamedTuple):
    """Per-example AIS estimates of log p(x) ([n] NumPy arrays, nats) and how they were made."""

    log_likelihood: np.ndarray  # [n]: log (1/C) sum_c w_c
    mc_stderr: np.ndarray  # [n]: Monte Carlo standard error of each, sqrt(1/ESS - 1/C) (delta method)
    effective_sample_size: np.ndarray  # [n]: (sum_c w_c)^2 / sum_c w_c^2, between 1 and C
    acceptance: np.ndarray  # [n]: mean HMC acceptance probability
    step_size: np.ndarray  # [n]: final step size
    log_weights: np.ndarray  # [C, n] float64
    settings: AISSettings
    seconds: float

    @classmethod
    def from_log_weights(cls, log_weights, acceptance, step_size, settings, seconds) -> "AISEstimate":
        log_weights = np.asarray(log_weights, np.float64)
        num_chains = log_weights.shape[0]
        estimate = _log_mean_exp(log_weights)
        effective = np.exp(2.0 * _log_mean_exp(log_weights) - _log_mean_exp(2.0 * log_weights)) * num_chains
        mc_stderr = np.sqrt(np.maximum(1.0 / effective - 1.0 / num_chains, 0.0))
        return cls(estimate, mc_stderr, effective, np.asarray(acceptance), np.asarray(step_size), log_weights,
                   settings, float(seconds))

    @property
    def mean(self) -> float:
        """Mean log p(x) over the examples, nats."""
        return mean_and_stderr(self.log_likelihood)[0]

    @property
    def stderr(self) -> float:
        """Standard error of `mean` over the examples (data and Monte Carlo noise together)."""
        return mean_and_stderr(self.log_likelihood)[1]

    @property
    def mean_mc_stderr(self) -> float:
        """The Monte Carlo part of `stderr`: sqrt(sum_j mc_stderr_j^2) / n."""
        return float(np.sqrt(np.sum(np.square(self.mc_stderr))) / max(self.mc_stderr.size, 1))

    def summary(self) -> dict:
        """JSON-ready: the estimate, its errors and the settings."""
        return {"log_likelihood": self.mean, "log_likelihood_stderr": self.stderr,
                "log_likelihood_mc_stderr": self.mean_mc_stderr,
                "effective_sample_size": float(np.mean(self.effective_sample_size)),
                "ais": dict(self.settings._asdict(), acceptance=float(np.mean(self.acceptance)),
                            final_step_size=float(np.mean(self.step_size))),
                "ais_seconds": self.seconds}


def _anneal_batch(model, x, exact_z, seed, betas, num_chains, step_size, settings: AISSettings, reverse: bool):
    """AIS on one chunk: log weights [C, n] float64, acceptance [n], final step size [n].

    Rows c n + j of the tiled batch are chain c of example j. The chains move
    in coordinates u = (z - m) / s, with m and s the location and scale of
    q(z|x) (or m = 0, s = 1 from the prior): a fixed diagonal preconditioner
    per chain, so one step size fits dimensions of very different posterior
    widths. Both densities are those of z; the constant Jacobian of z(u)
    cancels in every weight and every Metropolis test.
    """
    n, dims = tf.shape(x)[0], model.latent_dim
    tiled = tf.tile(x, [num_chains, 1, 1, 1])
    setup_seed, start_seed, run_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    terms = model.elbo_terms(tiled, setup_seed)
    prior = terms.prior
    if settings.initial == "posterior":
        initial = terms.posterior
        statistics = model.latent_statistics(terms)
        loc, scale = statistics.location, statistics.stddev  # [C n, D]
    else:
        initial = prior
        loc, scale = tf.zeros_like(terms.z), tf.ones_like(terms.z)
    if reverse:
        z = tf.tile(exact_z, [num_chains, 1])
    elif settings.initial == "posterior":
        z = initial.sample(seed=start_seed)
    else:
        z = initial.sample(tf.shape(tiled)[0], seed=start_seed)

    def latent(u):
        return loc + scale * tf.reshape(u, [-1, dims])

    def per_chain(values):
        return tf.reshape(values, [num_chains, n])

    def initial_log_prob(u):
        return per_chain(initial.log_prob(latent(u)))

    def target_log_prob(u):
        z = latent(u)
        return per_chain(prior.log_prob(z) + model.likelihood(z).log_prob(tiled))

    start = tf.reshape((z - loc) / scale, [num_chains, n, dims])
    result = annealing.anneal(initial_log_prob, target_log_prob, start, betas, run_seed, step_size,
                              settings.num_leapfrog_steps, settings.adapt)
    return result.log_weights, result.acceptance, result.step_size


class _Annealer:
    """A model's compiled AIS chunk, traced once per (direction, initial
    distribution, leapfrog steps, adaptation); kept per model in `_ANNEALERS`."""

    def __init__(self, model):
        self._model, self._functions = weakref.ref(model), {}

    def __call__(self, settings: AISSettings, reverse: bool, *args):
        key = (reverse, settings.initial, settings.num_leapfrog_steps, settings.adapt)
        if key not in self._functions:
            model, reference = self._model(), self._model
            signature = [tf.TensorSpec([None] + list(model.image_shape), tf.float32),
                         tf.TensorSpec([None, model.latent_dim], tf.float32), tf.TensorSpec([2], tf.int32),
                         tf.TensorSpec([None], tf.float64), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)]
            self._functions[key] = tf.function(
                lambda *inputs: _anneal_batch(reference(), *inputs, settings=settings, reverse=reverse),
                input_signature=signature, autograph=False)
        return self._functions[key](*args)


_ANNEALERS = weakref.WeakKeyDictionary()


def _anneal(model, x, exact_z, settings: AISSettings, seed, reverse: bool,
            on_chunk: Optional[Callable[[int], None]] = None):
    """Run AIS over x [n, h, w, c] in chunks of at most `settings.chunk_rows`
    chains x examples: (log weights [C, n] float64, acceptance [n], step size [n])."""
    if model not in _ANNEALERS:
        _ANNEALERS[model] = _Annealer(model)
    compiled = _ANNEALERS[model]
    n, chains = int(x.shape[0]), settings.num_chains
    chains_per_call = min(chains, settings.chunk_rows)
    images_per_call = max(1, settings.chunk_rows // chains_per_call)
    betas = annealing.schedule(settings.schedule, settings.num_steps)
    betas = tf.constant(betas[::-1].copy() if reverse else betas, tf.float64)
    step_size = tf.constant(settings.step_size, tf.float32)
    seed = objectives.as_seed(seed)
    log_weights = np.empty((chains, n), np.float64)
    acceptance, step = np.zeros(n), np.zeros(n)
    for start in range(0, n, images_per_call):
        stop = min(n, start + images_per_call)
        images = x[start:stop]
        exact = exact_z[start:stop] if exact_z is not None else tf.zeros([0, model.latent_dim])
        for first in range(0, chains, chains_per_call):
            last = min(chains, first + chains_per_call)
            chunk_seed = objectives.sample_seed(objectives.sample_seed(seed, start), first)
            weights, accepted, final = compiled(settings, reverse, images, exact, chunk_seed, betas,
                                                tf.constant(last - first), step_size)
            log_weights[first:last, start:stop] = weights.numpy()
            share = (last - first) / chains
            acceptance[start:stop] += share * accepted.numpy()
            step[start:stop] += share * final.numpy()
        if on_chunk is not None:
            on_chunk(stop)
    return log_weights, acceptance, step


def ais_log_likelihood(model, x, num_steps: int = 1000, num_chains: int = 16, seed=0, *,
                       num_leapfrog_steps: int = 10, step_size: float = 0.5, schedule: str = "sigmoid",
                       initial: str = "posterior", adapt: bool = True, chunk_rows: int = AIS_CHUNK_ROWS,
                       on_chunk: Optional[Callable[[int], None]] = None) -> AISEstimate:
    """Annealed importance sampling estimate of log p(x) per example.

    C = num_chains independent chains per image walk T = num_steps geometric
    steps from q(z|x) (initial="posterior") or p(z) ("prior") to p(z) p(x|z)
    on a sigmoidal schedule, with one HMC transition of `num_leapfrog_steps`
    leapfrog steps per step (`probvae.annealing`); log p(x) is estimated by
    log (1/C) sum_c w_c, a stochastic lower bound that tightens as T grows.
    Works for every prior, likelihood and hierarchy: it needs only the model's
    q(z|x), p(z) and p(x|z) as distributions.

    Args:
      model: a `VAE`.
      x: images: a NumPy array in the dataset's form or a model-ready tensor
        (`VAE.prepare_inputs`).
      seed: an int or a stateless seed pair; the numbers are a function of the
        weights, x, seed and the settings (chunk_rows included).
      chunk_rows: chains x examples per compiled call; memory grows with it,
        not with C or n.
      on_chunk: called with the number of images done after each chunk.

    Returns:
      `AISEstimate` ([n] arrays; `.mean`, `.stderr` over images, `.mean_mc_stderr`).
    """
    settings = AISSettings(num_steps, num_chains, num_leapfrog_steps, step_size, schedule, initial, adapt,
                           chunk_rows).checked()
    x = model.prepare_inputs(x)
    started = time.time()
    log_weights, acceptance, step = _anneal(model, x, None, settings, seed, reverse=False, on_chunk=on_chunk)
    return AISEstimate.from_log_weights(log_weights, acceptance, step, settings, time.time() - started)


class BDMCResult(NamedTuple):
    """Bidirectional Monte Carlo on data simulated from the model ([n] arrays, nats)."""

    lower: np.ndarray  # [n]: forward AIS, a stochastic lower bound on log p(x)
    upper: np.ndarray  # [n]: -log (1/C) sum_c w_c of backward AIS from the generating z, an upper bound
    images: np.ndarray  # [n, h, w, c]: the simulated images (model-ready)
    latents: np.ndarray  # [n, D]: the latents that generated them
    forward: AISEstimate
    settings: AISSettings
    seconds: float

    @property
    def gap(self) -> np.ndarray:
        """upper - lower per example: at least the error of forward AIS with these settings, in expectation."""
        return self.upper - self.lower

    def summary(self) -> dict:
        """JSON-ready means over the simulated examples."""
        lower, lower_stderr = mean_and_stderr(self.lower)
        upper, upper_stderr = mean_and_stderr(self.upper)
        gap, gap_stderr = mean_and_stderr(self.gap)
        return {"examples": int(self.lower.size), "lower": lower, "lower_stderr": lower_stderr, "upper": upper,
                "upper_stderr": upper_stderr, "gap": gap, "gap_stderr": gap_stderr,
                "settings": self.settings._asdict(), "seconds": self.seconds}


def simulate(model, num_examples: int, seed=0):
    """(z [n, D], x [n, h, w, c]) drawn from p(z) p(x|z): model-ready images
    (binary for a Bernoulli likelihood) and the latents that generated them."""
    samples = model.sample(objectives.whole_number("num_examples", num_examples), seed)
    return samples.z, samples.x


def bdmc(model, num_examples: int, num_steps: int = 1000, num_chains: int = 16, seed=0,
         on_chunk: Optional[Callable[[str, int], None]] = None, **settings) -> BDMCResult:
    """Bidirectional Monte Carlo (Grosse et al., 2015): sandwich log p(x) on
    `num_examples` images simulated from the model itself.

    Forward AIS from the start distribution gives a stochastic lower bound;
    backward AIS (b from 1 to 0) started at the z that generated each image,
    an exact sample of p(z|x), gives a stochastic upper bound. Their gap
    bounds the error of forward AIS with these settings on data like the
    model's own. `settings` are `ais_log_likelihood`'s keyword arguments;
    `on_chunk(direction, images_done)` reports progress.
    """
    settings = AISSettings(num_steps, num_chains, **settings).checked()
    started = time.time()
    z, x = simulate(model, num_examples, objectives.sample_seed(objectives.as_seed(seed), 1))
    report = (lambda direction: None if on_chunk is None else (lambda done: on_chunk(direction, done)))  # noqa: E731
    forward = _anneal(model, x, None, settings, seed, reverse=False, on_chunk=report("forward"))
    forward = AISEstimate.from_log_weights(*forward, settings, time.time() - started)
    backward, _, _ = _anneal(model, x, z, settings, objectives.sample_seed(objectives.as_seed(seed), 2),
                             reverse=True, on_chunk=report("backward"))
    upper = -_log_mean_exp(backward)
    return BDMCResult(forward.log_likelihood, upper, x.numpy(), z.numpy(), forward, settings, time.time() - started)


def _binarization(model, binarization_seed: int) -> dict:
    binarize = model.likelihood_head.binarize
    return {
        "binarization": f"fixed, seed {binarization_seed}" if binarize else "none",
        "binarization_seed": binarization_seed if binarize else None,
    }


def _summary(values: Dict[str, np.ndarray], names) -> dict:
    summary = {}
    for name in names:
        summary[name], summary[f"{name}_stderr"] = mean_and_stderr(values[name])
    return summary


def evaluate_elbo(model, images: np.ndarray, *, seed: int, batch_size: int = 1000,
                  binarization_seed: int = 0, strategy=None, with_latents: bool = False,
                  iwae_samples: int = 0) -> dict:
    """Mean held-out ELBO and its parts, with standard errors, in nats.

    Args:
      model: a `VAE`.
      images: uint8 images [n, h, w, c], or a `probvae.data.ImageStream`
        (then images that fail to decode are left out and counted).
      seed: seed of the posterior samples.
      batch_size: examples per evaluation step.
      binarization_seed: seed of the fixed binarization (Bernoulli models).
      strategy: a tf.distribute strategy the model was built under, or None.
      with_latents: also `active_units` and `kl_per_dimension` (mean over
        the images, [d]), as `evaluate` reports them.
      iwae_samples: K >= 1: also `iwae_bound` (and its `_stderr`), the mean
        importance-weighted bound with K samples per image (what an
        importance-weighted training objective maximises; at a small K a
        bound on log p(x), not an estimate of it), and `iwae_samples`.
    """
    batches = data_lib.evaluation_batches(images, batch_size, binarize=model.likelihood_head.binarize,
                                          seed=binarization_seed)
    iwae_samples = objectives.whole_number("iwae_samples", iwae_samples) if iwae_samples else 0
    parts = per_example(model, batches, seed, iwae_samples=iwae_samples, strategy=strategy)
    summary = {"n_examples": int(len(parts["elbo"]))}
    if isinstance(images, data_lib.ImageStream):
        summary["skipped_images"] = images.skipped
    summary.update(_summary(parts, ("elbo", "reconstruction", "kl")))
    if iwae_samples:
        summary.update(_summary({"iwae_bound": parts["log_likelihood"]}, ("iwae_bound",)), iwae_samples=iwae_samples)
    summary.update(_binarization(model, binarization_seed))
    if with_latents:
        summary["active_units"] = int(np.sum(active_units(unit_activity(parts["posterior_mean"]))))
        summary["kl_per_dimension"] = parts["kl_per_dimension"].astype(np.float64).mean(axis=0).tolist()
    return summary


def decoder_passes(num_images: int, estimator: str = "iwae", iwae_samples: int = DEFAULT_IWAE_SAMPLES,
                   ais: Optional[AISSettings] = None, bdmc_examples: int = 0) -> int:
    """How many decoder passes (one image, one latent) an evaluation costs:
    n K for importance sampling, n C T L forward and backward for AIS, and
    twice that per simulated image for BDMC."""
    ais = AISSettings() if ais is None else ais
    annealing_cost = ais.num_chains * ais.num_steps * ais.num_leapfrog_steps * 3
    passes = num_images * (iwae_samples if estimator == "iwae" else annealing_cost)
    return passes + 2 * bdmc_examples * annealing_cost


# How `check_cost` names what to change, in the API's words; the command line passes its flags.
API_NAMES = {"iwae_samples": "iwae_samples", "ais": "num_steps x num_chains x num_leapfrog_steps",
             "force": "force=True"}


def check_cost(num_images: int, estimator: str = "iwae", iwae_samples: int = DEFAULT_IWAE_SAMPLES,
               ais: Optional[AISSettings] = None, bdmc_examples: int = 0, names: Optional[dict] = None) -> None:
    """A UserError if the evaluation would cost more than MAX_DECODER_PASSES
    decoder passes, naming what to change with `names` (default `API_NAMES`)."""
    names = API_NAMES if names is None else names
    passes = decoder_passes(num_images, estimator, iwae_samples, ais, bdmc_examples)
    if passes > MAX_DECODER_PASSES:
        what = (f"{names['iwae_samples']} {iwae_samples}" if estimator == "iwae" and not bdmc_examples
                else f"AIS settings ({names['ais']})")
        raise UserError(f"{what} on {num_images} images means {passes:.2g} decoder passes, more than "
                        f"{MAX_DECODER_PASSES:.0e} (K = 5000 on 10,000 images is 5e+07): days to years of "
                        f"computing; ask for less, or pass {names['force']} to run it anyway")


def evaluate(model, images: np.ndarray, *, estimator: str = "iwae", iwae_samples: int = DEFAULT_IWAE_SAMPLES,
             ais: Optional[AISSettings] = None, bdmc_examples: int = 0, batch_size: int = 1000, seed: int = 0,
             binarization_seed: int = 0, sample_chunk: Optional[int] = None, checkpoint: Optional[str] = None,
             log: Optional[Callable[[str], None]] = None, strategy=None, force: bool = False,
             on_batch: Optional[Callable[[int], None]] = None) -> dict:
    """Every held-out number of a model on uint8 images [n, h, w, c].

    Args:
      estimator: how log p(x) is estimated: "iwae" (importance sampling with
        q(z|x), K = iwae_samples) or "ais" (`ais_log_likelihood` with `ais`).
      iwae_samples: K, importance samples per image for the log-likelihood.
      ais: `AISSettings` of the AIS estimate and of BDMC (default: its defaults).
      bdmc_examples: N > 0 adds a `bdmc` section: `bdmc` on N images
        simulated from the model, with the `ais` settings.
      batch_size: images per step; seed: seed of the posterior samples.
      binarization_seed: seed of the fixed binarization (Bernoulli models).
      sample_chunk: samples per compiled chunk (see `importance_sampling`).
      checkpoint: name recorded in the result; log: gets progress lines.
      strategy: a tf.distribute strategy the model was built under: the
        ELBO and IWAE batches are spread over its replicas, with the numbers
        of one device (AIS runs on one device).
      force: run even if it costs more than MAX_DECODER_PASSES decoder passes.
      on_batch: called with the number of images done after each batch of
        the ELBO and importance-sampling pass; an exception it raises stops
        the evaluation there (the training loop stops on a signal so).

    Returns:
      A JSON-ready dict, nats per example unless the name says bits:
      elbo, reconstruction, kl, log_likelihood (each with `_stderr`),
      log_likelihood_mc_stderr, effective_sample_size, estimator and its
      settings (iwae_samples, or `ais` with the AIS settings and the mean
      acceptance rate); bits_per_dim and elbo_bits_per_dim (each with
      `_stderr`); active_units of latent_dim, posterior_mean_variance [d],
      active_unit_threshold; kl_per_dimension [d], kl_total_correlation;
      n_examples, image_shape, likelihood, binarization, binarization_seed,
      seed, batch_size, checkpoint, seconds; `bdmc` if asked for.
      docs/evaluation.md explains each.
    """
    checks.choice("estimator", estimator, ESTIMATORS)
    iwae_samples = objectives.whole_number("iwae_samples", iwae_samples)
    batch_size = objectives.whole_number("batch_size", batch_size)
    bdmc_examples = 0 if not bdmc_examples else objectives.whole_number("bdmc_examples", bdmc_examples)
    ais = (AISSettings() if ais is None else ais).checked()
    if not force:
        check_cost(len(images), estimator, iwae_samples, ais, bdmc_examples)
    started = time.time()
    batches = data_lib.evaluation_batches(images, batch_size, binarize=model.likelihood_head.binarize,
                                          seed=binarization_seed)
    n, num_pixels = len(images), int(np.prod(model.image_shape))
    nats_to_bits_per_dim = 1.0 / (num_pixels * math.log(2.0))
    use_iwae = estimator == "iwae"
    what = f"K={iwae_samples}" if use_iwae else "ELBO"

    def after_batch(done):
        if log is not None:
            log(f"evaluated {done}/{n} images, {what} ({time.time() - started:.0f} s)")
        if on_batch is not None:
            on_batch(done)

    values = per_example(model, batches, seed, iwae_samples=iwae_samples if use_iwae else 0,
                         sample_chunk=sample_chunk, on_batch=after_batch, strategy=strategy)
    result = {"n_examples": int(n), "image_shape": list(model.image_shape), "likelihood": model.config.likelihood,
              "units": "nats per example", "estimator": estimator}
    result.update(_summary(values, ("elbo", "reconstruction", "kl")))
    if use_iwae:
        result.update(_summary(values, ("log_likelihood",)))
        relative_variance = np.maximum(
            1.0 / values["effective_sample_size"].astype(np.float64) - 1.0 / iwae_samples, 0.0)
        result.update(log_likelihood_mc_stderr=float(np.sqrt(relative_variance.sum()) / n),
                      effective_sample_size=float(values["effective_sample_size"].mean()),
                      iwae_samples=iwae_samples)
    else:
        x = tf.concat(list(batches), axis=0)
        progress = None if log is None else _progress(log, f"AIS, T={ais.num_steps}, C={ais.num_chains}", n)
        result.update(ais_log_likelihood(model, x, seed=seed, on_chunk=progress, **ais._asdict()).summary())
    posterior_mean_variance = unit_activity(values["posterior_mean"])
    result.update(
        bits_per_dim=-result["log_likelihood"] * nats_to_bits_per_dim,
        bits_per_dim_stderr=result["log_likelihood_stderr"] * nats_to_bits_per_dim,
        elbo_bits_per_dim=-result["elbo"] * nats_to_bits_per_dim,
        elbo_bits_per_dim_stderr=result["elbo_stderr"] * nats_to_bits_per_dim,
        active_units=int(np.sum(active_units(posterior_mean_variance))),
        active_unit_threshold=ACTIVE_UNIT_THRESHOLD,
        latent_dim=int(posterior_mean_variance.size),
        posterior_mean_variance=posterior_mean_variance.tolist(),
        kl_per_dimension=values["kl_per_dimension"].astype(np.float64).mean(axis=0).tolist(),
        kl_total_correlation=float(values["total_correlation"].astype(np.float64).mean()),
        seed=int(seed),
        batch_size=batch_size,
        checkpoint=checkpoint,
    )
    result.update(_binarization(model, binarization_seed))
    if bdmc_examples:
        progress = None if log is None else (lambda direction, done: log(
            f"BDMC {direction} AIS: {done}/{bdmc_examples} simulated images ({time.time() - started:.0f} s)"))
        result["bdmc"] = bdmc(model, bdmc_examples, seed=seed, on_chunk=progress, **ais._asdict()).summary()
    result["seconds"] = time.time() - started
    return result


def _progress(log: Callable[[str], None], what: str, total: int) -> Callable[[int], None]:
    """A progress callback printing done/total with the elapsed time and an ETA."""
    started = time.time()

    def report(done: int) -> None:
        elapsed = time.time() - started
        left = elapsed * (total - done) / max(done, 1)
        log(f"{what}: {done}/{total} images ({elapsed:.0f} s, about {left:.0f} s left)")

    return report


def evaluate_run(run_dir: str, split: str = "test", iwae_samples: int = DEFAULT_IWAE_SAMPLES,
                 batch_size: Optional[int] = None, seed: int = 0, checkpoint: Optional[str] = None,
                 sample_chunk: Optional[int] = None, binarization_seed: Optional[int] = None,
                 max_examples: Optional[int] = None, log: Optional[Callable[[str], None]] = None,
                 estimator: str = "iwae", ais: Optional[AISSettings] = None, bdmc_examples: int = 0,
                 force: bool = False, names: Optional[dict] = None, data_dir: Optional[str] = None) -> dict:
    """Evaluate a trained run on one split and write RUN_DIR/`evaluation_name(result)`.

    The model comes from `runs.open_run` (the run's best epoch's weights if it
    kept them, else the latest checkpoint; or the one `checkpoint` names),
    the data from the run's own `DataConfig` (same split and binarization
    seed as training used, unless `binarization_seed` is given).
    `batch_size` defaults to the run's `eval_batch_size`; `max_examples`
    keeps the first N images of the split (for quick checks). `estimator`,
    `ais`, `bdmc_examples` and `force` are `evaluate`'s; the cost check runs
    before the model loads and names what to change with `names` (`check_cost`).
    `data_dir` reads the data from another folder than the run's own.

    Returns:
      The dict of `evaluate`, plus split, dataset, run_dir, max_examples and
      the path it was written to ("file").
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    checks.choice("estimator", estimator, ESTIMATORS)
    objectives.whole_number("iwae_samples", iwae_samples)
    ais = (AISSettings() if ais is None else ais).checked()
    config = runs.load_config(run_dir)
    if data_dir is not None:
        config = config.replace(data={"data_dir": data_dir})
    d = config.data
    splits = data_lib.load_config_dataset(config)
    images, _ = splits.split(split)
    if max_examples is not None:
        images = images[:objectives.whole_number("max_examples", max_examples)]
    if not force:
        check_cost(len(images), estimator, iwae_samples, ais, bdmc_examples, names)
    model, config, checkpoint = runs.open_run(run_dir, checkpoint)
    result = {"split": split, "dataset": splits.name, "run_dir": os.path.abspath(run_dir),
              "max_examples": max_examples}
    result.update(evaluate(
        model, images, estimator=estimator, iwae_samples=iwae_samples, ais=ais, bdmc_examples=bdmc_examples,
        batch_size=config.train.eval_batch_size if batch_size is None else batch_size,
        seed=seed, binarization_seed=d.split_seed if binarization_seed is None else binarization_seed,
        sample_chunk=sample_chunk, checkpoint=os.path.basename(checkpoint), log=log, force=True,
    ))
    path = evaluation_path(run_dir, result)
    runs.write_json(path, result)
    return dict(result, file=path)
