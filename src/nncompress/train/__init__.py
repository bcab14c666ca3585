"""Training, evaluation and masked fine-tuning loops, and the objective they serve."""

from nncompress.train.loop import evaluate, fit, set_seed
from nncompress.train.objective import Classification, Objective, UserObjective, resolve_objective

__all__ = ["Classification", "Objective", "UserObjective", "evaluate", "fit", "resolve_objective", "set_seed"]
