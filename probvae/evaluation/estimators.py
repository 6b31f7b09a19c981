"""The estimators of log p(x) an evaluation can use, and what each costs.

One registry, `ESTIMATORS`, without TensorFlow (the commands read it for
their choices): each `Estimator` has its name, its settings, its cost in
decoder passes (one image, one latent through the decoder), the tag of its
evaluation files, its label in tables and its estimate function, named as
"module:function" and imported when an evaluation runs.

    estimator  settings                 decoder passes per image   file tag
    elbo       (none)                   1                          elbo
    iwae       K = iwae_samples         K                          iwae<K>
    ais        AISSettings (T, C, L)    3 C T L                    ais<T>x<C>

BDMC (`bdmc_examples` N) adds 2 N times the AIS cost. An evaluation costing
more than `MAX_DECODER_PASSES` is refused unless forced (`check_cost`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union

import numpy as np

from probvae import checks
from probvae.errors import UserError
from probvae.evaluation.names import AIS_INITIAL, DEFAULT_IWAE_SAMPLES

__all__ = [
    "AIS_CHUNK_ROWS",
    "AISSettings",
    "EvaluationSettings",
    "Estimator",
    "ESTIMATORS",
    "estimator",
    "MAX_DECODER_PASSES",
    "API_NAMES",
    "ais_settings",
    "BDMC_GAP_WARNING_NATS",
    "bdmc_gap_warning",
    "decoder_passes",
    "check_cost",
    "estimator_label",
]

# Decoder passes an evaluation may ask for unless forced (`checks.MAX_DECODER_PASSES`,
# which fit's --test-iwae-samples check uses too).
MAX_DECODER_PASSES = checks.MAX_DECODER_PASSES
# Chains x examples per compiled AIS call: memory stays flat in chains and images.
AIS_CHUNK_ROWS = 2048
# How `check_cost` names what to change, in the API's words; the command line passes its flags.
API_NAMES = {"iwae_samples": "iwae_samples", "ais": "num_steps x num_chains x num_leapfrog_steps",
             "force": "force=True", "ais_initial": "initial='prior'", "ais_steps": "num_steps"}
# A BDMC gap (upper - lower bound, mean nats per simulated image) above this is
# warned about: AIS with those settings may be off by as much (docs/evaluation.md).
BDMC_GAP_WARNING_NATS = 1.0


def _whole(name: str, value) -> int:
    """`value` as an int, if it is a whole number of at least 1 (NumPy integers too)."""
    value = int(value) if isinstance(value, np.integer) else value
    checks.positive_int(name, value)
    return value


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
        from probvae.annealing import SCHEDULES

        for name in ("num_steps", "num_chains", "num_leapfrog_steps", "chunk_rows"):
            _whole(name, getattr(self, name))
        if not (isinstance(self.step_size, (int, float)) and 0 < self.step_size < np.inf):
            raise UserError(f"step_size must be a positive number (got {self.step_size!r})")
        checks.choice("schedule", self.schedule, tuple(SCHEDULES))
        checks.choice("initial distribution", self.initial, AIS_INITIAL)
        return self._replace(num_steps=int(self.num_steps), num_chains=int(self.num_chains),
                             num_leapfrog_steps=int(self.num_leapfrog_steps), chunk_rows=int(self.chunk_rows),
                             step_size=float(self.step_size), adapt=bool(self.adapt))

    @property
    def passes_per_image(self) -> int:
        """Decoder passes of one image: C T L leapfrog gradients, three passes' worth each."""
        return self.num_chains * self.num_steps * self.num_leapfrog_steps * 3


def ais_settings(value=None, **fields) -> AISSettings:
    """`AISSettings` from None (the defaults), an `AISSettings` or a dict of its
    fields, with `fields` replaced; a UserError naming an unknown field or type."""
    if value is None:
        value = {}
    if isinstance(value, AISSettings):
        value = value._asdict()
    if not isinstance(value, Mapping):
        raise UserError(f"ais takes AISSettings(...) or a dict of its fields, got {type(value).__name__}")
    value = dict(value, **fields)
    unknown = sorted(set(value) - set(AISSettings._fields))
    if unknown:
        raise UserError(f"AISSettings has no field {unknown[0]}; known fields: {', '.join(AISSettings._fields)}")
    return AISSettings(**value)


Seed = Union[int, tuple, list]


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """What fixes an evaluation's numbers, besides the model and the images."""

    estimator: str = "iwae"  # a name in ESTIMATORS
    iwae_samples: int = DEFAULT_IWAE_SAMPLES  # K of the "iwae" estimator
    ais: Optional[AISSettings] = None  # settings of "ais" and of BDMC (default AISSettings())
    bdmc_examples: int = 0  # N > 0: BDMC on N images simulated from the model
    batch_size: Optional[int] = None  # images per step (default: 1000, or the run's eval_batch_size)
    seed: Seed = 0  # of the posterior samples: an int s (batch b draws from (s, b)) or a pair
    binarization_seed: Optional[int] = None  # of the fixed binarization (default: 0, or the run's split_seed)
    sample_chunk: Optional[int] = None  # importance samples per compiled chunk (no effect on the numbers)
    force: bool = False  # run even past MAX_DECODER_PASSES

    def checked(self) -> "EvaluationSettings":
        """These settings with `ais` filled in (an `AISSettings`, or a dict of its
        fields), or a UserError naming the first that is out of range."""
        checks.choice("estimator", self.estimator, tuple(ESTIMATORS))
        changes = dict(iwae_samples=_whole("iwae_samples", self.iwae_samples),
                       ais=ais_settings(self.ais).checked(),
                       bdmc_examples=_whole("bdmc_examples", self.bdmc_examples) if self.bdmc_examples else 0)
        if self.batch_size is not None:
            changes["batch_size"] = _whole("batch_size", self.batch_size)
        if self.sample_chunk is not None:
            changes["sample_chunk"] = _whole("sample_chunk", self.sample_chunk)
        if self.binarization_seed is not None:
            changes["binarization_seed"] = checks.whole_number("binarization_seed", self.binarization_seed)
        checks.flag("force", self.force)
        if isinstance(self.seed, (bool, float)) or not isinstance(self.seed, (int, np.integer, tuple, list)):
            raise UserError(f"a seed is an integer or a pair of integers, got {self.seed!r}")
        return dataclasses.replace(self, **changes)

    def replace(self, **changes) -> "EvaluationSettings":
        return dataclasses.replace(self, **changes)

    @property
    def entry(self) -> "Estimator":
        return ESTIMATORS[self.estimator]


@dataclasses.dataclass(frozen=True)
class Estimator:
    """An estimator of log p(x): its name, settings, cost, file tag, label and estimate function."""

    name: str
    description: str
    trust: int  # order of trust when a run has several evaluations: higher is better
    settings: Callable[[EvaluationSettings], Any]  # the estimator's own settings
    passes_per_image: Callable[[EvaluationSettings], int]  # decoder passes of one image
    tag: Callable[[Mapping], str]  # file tag of a result, e.g. "iwae5000"
    label: Callable[[Mapping], str]  # e.g. "K=5000"
    size: Callable[[Mapping], int]  # among results of one estimator, the larger the better
    # "module:function" (model, batches, values, settings, log, on_chunk, strategy=None) -> summary dict
    estimate: str
    pass_samples: Callable[[EvaluationSettings], int] = lambda settings: 0  # K drawn in the ELBO pass

    def estimate_function(self) -> Callable:
        module, name = self.estimate.split(":")
        return getattr(importlib.import_module(module), name)


def _ais_of(result: Mapping) -> Mapping:
    return result.get("ais") or {}


ESTIMATORS = {
    "elbo": Estimator(
        "elbo", "the ELBO itself (one posterior sample, analytic KL): the loosest lower bound", 0,
        settings=lambda s: None, passes_per_image=lambda s: 1, tag=lambda r: "elbo", label=lambda r: "ELBO",
        size=lambda r: 0, estimate="probvae.evaluation.statistics:estimate_elbo"),
    "iwae": Estimator(
        "iwae", "importance sampling with q(z|x), K = iwae_samples", 1,
        settings=lambda s: s.iwae_samples, passes_per_image=lambda s: s.iwae_samples,
        tag=lambda r: f"iwae{r['iwae_samples']}", label=lambda r: f"K={r['iwae_samples']}",
        size=lambda r: r.get("iwae_samples") or 0, estimate="probvae.evaluation.statistics:estimate_iwae",
        pass_samples=lambda s: s.iwae_samples),
    "ais": Estimator(
        "ais", "annealed importance sampling with HMC (AISSettings)", 2,
        settings=lambda s: s.ais, passes_per_image=lambda s: (s.ais or AISSettings()).passes_per_image,
        tag=lambda r: f"ais{_ais_of(r)['num_steps']}x{_ais_of(r)['num_chains']}",
        label=lambda r: f"AIS T={_ais_of(r)['num_steps']}, C={_ais_of(r)['num_chains']}",
        size=lambda r: _ais_of(r).get("num_steps", 0) * _ais_of(r).get("num_chains", 0),
        estimate="probvae.evaluation.ais:estimate_ais"),
}


def estimator(name: str) -> Estimator:
    """The registered `Estimator` called `name`, or a UserError listing them."""
    checks.choice("estimator", name, tuple(ESTIMATORS))
    return ESTIMATORS[name]


def estimator_label(result: Mapping) -> str:
    """"K=1000", "AIS T=1000, C=16" or "ELBO": the estimator of an evaluation result
    (results without an "estimator" key are importance-weighted, as before AIS)."""
    return estimator(result.get("estimator", "iwae")).label(result)


def decoder_passes(num_images: int, estimator: str = "iwae", iwae_samples: int = DEFAULT_IWAE_SAMPLES,
                   ais: Optional[AISSettings] = None, bdmc_examples: int = 0) -> int:
    """How many decoder passes (one image, one latent) an evaluation costs:
    n per image's cost of the estimator (1, K or 3 C T L), plus twice the AIS
    cost per simulated image for BDMC."""
    settings = EvaluationSettings(estimator, iwae_samples, ais or AISSettings(), bdmc_examples)
    passes = num_images * ESTIMATORS[estimator].passes_per_image(settings)
    return passes + 2 * bdmc_examples * settings.ais.passes_per_image


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


def bdmc_gap_warning(gap: Optional[float], ais: AISSettings, names: Optional[dict] = None) -> Optional[str]:
    """The warning for a BDMC `gap` (mean nats per image; None or NaN when not
    finite) above BDMC_GAP_WARNING_NATS, naming what to change with `names`
    (default `API_NAMES`); None for a small gap."""
    if gap is not None and gap <= BDMC_GAP_WARNING_NATS:
        return None
    names = dict(API_NAMES, **(names or {}))
    start = f"start the chains at the prior ({names['ais_initial']}) or " if ais.initial == "posterior" else ""
    size = "not finite" if gap is None or not np.isfinite(gap) else f"{gap:.2f} nats per image"
    return (f"the BDMC gap is {size}, more than {BDMC_GAP_WARNING_NATS:g}: AIS with these settings may "
            f"underestimate log p(x) by as much; {start}anneal longer (more {names['ais_steps']}, now "
            f"{ais.num_steps})")
