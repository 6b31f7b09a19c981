"""Held-out evaluation: ELBO, log p(x) (importance-weighted, or AIS and BDMC
on the model's path), bits/dim, active units and per-dimension KL, and the
evaluation files of a run.

    names.py       split names, AIS start distributions, the default K (no TensorFlow)
    estimators.py  the estimator registry (elbo, iwae, ais): settings, cost in
                   decoder passes, file tag, label, estimate function; the cost
                   policy (`check_cost`); `EvaluationSettings` (no TensorFlow)
    result.py      `EvaluationResult`, the numbers of one evaluation and its JSON (no TensorFlow)
    files.py       names of the evaluation files, reading them back (no TensorFlow)
    statistics.py  per-example ELBO, importance sampling, latent statistics, `evaluate_elbo`
    ais.py         annealed importance sampling and BDMC on the model's path
    protocol.py    `evaluate` (a model on images) and `evaluate_run` (a run, written to its file)

Every public name of the submodules is an attribute of this package,
imported on first use: `import probvae.evaluation` (and reading names,
estimators, results and files) does not import TensorFlow.
"""

import importlib

from probvae.evaluation.names import AIS_INITIAL, DEFAULT_IWAE_SAMPLES, SPLITS

_EXPORTS = {
    "estimators": ("AIS_CHUNK_ROWS", "AISSettings", "EvaluationSettings", "Estimator", "ESTIMATORS", "estimator",
                   "MAX_DECODER_PASSES", "API_NAMES", "BDMC_GAP_WARNING_NATS", "bdmc_gap_warning", "decoder_passes",
                   "check_cost", "estimator_label"),
    "result": ("EvaluationResult", "mean_and_stderr", "json_safe"),
    "files": ("evaluation_name", "evaluation_path", "read_evaluations", "check_writable"),
    "statistics": ("ACTIVE_UNIT_THRESHOLD", "unit_activity", "active_units", "BatchStatistics",
                   "importance_sampling", "log_likelihood", "per_example", "elbo_per_example", "evaluate_elbo"),
    "ais": ("AISEstimate", "ais_log_likelihood", "BDMCResult", "simulate", "bdmc"),
    "protocol": ("evaluate", "evaluate_run"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["SPLITS", "AIS_INITIAL", "DEFAULT_IWAE_SAMPLES"] + sorted(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'probvae.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"probvae.evaluation.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
