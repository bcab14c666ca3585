"""Model inputs of any structure, and the one output tensor a run judges.

A model may take one tensor (images), several positional tensors, or keyword
tensors (tokenised text: ``input_ids``, ``attention_mask``, ...). Every tensor
of one input set shares the leading batch dimension, so the loops can slice,
shuffle and move them alike without knowing what they hold. Dtypes are never
touched: token ids stay int64, half-precision images stay half.

Which output is judged (``pick_output``), in order:

1. a caller's ``output`` callable, given whatever the model returned;
2. a tensor, as returned;
3. an object or mapping with ``logits`` (a Hugging Face ``ModelOutput``): the logits;
4. else its ``sentence_embedding``, ``last_hidden_state``, ``pooler_output`` or
   ``embeddings``, the first of these present;
5. a tuple or list: its first element, picked by the same rule.

The source ("logits", "tensor", "last_hidden_state", ...) is returned beside the
tensor; the label-free objective's "auto" rule reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Optional, Sequence, Union, cast

import torch
from torch import nn

from nncompress.errors import DataError, ModelError

__all__ = [
    "Inputs",
    "OutputFn",
    "EMBEDDING_KEYS",
    "check_inputs",
    "concat",
    "count",
    "describe",
    "model_device",
    "model_outputs",
    "pick_output",
    "take",
    "to_device",
]

Inputs = Union[torch.Tensor, tuple, dict]
OutputFn = Callable[[Any], torch.Tensor]
Index = Union[torch.Tensor, slice]

# Tried in this order when a model returns neither a tensor nor logits.
EMBEDDING_KEYS = ("sentence_embedding", "last_hidden_state", "pooler_output", "embeddings")


def _leaves(inputs: Inputs) -> list[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    if isinstance(inputs, Mapping):
        return list(inputs.values())
    return list(inputs)


def check_inputs(inputs: Any, what: str) -> None:
    """Refuse a structure the loops cannot slice: each leaf a tensor, one shared batch size."""
    if isinstance(inputs, Mapping):
        if not inputs or not all(isinstance(k, str) for k in inputs):
            raise DataError(f"{what}: a dict of inputs needs string keys and at least one tensor")
    elif isinstance(inputs, (tuple, list)):
        if not inputs:
            raise DataError(f"{what}: an empty tuple of inputs")
    elif not isinstance(inputs, torch.Tensor):
        raise DataError(
            f"{what}: inputs must be a tensor, a tuple of tensors or a dict of tensors, got {type(inputs).__name__}"
        )
    leaves = _leaves(inputs)
    bad = [type(t).__name__ for t in leaves if not isinstance(t, torch.Tensor)]
    if bad:
        raise DataError(f"{what}: every input must be a tensor, got {', '.join(bad)}")
    if any(t.dim() == 0 for t in leaves):
        raise DataError(f"{what}: an input tensor has no batch dimension (0-d)")
    sizes = {len(t) for t in leaves}
    if len(sizes) > 1:
        raise DataError(f"{what}: the input tensors disagree on the batch size: {describe(inputs)}")


def count(inputs: Inputs) -> int:
    """Number of examples (the shared leading dimension)."""
    return len(_leaves(inputs)[0])


def take(inputs: Inputs, idx: Index) -> Inputs:
    """The examples at ``idx`` (an index tensor or a slice), same structure."""
    if isinstance(inputs, torch.Tensor):
        return inputs[idx]
    if isinstance(inputs, Mapping):
        return {k: v[idx] for k, v in inputs.items()}
    return tuple(t[idx] for t in inputs)


def to_device(inputs: Inputs, device: torch.device | str) -> Inputs:
    """Move every tensor; dtypes are kept."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: v.to(device) for k, v in inputs.items()}
    return tuple(t.to(device) for t in inputs)


def detach_cpu(inputs: Inputs) -> Inputs:
    if isinstance(inputs, torch.Tensor):
        return inputs.detach().cpu()
    if isinstance(inputs, Mapping):
        return {k: v.detach().cpu() for k, v in inputs.items()}
    return tuple(t.detach().cpu() for t in inputs)


def describe(inputs: Inputs) -> str:
    """Shapes and dtypes, for messages: ``input_ids int64 [2, 16], attention_mask int64 [2, 16]``."""

    def one(t: Any) -> str:
        return (
            f"{str(t.dtype).replace('torch.', '')} {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        )

    if isinstance(inputs, torch.Tensor):
        return one(inputs)
    if isinstance(inputs, Mapping):
        return "{" + ", ".join(f"{k}: {one(v)}" for k, v in inputs.items()) + "}"
    return "(" + ", ".join(one(t) for t in inputs) + ")"


def _structure(inputs: Inputs) -> tuple:
    """What must agree between batches: kind, keys, per-leaf non-batch shape and dtype."""
    if isinstance(inputs, torch.Tensor):
        return ("tensor", tuple(inputs.shape[1:]), inputs.dtype)
    if isinstance(inputs, Mapping):
        return ("dict", tuple((k, tuple(v.shape[1:]), v.dtype) for k, v in inputs.items()))
    return ("tuple", tuple((tuple(t.shape[1:]), t.dtype) for t in inputs))


def concat(parts: Sequence[Inputs], what: str) -> Inputs:
    """Join batches along the batch dimension; batches of differing shapes are refused."""
    if not parts:
        raise DataError(f"{what} yields no batches")
    first = _structure(parts[0])
    for i, part in enumerate(parts[1:], 1):
        here = _structure(part)
        if (
            here[0] != first[0]
            or (first[0] == "dict" and [k for k, *_ in here[1]] != [k for k, *_ in first[1]])
            or (first[0] == "tuple" and len(here[1]) != len(first[1]))
        ):
            raise DataError(
                f"{what}: batch {i} is {describe(part)} but batch 0 is {describe(parts[0])}; "
                "every batch must have the same structure"
            )
        if here != first:
            raise DataError(
                f"{what}: inputs of different shapes (batch 0 {describe(parts[0])}, batch {i} "
                f"{describe(part)}); pad every batch to one fixed length (e.g. a tokenizer's "
                "padding='max_length', max_length=N) so the examples can be held as one tensor"
            )
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(cast(list[torch.Tensor], list(parts)))  # every part has batch 0's structure
    if isinstance(parts[0], Mapping):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return tuple(torch.cat([p[j] for p in parts]) for j in range(len(parts[0])))


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """``model(x)``, ``model(*x)`` or ``model(**x)`` for a tensor, tuple or dict."""
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(*inputs)


def _field(out: Any, key: str) -> Optional[torch.Tensor]:
    value = out.get(key) if isinstance(out, Mapping) else getattr(out, key, None)
    return value if isinstance(value, torch.Tensor) else None


def pick_output(out: Any, output: Optional[OutputFn] = None) -> tuple[torch.Tensor, str]:
    """(the tensor a run judges, where it came from); the rule is in the module docstring."""
    if output is not None:
        picked = output(out)
        if not isinstance(picked, torch.Tensor):
            raise ModelError(f"the output callable returned {type(picked).__name__}, not a tensor")
        return picked, "output callable"
    if isinstance(out, torch.Tensor):
        return out, "tensor"
    if isinstance(out, (tuple, list)) and not hasattr(out, "_fields"):
        if out:
            return pick_output(out[0])
    else:
        for key in ("logits",) + EMBEDDING_KEYS:
            value = _field(out, key)
            if value is not None:
                return value, key
    raise ModelError(
        f"cannot tell which output of the model to judge (it returned {type(out).__name__}); pass "
        "output=lambda out: ... that returns the tensor (logits or embeddings)"
    )


def model_outputs(model: nn.Module, inputs: Inputs, output: Optional[OutputFn] = None) -> torch.Tensor:
    """Run ``model`` on inputs of any structure and return the one output tensor judged."""
    return pick_output(call_model(model, inputs), output)[0]


def model_device(model: nn.Module) -> torch.device:
    """Where the model lives: batches are moved there (data stays on the CPU)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
