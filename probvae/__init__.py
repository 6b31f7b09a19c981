"""probvae: variational autoencoders stated as TensorFlow Probability distributions.

Public API (imported on first use, so `import probvae` is cheap):
    RunConfig, DataConfig, ModelConfig, TrainConfig   run configuration (probvae.config)
    UserError                                          errors a user can fix (probvae.errors)
    VAE                                                the model (probvae.model)
    fit                                                train and write a run (probvae.training)
    load_dataset                                       datasets (probvae.data)
    load_run                                           a trained VAE from its run directory (probvae.runs)
    evaluate_elbo                                      held-out ELBO (probvae.evaluation)
    evaluate_run                                       held-out ELBO, log p(x), bits/dim of a run (probvae.evaluation)
    distributions                                      priors, posterior layers, likelihoods
    encode                                             posterior parameters of a dataset as arrays (probvae.model)

Every submodule is reachable as an attribute too (`probvae.runs`,
`probvae.evaluation`, `probvae.analysis.report`, ...), imported on first use.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "DataConfig": "probvae.config",
    "ModelConfig": "probvae.config",
    "RunConfig": "probvae.config",
    "TrainConfig": "probvae.config",
    "UserError": "probvae.errors",
    "VAE": "probvae.model",
    "distributions": "probvae.distributions",
    "encode": "probvae.model",
    "evaluate_elbo": "probvae.evaluation",
    "evaluate_run": "probvae.evaluation",
    "fit": "probvae.training",
    "load_dataset": "probvae.data",
    "load_run": "probvae.runs",
}

# Submodules reachable as attributes of `probvae` (imported on first use).
_SUBMODULES = frozenset({
    "analysis", "annealing", "benchmarks", "checks", "cli", "config", "data", "distributions", "errors",
    "evaluation", "hierarchy", "model", "networks", "objectives", "presets", "registry", "replicas", "runs",
    "training",
})

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _SUBMODULES and name not in _EXPORTS:
        module = importlib.import_module(f"probvae.{name}")
        globals()[name] = module
        return module
    if name not in _EXPORTS:
        raise AttributeError(f"module 'probvae' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__ == f"probvae.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
