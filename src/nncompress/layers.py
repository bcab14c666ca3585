"""Which layers of a model are compressible, and picking some of them by a spec.

Pruning and weight sharing both choose their layers here (and never import
each other), so ``fc``, ``Conv2d`` or ``encoder.*.attention.*`` mean the same
thing in ``PruneConfig.layers``, ``ShareConfig.layers`` and their ``exclude``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from nncompress.errors import ConfigError

COMPRESSIBLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
#: The type of a layer in ``COMPRESSIBLE``: each holds a ``weight`` tensor.
Compressible = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Embedding
KINDS = ("fc", "conv", "embedding")


def layer_kind(module: nn.Module) -> str:
    """``"fc"``, ``"conv"`` or ``"embedding"``: what bit width and pruning group a layer gets."""
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.Linear):
        return "fc"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    raise ConfigError(f"{type(module).__name__} is not a compressible layer (Linear, Conv1d/2d/3d, Embedding)")


def compressible_layers(model: nn.Module) -> dict[str, Compressible]:
    """Every compressible layer by qualified name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, COMPRESSIBLE)}


def _tokens(spec: str, what: str) -> list[str]:
    if not isinstance(spec, str):
        raise ConfigError(
            f"{what} must be a string of comma-separated layer kinds, classes or names, not {spec!r}", field=what
        )
    return [t.strip() for t in spec.split(",") if t.strip()]


def _matches(token: str, name: str, module: nn.Module) -> bool:
    if token == "all":
        return True
    if token in KINDS:
        return layer_kind(module) == token
    return type(module).__name__ == token or fnmatchcase(name, token)


def _pick(layers: dict[str, Compressible], spec: str, what: str) -> set[str]:
    """Names matched by ``spec``. A kind or ``all`` may match nothing (a model without
    convolutions still takes the default "fc,conv"); a class name or a glob that
    matches nothing is a typo and raises."""
    picked: set[str] = set()
    for token in _tokens(spec, what):
        hit = {n for n, m in layers.items() if _matches(token, n, m)}
        if not hit and token != "all" and token not in KINDS:
            raise ConfigError(
                f"{what}: {token!r} matches no compressible layer; the model's compressible layers "
                f"are {', '.join(f'{n} ({type(m).__name__})' for n, m in layers.items()) or 'none'}",
                field=what,
            )
        picked |= hit
    return picked


def select_layers(model: nn.Module, spec: str, exclude: str = "", *, what: str = "layers") -> dict[str, Compressible]:
    """The compressible layers ``spec`` names, minus those ``exclude`` names, in registration order.

    Both are comma-separated tokens: a kind (``fc``, ``conv``, ``embedding``), a class
    name (``Linear``, ``Conv2d``, ``Embedding``...), ``all``, or an fnmatch glob on the
    qualified module name (``encoder.layer.*.attention.*``; ``*`` crosses dots). Kinds
    win over names: write ``[f]c`` to name a module called ``fc`` alone.
    """
    layers = compressible_layers(model)
    chosen = _pick(layers, spec, what)
    dropped = _pick(layers, exclude, f"{what} exclude") if exclude else set()
    return {n: m for n, m in layers.items() if n in chosen and n not in dropped}


def check_spec(spec: str, what: str) -> None:
    """Refuse an empty or non-string spec before any model is seen (configs call this)."""
    if not _tokens(spec, what):
        raise ConfigError(
            f"{what} must name at least one layer kind, class or name (e.g. 'fc,conv'), got {spec!r}", field=what
        )
