"""Annealed importance sampling (AIS) with Hamiltonian Monte Carlo transitions,
run forward for a stochastic lower bound on a normalising constant and
backward for an upper one (bidirectional Monte Carlo, BDMC).

Given a normalised initial density pi_0 and an unnormalised target f_T with
normalising constant Z (for a VAE: pi_0 = q(z|x), f_T(z) = p(z) p(x|z),
Z = p(x)), AIS walks the geometric path

    f_t(z) = pi_0(z)^(1 - b_t) f_T(z)^b_t = pi_0(z) exp(b_t g(z)),   g = log f_T - log pi_0,

over a schedule 0 = b_0 < b_1 < ... < b_T = 1 (Neal, 2001):

    z_0 ~ pi_0;   for t = 1 .. T:   log w += (b_t - b_(t-1)) g(z_(t-1)),
                                    z_t ~ K_t(. | z_(t-1))        (t < T)

where K_t leaves f_t invariant. Then E[w] = Z, so with C independent chains
log (1/C) sum_c w_c is a stochastic lower bound on log Z (Jensen), and it
tightens as T grows; T = 1 is importance sampling with pi_0 as the proposal
(the importance-weighted bound of C samples).

Run backward (b from 1 down to 0) from an exact sample of f_T / Z, the same
recursion has E[w] = 1 / Z, so -log (1/C) sum_c w_c is a stochastic upper
bound on log Z. For data simulated from the model the exact posterior sample
is the z that generated x; the gap between the two bounds then bounds the
error of forward AIS with the same settings (Grosse, Ghahramani & Adams,
2015; Wu, Burda, Salakhutdinov & Grosse, 2017).

Transitions. K_t is one HMC move (`num_leapfrog_steps` leapfrog steps and a
Metropolis-Hastings test) on f_t. Every density is evaluated as its two
parts, log pi_0 and g, with their gradients, so the value and gradient of
f_t at the current state for any b_t are a sum away: a new temperature
costs no new evaluation, and the Metropolis test always compares energies
at the same b_t. (TFP's `sample_annealed_importance_chain` steps b
linearly and hands each step the kernel results of the previous
temperature; this module takes the schedule as a tensor.) Proposals whose
energy is not finite are rejected.

Step sizes are per example, shared by its chains, and adapted as in Wu et
al. (2017): after every transition, an exponential average of the chains'
acceptance probability is compared with `target_acceptance` and the step
size multiplied by 1.02 or 0.98. Adaptation makes a step size depend on the
chains' past; pass `adapt=False` for a fixed step size, with which every
weight is exactly the AIS weight.

Shapes: the state is [C, n, D] (chains, examples, dimensions); the two log
densities map it to [C, n]; log weights are accumulated in float64.

References:
  Neal (2001), Annealed importance sampling. Statistics and Computing 11.
  Grosse, Ghahramani & Adams (2015), Sandwiching the marginal likelihood
    using bidirectional Monte Carlo. arXiv:1511.02543.
  Wu, Burda, Salakhutdinov & Grosse (2017), On the quantitative analysis of
    decoder-based generative models. ICLR.
"""

from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

from probvae import checks

__all__ = ["SCHEDULES", "sigmoid_schedule", "linear_schedule", "schedule", "Components", "components",
           "AnnealResult", "AnnealState", "anneal", "begin", "advance", "finish"]

# Increase and decrease of the step size after each transition, and the
# weight of the newest acceptance probability in its running average (Wu et al., 2017).
_STEP_UP, _STEP_DOWN, _ACCEPTANCE_DECAY = 1.02, 0.98, 0.9
_STEP_RANGE = (1e-4, 2.0)


def sigmoid_schedule(num_steps: int, sharpness: float = 4.0) -> np.ndarray:
    """b_0 .. b_T, float64 [T + 1]: b_t = (s(t) - s(0)) / (s(T) - s(0)) with
    s(t) = sigmoid(sharpness (2 t / T - 1)); small steps at both ends, where
    the intermediate densities change fastest (Grosse et al., 2015)."""
    checks.positive_int("num_steps", num_steps)
    s = 1.0 / (1.0 + np.exp(-sharpness * np.linspace(-1.0, 1.0, num_steps + 1)))
    betas = (s - s[0]) / (s[-1] - s[0])
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def linear_schedule(num_steps: int) -> np.ndarray:
    """b_t = t / T, float64 [T + 1]."""
    checks.positive_int("num_steps", num_steps)
    return np.linspace(0.0, 1.0, num_steps + 1)


SCHEDULES = {"sigmoid": sigmoid_schedule, "linear": linear_schedule}


def schedule(name: str, num_steps: int) -> np.ndarray:
    """The named schedule of `num_steps` steps (see `SCHEDULES`)."""
    checks.choice("schedule", name, tuple(SCHEDULES))
    return SCHEDULES[name](num_steps)


class Components(NamedTuple):
    """log pi_0 and g = log f_T - log pi_0 at a state [C, n, D], with gradients."""

    initial: tf.Tensor  # [C, n]
    initial_gradient: tf.Tensor  # [C, n, D]
    ratio: tf.Tensor  # [C, n]
    ratio_gradient: tf.Tensor  # [C, n, D]

    def log_prob(self, beta):
        """log f_b = log pi_0 + b g, [C, n]."""
        return self.initial + beta * self.ratio

    def gradient(self, beta):
        return self.initial_gradient + beta * self.ratio_gradient


def components(initial_log_prob: Callable, target_log_prob: Callable, state) -> Components:
    """`Components` of the two log densities at `state` [C, n, D]."""
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(state)
        initial = initial_log_prob(state)
        target = target_log_prob(state)
    zero = tf.UnconnectedGradients.ZERO
    initial_gradient = tape.gradient(initial, state, unconnected_gradients=zero)
    target_gradient = tape.gradient(target, state, unconnected_gradients=zero)
    del tape
    return Components(initial, initial_gradient, target - initial, target_gradient - initial_gradient)


class AnnealResult(NamedTuple):
    """What `anneal` returns."""

    log_weights: tf.Tensor  # [C, n] float64: one AIS log weight per chain and example
    acceptance: tf.Tensor  # [n]: mean acceptance probability over transitions and chains
    step_size: tf.Tensor  # [n]: the step size of the last transition
    state: tf.Tensor  # [C, n, D]: the final state


def _broadcast(per_example):
    return per_example[tf.newaxis, :, tf.newaxis]  # [n] -> [1, n, 1]


def _hmc(evaluate: Callable, state, current: Components, beta, step_size, num_leapfrog_steps: int, seed):
    """One HMC transition leaving f_beta invariant: (state, Components, acceptance probability [C, n])."""
    momentum_seed, accept_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    momentum = tf.random.stateless_normal(tf.shape(state), seed=momentum_seed, dtype=state.dtype)
    step = _broadcast(step_size)
    energy = -current.log_prob(beta) + 0.5 * tf.reduce_sum(tf.square(momentum), axis=-1)  # [C, n]

    def leapfrog(index, position, p, parts):
        position = position + step * p
        parts = evaluate(position)
        last = tf.cast(index + 1 >= num_leapfrog_steps, position.dtype)
        p = p + (1.0 - 0.5 * last) * step * parts.gradient(beta)
        return index + 1, position, p, parts

    half = momentum + 0.5 * step * current.gradient(beta)
    _, proposal, final_momentum, proposed = tf.while_loop(
        lambda index, *_: index < num_leapfrog_steps, leapfrog, (tf.constant(0), state, half, current),
        parallel_iterations=1)
    proposed_energy = -proposed.log_prob(beta) + 0.5 * tf.reduce_sum(tf.square(final_momentum), axis=-1)
    log_accept = energy - proposed_energy
    finite = tf.math.is_finite(log_accept) & tf.reduce_all(tf.math.is_finite(proposal), axis=-1)
    log_accept = tf.where(finite, tf.minimum(log_accept, 0.0), -np.inf)
    uniform = tf.random.stateless_uniform(tf.shape(log_accept), seed=accept_seed, dtype=log_accept.dtype)
    accepted = tf.math.log(uniform) < log_accept  # [C, n]
    keep = lambda new, old: tf.where(accepted if new.shape.rank == 2 else accepted[..., tf.newaxis], new, old)  # noqa: E731
    state = keep(proposal, state)
    current = Components(*[keep(new, old) for new, old in zip(proposed, current)])
    return state, current, tf.exp(log_accept)


class AnnealState(NamedTuple):
    """A run of AIS chains between two transitions (`begin`, `advance`, `finish`)."""

    state: tf.Tensor  # [C, n, D]
    current: Components  # the two log densities and their gradients at `state`
    log_weights: tf.Tensor  # [C, n] float64, accumulated so far
    step_size: tf.Tensor  # [n]
    average: tf.Tensor  # [n]: running average of the acceptance probability
    accepted_sum: tf.Tensor  # [n]: sum over the transitions so far of the mean acceptance probability


def begin(initial_log_prob: Callable, target_log_prob: Callable, state, step_size,
          target_acceptance: float = 0.65) -> AnnealState:
    """The chains at their start `state` [C, n, D], before transition 0."""
    state = tf.convert_to_tensor(state)
    dtype, examples = state.dtype, tf.shape(state)[1]
    current = components(initial_log_prob, target_log_prob, state)
    return AnnealState(state, current, tf.zeros(tf.shape(current.ratio), tf.float64),
                       tf.broadcast_to(tf.cast(step_size, dtype), [examples]),
                       tf.fill([examples], tf.cast(target_acceptance, dtype)), tf.zeros([examples], dtype))


def advance(initial_log_prob: Callable, target_log_prob: Callable, run: AnnealState, betas, seed, first, last,
            num_leapfrog_steps: int = 10, adapt: bool = True, target_acceptance: float = 0.65) -> AnnealState:
    """Transitions t = first .. last - 1 (0 <= first <= last <= T - 1): the weight
    increment at b_t, then one HMC move leaving f_(t+1) invariant, drawn from
    fold_in(seed, t). A run split into several calls gives the numbers of one."""
    betas = tf.convert_to_tensor(betas, tf.float64)
    deltas = betas[1:] - betas[:-1]  # [T], float64
    dtype = run.state.dtype
    evaluate = lambda position: components(initial_log_prob, target_log_prob, position)  # noqa: E731

    def body(t, state, current, log_weights, step_size, average, accepted_sum):
        log_weights += deltas[t] * tf.cast(current.ratio, tf.float64)
        beta = tf.cast(betas[t + 1], dtype)
        state, current, acceptance = _hmc(evaluate, state, current, beta, step_size, num_leapfrog_steps,
                                          tf.random.experimental.stateless_fold_in(seed, t))
        mean_acceptance = tf.reduce_mean(acceptance, axis=0)  # [n]
        if adapt:
            average = _ACCEPTANCE_DECAY * average + (1.0 - _ACCEPTANCE_DECAY) * mean_acceptance
            step_size = tf.clip_by_value(step_size * tf.where(average > target_acceptance, _STEP_UP, _STEP_DOWN),
                                         *_STEP_RANGE)
        return t + 1, state, current, log_weights, step_size, average, accepted_sum + mean_acceptance

    _, *values = tf.while_loop(lambda t, *_: t < last, body, (tf.convert_to_tensor(first), *run),
                               parallel_iterations=1)
    return AnnealState(*values)


def finish(run: AnnealState, betas) -> AnnealResult:
    """The last weight increment, after transition T - 1: the run's `AnnealResult`."""
    betas = tf.convert_to_tensor(betas, tf.float64)
    num_transitions = tf.shape(betas)[0] - 2
    log_weights = run.log_weights + (betas[-1] - betas[-2]) * tf.cast(run.current.ratio, tf.float64)
    acceptance = run.accepted_sum / tf.cast(tf.maximum(num_transitions, 1), run.state.dtype)
    return AnnealResult(log_weights, acceptance, run.step_size, run.state)


def anneal(initial_log_prob: Callable, target_log_prob: Callable, state, betas, seed, step_size,
           num_leapfrog_steps: int = 10, adapt: bool = True, target_acceptance: float = 0.65) -> AnnealResult:
    """Run AIS chains along `betas` from `state`; see the module docstring
    (`begin`, `advance` over every transition, `finish`).

    Args:
      initial_log_prob: state [C, n, D] -> log pi_0 [C, n] (normalised).
      target_log_prob: state [C, n, D] -> log f_T [C, n] (unnormalised).
      state: the chains' start [C, n, D]: draws of pi_0 for a forward run, of
        f_T / Z for a backward one.
      betas: b_0 .. b_T, a float64 tensor [T + 1], T >= 1: 0 ... 1 forward,
        1 ... 0 backward.
      seed: stateless seed [2].
      step_size: the initial step size per example [n] (or a scalar).
      num_leapfrog_steps: leapfrog steps per HMC transition (a Python int).
      adapt: adapt the step sizes toward `target_acceptance`.

    Returns:
      `AnnealResult`; log (1/C) sum_c exp(log_weights) estimates log Z
      (forward) or -log Z (backward).
    """
    checks.positive_int("num_leapfrog_steps", num_leapfrog_steps)
    betas = tf.convert_to_tensor(betas, tf.float64)
    run = begin(initial_log_prob, target_log_prob, state, step_size, target_acceptance)
    run = advance(initial_log_prob, target_log_prob, run, betas, seed, 0, tf.shape(betas)[0] - 2,
                  num_leapfrog_steps, adapt, target_acceptance)
    return finish(run, betas)
