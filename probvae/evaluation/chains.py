"""A VAE's AIS chains over a set of images, in compiled calls (`anneal_images`).

The chains of an AIS run (`probvae.evaluation.ais`) go in chunks of at most
`AISSettings.chunk_rows` chains x images, each chunk through up to SEGMENTS
compiled calls of `probvae.annealing` (`begin`, then `advance` over a share of
the transitions), so progress and stop signals are seen within a chunk; the
numbers are those of one call, and under tf.distribute those of one device.

Chain coordinates: u = (v - m) / s per chain, with m and s the location and
scale of q(z|x) (or 0 and 1 from the prior); v is z itself for a Gaussian
start and the Gaussian's variable of a flow posterior z = f(v) (see
`_chunk_densities`).
"""

from __future__ import annotations

import weakref
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from probvae import annealing, replicas, seeds
from probvae.distributions import is_flow, unwrap
from probvae.evaluation.estimators import AISSettings

__all__ = ["SEGMENTS", "anneal_images"]


def _chunk_densities(model, x, exact_z, seed, num_chains, settings: AISSettings, reverse: bool):
    """One chunk's (log pi_0, log f_T, start, run seed): the two densities of
    chain coordinates u [C, n, D] and `start()`, the chains' start u_0 [C, n, D].

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

    def start_point():
        if reverse:
            v = tf.tile(exact_z, [num_chains, 1])
            return v if flow is None else flow.inverse(v)  # the flow's sequential inverse, once per chain
        if settings.initial == "posterior":
            return initial.sample(seed=start_seed)
        return initial.sample(tf.shape(tiled)[0], seed=start_seed)

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

    def start():
        return tf.reshape((start_point() - loc) / scale, [num_chains, n, dims])

    return initial_log_prob, target_log_prob, start, run_seed


# The structure of `annealing.AnnealState`, flat between compiled calls.
_STATE = annealing.AnnealState(0, annealing.Components(0, 0, 0, 0), 0, 0, 0, 0)


def _begin_batch(model, x, exact_z, seed, num_chains, step_size, settings: AISSettings, reverse: bool):
    """One chunk's chains at their start, before transition 0: a flat `AnnealState`."""
    initial, target, start, _ = _chunk_densities(model, x, exact_z, seed, num_chains, settings, reverse)
    return tuple(tf.nest.flatten(annealing.begin(initial, target, start(), step_size)))


def _advance_batch(model, x, seed, betas, num_chains, first, last, *run, settings: AISSettings, reverse: bool):
    """Transitions first .. last - 1 of one chunk's chains (`annealing.advance`), a flat `AnnealState`."""
    initial, target, _, run_seed = _chunk_densities(model, x, None, seed, num_chains, settings, reverse)
    run = tf.nest.pack_sequence_as(_STATE, list(run))
    return tuple(tf.nest.flatten(annealing.advance(initial, target, run, betas, run_seed, first, last,
                                                   settings.num_leapfrog_steps, settings.adapt)))


class _Annealer:
    """A model's compiled AIS calls (`_begin_batch`, `_advance_batch`), traced once per
    (direction, initial distribution, leapfrog steps, adaptation); kept per model in `_ANNEALERS`."""

    def __init__(self, model):
        self._model, self._functions = weakref.ref(model), {}

    def _compiled(self, settings: AISSettings, reverse: bool):
        key = (reverse, settings.initial, settings.num_leapfrog_steps, settings.adapt)
        if key not in self._functions:
            model, reference = self._model(), self._model
            spec = tf.TensorSpec
            images, seed, count = spec([None] + list(model.image_shape)), spec([2], tf.int32), spec([], tf.int32)
            rows, latents, vector = spec([None, None]), spec([None, None, model.latent_dim]), spec([None])
            state = tf.nest.flatten(annealing.AnnealState(latents, annealing.Components(rows, latents, rows, latents),
                                                          spec([None, None], tf.float64), vector, vector, vector))
            begin = tf.function(lambda *a: _begin_batch(reference(), *a, settings=settings, reverse=reverse),
                                input_signature=[images, spec([None, model.latent_dim]), seed, count, spec([])],
                                autograph=False)
            advance = tf.function(lambda *a: _advance_batch(reference(), *a, settings=settings, reverse=reverse),
                                  input_signature=[images, seed, spec([None], tf.float64), count, count, count] + state,
                                  autograph=False)
            self._functions[key] = (begin, advance)
        return self._functions[key]

    def begin(self, settings: AISSettings, reverse: bool, *args):
        return self._compiled(settings, reverse)[0](*args)

    def advance(self, settings: AISSettings, reverse: bool, *args):
        return self._compiled(settings, reverse)[1](*args)


_ANNEALERS = weakref.WeakKeyDictionary()


def _chunks(n: int, settings: AISSettings):
    """The compiled calls of an AIS run over n images: (start, stop, first, last),
    images [start, stop) x chains [first, last), images outermost."""
    chains = settings.num_chains
    chains_per_call = min(chains, settings.chunk_rows)
    images_per_call = max(1, settings.chunk_rows // chains_per_call)
    return [(start, min(n, start + images_per_call), first, min(chains, first + chains_per_call))
            for start in range(0, n, images_per_call) for first in range(0, chains, chains_per_call)]


# Compiled calls per chunk of chains: progress (and a stop signal) is seen after each.
SEGMENTS = 20


def _segments(num_steps: int):
    """Transitions [first, last) of each compiled call: T - 1 transitions in up to SEGMENTS calls."""
    bounds = np.unique(np.linspace(0, num_steps - 1, min(num_steps - 1, SEGMENTS) + 1).round().astype(int))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def anneal_images(model, x, exact_z, settings: AISSettings, seed, reverse: bool,
            on_chunk: Optional[Callable[[int], None]] = None, strategy=None,
            on_progress: Optional[Callable[[float], None]] = None):
    """Run AIS over x [n, h, w, c] in chunks of at most `settings.chunk_rows`
    chains x examples: (log weights [C, n] float64, acceptance [n], step size [n]).

    Each chunk's T - 1 transitions run in up to SEGMENTS compiled calls, with
    the numbers of one call. `on_chunk(images)` is called whenever a run of
    images is done (all their chains), `on_progress(images)` after every call
    with the images done so far, a chunk counted in proportion to its
    transitions (a float). Under a tf.distribute `strategy` of R > 1 replicas
    (the model built in its scope), chunk k runs on replica k mod R, R chunks
    at a time, each with the seed it has on one device: the numbers of one device."""
    if model not in _ANNEALERS:
        _ANNEALERS[model] = _Annealer(model)
    compiled = _ANNEALERS[model]
    n, chains = int(x.shape[0]), settings.num_chains
    betas = annealing.schedule(settings.schedule, settings.num_steps)
    betas = tf.constant(betas[::-1].copy() if reverse else betas, tf.float64)
    step_size = tf.constant(settings.step_size, tf.float32)
    seed = seeds.as_seed(seed)

    def chunk_seed(chunk):
        return seeds.sample_seed(seeds.sample_seed(seed, chunk[0]), chunk[2])

    def start(chunk):
        begin, stop, first, last = chunk
        exact = exact_z[begin:stop] if exact_z is not None else tf.zeros([0, model.latent_dim])
        return (x[begin:stop], exact, chunk_seed(chunk), tf.constant(last - first), step_size)

    def on_replicas(call, arguments):
        if per_round == 1:
            return [call(settings, reverse, *arguments[0])]
        return replicas.run_each(strategy, lambda *a: call(settings, reverse, *a), arguments)

    log_weights = np.empty((chains, n), np.float64)
    acceptance, step = np.zeros(n), np.zeros(n)
    chunks, segments = _chunks(n, settings), _segments(settings.num_steps)
    per_round = strategy.num_replicas_in_sync if strategy is not None else 1
    for index in range(0, len(chunks), per_round):
        done = chunks[index:index + per_round]
        # Replicas past the last chunk repeat the round's first; their results are dropped.
        round_chunks = [done[k] if k < len(done) else done[0] for k in range(per_round)]
        states = on_replicas(compiled.begin, [start(chunk) for chunk in round_chunks])
        fixed = [(x[chunk[0]:chunk[1]], chunk_seed(chunk), betas, tf.constant(chunk[3] - chunk[2]))
                 for chunk in round_chunks]  # each call's inputs but the transitions and the state
        before = _images_before(chunks, index, chains)
        images = _images_before(chunks, index + len(done), chains) - before  # this round's, all chains counted
        for first, last in segments:
            states = on_replicas(compiled.advance, [(*inputs, tf.constant(first), tf.constant(last), *state)
                                                    for inputs, state in zip(fixed, states)])
            if on_progress is not None:
                on_progress(before + images * last / max(settings.num_steps - 1, 1))
        for (begin, stop, first, last), state in zip(done, states):
            weights, accepted, final, _ = annealing.finish(tf.nest.pack_sequence_as(_STATE, list(state)), betas)
            log_weights[first:last, begin:stop] = weights.numpy()
            share = (last - first) / chains
            acceptance[begin:stop] += share * accepted.numpy()
            step[begin:stop] += share * final.numpy()
        if on_progress is not None and not segments:  # T = 1: no transitions
            on_progress(_images_before(chunks, index + len(done), chains))
        after, stop = index + len(done), done[-1][1]
        if on_chunk is not None and (after == len(chunks) or chunks[after][0] >= stop):  # a run of images done
            on_chunk(stop)
    return log_weights, acceptance, step


def _images_before(chunks, index: int, chains: int) -> float:
    """Images done by chunks[:index] (a chunk of some of the chains counts in proportion)."""
    return sum((stop - begin) * (last - first) for begin, stop, first, last in chunks[:index]) / chains
