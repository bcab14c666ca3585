"""Models from anywhere: a ``module:factory`` import path, its record, and when it may run.

A model built from an import path is remembered beside the model (a weak
map, so nothing is stored on the model or its tensors) as the record
``{"factory": spec, "kwargs": {...}}`` holding plain JSON values; files carry
that record so the architecture can be rebuilt without pickled code.

A record read from a file was written by whoever made the file. Importing
the named module runs only code already installed or on disk here, but
*calling* the named object with recorded arguments could run anything
(``os:system`` with ``{"command": ...}``). So a recorded factory is called
without asking only when it resolves to an ``nn.Module`` subclass; any other
callable needs the caller to name it (``trust`` = the same spec, or True).
"""

from __future__ import annotations

import inspect
import math
import weakref
from typing import Any, Callable, Mapping, Optional, TypeGuard, Union

from torch import nn

from nncompress.errors import ConfigError, ModelError
from nncompress.imports import import_object, is_import_spec

Trust = Union[bool, str]

_RECORDS: "weakref.WeakKeyDictionary[nn.Module, dict[str, Any]]" = weakref.WeakKeyDictionary()


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON (tuples become lists), or ModelError naming the bad part."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ModelError(f"model kwargs {where} is {value}: only finite numbers can be recorded")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ModelError(f"model kwargs {where} has non-string key(s) {bad[:3]}: use string keys")
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise ModelError(
        f"model kwargs {where} is a {type(value).__name__}: a file can only record plain JSON "
        "values (numbers, strings, true/false, null, lists and objects of them)"
    )


def plain_kwargs(kwargs: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Check and normalise factory keyword arguments to what a file can record."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise ModelError(f"model kwargs must be a mapping of names to values, not a {type(kwargs).__name__}")
    return _plain(kwargs, "kwargs")


def _check_spec(spec: Any) -> str:
    if not is_import_spec(spec):
        raise ModelError(
            f"model factory {spec!r} is not an import path of the form 'package.module:factory' "
            "or 'path/to/file.py:factory'"
        )
    return spec


def record_factory(model: nn.Module, spec: str, kwargs: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Remember that ``model`` is what ``spec(**kwargs)`` builds, so checkpoints and
    .nnc files record it; for models built by hand rather than by ``build_model``.

    >>> from torch import nn
    >>> import nncompress as nnc
    >>> from nncompress.models.factory import factory_record
    >>> net = nnc.record_factory(nn.Linear(4, 2), "torch.nn:Linear", {"in_features": 4, "out_features": 2})
    >>> factory_record(net)["factory"], factory_record(net)["kwargs"]
    ('torch.nn:Linear', {'in_features': 4, 'out_features': 2})
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"record_factory needs an nn.Module, got a {type(model).__name__}")
    _RECORDS[model] = {"factory": _check_spec(spec), "kwargs": plain_kwargs(kwargs)}
    return model


def factory_record(model: nn.Module) -> Optional[dict[str, Any]]:
    """The recorded factory of ``model`` (a copy), or None."""
    record = _RECORDS.get(model)
    return None if record is None else {"factory": record["factory"], "kwargs": dict(record["kwargs"])}


def _call(factory: Callable[..., Any], spec: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = factory(**kwargs)
    except (ModelError, ConfigError):
        raise
    except Exception as exc:
        raise ModelError(f"model factory {spec!r} failed with kwargs {kwargs}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model factory {spec!r} returned a {type(model).__name__}, not a torch.nn.Module: "
            "name a function or class that builds the model"
        )
    return model


def build_from_spec(spec: str, kwargs: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Import ``spec``, call it with ``kwargs`` and record the result (the user named it: no trust check)."""
    spec = _check_spec(spec)
    plain = plain_kwargs(kwargs)
    factory = import_object(spec, "model")
    if not callable(factory):
        raise ModelError(f"model {spec!r} names a {type(factory).__name__}, not a function or class")
    model = _call(factory, spec, plain)
    _RECORDS[model] = {"factory": spec, "kwargs": plain}
    return model


def is_factory_record(record: Any) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(record, Mapping) and "factory" in record


def names_recorded_factory(
    record: Any, model_name: Optional[str], model_kwargs: Optional[Mapping[str, Any]]
) -> Optional[str]:
    """``model_name`` when the user names the very factory a file records, with no kwargs of their own: the
    file's record (its kwargs included) then builds the model, trusted because the user named it; else None."""
    same = (
        model_name
        and is_import_spec(model_name)
        and model_kwargs is None
        and is_factory_record(record)
        and record.get("factory") == model_name
    )
    return model_name if same else None


def trusted_factory(
    record: Mapping[str, Any], trust: Trust = False, source: str = "the file", error: type[Exception] = ModelError
) -> tuple[Callable[..., nn.Module], str, dict[str, Any]]:
    """The callable a file's factory record names, once the trust policy allows it:
    an ``nn.Module`` subclass always; anything else only when ``trust`` is True or
    the same spec. Returns (callable, spec, kwargs); raises ``error`` otherwise."""
    spec, kwargs = record.get("factory"), record.get("kwargs", {})
    if not is_import_spec(spec) or not isinstance(kwargs, Mapping) or set(record) - {"factory", "kwargs"}:
        raise error(
            f"{source}: its architecture record {dict(record)!r} is malformed (expected "
            "{'factory': 'module:name', 'kwargs': {...}}): pass the model to load it"
        )
    if isinstance(trust, str) and trust != spec:
        raise error(
            f"{source} records the model factory {spec!r}, not {trust!r}: pass --model {spec} "
            "(or a model instance in Python) to load it"
        )
    try:
        kwargs = plain_kwargs(kwargs)
    except ModelError as exc:
        raise error(f"{source}: {exc}") from exc
    named = trust is True or trust == spec
    # a file in the current folder could sit beside a downloaded one: without the user's word only
    # installed modules are searched
    try:
        factory = import_object(spec, f"model factory recorded in {source}", search_cwd=named)
    except ConfigError as exc:
        if named:
            raise
        raise error(
            f"{exc}; if you trust it, pass --model {spec} (in Python: trust_factory={spec!r}), or pass a model instance"
        ) from None
    is_class = inspect.isclass(factory) and issubclass(factory, nn.Module)
    if not is_class and not named:
        kind = "a function" if inspect.isfunction(factory) else f"a {type(factory).__name__}"
        raise error(
            f"{source} records the model factory {spec!r}, which is {kind}, not an nn.Module class: "
            "calling a callable named by a file could run any code, so it is only called when you "
            f"name it yourself: pass --model {spec} (in Python: trust_factory={spec!r}), "
            "or pass a model instance"
        )
    if not callable(factory):
        raise error(f"{source} records the model factory {spec!r}, which is not callable")
    return (lambda **kw: _call(factory, spec, kw)), spec, kwargs


def remember(model: nn.Module, spec: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """Record a model rebuilt from a file's factory record, so saving it again keeps the record."""
    _RECORDS[model] = {"factory": spec, "kwargs": plain_kwargs(kwargs)}
    return model
