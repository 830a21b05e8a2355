"""One registry per plug-in kind. The registry is the list `launch.py list` prints.

A plug-in is a class with a `name`, a one-line `description` (its docstring's first
line by default) and a pydantic `Options` model; the config names it and passes options,
which are validated against `Options` before anything runs.

Plug-ins from outside the repository arrive by one of two routes, both handled by
`load_plugins` (loop/plugins.py): a Python entry point in one of the groups of
`ENTRY_POINT_GROUPS` (an installed package), or a module / .py file named in the config's
`plugins:` list. Each registry remembers where every name came from (`source(name)`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T")


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegistryError(ValueError):
    """A plug-in name or its options are wrong; the message says how to fix it."""


BUILTIN_PACKAGES = ("verifiers", "generators", "policies", "loop")
_loading: list[str] = []  # what is being imported right now (an entry point, a plugins: entry)


@contextlib.contextmanager
def loading_from(source: str) -> Iterator[None]:
    """Plug-ins registered inside this block are recorded as coming from `source`."""
    _loading.append(source)
    try:
        yield
    finally:
        _loading.pop()


def _source_of(cls: type) -> str:
    if _loading:
        return _loading[-1]
    top = cls.__module__.split(".")[0]
    return "built-in" if top in BUILTIN_PACKAGES else f"module {cls.__module__}"


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, type[T]] = {}
        self._sources: dict[str, str] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            if name in self._items:
                old = self._items[name]
                if (old.__module__, old.__qualname__) == (cls.__module__, cls.__qualname__) and _loading:
                    return old  # the same plug-in module loaded again (e.g. by a second config): no clash
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered by "
                    f"{old.__module__}.{old.__qualname__} ({self._sources.get(name, 'built-in')}); "
                    f"pick another name"
                )
            cls.name = name  # type: ignore[attr-defined]
            if not hasattr(cls, "Options"):
                cls.Options = NoOptions  # type: ignore[attr-defined]
            self._items[name] = cls
            self._sources[name] = _source_of(cls)
            return cls

        return deco

    def source(self, name: str) -> str:
        """Where `name` came from: 'built-in', 'entry point ...', 'plugins: ...' or 'module ...'."""
        self.get(name)
        return self._sources.get(name, "built-in")

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> type[T]:
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or '(none)'}"
            ) from None

    def options(self, name: str, raw: dict[str, Any] | None) -> BaseModel:
        """Validate `raw` against the plug-in's Options; errors name the field and fix."""
        cls = self.get(name)
        try:
            return cls.Options.model_validate(raw or {})  # type: ignore[attr-defined]
        except ValidationError as e:
            lines = []
            for err in e.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "(options)"
                lines.append(f"  {self.kind} {name!r} option {loc}: {err['msg']} (got {err.get('input')!r})")
            allowed = ", ".join(cls.Options.model_fields) or "none"  # type: ignore[attr-defined]
            raise RegistryError("\n".join(lines) + f"\n  allowed options: {allowed}") from None

    def build(self, name: str, raw: dict[str, Any] | None = None) -> T:
        return self.get(name)(self.options(name, raw))  # type: ignore[call-arg]

    def describe(self) -> list[tuple[str, str, dict[str, str]]]:
        """(name, one-line description, {option: 'type = default  help'}) for every plug-in."""
        rows = []
        for name in self.names():
            cls = self._items[name]
            desc = getattr(cls, "description", None) or (cls.__doc__ or "").strip().splitlines()[0:1]
            desc = desc if isinstance(desc, str) else (desc[0] if desc else "")
            opts = {}
            for fname, field in cls.Options.model_fields.items():  # type: ignore[attr-defined]
                ann = getattr(field.annotation, "__name__", str(field.annotation)).replace("typing.", "")
                default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
                opts[fname] = f"{ann} = {default}" + (f"  {field.description}" if field.description else "")
            rows.append((name, desc, opts))
        return rows
