"""What every benchmark writes: the run's circumstances, and its results as JSON plus Markdown."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def run_meta(script: str, **extra: Any) -> dict[str, Any]:
    """The command, machine, threads, torch version and date of this run, plus ``extra``."""
    return {
        "command": f"python bench/{script} " + " ".join(sys.argv[1:]),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        **extra,
    }


def write_results(tag: str, meta: dict[str, Any], results: list[dict[str, Any]], markdown: str) -> None:
    """bench/results/<tag>.json and .md, and the Markdown on stdout."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (RESULTS / f"{tag}.md").write_text(markdown)
    print(markdown)
