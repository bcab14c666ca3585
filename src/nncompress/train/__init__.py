"""Training, evaluation and masked fine-tuning loops."""
from nncompress.train.loop import evaluate, fit, set_seed

__all__ = ["evaluate", "fit", "set_seed"]
