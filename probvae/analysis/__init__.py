"""Looking inside trained models: numbers (`inspection`), pictures
(`plotting`, which gathers them from `plot_canvas`, `plot_latents`,
`plot_images` and `plot_curves`: the only modules that import matplotlib),
the run report that puts them on a page (`report`) and runs side by side
(`compare`)."""

import importlib

_SUBMODULES = ("compare", "inspection", "plot_canvas", "plot_curves", "plot_images", "plot_latents", "plotting",
               "report")


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"probvae.analysis.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'probvae.analysis' has no attribute {name!r}")
