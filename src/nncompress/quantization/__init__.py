"""Weight sharing (Deep Compression stage 2): k-means codebooks and centroid fine-tuning."""

from nncompress.quantization.kmeans import kmeans_1d
from nncompress.quantization.shared import (
    CentroidTuner,
    SharedLayer,
    share_weights_,
    unshared_parameters,
)

__all__ = [
    "CentroidTuner",
    "SharedLayer",
    "kmeans_1d",
    "share_weights_",
    "unshared_parameters",
]
