"""The API reference builds with warnings as errors, and every public name is on it.

The site is built once (`mkdocs build --strict` into a temporary folder, a few
seconds, no TensorFlow: mkdocstrings reads the sources); its objects inventory
(`objects.inv`, Sphinx's format) lists every documented object with the page
and anchor it is on. A public name passes when the inventory lists it under
the module that exports it or under its home (`probvae.VAE` is
`probvae.model.VAE`), and its anchor is on that page.

Skips, saying so, when the `docs` extra is not installed; CI installs it.
"""

import importlib
import os
import pkgutil
import subprocess
import sys
import types
import zlib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The modules whose every public name (`__all__`) the reference documents.
MODULES = ["probvae", "probvae.distributions", "probvae.evaluation", "probvae.runs", "probvae.analysis",
           "probvae.export"]


def _docs_tools():
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            importlib.import_module(module)
        except ImportError:
            pytest.skip(f"the docs extra is not installed ({module} is missing): pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _docs_tools()
    site_dir = tmp_path_factory.mktemp("site")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}  # in case a plugin ever imports TensorFlow
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
                            cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return site_dir


def read_inventory(path) -> dict:
    """{name: (page, anchor)} of a Sphinx objects.inv (version 2: four header
    lines, then zlib-compressed lines 'name domain:role priority uri dispname')."""
    with open(path, "rb") as handle:
        data = handle.read()
    header, body = data.split(b"\n", 4)[:4], data.split(b"\n", 4)[4]
    assert header[0] == b"# Sphinx inventory version 2", header[0]
    entries = {}
    for line in zlib.decompress(body).decode().splitlines():
        name, _, _, uri = line.split(" ", 4)[:4]
        uri = uri.replace("$", name) if uri.endswith("$") else uri
        page, _, anchor = uri.partition("#")
        entries.setdefault(name, (page, anchor))
    return entries


def public_names(module) -> list:
    """A module's `__all__`; for a package without one (probvae.analysis), its
    submodules, whose own `__all__` the caller checks too."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [info.name for info in pkgutil.iter_modules(module.__path__) if not info.name.startswith("_")]
    return list(names)


def _homes(module_name: str, name: str, inventory: dict) -> list:
    """The inventory names under which `module_name.name` may be documented: its
    own, and its home (a module's name; a class's or function's module and
    qualified name; for a constant, which knows no home, a submodule of the
    exporting package: `probvae.evaluation.SPLITS` is `probvae.evaluation.names.SPLITS`)."""
    value = getattr(importlib.import_module(module_name), name)
    homes = [f"{module_name}.{name}"]
    if isinstance(value, types.ModuleType):
        homes.append(value.__name__)
    elif getattr(value, "__module__", None) and getattr(value, "__qualname__", None):
        homes.append(f"{value.__module__}.{value.__qualname__}")
    else:
        homes += [entry for entry in inventory if entry.startswith(module_name + ".")
                  and entry.count(".") == module_name.count(".") + 2 and entry.rsplit(".", 1)[-1] == name]
    return homes


def _modules_to_check(module_name: str) -> list:
    """The module, and for a package without `__all__` its public submodules."""
    module = importlib.import_module(module_name)
    if getattr(module, "__all__", None) is not None:
        return [module_name]
    return [module_name] + [f"{module_name}.{name}" for name in public_names(module)]


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_is_on_the_reference(site, module_name):
    inventory = read_inventory(site / "objects.inv")
    pages = {}
    missing = []
    for checked in _modules_to_check(module_name):
        module = importlib.import_module(checked)
        for name in public_names(module):
            homes = _homes(checked, name, inventory)
            found = False
            for home in homes:
                if home in inventory:
                    page, anchor = inventory[home]
                    if page not in pages:
                        pages[page] = (site / page).read_text()
                    found = found or f'id="{anchor}"' in pages[page]
            if not found:
                missing.append(f"{checked}.{name}")
    assert not missing, f"public names missing from the API reference: {missing}"


def test_inventory_reader_reads_what_mkdocstrings_writes(site):
    inventory = read_inventory(site / "objects.inv")
    page, anchor = inventory["probvae.model.VAE"]
    assert (page, anchor) == ("reference/probvae.html", "probvae.model.VAE")
    assert inventory["probvae.distributions.priors.standard_normal"][0] == "reference/distributions.html"
