"""Plug-ins from outside the repository: entry points of installed packages, and the
config's `plugins:` list (importable module names or .py files).

    # the user's pyproject.toml: one group per kind; the value is a module (importing it
    # registers its classes) or a class (registered under the entry point's name)
    [project.entry-points."reasoning_loop.verifiers"]
    my_checker = "my_pkg.checks:MyChecker"

    # or, without packaging anything, in the run's YAML:
    plugins: [my_pkg.checks, ./my_plugins.py]

Loading is idempotent: every process (the driver, each Ray worker, an RL trainer reading
an export) calls `load_plugins(cfg.plugins)` and gets the same registries.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from loop.registry import Registry, RegistryError, loading_from

# entry point group -> (package whose import registers the built-ins, its registry)
ENTRY_POINT_GROUPS = {
    "reasoning_loop.verifiers": ("verifiers", "verifiers.base", "VERIFIERS"),
    "reasoning_loop.generators": ("generators", "generators.base", "GENERATORS"),
    "reasoning_loop.policies": ("policies", "policies.base", "POLICIES"),
}
_entry_points_loaded = False


class PluginError(ValueError):
    """A plug-in could not be loaded; the message names it, where it came from and how to fix it."""


def _registry(group: str) -> Registry:
    package, module, attr = ENTRY_POINT_GROUPS[group]
    importlib.import_module(package)  # the built-ins first: a plug-in may not take their names
    return getattr(importlib.import_module(module), attr)


def _register_object(obj: Any, name: str, registry: Registry, where: str) -> None:
    """An entry point's value: a module registers itself on import; a class is registered
    under the entry point's name unless its own decorator already did."""
    if inspect.ismodule(obj):
        return
    if not inspect.isclass(obj):
        raise PluginError(f"{where} is a {type(obj).__name__}; it must name a module or a plug-in class")
    if any(registry.get(n) is obj for n in registry.names()):
        return
    registry.register(name)(obj)


def load_entry_points() -> None:
    """Every installed package's plug-ins, once per process."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    for group in ENTRY_POINT_GROUPS:
        registry = _registry(group)
        for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
            where = f"entry point {group}:{ep.name} = {ep.value} ({dist})"
            try:
                with loading_from(where):
                    _register_object(ep.load(), ep.name, registry, where)
            except (PluginError, RegistryError):
                raise
            except Exception as e:  # noqa: BLE001 - a third-party import may raise anything
                raise PluginError(f"{where} failed to load: {type(e).__name__}: {e}; fix or uninstall "
                                  f"{ep.dist.name if ep.dist else 'that package'}") from e
    _entry_points_loaded = True


def _import_file(path: Path) -> None:
    name = f"reasoning_loop_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[name]
        raise


def load_plugin(spec: str) -> None:
    """One `plugins:` entry: a dotted module name, or a path to a .py file."""
    where = f"plugins: {spec}"
    try:
        with loading_from(where):
            if spec.endswith(".py"):
                path = Path(spec).expanduser()
                if not path.is_file():
                    raise PluginError(f"{where}: no such file {path.resolve()} (a relative path is taken from "
                                      f"the directory you run launch.py in)")
                _import_file(path.resolve())
            else:
                importlib.import_module(spec)
    except (PluginError, RegistryError):
        raise
    except ModuleNotFoundError as e:
        raise PluginError(f"{where}: cannot import {e.name!r}; install the package that provides it "
                          f"(pip install -e <its directory>) or put its directory on PYTHONPATH, "
                          f"or name a .py file instead") from None
    except Exception as e:  # noqa: BLE001
        raise PluginError(f"{where} failed to import: {type(e).__name__}: {e}") from e


def load_plugins(specs: list[str] | tuple[str, ...] = ()) -> None:
    """The built-ins, every entry point, then the given `plugins:` entries."""
    for group in ENTRY_POINT_GROUPS:
        _registry(group)
    load_entry_points()
    for spec in specs:
        load_plugin(spec)


def absolute_spec(spec: str) -> str:
    """A .py path made absolute (Ray workers and later `resume`s run elsewhere); modules as given."""
    return str(Path(spec).expanduser().resolve()) if spec.endswith(".py") else spec
