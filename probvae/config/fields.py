"""What a config field is: its default, its check and its command-line flag,
declared once, beside the field, and a config section built from them.

A section's own field is a dataclass field made by `setting`, whose metadata
holds a `Flag`: the help line, how text becomes a value, the choices, the
registry whose entries the field names, and whether a resumed run may change
it. `probvae.cli.fit` makes its flags, `RunConfig.resumable()` the keys a
resumed run may change, and `_Section` its checks from these, as they do for
the fields registered components declare (`probvae.registry.Field`).

    epochs: int = setting(100, "passes over the training images", parse=int, check=checks.positive_int)

A check, here as in a component's `probvae.registry.Field`, is called as
`check(name, value)`: the field's name (for the message) and the value; it
returns None and raises a `UserError` for a bad value. A check that cannot be
called with those two arguments is refused when the field is declared, in
one line (`probvae.registry.check_signature`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from probvae.checks import require as _require
from probvae.registry import check_signature, find_field

__all__ = ["Flag", "setting", "flags", "image_shape", "latent_sizes"]


@dataclasses.dataclass(frozen=True)
class Flag:
    """How a section's own field is set and checked.

    Attributes:
      help: one line for `--help`.
      parse: text -> value for the flag; None for a true/false field (--name / --no-name).
      check: called as check(name, value) -> None, raising a UserError for a
        bad value (a function with another signature is refused when the
        field is declared); None is accepted only by fields whose default is None.
      choices: the values the flag accepts.
      registry: the `probvae.registry.Registry` whose entry the field names
        (its entries' fields join the section; the flag's choices and help come from it).
      flag: the flag's spelling when it is not --the-name (e.g. --checkpoint-every).
      metavar: the value's name in --help.
      resume: whether a resumed run may change it (how the run is carried out,
        not what it computes from good batches).
      aliases: (flag, value) pairs: older flags that set the field to a value
        (e.g. ("--mixed-precision", "float16")), accepted and not listed in --help.
    """

    help: str = ""
    parse: Optional[Callable[[str], Any]] = None
    check: Optional[Callable[[str, Any], None]] = None
    choices: Optional[Tuple[str, ...]] = None
    registry: Any = None
    flag: Optional[str] = None
    metavar: Optional[str] = None
    resume: bool = False
    aliases: Tuple[Tuple[str, Any], ...] = ()


def setting(default: Any, help: str = "", **flag) -> Any:
    """A section field with `default` and its `Flag(help, **flag)` (its check
    is judged when the section class is declared: `_Section.__init_subclass__`)."""
    return dataclasses.field(default=default, metadata={"flag": Flag(help, **flag)})


def flags(section) -> Iterator[Tuple[str, Any, Flag]]:
    """(name, default, Flag) of each own field of a section class, in order."""
    for field in dataclasses.fields(section):
        if "flag" in field.metadata:
            yield field.name, field.default, field.metadata["flag"]


def _ints(text: str, what: str) -> Tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected {what}, got {text!r}") from None


def image_shape(text: str) -> tuple:
    """"H,W,C" (e.g. 64,64,3) -> (64, 64, 3)."""
    shape = _ints(text, "height,width,channels such as 64,64,3")
    if len(shape) != 3:
        raise ValueError(f"expected height,width,channels such as 64,64,3, got {text!r}")
    return shape


def latent_sizes(text: str):
    """"32" -> 32, "40,40" -> (40, 40) (one size per latent level)."""
    sizes = _ints(text, "a whole number such as 32, or one per latent layer such as 40,40")
    return sizes[0] if len(sizes) == 1 else sizes


def _tuples(value):
    """JSON lists back to the (nested) tuples they were."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class _Section:
    """A config section: its own dataclass fields, and the fields of the
    components it names (the fields whose `Flag` names a registry), which the
    registered entries declare with their defaults and checks.

    Component fields are passed and read like the section's own
    (`ModelConfig(arch="mlp", hidden_units=(7,))`, `config.hidden_units`),
    kept in `options` (sorted (name, value) pairs) and written flat in JSON.
    The chosen components' fields are filled in with their defaults, so a
    saved config records every value the run used; a field of a component
    not chosen is kept if given (older configs list them all) and reads as
    its default otherwise.
    """

    options: Tuple[Tuple[str, Any], ...]

    def __init_subclass__(cls, **kwargs):
        """Refuse, as the class is declared, a field whose check cannot be called as check(name, value)."""
        super().__init_subclass__(**kwargs)
        for name, value in vars(cls).items():
            flag = value.metadata.get("flag") if isinstance(value, dataclasses.Field) else None
            if flag is not None and flag.check is not None:
                check_signature(flag.check, name)

    def __init__(self, **values):
        own = {f.name: f for f in dataclasses.fields(self) if f.name != "options"}
        options = dict(values.pop("options", ()))
        for name in [n for n in values if n not in own]:
            options[name] = _tuples(values.pop(name))  # lists (JSON, users) as the tuples fields hold
        # The component fields given (the rest are the chosen components' defaults):
        # `replace` carries only these over, so a new component starts from its own defaults.
        object.__setattr__(self, "_given", frozenset(options))
        for name, field in own.items():
            object.__setattr__(self, name, values[name] if name in values else field.default)
        for name, default, flag in flags(type(self)):
            value = getattr(self, name)
            if value is None and default is None:
                continue
            if flag.check is not None:
                flag.check(name, value)
            if flag.registry is not None:
                flag.registry[value]  # raises for an unknown name, listing the known ones
        self._check()
        for _, _, entry in self.components():
            for field in entry.fields:
                options.setdefault(field.name, field.default)
        for name, value in options.items():
            field = find_field(name)
            _require(field is not None, f"{type(self).__name__} has no field {name}; known fields: "
                     f"{', '.join(sorted(set(own) | set(self.component_fields())))}")
            field.check(name, value)
        object.__setattr__(self, "options", tuple(sorted(options.items())))

    def _check(self) -> None:
        """Checks across fields (subclasses)."""

    @classmethod
    def registries(cls) -> Dict[str, Any]:
        """{field: the registry whose entry it names}."""
        return {name: flag.registry for name, _, flag in flags(cls) if flag.registry is not None}

    def components(self):
        """(field, registry, entry) of each component this section chooses."""
        return [(option, registry, registry[getattr(self, option)])
                for option, registry in self.registries().items() if getattr(self, option) is not None]

    def component_fields(self) -> Tuple[str, ...]:
        """Names of the fields the chosen components declare."""
        return tuple(dict.fromkeys(f.name for _, _, entry in self.components() for f in entry.fields))

    def __getattr__(self, name):
        if name.startswith("__") or name in ("options", "_given"):
            raise AttributeError(name)
        for key, value in object.__getattribute__(self, "options"):
            if key == name:
                return value
        field = find_field(name)
        if field is None:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        return field.default

    def values(self) -> dict:
        """Every field, the section's own and the components', as keyword arguments."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        return {**own, **dict(self.options)}

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self.values()))

    @classmethod
    def from_dict(cls, values: dict):
        _require(isinstance(values, dict), f"{cls.__name__} must be a JSON object (got {values!r:.60})")
        # JSON has no tuples: lists come back as the tuples they were.
        return cls(**{name: _tuples(value) for name, value in values.items()})

    def replace(self, **changes):
        """A copy with `changes`; component fields not given before take the
        defaults of the components the copy chooses."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        given = {name: value for name, value in self.options if name in self._given}
        return type(self)(**{**own, **given, **changes})
