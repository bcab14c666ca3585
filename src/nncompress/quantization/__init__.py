"""Weight sharing (Deep Compression stage 2): k-means codebooks and centroid fine-tuning."""
from nncompress.quantization.kmeans import INITS, kmeans_1d
from nncompress.quantization.shared import (
    CentroidTuner,
    SharedLayer,
    default_bits,
    share_weights_,
    unshared_parameters,
)

__all__ = [
    "INITS",
    "CentroidTuner",
    "SharedLayer",
    "default_bits",
    "kmeans_1d",
    "share_weights_",
    "unshared_parameters",
]
