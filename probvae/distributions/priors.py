"""Priors p(z) over the latent space.

Every prior is a `tfd.Distribution` with batch shape [] and event shape [d].
The standard Normal is a `MultivariateNormalDiag`, so that the KL divergence
from a `MultivariateNormalTriL` posterior to it is analytic:

    KL(N(m, L L^T) || N(0, I)) = 0.5 * (tr(L L^T) + m^T m - d - log det(L L^T))

Example:

    prior = standard_normal(2)
    prior.log_prob([0., 0.])  # -log(2 pi) = -1.8379 nats
"""

import tensorflow as tf
import tensorflow_probability as tfp
from probvae.errors import UserError

tfd = tfp.distributions

__all__ = ["PRIORS", "standard_normal", "make_prior"]


def standard_normal(latent_dim: int) -> tfd.Distribution:
    """N(0, I_d) as a `MultivariateNormalDiag`: batch shape [], event shape [d]."""
    return tfd.MultivariateNormalDiag(
        loc=tf.zeros([latent_dim], tf.float32),
        scale_diag=tf.ones([latent_dim], tf.float32),
        name="standard_normal_prior",
    )


PRIORS = {"standard_normal": standard_normal}


def make_prior(name: str, latent_dim: int) -> tfd.Distribution:
    """The prior called `name` over a `latent_dim`-dimensional latent.

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    if name not in PRIORS:
        raise UserError(f"unknown prior {name!r}; choose one of: {', '.join(PRIORS)}")
    return PRIORS[name](latent_dim)
