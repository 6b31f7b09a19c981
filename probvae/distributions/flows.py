"""Inverse autoregressive flow posteriors q(z|x) (Kingma et al., 2016).

The encoder emits the parameters of a diagonal Gaussian and a context
vector h: params = [loc (d), raw scale (d), h (c)], c = `units`. A sample is

    u_0 = loc + scale * eps,                 eps ~ N(0, I),  scale = softplus(raw) + 1e-5
    u_t = P (g_t * u_(t-1) + (1 - g_t) * m_t),   t = 1 .. T
    g_t = GATE_FLOOR + (1 - GATE_FLOOR) * sigmoid(s_t + FORGET_BIAS)
    z   = u_T

with m_t, s_t = MADE_t(u_(t-1), h), one MADE (`tfb.AutoregressiveNetwork`, two hidden
layers of `units`, ELU, conditioned on h) whose i-th outputs see only inputs
before i, and P the reversal of the dimensions between steps (none after the
last). This is Kingma et al.'s numerically stable step: each dimension moves
a share 1 - g of the way to m, so no step can scale a sample up, and with
FORGET_BIAS = 2 a new flow starts near the identity (g about 0.88); the
plain form (u - m) exp(-s) diverged in the first epoch on Fashion-MNIST.
GATE_FLOOR bounds how far one step can contract, as the Gaussian's scale
floor does: while the KL weight is still 0 (the first epoch of a warm-up)
nothing else stops the gates from closing, and a sigmoid driven to -4e4
(measured, 3.2e6 nats of KL after one epoch) never reopens.
Each step is `tfb.Invert(tfb.MaskedAutoregressiveFlow(bijector_fn=...))`:
the MAF's parallel inverse is the IAF's sampling direction. Its Jacobian is
triangular with diagonal g, so by the change of variables

    log q(z|x) = log N(u_0; loc, diag(scale^2)) - sum_t sum_i log g_t,i

(a reversal has determinant +-1). q(z|x) is a `tfd.TransformedDistribution`
of the Gaussian by `tfb.Chain` of the steps. Its log density at a sample it
drew itself takes u_0 from TFP's bijector cache (one parallel MADE pass per
step); at any other z the inverse is the MAF's sequential forward pass, d MADE
passes per step: slower, still exact. AIS therefore moves its chains in u_0,
where the flow's Jacobian enters as a density (evaluation.ais), and needs the
inverse only where BDMC starts from a given z.

The KL toward any prior has no closed form: the layer's regularizer takes
log q(z|x) - log p(z) at the ELBO's own sample (same seed and rows). With
T = 0 steps q(z|x) is the diagonal Gaussian itself (no context, analytic KL
where the prior has one): the "diag" posterior exactly.

In a hierarchy the flow is q(z_L|x) of the top level; the lower levels and
the VampPrior's components use its Gaussian (`IAFPosterior.new`), as the
flow's density at a point it did not draw needs its sequential inverse for
every pair (z, pseudo-input).

Per-dimension statistics (location, stddev, per-dimension KL, total
correlation) need a Gaussian: `gaussian_approximation` linearises the flow at
the Gaussian's mean, N(f(loc), J diag(scale^2) J^T) with J = df/du at loc.

References:
  Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), Improved
    Variational Inference with Inverse Autoregressive Flow. NeurIPS.
  Germain, Gregor, Murray & Larochelle (2015), MADE: Masked Autoencoder for
    Distribution Estimation. ICML.
  Papamakarios, Pavlakou & Murray (2017), Masked Autoregressive Flow.
"""

import tensorflow as tf
import tensorflow_probability as tfp

from probvae.distributions.analysis import unwrap
from probvae.distributions.posteriors import MultivariateNormalDiag, _ExplicitKL, _is_flow

tfd = tfp.distributions
tfb = tfp.bijectors
tfpl = tfp.layers

__all__ = ["IAFPosterior", "FORGET_BIAS", "GATE_FLOOR", "flow_location", "gaussian_approximation", "is_flow"]

# Added to the gate's pre-activation: sigmoid(2) = 0.88, a step starts close to the identity.
FORGET_BIAS = 2.0
# The least share g of u_(t-1) a step keeps (at most log(1000) = 6.9 nats per dimension and step).
GATE_FLOOR = 1e-3


def gated_step(made, context):
    """MAF's `bijector_fn` for one gated IAF step: at y, the elementwise
    bijector whose inverse is u -> g u + (1 - g) m, [m, s] = made(y, h),
    g = GATE_FLOOR + (1 - GATE_FLOOR) sigmoid(s + FORGET_BIAS)."""
    def bijector_fn(y, **_):
        shift, raw = tf.unstack(made(y, conditional_input=context), axis=-1)  # [n, d] each
        gate = raw + FORGET_BIAS
        # The MAF's (parallel) inverse, the IAF's step, is this bijector's inverse: x -> g x + (1 - g) m.
        keep = GATE_FLOOR + (1.0 - GATE_FLOOR) * tf.sigmoid(gate)  # g
        move = (1.0 - GATE_FLOOR) * tf.sigmoid(-gate)  # 1 - g, without cancellation near g = 1
        step = tfb.Chain([tfb.Shift(move * shift), tfb.Scale(log_scale=tf.math.log(keep))])
        return tfb.Invert(step)
    return bijector_fn


def is_flow(distribution) -> bool:
    """Whether `distribution` is a flow of a Gaussian posterior (an `IAFPosterior` output).

    Examples:
      >>> layer = IAFPosterior(2, steps=1, units=4)  # inputs: loc (2), raw scale (2), context (4)
      >>> is_flow(layer.distribution(tf.zeros([3, 8]))), is_flow(layer.new(tf.zeros([3, 4]), 2))
      (True, False)
    """
    return _is_flow(unwrap(distribution))


def flow_location(distribution) -> tf.Tensor:
    """f(loc) [n, d]: the flow applied to its Gaussian's mean (the mean itself for a Gaussian).

    A deterministic point of q(z|x), not its mean (which has no closed form).

    Examples:
      >>> q = IAFPosterior(2, steps=1, units=4).distribution(tf.zeros([3, 8]))
      >>> z = flow_location(q)
      >>> print(z.shape, bool(tf.reduce_all(z == q.bijector.forward(q.distribution.mean()))))
      (3, 2) True
    """
    distribution = unwrap(distribution)
    if not is_flow(distribution):
        return distribution.mean()
    return distribution.bijector.forward(distribution.distribution.mean())


def gaussian_approximation(distribution) -> tfd.Distribution:
    """A Gaussian posterior as it is; a flow linearised at its Gaussian's mean:
    N(f(loc), (J S)(J S)^T) with S the Gaussian's scale and J = df/du [n, d, d]
    at u = loc, as a `MultivariateNormalTriL` (batch [n], event [d]).

    Examples:
      >>> layer = IAFPosterior(2, steps=1, units=4)
      >>> linearised = gaussian_approximation(layer.distribution(tf.zeros([3, 8])))
      >>> print(type(linearised).__name__, linearised.batch_shape, linearised.event_shape)
      MultivariateNormalTriL (3,) (2,)
      >>> gaussian = layer.new(tf.zeros([3, 4]), 2)
      >>> gaussian_approximation(gaussian) is gaussian  # a Gaussian as it is
      True
    """
    distribution = unwrap(distribution)
    if not is_flow(distribution):
        return distribution
    base = distribution.distribution
    loc = base.mean()  # [n, d]
    with tf.GradientTape() as tape:
        tape.watch(loc)
        location = distribution.bijector.forward(loc)  # [n, d]
    jacobian = tape.batch_jacobian(location, loc)  # [n, d, d]
    factor = base.scale.matmul(jacobian, adjoint=True, adjoint_arg=True)  # (J S)^T = S^T J^T
    covariance = tf.linalg.matmul(factor, factor, transpose_a=True)  # J S S^T J^T
    return tfd.MultivariateNormalTriL(location, tf.linalg.cholesky(covariance), name="linearised_flow")


class IAFPosterior(_ExplicitKL, tfpl.DistributionLambda):
    """q(z|x): a diagonal Gaussian followed by `steps` inverse autoregressive
    flow steps (see the module docstring), with its KL regularizer applied once,
    in `call`, as the Gaussian layers do (`_ExplicitKL`).

    `layer(inputs, seed=None, rows=None, prior=None)` takes inputs
    [n, input_size(d, ...)] = [loc, raw scale, context]; the static
    `params_size(d)` and `new(params, d)` are the Gaussian's (2 d parameters:
    what a hierarchy's lower levels and the VampPrior's components use).

    Args:
      event_size: d.
      steps: T >= 0, the number of flow steps.
      units: width of each MADE's two hidden layers and of the context h.

    Examples:
      >>> layer = IAFPosterior(2, steps=2, units=4)
      >>> q = layer.distribution(tf.zeros([3, 8]))  # [loc (2), raw scale (2), context h (4)]
      >>> z = q.sample(seed=(1, 2))
      >>> print(isinstance(q, tfd.Distribution), q.batch_shape, q.event_shape, z.shape, q.log_prob(z).shape)
      True (3,) (2,) (3, 2) (3,)
    """

    def __init__(self, event_size, steps=2, units=320, convert_to_tensor_fn=None, **kwargs):
        del convert_to_tensor_fn  # a flow has no closed-form mean: the layer's tensor is `flow_location`
        super().__init__(self.distribution, flow_location, **kwargs)
        self.event_size, self.steps, self.units = int(event_size), int(steps), int(units)
        self.made = [tfb.AutoregressiveNetwork(
            params=2, event_shape=[self.event_size], hidden_units=[self.units, self.units], activation="elu",
            conditional=True, conditional_event_shape=[self.units], dtype="float32", name=f"made_{step}")
            for step in range(self.steps)]

    def build(self, input_shape):
        """Build the MADEs here, not inside the call (Keras refuses a Lambda call that creates variables)."""
        for made in self.made:
            made.build(tf.TensorShape([None, self.event_size]))
        super().build(input_shape)

    @classmethod
    def for_config(cls, config) -> dict:
        """The layer's keyword arguments from a `ModelConfig` (its `iaf_*` fields)."""
        return {"steps": config.iaf_steps, "units": config.iaf_units}

    @staticmethod
    def analytic_kl(config) -> bool:
        """Whether q(z|x) is the plain Gaussian (T = 0), whose KL may have a closed form."""
        return config.iaf_steps == 0

    @staticmethod
    def input_size(event_size, config) -> int:
        """Encoder outputs the layer takes: 2 d, plus the context of `iaf_units` when T > 0."""
        return 2 * int(event_size) + (config.iaf_units if config.iaf_steps else 0)

    @staticmethod
    def flow_size(event_size, config):
        """(weights, activations per example) of the flow's MADEs, in floats."""
        d, units, steps = int(event_size), config.iaf_units, config.iaf_steps
        made = (d + 1) * units + (units + 1) * units + (units + 1) * 2 * d + units * (2 * units + 2 * d)
        return steps * made, steps * (2 * units + 2 * d)

    @staticmethod
    def params_size(event_size):
        """2 d: the Gaussian's parameters."""
        return MultivariateNormalDiag.params_size(event_size)

    @staticmethod
    def new(params, event_size):
        """The Gaussian N(loc, diag(scale^2)) from params[..., :2 d] (any context after them is ignored)."""
        return MultivariateNormalDiag.new(tf.convert_to_tensor(params)[..., :2 * int(event_size)], event_size)

    def bijector(self, context) -> tfb.Bijector:
        """The flow u_0 -> z given the context h [n, c]: `tfb.Chain` of the steps and reversals."""
        steps = []
        for index, made in enumerate(self.made):
            if index:
                steps.append(tfb.Permute(list(reversed(range(self.event_size))), name=f"reverse_{index}"))
            maf = tfb.MaskedAutoregressiveFlow(bijector_fn=gated_step(made, context), name=f"maf_{index}")
            steps.append(tfb.Invert(maf, name=f"iaf_{index}"))
        return tfb.Chain(list(reversed(steps)), name="iaf")  # Chain applies its last bijector first

    def distribution(self, inputs) -> tfd.Distribution:
        """q(z|x) from inputs [n, input_size], without the KL loss: batch [n], event [d]."""
        inputs = tf.convert_to_tensor(inputs)
        base = self.new(inputs, self.event_size)
        if not self.steps:
            return base
        context = inputs[..., 2 * self.event_size:]  # [n, c]
        return tfd.TransformedDistribution(base, self.bijector(context), name="iaf_posterior")
