"""Resolve a user's ``module:attribute`` or ``path/to/file.py:attribute`` to a Python object.

Models and data from anywhere are named this way on the command line and in
recipes. The current directory is searched first, as ``python -m`` would, so
``--model nets:MyNet`` finds ``./nets.py`` from a console script too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, TypeGuard

from nncompress.errors import ConfigError


def is_import_spec(spec: object) -> TypeGuard[str]:
    """Whether ``spec`` names an object in a module (``a.b:c`` or ``file.py:c``), not a built-in name."""
    return isinstance(spec, str) and ":" in spec and not spec.startswith(":") and not spec.endswith(":")


def _split(spec: str, what: str) -> tuple[str, str]:
    module, _, attr = spec.rpartition(":")
    if not module or not attr or not all(part.isidentifier() for part in attr.split(".")):
        raise ConfigError(f"{what} {spec!r} is not of the form 'package.module:name' or 'path/to/file.py:name'")
    return module, attr


def _load_file(path: Path, what: str, spec: str) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"{what} {spec!r}: no file {path}")
    name = f"nncompress_user_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"{what} {spec!r}: cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"{what} {spec!r}: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _load_module(module: str, what: str, spec: str, search_cwd: bool) -> ModuleType:
    cwd = os.getcwd()
    added = search_cwd and cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{what} {spec!r}: no module named {exc.name!r} (searched the current directory and the installed packages)"
        ) from exc
    except Exception as exc:
        raise ConfigError(f"{what} {spec!r}: importing {module} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if added and sys.path and sys.path[0] == cwd:
            sys.path.pop(0)


def names_file(spec: str) -> bool:
    """Whether ``spec`` names a Python file (``path/to/file.py:name``) rather than a module."""
    module = spec.rpartition(":")[0]
    return module.endswith(".py") or "/" in module or os.sep in module


def import_object(spec: str, what: str = "import path", *, search_cwd: bool = True) -> Any:
    """The object ``spec`` names; ``what`` (e.g. "--model") starts every error message.
    With ``search_cwd=False`` only installed modules are imported (no file paths, no
    current directory): what a spec read from someone else's file may reach."""
    module, attr = _split(spec, what)
    if names_file(spec):
        if not search_cwd:
            raise ConfigError(f"{what} {spec!r} names a file, which is imported only when you name it yourself")
        mod = _load_file(Path(module), what, spec)
    else:
        mod = _load_module(module, what, spec, search_cwd)
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {spec!r}: {mod.__name__} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
