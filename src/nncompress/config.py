"""Frozen, validated configuration for each stage.

Configs are plain dataclasses so they serialise to JSON for logs and
checkpoints; every range check lives in ``__post_init__`` and raises
``ConfigError`` naming the field, so bad options fail before any work starts.

They live one family a module: ``config_base`` (the shared checks and
``TrainConfig``), ``config_prune`` (``PruneConfig``, ``SensitivityConfig``)
and ``config_share`` (``ShareConfig``); every name is importable from here.
"""

from __future__ import annotations

from nncompress.config_base import MAX_STEPS as MAX_STEPS
from nncompress.config_base import TrainConfig as TrainConfig
from nncompress.config_prune import BUDGETS as BUDGETS
from nncompress.config_prune import DECISIONS as DECISIONS
from nncompress.config_prune import GROUP_PRESETS as GROUP_PRESETS
from nncompress.config_prune import PruneConfig as PruneConfig
from nncompress.config_prune import SensitivityConfig as SensitivityConfig
from nncompress.config_share import RAW_DTYPES as RAW_DTYPES
from nncompress.config_share import SHARE_INITS as SHARE_INITS
from nncompress.config_share import ShareConfig as ShareConfig
