"""A user's components by import: the modules a command is told to import
(`--import MODULE`), the packages that register components through the
entry-point group `probvae.components`, and the record a run keeps of the
modules its components came from, so that every reader imports them again.

Three ways in, one registry (`probvae.registry`):

    probvae fit --import my_prior.py --prior student_t   # a file
    probvae fit --import mylab.priors --prior student_t  # a module on sys.path
    # or, in an installed package's metadata (entry_points.txt):
    [probvae.components]
    student_t = mylab.priors

An entry point's value names a module, imported when a registry is first
read (not when probvae is imported), or a "module:function" called once with
no arguments. A failing entry point is refused in one line naming its
package: a broken plug-in is not skipped silently.

A run's config.json lists, under "components", the modules that registered
the components the run uses (never the built-in ones, nor those registered by
the script being run, `__main__`, which cannot be imported again):

    "components": [{"module": "my_prior", "path": "/home/me/my_prior.py",
                    "registers": {"prior": ["student_t"]}}]

`path` is the file of a module without a package (imported from it first),
`package` the distribution of an entry point; a reader imports the module by
name otherwise. `needed` / `import_recorded` do that; a module that cannot be
found is refused in one line saying how to provide it. This module reads no
registry: the config asks it (`probvae.config.RunConfig.from_dict`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from types import ModuleType
from typing import Callable, Dict, Iterable, List, Optional

from probvae.errors import UserError

__all__ = ["ENTRY_POINT_GROUP", "import_module", "import_modules", "load_entry_points", "is_builtin",
           "remember_file", "records", "import_recorded"]

ENTRY_POINT_GROUP = "probvae.components"

# Module name -> how to import it again: {"path": a .py file} or {"package": a distribution}.
_SOURCES: Dict[str, dict] = {}
# None: the entry points are not loaded yet; "loading"; "loaded"; or the UserError loading them raised.
_entry_points = None


def is_builtin(module: str) -> bool:
    """Whether `module` is probvae's own (its components need no record)."""
    return module == "probvae" or module.startswith("probvae.")


def remember_file(module: str, file: Optional[str]) -> None:
    """Note the file of `module` (a module without a package that registered a
    component), so that a run can name it even if it was not imported by path."""
    if module and "." not in module and module not in _SOURCES and file and file.endswith(".py"):
        _SOURCES[module] = {"path": os.path.abspath(file)}


class _NotFound(UserError):
    """No module of the name on the path."""


def _failed(what: str, error: BaseException) -> UserError:
    text = " ".join(str(error).split())
    return UserError(f"importing {what} failed: {type(error).__name__}: {text}")


def _from_file(path: str, name: Optional[str] = None) -> ModuleType:
    """The module in the .py file `path`, imported as `name` (default: the file's stem)."""
    path = os.path.abspath(os.path.expanduser(path))
    name = name or os.path.splitext(os.path.basename(path))[0]
    if not name.isidentifier():
        raise UserError(f"cannot import {path}: {name!r} is not a module name; rename the file to letters, digits "
                        "and _")
    loaded = sys.modules.get(name)
    if loaded is not None:
        file = getattr(loaded, "__file__", None)
        if file and os.path.exists(file) and os.path.samefile(file, path):
            return loaded
        raise UserError(f"cannot import {path}: a module called {name} is imported already (from "
                        f"{file or 'a built-in'}); rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _SOURCES[name] = {"path": path}
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        del sys.modules[name]
        _SOURCES.pop(name, None)
        if isinstance(error, (UserError, KeyboardInterrupt, SystemExit)):
            raise
        raise _failed(path, error) from error
    return module


def _by_name(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(error.name + ".")):
            raise _NotFound(f"cannot import {name}: no module of that name on the path; give its file "
                            f"(--import path/to/{name.rpartition('.')[2]}.py), add its folder to PYTHONPATH, or "
                            "install the package that provides it") from None
        raise _failed(name, error) from error
    except (UserError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        raise _failed(name, error) from error


def import_module(spec: str) -> ModuleType:
    """Import `spec`: a path to a .py file (imported under the file's stem) or
    a dotted module name on sys.path.

    Raises:
      UserError: no such file or module, or its import failed (one line; the
        cause is chained for --debug). A UserError the module raises (a name
        registered twice) passes through as it is.
    """
    spec = spec.strip()
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        if not os.path.isfile(os.path.expanduser(spec)):
            raise UserError(f"cannot import {spec}: no such file; give a .py file or a module name on the path")
        return _from_file(spec)
    if not all(part.isidentifier() for part in spec.split(".")):
        raise UserError(f"cannot import {spec!r}: not a module name (such as mylab.priors) nor a .py file")
    return _by_name(spec)


def import_modules(values: Iterable[str]) -> List[ModuleType]:
    """Import each module of `values` (each one or several, comma-separated), in order."""
    modules = []
    for value in values:
        parts = [part.strip() for part in value.split(",")]
        if not all(parts):
            raise UserError(f"--import {value!r}: an empty module name; give module names or .py files "
                            "separated by commas")
        modules += [import_module(part) for part in parts]
    return modules


def load_entry_points() -> None:
    """Import the modules (or call the functions) of the installed packages'
    `probvae.components` entry points, once per process; the registries call
    this when first read.

    Raises:
      UserError: an entry point failed, naming it and its package (again at
        every later call: the registries are incomplete).
    """
    global _entry_points
    if isinstance(_entry_points, UserError):
        raise _entry_points
    if _entry_points is not None:
        return  # loaded, or being loaded (a plug-in's own reads of the registries)
    _entry_points = "loading"
    try:
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            _load_entry_point(point)
    except UserError as error:
        _entry_points = error
        raise
    _entry_points = "loaded"


def _load_entry_point(point) -> None:
    package = point.dist.name if getattr(point, "dist", None) is not None else None
    where = f"the entry point {point.name} = {point.value} of {f'the package {package}' if package else 'a package'}"
    _SOURCES.setdefault(point.module, {"package": package} if package else {})
    try:
        value = point.load()
        if point.attr and callable(value) and not isinstance(value, ModuleType):
            value()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        text = " ".join(str(error).split())
        raise UserError(f"{where} (group {ENTRY_POINT_GROUP}) failed: {type(error).__name__}: {text}; fix or "
                        "uninstall that package") from error


def records(owners: Dict[str, Dict[str, List[str]]]) -> List[dict]:
    """What config.json records of the modules that registered a run's
    components: `owners` is {module: {kind: [names]}}; built-in modules and
    `__main__` are left out. Sorted by module."""
    found = []
    for module in sorted(owners):
        if is_builtin(module) or module == "__main__":
            continue
        found.append({"module": module, **_SOURCES.get(module, {}),
                      "registers": {kind: sorted(set(names)) for kind, names in sorted(owners[module].items())}})
    return found


def _check_records(values) -> List[dict]:
    good = isinstance(values, list) and all(
        isinstance(v, dict) and isinstance(v.get("module"), str) and isinstance(v.get("registers", {}), dict)
        for v in values)
    if not good:
        raise UserError("config has a malformed components list; each entry is {\"module\": NAME, ...} as fit "
                        "wrote it")
    return values


def _what(record: dict) -> str:
    registers = record.get("registers") or {}
    named = "; ".join(f"the {kind} {', '.join(names)}" for kind, names in registers.items())
    return f"the module {record['module']}" + (f" (it registered {named})" if named else "")


def _missing(record: dict) -> UserError:
    module, path, package = record["module"], record.get("path"), record.get("package")
    if path:
        how = f"pass --import with its file (it was {path}, which is not there)"
    else:
        how = f"pass --import {module} with its folder on PYTHONPATH, or --import its .py file"
    install = f"install the package {package}" if package else "install the package that provides it"
    return UserError(f"this run needs {_what(record)}, which cannot be imported here: {how}, or {install}")


def import_recorded(values, registered: Callable[[str, str], bool]) -> None:
    """Import the modules a config records (its "components" list) whose
    components are not registered yet (`registered(kind, name)`): from the
    recorded file if it is there, else by name.

    Raises:
      UserError: a module that cannot be found (one line: which module the run
        needs, what it registers, and how to provide it), or whose import failed.
    """
    for record in _check_records(values):
        registers = record.get("registers") or {}
        if registers and all(registered(kind, name) for kind, names in registers.items() for name in names):
            continue
        if not registers and record["module"] in sys.modules:
            continue
        path = record.get("path")
        if path and os.path.isfile(path):
            _from_file(path, record["module"])
            continue
        try:
            _by_name(record["module"])
        except _NotFound:
            raise _missing(record) from None
