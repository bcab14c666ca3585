"""A model built from an architecture record to take a stored state, and that state loaded into it strictly."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import torch
from torch import nn

from nncompress.errors import CheckpointError, ModelError
from nncompress.models import fit_shapes_, from_record, is_factory_record, remember, trusted_factory
from nncompress.models.factory import Trust

log = logging.getLogger("nncompress.train.checkpoint")  # the logger these records always had


def _materialises_from_state(model: nn.Module) -> bool:
    """Whether every tensor of a meta-device ``model`` is in its state dict, so
    allocating it empty and loading the state leaves nothing uninitialised."""
    in_state = {id(t) for t in model.state_dict(keep_vars=True).values()}
    tensors = [t for m in model.modules() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
    loose = [v for m in model.modules() for v in vars(m).values() if isinstance(v, torch.Tensor)]
    return all(id(t) in in_state for t in tensors) and not loose


def model_for_state(
    arch: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    *,
    trust_factory: Trust = False,
    source: str = "the file",
    error: type[Exception] = CheckpointError,
) -> nn.Module:
    """A model of the recorded architecture, shaped to take ``state`` (load it next, with
    ``load_state``: the model may still be on the meta device, to take the state's tensors).

    A factory runs on the meta device first (no memory) and what it builds is
    checked against the stored tensors, so a record that does not describe
    these weights is refused before anything is allocated. When the state
    covers every tensor, the model is then allocated at the stored (possibly
    shrunk) sizes only: kwargs asking for a giant model cost nothing. A model
    with tensors outside its state dict (non-persistent buffers) is built
    again for real, at the factory's sizes, and fitted."""
    if not is_factory_record(arch):
        return _builtin_for_state(arch, state, source, error)
    factory, spec, kwargs = trusted_factory(arch, trust_factory, source, error)
    try:
        with torch.device("meta"):
            probe: Optional[nn.Module] = factory(**kwargs)
    except (ModelError, NotImplementedError, RuntimeError) as exc:  # e.g. a factory that reads its own files
        log.info("model factory %s cannot run on the meta device (%s); building it directly", spec, exc)
        probe = None
    if probe is not None:
        built = _from_probe(
            probe,
            state,
            error,
            f"{source} records the model factory {spec} with kwargs {kwargs}, "
            "but what it builds does not match the stored weights ({problem}): the file is damaged "
            "or the factory has changed since it was written; pass a matching model to load it",
        )
        if built is not None:
            return remember(built, spec, kwargs)
    model = factory(**kwargs)
    fit_shapes_(model, state)
    return remember(model, spec, kwargs)


def _from_probe(
    probe: nn.Module, state: Mapping[str, torch.Tensor], error: type[Exception], message: str
) -> Optional[nn.Module]:
    """A meta-device ``probe`` fitted to ``state`` and checked against it (``message``, with
    ``{problem}`` filled in, when it does not match), when the state covers every tensor it
    holds (load the state next), else None (it must be built for real)."""
    fit_shapes_(probe, state)
    problem = state_mismatch(probe, state)
    if problem:
        raise error(message.replace("{problem}", problem))
    if not _materialises_from_state(probe):
        return None
    tied = len(list(probe.named_parameters(remove_duplicate=False))) != len(list(probe.named_parameters()))
    # untied, it stays on the meta device: ``load_state`` then hands it the state's own tensors (no second
    # copy of the weights while loading); tied weights are allocated, so they stay one parameter
    return probe.to_empty(device="cpu") if tied else probe


def _builtin_for_state(
    arch: Mapping[str, Any], state: Mapping[str, torch.Tensor], source: str, error: type[Exception]
) -> nn.Module:
    """A built-in model of the record, built on the meta device first and checked against ``state``: a
    record asking for huge sizes costs nothing unless the stored tensors have them too."""
    with torch.device("meta"):
        probe = from_record(dict(arch))  # from_record takes a dict; a Mapping is copied into one
    built = _from_probe(
        probe,
        state,
        error,
        f"{source} records the model {arch.get('name')!r} with config "
        f"{arch.get('config')}, but it does not match the stored weights ({{problem}}): the file is "
        "damaged; pass a matching model to load it",
    )
    if built is not None:
        return built
    model = from_record(dict(arch))
    fit_shapes_(model, state)
    return model


def state_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading into ``model`` strictly ('' when nothing)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:6])}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:6])}")
    if shapes:
        parts.append("; ".join(shapes[:4]))
    return "; ".join(parts)


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Strict load with a message that names every mismatch."""
    problem = state_mismatch(model, state)
    if problem:
        raise CheckpointError("checkpoint does not match the model: " + problem)
    own = model.state_dict()
    # casting int8/bool weights to float would load garbage without a word
    cast = [f"{k} ({state[k].dtype})" for k in own if own[k].is_floating_point() and not state[k].is_floating_point()]
    if cast:
        raise CheckpointError(
            f"checkpoint tensor(s) {', '.join(cast[:6])} are not floating point but the model's "
            "are: nncompress does not dequantize; dequantize them (or save the float weights) "
            "and load again"
        )
    # a model on the meta device (``model_for_state``) takes the state's tensors themselves
    assign = any(t.is_meta for t in own.values())
    converted = {k: v.to(own[k].dtype) for k, v in state.items()}
    if assign:
        converted = _owned(converted)
    model.load_state_dict(converted, assign=assign)


def _owned(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every tensor made the sole, contiguous user of its memory: a model that
    takes them as its parameters must not find two sharing bytes (a file may store views of
    one storage, or an expanded tensor), or training one would write the other."""
    out, seen = {}, set()
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        alone = (
            v.is_contiguous()
            and v.storage_offset() == 0
            and ptr not in seen
            and v.untyped_storage().nbytes() == v.numel() * v.element_size()
        )
        out[k] = v if alone else v.clone(memory_format=torch.contiguous_format)
        seen.add(out[k].untyped_storage().data_ptr())
    return out
