"""The weight-sharing config: ShareConfig (codebooks, k-means, centroid fine-tuning and coding options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from nncompress.coding.schema import MAX_CODEBOOK_BITS, MAX_REL_BITS
from nncompress.config_base import (
    TrainConfig,
    _check_layer_spec,
    _check_optimizer,
    _check_seed,
    _Config,
    _finite,
    _non_negative_int,
    _positive_int,
    _require,
)


SHARE_INITS = ("auto", "linear", "density", "random")
RAW_DTYPES = ("auto", "float32", "float16")


@dataclass(frozen=True)
class ShareConfig(_Config):
    """Weight sharing (Deep Compression stage 2) and coding options.

    ``select`` chooses the shared layers (kinds ``fc``, ``conv``, ``embedding``,
    class names, ``all`` or globs on module names), ``exclude`` removes some; the
    rest of the model is stored raw. Codebooks have 2**bits entries (``fc_bits``
    for Linear, ``conv_bits`` for convolutions, ``embedding_bits`` for
    embeddings, ``layer_bits`` per layer overrides). Convolutions start at 5
    bits, not Deep Compression's 8: with the bit search widening a layer where
    validation asks for it, 5 made a pruned ResNet's file 25-28 % smaller and
    LeNet-5's 3-12 %, at test drops within their noise
    (bench/results/sharing_experiments.md). ``init`` seeds k-means:
    ``auto`` measures linear and density per layer and keeps linear unless its
    quantisation error is more than twice density's (heavy-tailed weights,
    where linear spends its centroids on a few outliers). Centroids are then
    fine-tuned for ``epochs``: each moves by ``centroid_lr`` times the sum of
    its members' gradients (with ``momentum`` on that sum; 0 is Deep
    Compression's plain rule), while biases train with ``lr``. ``rel_bits`` is
    the relative-index width, ``"auto"`` picking the smallest file per layer.
    A layer with few surviving weights gets a smaller codebook: at most one
    centroid per ``min_members`` weights, so a 256-entry codebook never
    outweighs a 500-weight convolution. The default 2 matches float16
    codebooks, where an entry costs about what two 8-bit indices cost; at 8 the
    125 weights left in LeNet-300-100's output layer got 8 centroids, and
    k-means moved the net's validation outputs 4-10 times as far as with 32
    (bench/results/sharing_experiments.md). ``codebook_dtype`` ``"auto"`` stores a
    codebook as float16 when every centroid is 0 or within float16's normal
    range (rounding far below a cluster's spread), else float32. ``raw_dtype``
    ``"auto"`` stores unshared float tensors of 4096 or more values as float16
    when they fit its range, smaller ones (biases, norms) as float32.
    ``tolerance`` (points of the validation score, as the pruner's) turns the
    widths into starting points: while sharing costs the model it is given more
    than that, the layers costing the most drop per weight get one more bit, up
    to ``max_bits`` (quantization/bitsearch.py); None keeps the widths as given.
    ``quantize`` names layers (same forms as ``select``) whose weights are stored
    uniformly quantised instead of shared: ``quantize_dtype`` int8 or int16 with one
    float32 scale per output channel (format version 4); pruned zeros stay zero.
    ``batchnorm`` "affine" stores each BatchNorm as the scale and shift it computes in
    eval mode (``models.batchnorm``): the same eval outputs from half its vectors, the
    other half constants; "exact" (default) stores its four vectors as they are.
    """

    fc_bits: int = 5
    conv_bits: int = 5
    embedding_bits: int = 5
    layer_bits: Mapping[str, int] = field(default_factory=dict)
    select: str = "fc,conv,embedding"
    exclude: str = ""
    init: str = "linear"
    embedding_init: str = "auto"
    epochs: int = 5
    lr: float = 0.01
    centroid_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    rel_bits: Any = "auto"
    min_members: int = 2
    raw_dtype: str = "auto"
    codebook_dtype: str = "auto"
    tolerance: Optional[float] = None
    max_bits: int = 10
    quantize: str = ""
    quantize_dtype: str = "int8"
    batchnorm: str = "exact"
    seed: int = 0

    def __post_init__(self) -> None:
        _require(
            self.tolerance is None or (_finite(self.tolerance) and 0 <= self.tolerance <= 100),
            "tolerance",
            "a number of points in [0, 100], or None for the widths as given",
            self.tolerance,
        )
        _require(
            _positive_int(self.max_bits) and self.max_bits <= MAX_CODEBOOK_BITS,
            "max_bits",
            f"an integer in 1..{MAX_CODEBOOK_BITS}",
            self.max_bits,
        )
        _require(_positive_int(self.min_members), "min_members", "an integer >= 1", self.min_members)
        _require(self.raw_dtype in RAW_DTYPES, "raw_dtype", "'auto', 'float32' or 'float16'", self.raw_dtype)
        _check_layer_spec(self.select, "select")
        _check_layer_spec(self.exclude, "exclude", empty_ok=True)
        _check_layer_spec(self.quantize, "quantize", empty_ok=True)
        _require(self.quantize_dtype in ("int8", "int16"), "quantize_dtype", "'int8' or 'int16'", self.quantize_dtype)
        _require(self.batchnorm in ("exact", "affine"), "batchnorm", "'exact' or 'affine'", self.batchnorm)
        _require(
            self.codebook_dtype in ("auto", "float32", "float16"),
            "codebook_dtype",
            "'auto', 'float32' or 'float16'",
            self.codebook_dtype,
        )
        for name, key, bits in [
            ("fc_bits", None, self.fc_bits),
            ("conv_bits", None, self.conv_bits),
            ("embedding_bits", None, self.embedding_bits),
            *[("layer_bits", k, v) for k, v in dict(self.layer_bits).items()],
        ]:
            _require(
                _positive_int(bits) and bits <= MAX_CODEBOOK_BITS,
                name,
                f"an integer in 1..{MAX_CODEBOOK_BITS}",
                bits,
                key=key,
            )
        object.__setattr__(self, "layer_bits", dict(self.layer_bits))
        _require(self.init in SHARE_INITS, "init", f"one of {SHARE_INITS}", self.init)
        _require(self.embedding_init in SHARE_INITS, "embedding_init", f"one of {SHARE_INITS}", self.embedding_init)
        _require(_non_negative_int(self.epochs), "epochs", "an integer >= 0", self.epochs)
        _check_optimizer(self.lr, self.momentum, self.weight_decay, self.batch_size)
        _require(
            _finite(self.centroid_lr) and self.centroid_lr > 0, "centroid_lr", "a finite number > 0", self.centroid_lr
        )
        _check_seed(self.seed)
        _require(
            self.rel_bits == "auto" or (_positive_int(self.rel_bits) and self.rel_bits <= MAX_REL_BITS),
            "rel_bits",
            f"'auto' or an integer in 1..{MAX_REL_BITS}",
            self.rel_bits,
        )

    def finetune(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            warmup=0.0,
            seed=self.seed,
        )
