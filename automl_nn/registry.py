"""Registry[T]: a named table of building blocks (layer families, activations, objectives, ...).

Plain dict underneath. Registering a name twice raises; looking up an unknown name raises a
ConfigError that lists the valid names and suggests the closest one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from automl_nn.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry, with aliases. `kind` names the table in error messages ("activation")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, entry: T, *, aliases: tuple[str, ...] = ()) -> T:
        """Register `entry` under `name` (and `aliases`); a name already taken raises ValueError."""
        for key in (name, *aliases):
            if key in self._entries or key in self._aliases:
                raise ValueError(f'{self.kind} "{key}" is already registered.')
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def decorate(entry: T) -> T:
            return self.add(name, entry, aliases=aliases)

        return decorate

    def canonical(self, name: str, where: str = "") -> str:
        """The registered name for `name` or one of its aliases; unknown names raise ConfigError."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise unknown_name(self.kind, name, sorted(self.names()), where)

    def get(self, name: str, where: str = "") -> T:
        """The entry for `name` (or an alias)."""
        return self._entries[self.canonical(name, where)]

    def names(self) -> list[str]:
        """Registered names, in registration order (aliases excluded)."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
