"""Looking inside a trained VAE: the numbers behind the pictures.

Latent marginals. The aggregate posterior q(z) = (1/N) sum_n q(z|x_n) is what
the encoder makes of the data; the KL term pulls it toward the prior
p(z) = N(0, I). Drawing one z_n ~ q(z|x_n) per held-out example gives N
independent draws from q(z). For each latent dimension u:

    KS_u       = sup_t |F_N(t) - Phi(t)|, the Kolmogorov-Smirnov statistic of
                 z_{1..N,u} against N(0, 1) (F_N the empirical CDF, Phi the
                 standard Normal CDF). With the samples sorted, s_1 <= .. <= s_N:
                 KS = max_i max(i/N - Phi(s_i), Phi(s_i) - (i-1)/N).
    mean_u, std_u   of those samples (N(0, 1) has 0 and 1);
    activity_u = Var_n(E[z_u | x_n]), how much the posterior mean moves with
                 the input (the "active units" measure of Burda et al., 2015);
    kl_u       = mean_n KL(N(m_nu, S_nuu) || N(0, 1))
               = mean_n 0.5 (S_nuu + m_nu^2 - 1 - log S_nuu), nats: the KL of
                 the one-dimensional marginal of q(z|x_n)
                 (`probvae.distributions.kl_per_dimension`; for a diagonal
                 posterior these sum to the full KL).

A dimension has collapsed to the prior when activity_u < 0.01: its posterior
is the same for every input, so it carries no information about x. Its
aggregate marginal then sits on N(0, 1) with a small KS; a good marginal fit
alone says nothing about what a dimension encodes.

Posterior shape. q(z|x) = N(m, S) with S = L L^T, L the lower-triangular scale
of the MultivariateNormalTriL (diagonal for the diagonal posterior). With
D = diag(S): stddev = sqrt(D) and corr = D^{-1/2} S D^{-1/2}.

Latent grids. For a grid of n points per axis through the inverse normal CDF,
z_i = Phi^{-1}((i + 0.5) / n), i = 0..n-1: every cell holds an equal share of
prior mass, so the decoded manifold shows the images the prior generates in
proportion (Kingma & Welling, 2014, fig. 4). A fixed range [-r, r] instead
shows where the decoder goes beyond the prior's bulk.

References:
  Kingma & Welling (2014), Auto-Encoding Variational Bayes.
  Burda, Grosse & Salakhutdinov (2015), Importance Weighted Autoencoders, sec. 5.2.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from probvae.errors import UserError
from probvae.evaluation import ACTIVE_UNIT_THRESHOLD, active_units, unit_activity

__all__ = [
    "normal_cdf",
    "ks_statistic",
    "two_sample_ks",
    "correlation_from_scale",
    "LatentMarginals",
    "latent_marginals",
    "PosteriorInspection",
    "inspect_posterior",
    "prior_samples",
    "choose_dims",
    "grid_values",
    "decode_grid",
    "interpolate",
    "training_curves",
]

def normal_cdf(x) -> np.ndarray:
    """Phi(x) = 0.5 erfc(-x / sqrt 2), float64 (accurate in both tails)."""
    x = tf.constant(np.asarray(x, np.float64))
    return (0.5 * tf.math.erfc(-x / math.sqrt(2.0))).numpy()


def ks_statistic(samples) -> np.ndarray:
    """Kolmogorov-Smirnov statistic of each column of `samples` against N(0, 1).

    Args:
      samples: [N] or [N, d] draws.

    Returns:
      [] or [d] statistics in [0, 1]: sup_t |F_N(t) - Phi(t)|.
    """
    samples = np.asarray(samples, np.float64)
    if samples.shape[0] < 1:
        raise UserError("the KS statistic needs at least one sample; use a non-empty split")
    ordered = np.sort(samples, axis=0)
    cdf = normal_cdf(ordered)
    n = ordered.shape[0]
    rank = np.arange(1, n + 1, dtype=np.float64).reshape((n,) + (1,) * (ordered.ndim - 1))
    above = np.max(rank / n - cdf, axis=0)  # F_N jumps to i/N at s_i
    below = np.max(cdf - (rank - 1) / n, axis=0)  # and is (i-1)/N just before it
    return np.maximum(above, below)


def two_sample_ks(samples, reference) -> np.ndarray:
    """Two-sample Kolmogorov-Smirnov statistic of each column: sup_t |F_a(t) - F_b(t)|.

    Args:
      samples: [N, d] draws; reference: [M, d] draws (e.g. from the prior).

    Returns:
      [d] statistics in [0, 1].
    """
    samples, reference = np.asarray(samples, np.float64), np.asarray(reference, np.float64)
    statistics = []
    for a, b in zip(samples.T, reference.T):
        a, b = np.sort(a), np.sort(b)
        points = np.concatenate([a, b])
        gap = np.searchsorted(a, points, side="right") / len(a) - np.searchsorted(b, points, side="right") / len(b)
        statistics.append(np.max(np.abs(gap)))
    return np.array(statistics)


def correlation_from_scale(scale_tril):
    """(stddev [..., d], correlation [..., d, d]) of N(m, L L^T) from L [..., d, d]."""
    scale_tril = np.asarray(scale_tril, np.float64)
    covariance = scale_tril @ np.swapaxes(scale_tril, -1, -2)  # S = L L^T
    stddev = np.sqrt(np.diagonal(covariance, axis1=-2, axis2=-1))
    correlation = covariance / (stddev[..., :, None] * stddev[..., None, :])
    return stddev, correlation


@dataclasses.dataclass
class LatentMarginals:
    """Per-dimension statistics of the aggregate posterior; arrays are [d] unless noted."""

    samples: np.ndarray  # [N, d] one z ~ q(z|x_n) per example
    loc: np.ndarray  # [N, d] posterior means
    ks: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    activity: np.ndarray  # Var_n of the posterior mean
    posterior_std: np.ndarray  # mean_n of the posterior standard deviation
    kl: np.ndarray  # mean_n marginal KL, nats
    collapsed: np.ndarray  # bool
    prior_ks: np.ndarray  # two-sample KS of the samples against as many draws of the prior p(z)
    level: np.ndarray  # [d] the latent level of each dimension (1 = next to x; all 1 without a hierarchy)
    threshold: float = ACTIVE_UNIT_THRESHOLD

    def to_dict(self) -> dict:
        """The JSON written to latent_marginals.json (no per-sample arrays)."""
        dims = []
        for u in range(self.ks.shape[0]):
            dims.append({
                "dim": u,
                "level": int(self.level[u]),
                "ks_statistic": float(self.ks[u]),
                "ks_against_prior": float(self.prior_ks[u]),
                "mean": float(self.mean[u]),
                "std": float(self.std[u]),
                "activity": float(self.activity[u]),
                "mean_posterior_std": float(self.posterior_std[u]),
                "kl_nats": float(self.kl[u]),
                "collapsed": bool(self.collapsed[u]),
            })
        return {
            "n_samples": int(self.samples.shape[0]),
            "reference": "N(0, 1)",
            "ks": "sup |F_N - Phi| of one z ~ q(z|x) per example",
            "ks_against_prior": "sup |F_N - G_N| against N draws of the model's prior p(z) (its own marginals, "
                                "learned priors and every level of a hierarchy included)",
            "collapse_rule": f"activity = Var_n E[z_u|x_n] < {self.threshold}",
            "collapsed_dims": [int(u) for u in np.flatnonzero(self.collapsed)],
            "dims": dims,
        }


def latent_marginals(model, x, seed: int = 0, batch_size: int = 1000,
                     threshold: float = ACTIVE_UNIT_THRESHOLD) -> LatentMarginals:
    """Aggregate-posterior statistics over prepared inputs x [N, h, w, c]
    (`model.prepare_inputs`), encoded `batch_size` at a time."""
    if len(x) < 2:
        raise UserError(f"latent statistics need at least 2 examples, got {len(x)}; use a larger split")
    parts = {"loc": [], "z": [], "stddev": [], "kl": []}
    for index, start in enumerate(range(0, len(x), batch_size)):
        terms = model.elbo_terms(tf.constant(x[start : start + batch_size], tf.float32),
                                 tf.constant([seed, index], tf.int32))
        latent = model.latent_statistics(terms)  # every level of a hierarchy, bottom first
        parts["loc"].append(latent.location)
        parts["z"].append(terms.z)
        parts["stddev"].append(latent.stddev)
        parts["kl"].append(latent.kl_per_dimension)
    loc, z, stddev, kl = (np.concatenate([t.numpy() for t in parts[k]]).astype(np.float64)  # [N, d] each
                          for k in ("loc", "z", "stddev", "kl"))
    activity = unit_activity(loc)
    prior = model.prior.sample(len(z), seed=tf.constant([seed, -1], tf.int32)).numpy()  # [N, d]
    levels = np.repeat(np.arange(1, len(model.latent_dims) + 1), model.latent_dims)
    return LatentMarginals(
        samples=z, loc=loc, ks=ks_statistic(z), mean=z.mean(axis=0), std=z.std(axis=0),
        activity=activity, posterior_std=stddev.mean(axis=0), kl=kl.mean(axis=0),
        collapsed=~active_units(activity, threshold), prior_ks=two_sample_ks(z, prior), level=levels,
        threshold=threshold,
    )


@dataclasses.dataclass
class PosteriorInspection:
    """q(z|x) of a few examples: shapes [n, ...], k posterior samples each."""

    inputs: np.ndarray  # [n, h, w, c]
    loc: np.ndarray  # [n, d]
    stddev: np.ndarray  # [n, d]
    correlation: np.ndarray  # [n, d, d]
    z: np.ndarray  # [n, k, d] z ~ q(z|x)
    reconstructions: np.ndarray  # [n, k, h, w, c] mean of p(x|z) at each z
    reconstruction_at_mean: np.ndarray  # [n, h, w, c] mean of p(x|z) at z = E[z|x] (`VAE.location`)


def inspect_posterior(model, x, num_samples: int = 5, seed: int = 0) -> PosteriorInspection:
    """Posterior mean, standard deviations, correlations and sampled
    reconstructions of x [n, h, w, c]: raw images or prepared inputs, as
    `VAE.posterior` takes them (`inputs` holds what the model saw)."""
    x = model.prepare_inputs(x).numpy()
    terms = model.elbo_terms(tf.constant(x), tf.constant([seed, 0], tf.int32))
    posterior, loc = terms.posterior, model.latent_statistics(terms).location
    stddev, correlation = _correlations(terms)
    z = posterior.sample(num_samples, seed=tf.constant([seed, 0], tf.int32))  # [k, n, d]
    z = tf.transpose(z, [1, 0, 2]).numpy()  # [n, k, d]
    n, k, d = z.shape
    decoded = model.likelihood(tf.constant(z.reshape(n * k, d))).mean().numpy()
    return PosteriorInspection(
        inputs=x, loc=loc.numpy(), stddev=stddev, correlation=correlation, z=z,
        reconstructions=decoded.reshape((n, k) + decoded.shape[1:]),
        reconstruction_at_mean=model.likelihood(loc).mean().numpy(),
    )


def _correlations(terms):
    """(stddev [n, D], correlation [n, D, D]) of q(z|x); in a hierarchy each
    level's block given the sampled level above, NaN between levels (the
    joint's correlations there have no closed form)."""
    if not terms.levels:
        return correlation_from_scale(terms.posterior.scale.to_dense().numpy())
    blocks = [correlation_from_scale(level.posterior.scale.to_dense().numpy()) for level in terms.levels]
    stddev = np.concatenate([block[0] for block in blocks], axis=-1)
    n, total = stddev.shape
    correlation = np.full((n, total, total), np.nan, stddev.dtype)
    start = 0
    for _, block in blocks:
        size = block.shape[-1]
        correlation[:, start:start + size, start:start + size] = block
        start += size
    return stddev, correlation


def prior_samples(model, num_samples: int, seed: int = 0):
    """(z [n, d], mean of p(x|z) [n, h, w, c], x ~ p(x|z) [n, h, w, c]) for z ~ p(z)."""
    samples = model.sample(num_samples, seed=seed)
    return samples.z.numpy(), samples.mean.numpy(), samples.x.numpy()


def choose_dims(activity, dims: Optional[Sequence[int]] = None):
    """The two latent dimensions to draw: `dims` if given (checked), else the
    two most active ones (in index order); (0, 1) for a 2-D latent."""
    latent_dim = len(activity)
    if latent_dim < 2:
        raise UserError("2-D latent plots need a latent of 2 or more dimensions")
    if dims is not None:
        dims = tuple(int(u) for u in dims)
        if len(dims) != 2 or dims[0] == dims[1] or not all(0 <= u < latent_dim for u in dims):
            raise UserError(f"--dims needs two different dimensions in 0..{latent_dim - 1}, got {list(dims)}")
        return dims
    top = np.argsort(-np.asarray(activity), kind="stable")[:2]
    return tuple(int(u) for u in sorted(top))


def grid_values(size: int, limit: Optional[float] = None) -> np.ndarray:
    """[size] values along one latent axis: Phi^{-1}((i + 0.5) / size), or
    evenly spaced over [-limit, limit] when `limit` is given."""
    if size < 2:
        raise UserError(f"a latent grid needs at least 2 points per axis, got {size}")
    if limit is not None:
        if not limit > 0:
            raise UserError(f"the grid range must be positive, got {limit}")
        return np.linspace(-limit, limit, size)
    probabilities = (np.arange(size) + 0.5) / size
    return tf.math.ndtri(tf.constant(probabilities, tf.float64)).numpy()


def decode_grid(model, dims, values, base=None) -> np.ndarray:
    """Means of p(x|z) over a plane of the latent space.

    z[dims[0]] runs along `values` left to right, z[dims[1]] along `values`
    bottom to top (so the picture reads like a plot); the other coordinates
    are `base` [d] (default 0, the prior mean).

    Returns:
      [rows, cols, h, w, c] with row 0 at the top (largest z[dims[1]]).
    """
    values = np.asarray(values, np.float32)
    size = len(values)
    base = np.zeros(model.latent_dim, np.float32) if base is None else np.asarray(base, np.float32)
    z = np.tile(base, (size, size, 1))  # [rows, cols, d]
    z[:, :, dims[0]] = values[None, :]
    z[:, :, dims[1]] = values[::-1, None]
    decoded = model.likelihood(tf.constant(z.reshape(size * size, -1))).mean().numpy()
    return decoded.reshape((size, size) + decoded.shape[1:])


def interpolate(model, x_start, x_end, steps: int = 10):
    """Decode the straight line between the posterior means of two prepared
    inputs [h, w, c].

    Returns:
      (t [steps] in [0, 1], z [steps, d], means of p(x|z) [steps, h, w, c]).
    """
    if steps < 2:
        raise UserError(f"an interpolation needs at least 2 steps, got {steps}")
    loc = model.location(tf.constant(np.stack([x_start, x_end]).astype(np.float32))).numpy()
    t = np.linspace(0.0, 1.0, steps)
    z = ((1.0 - t[:, None]) * loc[0] + t[:, None] * loc[1]).astype(np.float32)
    return t, z, model.likelihood(tf.constant(z)).mean().numpy()


def training_curves(metrics: dict) -> dict:
    """Per-epoch curves from a metrics.json dict.

    Returns:
      {"epoch": [E], "train": {"elbo", "reconstruction", "kl": [E]}, "validation": {...}},
      and, when any epoch recorded them, "gradient_norm": {"mean", "max": [E]}
      (NaN for epochs without them: trained by an earlier version, or with no
      applied step).
    """
    epochs = metrics.get("epochs") or []
    if not epochs:
        raise UserError("metrics.json has no finished epoch; train the run for at least one epoch")
    curves = {"epoch": np.array([e["epoch"] for e in epochs])}
    for split in ("train", "validation"):
        curves[split] = {name: np.array([e[split][name] for e in epochs], np.float64)
                         for name in ("elbo", "reconstruction", "kl")}
    if any(e["train"].get("gradient_norm") is not None for e in epochs):
        curves["gradient_norm"] = {
            short: np.array([np.nan if e["train"].get(key) is None else e["train"][key] for e in epochs], np.float64)
            for short, key in (("mean", "gradient_norm"), ("max", "gradient_norm_max"))}
    return curves
