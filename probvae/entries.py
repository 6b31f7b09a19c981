"""What a registry of components is (`probvae.registry` holds the registries
and the built-in entries): a `Field` a component reads, an `Entry` (one
registered component, with the module that registered it) and a `Registry`
of the entries of one kind, by name; `DatasetRegistry` for the datasets,
whose names may take a PATH.

A name is owned by the module that registered it first (`Entry.module`):
another module, or a built-in, registering it again is refused in one line
naming both, even with `replace=True`, which only lets a module replace its
own entry.
Reading a registry (`[name]`, `in`, `names`, `entries`) first loads the
installed packages' entry points (`probvae.components.load_entry_points`).
A field's check is called as `check(name, value)`; a check that cannot be is
refused when the `Field` is made (`check_signature`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from probvae import checks, components
from probvae.errors import UserError

__all__ = ["Field", "Entry", "Registry", "DatasetRegistry", "check_signature", "declared_field"]

# Every registry made, for lookups across kinds (a field means one thing in all of them).
_REGISTRIES: List["Registry"] = []


def check_signature(check: Any, name: str) -> None:
    """Refuse a field check that cannot be called as `check(name, value)`.

    Raises:
      UserError: one line naming the field and what the check takes.
    """
    if not callable(check):
        raise UserError(f"the check of field {name!r} must be a function check(name, value), got {check!r}")
    try:
        signature = inspect.signature(check)
    except (TypeError, ValueError):  # a builtin without a signature: it is called and judged then
        return
    try:
        signature.bind(name, None)
    except TypeError:
        what = getattr(check, "__qualname__", None) or type(check).__name__
        raise UserError(f"the check of field {name!r} is called as check(name, value) and raises a UserError for a "
                        f"bad value; {what}{signature} cannot be called so") from None


@dataclasses.dataclass(frozen=True)
class Field:
    """A config field a component reads.

    Attributes:
      name: the field's name in its config section (and, with `_` as `-`, its flag).
      default: its value when the config does not set it.
      check: called as check(name, value) -> None (name: the field's name, for
        the message), raising a UserError for a bad value; a function with
        another signature is refused here, in one line.
      help: one line for `--help`.
      parse: text -> value for the command line; None: no flag.
      choices: the values the flag accepts, if it is a choice (argparse checks them).
    """

    name: str
    default: Any
    check: Callable[[str, Any], None]
    help: str = ""
    parse: Optional[Callable[[str], Any]] = None
    choices: Optional[Tuple[str, ...]] = None

    def __post_init__(self):
        check_signature(self.check, self.name)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered component; `module` is the module that registered it
    (its owner: "probvae.registry" for the built-in ones)."""

    name: str
    builder: Union[str, Any]
    summary: str = ""
    fields: Tuple[Field, ...] = ()
    traits: Tuple[Tuple[str, Any], ...] = ()
    module: str = ""

    def load(self):
        """The builder object (imported on first use for "module:attribute" names)."""
        return _resolve(self.builder)

    def trait(self, name: str, default: Any = None) -> Any:
        return dict(self.traits).get(name, default)

    def load_trait(self, name: str) -> Any:
        """A trait that names an object ("module:attribute", or the object), resolved; None if absent."""
        value = self.trait(name)
        return None if value is None else _resolve(value)


def _resolve(reference):
    """The object a "module:attribute" string names (imported now), or `reference` itself."""
    if not isinstance(reference, str):
        return reference
    module, _, attribute = reference.partition(":")
    value = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def _owner(module: str) -> str:
    return "probvae (built in)" if components.is_builtin(module) else f"the module {module}"


class Registry:
    """The components of one kind, by name.

    Args:
      kind: what the components are ("prior"), for messages.
      option: the config field that names one ("prior"), in section `section`.
    """

    def __init__(self, kind: str, section: str, option: str):
        self.kind, self.section, self.option = kind, section, option
        self._entries: Dict[str, Entry] = {}
        _REGISTRIES.append(self)

    def register(self, name: str, builder: Union[str, Any], *, summary: str = "",
                 fields: Iterable[Field] = (), replace: bool = False, module: Optional[str] = None,
                 **traits) -> Entry:
        """Add a component; returns its entry.

        `module` is its owner, recorded by the runs that use it and imported
        again by their readers; default: the module calling `register`. A
        field another entry of any registry declares too must have the same
        check (a field means one thing).

        Raises:
          UserError: a name that is not a plain identifier, one another
            module (or probvae) owns, naming both, or one this module
            registered already, unless `replace`.
        """
        caller = sys._getframe(1).f_globals
        module = module or caller.get("__name__", "")
        if module == caller.get("__name__"):
            components.remember_file(module, caller.get("__file__"))
        checks.require(isinstance(name, str) and name.replace("_", "").replace("-", "").isalnum(),
                       f"a {self.kind} name must be letters, digits, _ or - (got {name!r})")
        taken = self._entries.get(name)
        if taken is not None and taken.module != module:
            raise UserError(f"{self.kind} {name!r} is registered already by {_owner(taken.module)}; "
                            f"{_owner(module)} cannot register it too: give it another name")
        if taken is not None and not replace:
            raise UserError(f"{self.kind} {name!r} is registered already by {_owner(module)}; pass replace=True to "
                            "replace it")
        entry = Entry(name, builder, summary, tuple(fields), tuple(sorted(traits.items())), module)
        for field in entry.fields:
            known = declared_field(field.name)
            checks.require(known is None or known.check is field.check,
                           f"field {field.name!r} is declared already with another check")
        self._entries[name] = entry
        return entry

    def _read(self) -> Dict[str, Entry]:
        """The entries, once the installed packages' entry points have registered theirs."""
        components.load_entry_points()
        return self._entries

    def __getitem__(self, name: str) -> Entry:
        entries = self._read()
        if name not in entries:
            raise UserError(f"unknown {self.option} {name!r}; choose one of: {', '.join(entries)}")
        return entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._read()

    def names(self) -> Tuple[str, ...]:
        return tuple(self._read())

    def entries(self) -> Tuple[Entry, ...]:
        return tuple(self._read().values())

    def describe(self) -> str:
        """"name: summary; ..." for --help."""
        return "; ".join(f"{e.name}: {e.summary}" if e.summary else e.name for e in self.entries())


class DatasetRegistry(Registry):
    """The datasets by name. An entry registered with the trait `path=True`
    takes a path: it is spelled "name:PATH" ("npz:data.npz", "folder:~/faces")."""

    def __getitem__(self, name: str) -> Entry:
        if isinstance(name, str):
            prefix, colon, path = name.partition(":")
            entry = self._read().get(prefix if colon else name)
            if entry is not None and bool(entry.trait("path")) == bool(colon) and (path or not colon):
                return entry
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(self.spellings())}")

    def spellings(self) -> Tuple[str, ...]:
        """How a config names each dataset: "shapes", ..., "npz:PATH"."""
        return tuple(f"{e.name}:PATH" if e.trait("path") else e.name for e in self.entries())

    def describe(self) -> str:
        return "; ".join(f"{name}: {e.summary}" for name, e in zip(self.spellings(), self.entries()))


def declared_field(name: str) -> Optional[Field]:
    """The field called `name` that an entry of any registry declares, or None
    (the entry points are not loaded: what `register` asks while they load)."""
    for registry in _REGISTRIES:
        for entry in registry._entries.values():
            for field in entry.fields:
                if field.name == name:
                    return field
    return None
