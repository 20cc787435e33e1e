"""One registry pattern for models, export targets, quantizers and runners.

A registry maps a name to a builder (or class) plus a metadata object that declares what the entry
supports, so a bad combination fails before any work; an unknown name raises with the closest
registered names suggested, and a duplicate name raises at import time. An entry may name its object
as ``"package.module:attribute"`` (``register_lazy``): the metadata is there at once (the CLI's
choices, checks), the heavy module (PyTorch, ONNX, TensorFlow) is imported when the entry is used.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An unregistered name; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass
class Entry(Generic[T]):
    name: str
    _obj: T | None
    meta: Any = None
    _path: str | None = field(default=None, repr=False)  # "module:attribute" of a lazy entry

    @property
    def obj(self) -> T:
        if self._obj is None and self._path is not None:
            module, _, attribute = self._path.partition(":")
            self._obj = getattr(importlib.import_module(module), attribute)
        return self._obj  # type: ignore[return-value]


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "model", "export target", "runner": used in error messages
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, meta: Any = None) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("inception_v3", meta=...)``."""

        def add(obj: T) -> T:
            self._add(Entry(name, obj, meta))
            return obj

        return add

    def register_lazy(self, name: str, path: str, meta: Any = None) -> None:
        """``path`` = ``"package.module:attribute"``, imported on first use."""
        self._add(Entry(name, None, meta, path))

    def _add(self, entry: Entry[T]) -> None:
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        self._entries[entry.name] = entry

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
