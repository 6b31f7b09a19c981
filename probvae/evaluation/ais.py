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
from typing import Callable, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from probvae import seeds
from probvae.evaluation import chains
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


def ais_log_likelihood(model, x, num_steps: int = 1000, num_chains: int = 16, seed=0, *,
                       num_leapfrog_steps: int = 10, step_size: float = 0.5, schedule: str = "sigmoid",
                       initial: str = "posterior", adapt: bool = True, chunk_rows: int = AIS_CHUNK_ROWS,
                       on_chunk: Optional[Callable[[int], None]] = None, force: bool = False,
                       strategy=None, on_progress: Optional[Callable[[float], None]] = None) -> AISEstimate:
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
      on_progress: called after every compiled call (up to SEGMENTS per chunk)
        with the images done so far, a chunk in proportion to its transitions.
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
    log_weights, acceptance, step = chains.anneal_images(model, x, None, settings, seed, reverse=False,
                                                         on_chunk=on_chunk, strategy=strategy, on_progress=on_progress)
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
    `on_chunk(direction, images_done)` reports progress after every compiled
    call (images_done a float: a chunk counts in proportion to its transitions). The cost policy of
    `ais_log_likelihood` holds (`force`), and so does its `strategy`.
    """
    settings = ais_settings(num_steps=num_steps, num_chains=num_chains, **settings).checked()
    num_examples = _whole("num_examples", num_examples)
    if not force:
        check_cost(0, "ais", ais=settings, bdmc_examples=num_examples)
    started = time.time()
    z, x = simulate(model, num_examples, seeds.sample_seed(seeds.as_seed(seed), 1))
    report = (lambda direction: None if on_chunk is None else (lambda done: on_chunk(direction, done)))  # noqa: E731
    forward = chains.anneal_images(model, x, None, settings, seed, reverse=False, on_progress=report("forward"),
                                   strategy=strategy)
    forward = AISEstimate.from_log_weights(*forward, settings, time.time() - started)
    backward, _, _ = chains.anneal_images(model, x, z, settings, seeds.sample_seed(seeds.as_seed(seed), 2),
                                          reverse=True, on_progress=report("backward"), strategy=strategy)
    upper = -_log_mean_exp(backward)
    return BDMCResult(forward.log_likelihood, upper, x.numpy(), z.numpy(), forward, settings, time.time() - started)


def estimate_ais(model, batches, values, settings, log=None, on_chunk=None, strategy=None) -> dict:
    """The "ais" estimator of an evaluation: `ais_log_likelihood` on the
    evaluation's (binarized) images with `settings.ais` and `settings.seed`
    (over the replicas of `strategy`, if given); `log` gets progress lines,
    `on_chunk(images_done)` is called after every compiled call (a float, see
    `ais_log_likelihood`'s on_progress), so a stop signal is seen within a chunk."""
    x = tf.concat(list(batches), axis=0)
    n, ais = int(x.shape[0]), settings.ais
    report = None if log is None else progress_report(log, f"AIS, T={ais.num_steps}, C={ais.num_chains}", n)

    def progress(done):
        for callback in (report, on_chunk):
            if callback is not None:
                callback(done)

    return ais_log_likelihood(model, x, seed=settings.seed, on_progress=progress, force=True, strategy=strategy,
                              **ais._asdict()).summary()


def progress_report(log: Callable[[str], None], what: str, total: int) -> Callable[[int], None]:
    """A progress callback printing done/total with the elapsed time and an ETA."""
    started = time.time()

    def report(done: int) -> None:
        elapsed = time.time() - started
        left = elapsed * (total - done) / max(done, 1)
        log(f"{what}: {done:.0f}/{total} images ({elapsed:.0f} s, about {left:.0f} s left)")

    return report
