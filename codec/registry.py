"""One registry mechanism for everything a name or a stream id selects: models, codecs, entropy models,
refiners and metrics.

A :class:`Registry` maps names to entries (a factory, a spec, a coder); ``prefix:<ref>`` names go to a prefix
entry called with the reference; an optional fallback answers names no entry claims (e.g. every model name is a
neural codec). Entries are added where they are defined, with :meth:`Registry.register` as a decorator or
:meth:`Registry.add`; unknown names raise the registry's own typed error listing what is known. The registries
themselves are module-level objects of the modules that own their kind (``models.MODELS``,
``codecs.CODECS``, ``latent_coding.ENTROPY_MODELS``, ``refine.REFINERS``, ``metrics.METRICS``).
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Names (and optionally integer ids) → entries of one kind.

    ``error``: the exception type unknown names raise (a ``LatentarcError`` subclass, or ``ValueError`` for a
    user-facing option); ``id_error`` the one unknown ids raise (default ``error``). A fallback
    (:meth:`register_fallback`) returns an entry for a name no entry or prefix claims, or None.
    """

    def __init__(self, kind: str, *, error: type[Exception] = KeyError, id_error: type[Exception] | None = None):
        self.kind, self.error, self.id_error = kind, error, id_error or error
        self.fallback: Callable[[str], T | None] | None = None
        self._entries: dict[str, T] = {}
        self._prefixes: dict[str, Callable[[str], T]] = {}
        self._ids: dict[int, str] = {}

    def add(self, name: str, entry: T, *, id: int | None = None) -> T:
        """Register ``entry`` under ``name`` (and the stream id ``id``); a name or id is registered once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        if id is not None:
            if id in self._ids:
                raise ValueError(f"{self.kind} id {id} registered twice ({self._ids[id]!r}, {name!r})")
            self._ids[id] = name
        self._entries[name] = entry
        return entry

    def register(self, name: str, *, id: int | None = None) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        def deco(entry: T) -> T:
            return self.add(name, entry, id=id)

        return deco

    def register_prefix(self, prefix: str) -> Callable:
        """Decorator: ``prefix:<ref>`` names resolve to ``fn(ref)``."""
        def deco(fn):
            if prefix in self._prefixes:
                raise ValueError(f"{self.kind} prefix {prefix!r} registered twice")
            self._prefixes[prefix] = fn
            return fn

        return deco

    def register_fallback(self, fn: Callable[[str], T | None]) -> Callable[[str], T | None]:
        """Decorator: ``fn(name)`` answers names no entry or prefix claims (one fallback per registry)."""
        if self.fallback is not None:
            raise ValueError(f"{self.kind} fallback registered twice")
        self.fallback = fn
        return fn

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests that register a temporary entry)."""
        self._entries.pop(name, None)
        self._ids = {i: n for i, n in self._ids.items() if n != name}

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        prefix, sep, ref = name.partition(":")
        if sep and ref and prefix in self._prefixes:
            return self._prefixes[prefix](ref)
        found = self.fallback(name) if self.fallback is not None else None
        if found is None:
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return found

    def by_id(self, id: int) -> T:
        try:
            return self._entries[self._ids[id]]
        except KeyError:
            raise self.id_error(f"{self.kind} id {id} is not known to this build") from None

    def names(self) -> list[str]:
        """Registered names, then ``prefix:<ref>`` forms."""
        return sorted(self._entries) + [f"{p}:<ref>" for p in sorted(self._prefixes)]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())
