"""One registry pattern for models, export targets and runners.

A registry maps a name to a builder (or class) plus a metadata object; an unknown name raises
with the closest registered names suggested, and a duplicate name raises at import time.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An unregistered name; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    meta: Any = None


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "model", "export target", "runner": used in error messages
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, meta: Any = None) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("inception_v3", meta=...)``."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, meta)
            return obj

        return add

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(sorted(self._entries))})"
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def meta(self, name: str) -> Any:
        return self.entry(name).meta

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())
