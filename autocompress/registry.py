"""Register objects handed to the ``autocompress_register_*`` hooks.

A ``Registry`` maps a class's own ``name`` attribute to the class and remembers which plugin
(and distribution) added it. Plugins never see the registry itself, only a ``Register`` scoped
to them, so provenance cannot be forged or forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from autocompress.errors import PluginError

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Provenance:
    """Where a registered class came from."""

    plugin: str
    distribution: str  # "built-in" or the providing distribution's "name version"


@dataclass(frozen=True)
class Entry(Generic[T]):
    cls: T
    provenance: Provenance

    @property
    def name(self) -> str:
        return self.cls.name


class Registry(Generic[T]):
    """All classes of one kind (techniques, targets, tasks, architectures)."""

    def __init__(self, kind: str, validate: Callable[[type, Provenance], None] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._validate = validate

    def scoped(self, provenance: Provenance) -> Register:
        return Register(self, provenance)

    def _add(self, cls: T, provenance: Provenance) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin '{provenance.plugin}' ({provenance.distribution}) registered {self.kind} "
                f"{cls!r} without a string 'name' attribute"
            )
        if self._validate is not None:
            self._validate(cls, provenance)
        existing = self._entries.get(name)
        if existing is not None:
            raise PluginError(
                f"{self.kind} '{name}' is registered twice: by plugin '{existing.provenance.plugin}' "
                f"({existing.provenance.distribution}) and by plugin '{provenance.plugin}' "
                f"({provenance.distribution}); disable one of them"
            )
        self._entries[name] = Entry(cls, provenance)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name].cls
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self._entries)) or 'none'})"
            ) from None

    def get(self, name: str) -> T | None:
        entry = self._entries.get(name)
        return entry.cls if entry else None

    def entry(self, name: str) -> Entry[T]:
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[name] for name in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


class Register:
    """What a ``autocompress_register_*`` hook receives: ``register.add(cls)``."""

    def __init__(self, registry: Registry, provenance: Provenance):
        self._registry = registry
        self._provenance = provenance

    def add(self, cls: type) -> type:
        """Register ``cls`` under its own ``name``; returns it so it can decorate a class."""
        self._registry._add(cls, self._provenance)
        return cls
