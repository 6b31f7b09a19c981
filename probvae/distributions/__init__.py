"""The distributions probvae models are made of, for models and analysis scripts.

- `priors`: p(z): `standard_normal(d)`, and `prior_layer(name, d)` for the
  learned ones (diagonal Gaussian, mixture of Gaussians, VampPrior); the
  names are `probvae.registry.PRIORS`'s, as the posteriors' and likelihoods'
  are `POSTERIORS`'s and `LIKELIHOODS`'s.
- `posteriors`: the q(z|x) layers (`tfp.layers.MultivariateNormalTriL` with a
  `KLDivergenceRegularizer`, or a diagonal variant).
- `flows`: the inverse autoregressive flow posterior (`IAFPosterior`: a
  diagonal Gaussian and T MADE steps, `tfd.TransformedDistribution`), and its
  linearisation `gaussian_approximation` for per-dimension statistics.
- `likelihoods`: p(x|z) over whole images (Bernoulli, Normal, continuous Bernoulli).
- `analysis`: what an analyst builds from posteriors: the aggregate posterior
  (a `MixtureSameFamily`), Normal marginals, per-dimension KL to the prior
  and the total correlation of a posterior.

Every builder returns a genuine `tfd.Distribution`, so `tfd.kl_divergence`,
`tfp.stats` and the rest of TFP work on it.
"""

from probvae.distributions.analysis import (
    aggregate_posterior,
    kl_per_dimension,
    marginals,
    prior_marginals,
    total_correlation,
    unwrap,
)
from probvae.distributions.flows import IAFPosterior, flow_location, gaussian_approximation, is_flow
from probvae.distributions.likelihoods import (
    BernoulliHead,
    ContinuousBernoulliHead,
    LikelihoodHead,
    LogitBernoulli,
    NormalHead,
    bernoulli,
    continuous_bernoulli,
    make_likelihood_head,
    normal,
)
from probvae.distributions.posteriors import (
    KLDivergenceRegularizer,
    MultivariateNormalDiag,
    MultivariateNormalTriL,
    kl_divergence,
    posterior_distribution,
    posterior_input_size,
    posterior_layer,
    posterior_params_size,
    sample_posterior,
)
from probvae.distributions.priors import (
    DiagonalGaussianPrior,
    MixturePrior,
    Prior,
    StandardNormalPrior,
    VampPrior,
    make_prior,
    prior_layer,
    standard_normal,
)

__all__ = [
    "BernoulliHead",
    "ContinuousBernoulliHead",
    "DiagonalGaussianPrior",
    "IAFPosterior",
    "KLDivergenceRegularizer",
    "LikelihoodHead",
    "MixturePrior",
    "MultivariateNormalDiag",
    "MultivariateNormalTriL",
    "NormalHead",
    "Prior",
    "StandardNormalPrior",
    "VampPrior",
    "aggregate_posterior",
    "LogitBernoulli",
    "bernoulli",
    "continuous_bernoulli",
    "flow_location",
    "gaussian_approximation",
    "is_flow",
    "kl_divergence",
    "kl_per_dimension",
    "prior_marginals",
    "make_likelihood_head",
    "make_prior",
    "marginals",
    "normal",
    "posterior_distribution",
    "posterior_input_size",
    "posterior_layer",
    "posterior_params_size",
    "prior_layer",
    "sample_posterior",
    "standard_normal",
    "total_correlation",
    "unwrap",
]
