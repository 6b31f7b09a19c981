"""Annealed importance sampling and bidirectional Monte Carlo on a VAE's own path.

`ais_log_likelihood` anneals from q(z|x) (or p(z)) to p(z) p(x|z) with HMC
transitions (`probvae.annealing`, which holds the sampler for any pair of log
densities); `bdmc` sandwiches log p(x) on images simulated from the model
(forward AIS from the start, backward AIS from the latent that generated each
image). Both work for every prior, likelihood and hierarchy: they need only
the model's q(z|x), p(z) and p(x|z) as distributions. `estimate_ais` is the
"ais" entry of the estimator registry. See docs/evaluation.md.

Randomness. A seed is an int s (the pair (s, 0)) or a pair; chain chunk
(start, first) of an estimate draws from
sample_seed(sample_seed(seed, start), first); BDMC simulates its images
from sample_seed(seed, 1) and runs backward from sample_seed(seed, 2).

References:
  Neal (2001), Annealed importance sampling. Statistics and Computing 11.
  Grosse, Ghahramani & Adams (2015), Sandwiching the marginal likelihood
    using bidirectional Monte Carlo. arXiv:1511.02543.
  Wu, Burda, Salakhutdinov & Grosse (2017), On the quantitative analysis of
    decoder-based generative models. ICLR.
"""

from __future__ import annotations

import time
import weakref
from typing import Callable, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from probvae import annealing, replicas, seeds
from probvae.distributions import is_flow, unwrap
from probvae.evaluation.estimators import AIS_CHUNK_ROWS, AISSettings, _whole, ais_settings, check_cost
from probvae.evaluation.result import mean_and_stderr

__all__ = ["AISSettings", "AISEstimate", "ais_log_likelihood", "BDMCResult", "simulate", "bdmc", "estimate_ais"]


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
    in coordinates u = (v - m) / s, with m and s the location and scale of
    q(z|x) (or m = 0, s = 1 from the prior): a fixed diagonal preconditioner
    per chain, so one step size fits dimensions of very different posterior
    widths. For a Gaussian start v is z itself, and both densities are those
    of z; the constant Jacobian of z(u) cancels in every weight and every
    Metropolis test. A flow posterior z = f(v) (`distributions.is_flow`)
    starts from its Gaussian: v is the Gaussian's variable, the start density
    is the Gaussian's and the target p(z) p(x|z) |det df/dv| (a change of
    variables keeps its normaliser p(x)), so every step costs one parallel
    pass of the flow, never its sequential inverse (docs/evaluation.md).
    """
    n, dims = tf.shape(x)[0], model.latent_dim
    tiled = tf.tile(x, [num_chains, 1, 1, 1])
    setup_seed, start_seed, run_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    terms = model.elbo_terms(tiled, setup_seed)
    prior, flow = terms.prior, None
    if settings.initial == "posterior" and is_flow(terms.posterior):
        flow = unwrap(terms.posterior).bijector
        initial = unwrap(terms.posterior).distribution
        loc, scale = initial.mean(), initial.stddev()  # [C n, D]
    elif settings.initial == "posterior":
        initial = terms.posterior
        statistics = model.latent_statistics(terms)
        loc, scale = statistics.location, statistics.stddev  # [C n, D]
    else:
        initial = prior
        loc, scale = tf.zeros_like(terms.z), tf.ones_like(terms.z)
    if reverse:
        v = tf.tile(exact_z, [num_chains, 1])
        v = v if flow is None else flow.inverse(v)  # the flow's sequential inverse, once per chain
    elif settings.initial == "posterior":
        v = initial.sample(seed=start_seed)
    else:
        v = initial.sample(tf.shape(tiled)[0], seed=start_seed)

    def point(u):
        return loc + scale * tf.reshape(u, [-1, dims])

    def per_chain(values):
        return tf.reshape(values, [num_chains, n])

    def initial_log_prob(u):
        return per_chain(initial.log_prob(point(u)))

    def target_log_prob(u):
        v = point(u)
        if flow is None:
            return per_chain(prior.log_prob(v) + model.likelihood(v).log_prob(tiled))
        z = flow.forward(v)
        return per_chain(prior.log_prob(z) + model.likelihood(z).log_prob(tiled)
                         + flow.forward_log_det_jacobian(v, event_ndims=1))

    start = tf.reshape((v - loc) / scale, [num_chains, n, dims])
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


def _chunks(n: int, settings: AISSettings):
    """The compiled calls of an AIS run over n images: (start, stop, first, last),
    images [start, stop) x chains [first, last), images outermost."""
    chains = settings.num_chains
    chains_per_call = min(chains, settings.chunk_rows)
    images_per_call = max(1, settings.chunk_rows // chains_per_call)
    return [(start, min(n, start + images_per_call), first, min(chains, first + chains_per_call))
            for start in range(0, n, images_per_call) for first in range(0, chains, chains_per_call)]


def _anneal(model, x, exact_z, settings: AISSettings, seed, reverse: bool,
            on_chunk: Optional[Callable[[int], None]] = None, strategy=None):
    """Run AIS over x [n, h, w, c] in chunks of at most `settings.chunk_rows`
    chains x examples: (log weights [C, n] float64, acceptance [n], step size [n]).

    Under a tf.distribute `strategy` of R > 1 replicas (the model built in its
    scope), chunk k runs on replica k mod R, R chunks at a time, each with the
    seed it has on one device: the numbers of one device."""
    if model not in _ANNEALERS:
        _ANNEALERS[model] = _Annealer(model)
    compiled = _ANNEALERS[model]
    n, chains = int(x.shape[0]), settings.num_chains
    betas = annealing.schedule(settings.schedule, settings.num_steps)
    betas = tf.constant(betas[::-1].copy() if reverse else betas, tf.float64)
    step_size = tf.constant(settings.step_size, tf.float32)
    seed = seeds.as_seed(seed)

    def inputs(chunk):
        start, stop, first, last = chunk
        exact = exact_z[start:stop] if exact_z is not None else tf.zeros([0, model.latent_dim])
        return (x[start:stop], exact, seeds.sample_seed(seeds.sample_seed(seed, start), first), betas,
                tf.constant(last - first), step_size)

    log_weights = np.empty((chains, n), np.float64)
    acceptance, step = np.zeros(n), np.zeros(n)
    chunks = _chunks(n, settings)
    per_round = strategy.num_replicas_in_sync if strategy is not None else 1
    for index in range(0, len(chunks), per_round):
        done = chunks[index:index + per_round]
        if per_round == 1:
            results = [compiled(settings, reverse, *inputs(done[0]))]
        else:  # replicas past the last chunk repeat the round's first; their results are dropped
            arguments = [inputs(done[k] if k < len(done) else done[0]) for k in range(per_round)]
            results = replicas.run_each(strategy, lambda *a: compiled(settings, reverse, *a), arguments)[:len(done)]
        for (start, stop, first, last), (weights, accepted, final) in zip(done, results):
            log_weights[first:last, start:stop] = weights.numpy()
            share = (last - first) / chains
            acceptance[start:stop] += share * accepted.numpy()
            step[start:stop] += share * final.numpy()
        after, stop = index + len(done), done[-1][1]
        if on_chunk is not None and (after == len(chunks) or chunks[after][0] >= stop):  # a run of images done
            on_chunk(stop)
    return log_weights, acceptance, step


def ais_log_likelihood(model, x, num_steps: int = 1000, num_chains: int = 16, seed=0, *,
                       num_leapfrog_steps: int = 10, step_size: float = 0.5, schedule: str = "sigmoid",
                       initial: str = "posterior", adapt: bool = True, chunk_rows: int = AIS_CHUNK_ROWS,
                       on_chunk: Optional[Callable[[int], None]] = None, force: bool = False,
                       strategy=None) -> AISEstimate:
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
      on_chunk: called with the number of images done whenever a chunk finishes
        its images (after all their chains).
      force: run even if it costs more than MAX_DECODER_PASSES decoder
        passes (a UserError otherwise, as `probvae evaluate` refuses it).
      strategy: a tf.distribute strategy the model was built under: the
        chunks are spread over its replicas, with the numbers of one device.

    Returns:
      `AISEstimate` ([n] arrays; `.mean`, `.stderr` over images, `.mean_mc_stderr`).
    """
    settings = AISSettings(num_steps, num_chains, num_leapfrog_steps, step_size, schedule, initial, adapt,
                           chunk_rows).checked()
    x = model.prepare_inputs(x)
    if not force:
        check_cost(int(x.shape[0]), "ais", ais=settings)
    started = time.time()
    log_weights, acceptance, step = _anneal(model, x, None, settings, seed, reverse=False, on_chunk=on_chunk,
                                            strategy=strategy)
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
    samples = model.sample(_whole("num_examples", num_examples), seed)
    return samples.z, samples.x


def bdmc(model, num_examples: int, num_steps: int = 1000, num_chains: int = 16, seed=0,
         on_chunk: Optional[Callable[[str, int], None]] = None, force: bool = False, strategy=None,
         **settings) -> BDMCResult:
    """Bidirectional Monte Carlo (Grosse et al., 2015): sandwich log p(x) on
    `num_examples` images simulated from the model itself.

    Forward AIS from the start distribution gives a stochastic lower bound;
    backward AIS (b from 1 to 0) started at the z that generated each image,
    an exact sample of p(z|x), gives a stochastic upper bound. Their gap
    bounds the error of forward AIS with these settings on data like the
    model's own; with initial="posterior" it also measures how far q(z|x) is
    from p(z|x): a narrow q far from it gives a valid but huge gap
    (docs/evaluation.md). `settings` are `ais_log_likelihood`'s keyword arguments;
    `on_chunk(direction, images_done)` reports progress. The cost policy of
    `ais_log_likelihood` holds (`force`), and so does its `strategy`.
    """
    settings = ais_settings(num_steps=num_steps, num_chains=num_chains, **settings).checked()
    num_examples = _whole("num_examples", num_examples)
    if not force:
        check_cost(0, "ais", ais=settings, bdmc_examples=num_examples)
    started = time.time()
    z, x = simulate(model, num_examples, seeds.sample_seed(seeds.as_seed(seed), 1))
    report = (lambda direction: None if on_chunk is None else (lambda done: on_chunk(direction, done)))  # noqa: E731
    forward = _anneal(model, x, None, settings, seed, reverse=False, on_chunk=report("forward"), strategy=strategy)
    forward = AISEstimate.from_log_weights(*forward, settings, time.time() - started)
    backward, _, _ = _anneal(model, x, z, settings, seeds.sample_seed(seeds.as_seed(seed), 2),
                             reverse=True, on_chunk=report("backward"), strategy=strategy)
    upper = -_log_mean_exp(backward)
    return BDMCResult(forward.log_likelihood, upper, x.numpy(), z.numpy(), forward, settings, time.time() - started)


def estimate_ais(model, batches, values, settings, log=None, on_chunk=None, strategy=None) -> dict:
    """The "ais" estimator of an evaluation: `ais_log_likelihood` on the
    evaluation's (binarized) images with `settings.ais` and `settings.seed`
    (over the replicas of `strategy`, if given); `log` gets progress lines,
    `on_chunk(images_done)` is called after each chunk."""
    x = tf.concat(list(batches), axis=0)
    n, ais = int(x.shape[0]), settings.ais
    report = None if log is None else progress_report(log, f"AIS, T={ais.num_steps}, C={ais.num_chains}", n)

    def progress(done):
        for callback in (report, on_chunk):
            if callback is not None:
                callback(done)

    return ais_log_likelihood(model, x, seed=settings.seed, on_chunk=progress, force=True, strategy=strategy,
                              **ais._asdict()).summary()


def progress_report(log: Callable[[str], None], what: str, total: int) -> Callable[[int], None]:
    """A progress callback printing done/total with the elapsed time and an ETA."""
    started = time.time()

    def report(done: int) -> None:
        elapsed = time.time() - started
        left = elapsed * (total - done) / max(done, 1)
        log(f"{what}: {done}/{total} images ({elapsed:.0f} s, about {left:.0f} s left)")

    return report
