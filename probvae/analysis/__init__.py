"""Looking inside trained models: numbers (`inspection`), pictures
(`plotting`, the only module that imports matplotlib) and the run report
that puts them on a page (`report`)."""

import importlib

_SUBMODULES = ("compare", "inspection", "plotting", "report")


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"probvae.analysis.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'probvae.analysis' has no attribute {name!r}")
