"""Read a run directory for the report: one required file, the rest optional.

Every problem is a ``ReportError`` naming the file, so ``nncompress report``
can say which file to fix or which command to rerun. An optional file that is
absent is ``None``; one that is present but malformed is an error (a report
that silently drops a broken section would hide the problem).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nncompress.errors import DataError, ReportError
from nncompress.jsonfile import MAX_JSON_BYTES, load_json_file, loads
from nncompress.paths import read_bounded
from nncompress.pruning.sensitivity import SensitivityRow, from_csv

SUMMARY = "summary.json"
STEPS = "steps.jsonl"
SENSITIVITY = "sensitivity.csv"
HISTOGRAMS = "histograms.json"
RECIPE = "recipe.yaml"
ENVIRONMENT = "environment.json"
REQUIRED_SUMMARY = ("file_bytes", "dense_bytes", "ratio", "layers")
# the test scores: named *_score since runs name their metric; *_accuracy in folders written before
SCORE_KEYS = (("dense_test_score", "test_score"), ("dense_test_accuracy", "test_accuracy"))
STEP_KEYS = ("val_accuracy", "overall_density", "accepted")


@dataclass
class RunData:
    """What one run directory holds; ``None`` where an optional file is absent."""

    path: Path
    summary: dict[str, Any]
    steps: Optional[list[dict[str, Any]]] = None
    sensitivity: Optional[tuple[float, list[SensitivityRow]]] = None
    histograms: Optional[dict[str, dict[str, dict[str, Any]]]] = None
    recipe: Optional[str] = None
    environment: Optional[dict[str, Any]] = None


def _hint(run_dir: Path) -> str:
    return f"run `nncompress compress CHECKPOINT --data DATA --out FILE.nnc --run-dir {run_dir}` first"


def _json(path: Path) -> Any:
    return load_json_file(path, ReportError)  # bounded: size, depth, numbers; regular files only


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUMMARY
    if not path.is_file():
        raise ReportError(f"{path} not found: the report needs a finished run; {_hint(run_dir)}")
    data = _json(path)
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED_SUMMARY if k not in data]
    if not any(all(k in data for k in keys) for keys in SCORE_KEYS):
        missing += [k for k in SCORE_KEYS[0] if k not in data]
    if missing:
        raise ReportError(f"{path}: lacks {', '.join(missing)}; is it the summary of `nncompress compress`?")
    if not isinstance(data["layers"], list) or not all(isinstance(r, dict) for r in data["layers"]):
        raise ReportError(f"{path}: 'layers' must be a list of objects")
    return data


def _steps(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        lines = read_bounded(path, MAX_JSON_BYTES, str(path), ReportError).decode("utf-8").splitlines()
    except ValueError as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = loads(line)
        except ValueError as exc:
            raise ReportError(f"{path}, line {n}: malformed JSON ({exc})") from exc
        if not isinstance(rec, dict) or any(k not in rec for k in STEP_KEYS):
            raise ReportError(f"{path}, line {n}: a step record needs {', '.join(STEP_KEYS)}")
        records.append(rec)
    return records


def _histograms(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    data = _json(path)
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        raise ReportError(f'{path}: expected {{"stages": {{stage: {{layer: histogram}}}}}}')
    for stage, layers in stages.items():
        if not isinstance(layers, dict):
            raise ReportError(f"{path}: stage {stage!r} is not an object of layers")
        for layer, rec in layers.items():
            ok = (
                isinstance(rec, dict)
                and isinstance(rec.get("edges"), list)
                and isinstance(rec.get("counts"), list)
                and len(rec["edges"]) == len(rec["counts"]) + 1
                and all(isinstance(x, (int, float)) and math.isfinite(x) for x in rec["edges"] + rec["counts"])
            )
            if not ok:
                raise ReportError(f"{path}: histogram {stage}/{layer} needs finite 'edges' (one more than 'counts')")
    return stages


def _environment(path: Path) -> dict[str, Any]:
    data = _json(path)
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object of names to values")
    return data


def _sensitivity(path: Path) -> tuple[float, list[SensitivityRow]]:
    try:
        return from_csv(path)
    except DataError as exc:
        raise ReportError(str(exc)) from exc


def load_run(run_dir: str | Path) -> RunData:
    """Read everything the report shows from ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"run directory {run_dir} does not exist; {_hint(run_dir)}")
    run = RunData(run_dir, _summary(run_dir))
    if (run_dir / STEPS).is_file():
        run.steps = _steps(run_dir / STEPS)
    if (run_dir / SENSITIVITY).is_file():
        run.sensitivity = _sensitivity(run_dir / SENSITIVITY)
    if (run_dir / HISTOGRAMS).is_file():
        run.histograms = _histograms(run_dir / HISTOGRAMS)
    if (run_dir / RECIPE).is_file():
        from nncompress.recipe import MAX_RECIPE_BYTES

        raw = read_bounded(run_dir / RECIPE, MAX_RECIPE_BYTES, str(run_dir / RECIPE), ReportError)
        run.recipe = raw.decode("utf-8", errors="replace")
    if (run_dir / ENVIRONMENT).is_file():
        run.environment = _environment(run_dir / ENVIRONMENT)
    return run
