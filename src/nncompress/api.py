"""The front door: a few verbs over the pipeline, with keyword options and dataclass results.

``compress`` and ``prune`` work on a copy of the caller's model unless
``inplace=True``: a user's model is never changed behind their back. Verbs
that change a model in place end in ``_`` (``prune_``, ``share_weights_``), as
in torch and torchao.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from torch import nn

from nncompress.config import PruneConfig, SensitivityConfig, ShareConfig
from nncompress.data import Splits, load_data, splits_from_loaders
from nncompress.errors import ConfigError
from nncompress.progress import ProgressBars, ProgressFn
from nncompress.report.text import file_table_lines

if TYPE_CHECKING:
    from nncompress.pruning.iterative import PruneResult

DataLike = Union[Splits, str, tuple, list, Mapping[str, Any]]
ProgressLike = Union[None, bool, ProgressFn]


@dataclass(frozen=True)
class CompressConfig:
    """Every stage of ``compress``: ``prune=None`` skips pruning (share and code only);
    a ``sensitivity`` config first scans each layer alone and scales its q."""

    prune: Optional[PruneConfig] = field(default_factory=PruneConfig)
    share: ShareConfig = field(default_factory=ShareConfig)
    sensitivity: Optional[SensitivityConfig] = None

    def __post_init__(self) -> None:
        for name, cls, optional in (
            ("prune", PruneConfig, True),
            ("share", ShareConfig, False),
            ("sensitivity", SensitivityConfig, True),
        ):
            value = getattr(self, name)
            if not (isinstance(value, cls) or (optional and value is None)):
                raise ConfigError(
                    f"CompressConfig.{name} must be a {cls.__name__}"
                    f"{' or None' if optional else ''}, got {type(value).__name__}"
                )


@dataclass(frozen=True)
class LayerTable:
    """Deep Compression's per-layer table of a compressed file; ``print`` shows it."""

    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    file_bytes: int
    dense_bytes: int
    ratio: float

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> "LayerTable":
        return cls(
            list(summary["layers"]),
            dict(summary["totals"]),
            int(summary["file_bytes"]),
            int(summary["dense_bytes"]),
            float(summary["ratio"]),
        )

    def __str__(self) -> str:
        return "\n".join(
            file_table_lines(
                {
                    "layers": self.rows,
                    "totals": self.totals,
                    "file_bytes": self.file_bytes,
                    "dense_bytes": self.dense_bytes,
                    "ratio": self.ratio,
                }
            )
        )


@dataclass(frozen=True)
class CompressResult:
    """What ``compress`` wrote and measured. ``model`` is decoded from the file itself, so
    its score is the file's. ``metric`` names the score (accuracy with labels; agreement or
    mean cosine with the dense model without); ``drop_points`` is the loss in points (1/100
    of the score). ``summary`` holds every figure (as the CLI's ``--json``)."""

    path: Path
    ratio: float
    file_bytes: int
    table: LayerTable
    metric: str
    score_before: float
    score_after: float
    drop_points: float
    model: nn.Module
    summary: dict[str, Any]

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.file_bytes:,} bytes, {self.ratio:.1f}x smaller than dense fp32; "
            f"test {self.metric} {self.score_before:.4f} -> {self.score_after:.4f} ({-self.drop_points:+.2f} pt)"
        )


def progress_callback(progress: ProgressLike) -> Optional[ProgressFn]:
    """``True``: bars on stderr; a callable: called with each ``Progress`` event; None/False: silent."""
    if progress is True:
        return ProgressBars(enabled=True)
    if progress is None or progress is False:
        return None
    if not callable(progress):
        raise ConfigError(f"progress must be True, False, None or a callable, got {type(progress).__name__}")
    return progress


def as_splits(data: DataLike) -> Splits:
    """Splits from what a user holds: Splits, a data spec (``"digits"``, a folder,
    ``"pkg.module:function"``), (train, val[, test]) loaders, or a dict of them."""
    if isinstance(data, Splits):
        return data
    if isinstance(data, str):
        return load_data(data)
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - {"train", "val", "test"})
        if unknown or "train" not in data or "val" not in data:
            raise ConfigError(
                f"data as a dict needs 'train' and 'val' loaders (and optionally 'test'); got keys {sorted(data)}"
            )
        return splits_from_loaders(data["train"], data["val"], data.get("test"))
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return splits_from_loaders(*data)
    raise ConfigError(
        "data must be Splits, a data spec string, (train, val[, test]) loaders, or a dict of them; "
        f"got {type(data).__name__}"
    )


def _working_copy(model: nn.Module, inplace: bool) -> nn.Module:
    """The model the verbs change: the caller's, or a deep copy that keeps its factory record."""
    if inplace:
        return model
    from nncompress.models import factory_record, record_factory

    work = copy.deepcopy(model)
    record = factory_record(model)
    return record_factory(work, record["factory"], record["kwargs"]) if record else work


def _closing(callback: Optional[ProgressFn], work: Callable[[], Any]) -> Any:
    try:
        return work()
    finally:
        if isinstance(callback, ProgressBars):
            callback.close()


def compress(
    model: nn.Module,
    data: DataLike,
    out: Union[str, Path],
    config: Optional[CompressConfig] = None,
    *,
    progress: ProgressLike = None,
    inplace: bool = False,
) -> CompressResult:
    """Prune, share weights, fine-tune and code ``model`` into the file ``out``. The caller's
    model is left as it was unless ``inplace=True`` (then it ends up pruned and shared).

    An untrained MLP on the digits data that ships with scikit-learn, with a short schedule
    (so its accuracy says nothing here):

    >>> import tempfile, torch
    >>> import nncompress as nnc
    >>> from nncompress.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> data = nnc.load_data("digits")
    >>> net = build_model("mlp", data.input_shape, data.num_classes)
    >>> quick = nnc.CompressConfig(prune=nnc.PruneConfig(q_max=1.0, epochs_per_step=1, final_epochs=0, probe=False),
    ...                            share=nnc.ShareConfig(epochs=0))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     result = nnc.compress(net, data, f"{tmp}/mlp.nnc", quick)
    >>> result.ratio > 5, result.file_bytes < 68_904 // 5    # 68,904 bytes of fp32 weights
    (True, True)
    >>> result.table.rows[0]["tensor"], result.metric
    ('fc1.weight', 'accuracy')
    >>> result.model is net                                  # the caller's model is untouched
    False
    """
    from nncompress.pipeline import compress_model

    cfg = config if config is not None else CompressConfig()
    if not isinstance(cfg, CompressConfig):
        raise ConfigError(f"config must be a CompressConfig, got {type(cfg).__name__}")
    splits = as_splits(data)
    work = _working_copy(model, inplace)
    callback = progress_callback(progress)
    summary = _closing(
        callback,
        lambda: compress_model(
            work, {}, splits, out, cfg.prune, cfg.share, progress=callback, sensitivity_cfg=cfg.sensitivity
        ),
    )
    return CompressResult(
        path=Path(out),
        ratio=float(summary["ratio"]),
        file_bytes=int(summary["file_bytes"]),
        table=LayerTable.from_summary(summary),
        metric=str(summary["metric"]),
        score_before=float(summary["dense_test_score"]),
        score_after=float(summary["test_score"]),
        drop_points=float(summary["test_drop_points"]),
        model=load(out, model=work),
        summary=summary,
    )


def prune(
    model: nn.Module,
    data: DataLike,
    config: Optional[PruneConfig] = None,
    *,
    progress: ProgressLike = None,
    inplace: bool = False,
) -> tuple[nn.Module, "PruneResult"]:
    """Iterative pruning with fine-tuning; returns (pruned model, PruneResult). Works on a
    copy unless ``inplace=True``.

    >>> import torch
    >>> import nncompress as nnc
    >>> from nncompress.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> data = nnc.load_data("digits")
    >>> net = build_model("mlp", data.input_shape, data.num_classes)
    >>> pruned, result = nnc.prune(net, data, nnc.PruneConfig(q_max=1.0, epochs_per_step=1, final_epochs=0))
    >>> result.steps[-1].overall_density < 0.6, pruned is net
    (True, False)
    >>> int((pruned.fc1.weight == 0).sum()) > 0 == int((net.fc1.weight == 0).sum())
    True
    """
    from nncompress.pipeline import prune_model

    cfg = config if config is not None else PruneConfig()
    splits = as_splits(data)
    work = _working_copy(model, inplace)
    callback = progress_callback(progress)
    result = _closing(callback, lambda: prune_model(work, splits, cfg, progress=callback))
    return work, result


def load(
    path: Union[str, Path],
    model: Optional[nn.Module] = None,
    *,
    runtime: str = "dense",
    batch_sizes: Sequence[int] = (1, 64),
    threads: Optional[int] = None,
    input_shape: Optional[Sequence[int]] = None,
    int8: bool = False,
) -> nn.Module:
    """A model from a ``.nnc`` file or a checkpoint: into ``model`` when given, else into the
    architecture the file records (a built-in model).

    ``runtime="dense"`` (default) gives the decoded float32 model. ``"sparse"`` runs every pruned
    Linear/Conv1d/Conv2d on CSR kernels; ``"auto"`` times dense against sparse per layer at each of
    ``batch_sizes`` on inputs of ``input_shape`` (default: the one the file records) and keeps the
    faster. ``int8=True`` runs the Linear layers that stay dense on per-channel int8 weights
    (torch.ao dynamic quantization; outputs change slightly). ``threads`` sets torch's thread count
    (process-wide). The choices are in the model's ``nncompress_runtime`` attribute (a RuntimePlan).

    ``path`` here is a file :func:`compress` wrote for the built-in digits MLP:

    >>> import torch
    >>> import nncompress as nnc
    >>> net = nnc.load(path)                                   # the architecture the file records
    >>> type(net).__name__, net(torch.zeros(2, 64)).shape
    ('DigitsMLP', torch.Size([2, 10]))
    >>> fast = nnc.load(path, runtime="sparse")               # pruned layers on sparse kernels
    >>> torch.allclose(fast(torch.ones(2, 64)), net(torch.ones(2, 64)), atol=1e-5)
    True
    """
    from nncompress.pipeline import load_model_file

    if runtime == "dense" and not int8 and threads is None:
        return load_model_file(path, model)[0]
    from nncompress.runtime.convert import check_options, convert_
    from nncompress.runtime.source import check_shape, recorded_shape

    check_options(runtime, batch_sizes, threads)
    shape = check_shape(input_shape)
    net, meta = load_model_file(path, model)
    net, plan = convert_(
        net, runtime, batch_sizes=batch_sizes, input_shape=shape or recorded_shape(meta), int8=int8, threads=threads
    )
    # any value is stored; torch annotates Module.__setattr__ for tensors and modules only
    net.nncompress_runtime = plan  # type: ignore[assignment]
    return net


def export(
    source: Union[str, Path, nn.Module],
    out: Union[str, Path],
    *,
    model: Optional[nn.Module] = None,
    input_shape: Optional[Sequence[int]] = None,
    sparse: bool = False,
) -> Any:
    """Write a model file (or a model) as ``out``: ``.onnx`` (torch.onnx, then checked in onnxruntime:
    the result's ``max_abs_diff``) or ``.safetensors``. ``sparse`` stores pruned weights sparse (CSR parts
    in safetensors; ONNX sparse initializers, made dense again by onnxruntime). Returns an ExportResult.

    ``path`` here is a file :func:`compress` wrote:

    >>> import tempfile
    >>> import nncompress as nnc
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     done = nnc.export(path, f"{tmp}/mlp.safetensors", sparse=True)
    >>> done.format, done.tensors, done.sparse_tensors
    ('safetensors', 6, ['fc1.weight', 'fc2.weight', 'fc3.weight'])
    """
    from nncompress.runtime.export import export_format, export_onnx, export_safetensors
    from nncompress.runtime.source import check_shape, input_shape_for, recorded_shape

    fmt = export_format(out)
    if fmt is None:
        raise ConfigError(f"cannot tell the export format of {out}: name it .onnx or .safetensors")
    shape = check_shape(input_shape)
    meta: dict[str, Any]
    if isinstance(source, nn.Module):
        net, meta = source.eval(), {}
    elif fmt == "safetensors" and model is None:
        from nncompress.pipeline import read_model_file

        return export_safetensors(read_model_file(source).state, out, sparse=sparse)
    else:
        from nncompress.pipeline import load_model_file

        net, meta = load_model_file(source, model)
    if fmt == "safetensors":
        return export_safetensors(net.state_dict(), out, sparse=sparse)
    return export_onnx(net, out, input_shape_for(meta, shape or recorded_shape(meta), "ONNX export"), sparse=sparse)


def layer_table(path: Union[str, Path]) -> LayerTable:
    """The per-layer table of a ``.nnc`` file, from the file alone.

    ``path`` here is a file :func:`compress` wrote for the digits MLP:

    >>> import nncompress as nnc
    >>> table = nnc.layer_table(path)
    >>> [row["tensor"] for row in table.rows][:3]
    ['fc1.weight', 'fc1.bias', 'fc2.weight']
    >>> table.rows[1]["codec"]                                 # biases are stored as they are
    'raw'
    """
    from nncompress.modelfile import layer_table as file_table, read_compressed_header

    box = read_compressed_header(path)
    return LayerTable.from_summary(file_table(box.header, box.section_bytes, box.file_bytes))


__all__ = [
    "CompressConfig",
    "CompressResult",
    "LayerTable",
    "as_splits",
    "compress",
    "export",
    "layer_table",
    "load",
    "progress_callback",
    "prune",
]
