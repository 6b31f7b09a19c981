"""The examples in the docstrings run, as TFP's layers' do.

Every public distribution constructor (`probvae.distributions`) and every
public member of `probvae.VAE` has a `>>>` example; this file runs them with
`doctest` (ELLIPSIS, NORMALIZE_WHITESPACE) and fails on any failure, and
fails too when a public name has no example. The examples print shapes,
dtypes, coarsely rounded values or comparisons that print True, so they do
not depend on the CPU.

In `probvae.model` the methods' examples use the `vae` and `x` of the `VAE`
class example (in `probvae.generation`, of the `Generation` example; in
`probvae.latents`, the `vae` and `images` of `encode`): that one runs first
and its names are given to the rest, so each module builds one tiny model.
"""

import doctest
import importlib
import inspect

import pytest

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# The modules whose examples run, and (for the check that every public name
# has one) whether their public classes' methods need one each too.
MODULES = {
    "probvae.distributions.priors": False,
    "probvae.distributions.posteriors": False,
    "probvae.distributions.flows": False,
    "probvae.distributions.likelihoods": False,
    "probvae.distributions.mixtures": False,
    "probvae.distributions.analysis": False,
    "probvae.latents": False,
    "probvae.generation": True,
    "probvae.model": True,
}
# The example whose names the other examples of its module use.
SETUP = {"probvae.model": "probvae.model.VAE", "probvae.latents": "probvae.latents.encode",
         "probvae.generation": "probvae.generation.Generation"}


def _examples(module_name):
    module = importlib.import_module(module_name)
    tests = [test for test in doctest.DocTestFinder().find(module) if test.examples]
    return module, sorted(tests, key=lambda test: (test.name != SETUP.get(module_name), test.name))


def _public_members(module, with_methods):
    """The qualified names of the module's public functions and classes (and,
    if asked, the public methods and properties its public classes define)."""
    names = []
    for name in module.__all__:
        value = getattr(module, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)) or value.__module__ != module.__name__:
            continue
        names.append(f"{module.__name__}.{name}")
        if with_methods and inspect.isclass(value):
            names += [f"{module.__name__}.{name}.{member}" for member, attribute in vars(value).items()
                      if not member.startswith("_") and (callable(attribute) or isinstance(attribute, property))]
    return names


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_docstring_examples_pass(module_name):
    module, tests = _examples(module_name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    shared = {}
    for test in tests:
        test.globs.update(shared)
        report = []
        result = runner.run(test, out=report.append, clear_globs=False)
        assert result.failed == 0, f"{test.name}:\n" + "".join(report)
        if test.name == SETUP.get(module_name):
            shared = dict(test.globs)


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_every_public_name_has_an_example(module_name):
    module, tests = _examples(module_name)
    with_examples = {test.name for test in tests}
    missing = [name for name in _public_members(module, MODULES[module_name]) if name not in with_examples]
    assert not missing, f"public names without a >>> example in their docstring: {missing}"
