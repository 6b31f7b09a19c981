"""The names an evaluation is asked for by, defined once, without TensorFlow.

The commands (`probvae evaluate`, `probvae compare`) and the library read
these; the estimator names are the keys of `probvae.evaluation.estimators.ESTIMATORS`.
"""

from probvae import checks

__all__ = ["SPLITS", "AIS_INITIAL", "DEFAULT_IWAE_SAMPLES", "check_split"]

# The held-out (or training) splits of a run's data an evaluation can read.
SPLITS = ("test", "validation", "train")
# The start of the AIS path: q(z|x) or p(z).
AIS_INITIAL = ("posterior", "prior")
# K of `probvae evaluate` unless --iwae-samples says otherwise.
DEFAULT_IWAE_SAMPLES = 1000


def check_split(split: str) -> None:
    """A UserError unless `split` is one of `SPLITS`."""
    checks.choice("split", split, SPLITS)
