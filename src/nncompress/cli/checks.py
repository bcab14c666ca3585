"""Checks made before any work starts: inputs that are no plain file, outputs that cannot be written,
and the inputs and outputs of a command line for ``runguard.refuse_clobber``."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path
from typing import Optional

from nncompress.errors import ConfigError, PathError
from nncompress.paths import check_input_file, check_output_file, check_output_folder, kind_of
from nncompress.runguard import Input, Output, report_figure, run_owned


def _check_output(path: Optional[str | Path], folder: bool = False, flag: str = "--out") -> None:
    """Refuse an unusable output before any work is done, not after hours of it: a folder or device where
    a file goes, a file where a folder goes, a FIFO, /proc or /sys, or a place that cannot be written."""
    if path is None:
        return
    what = f"{flag} {path}"
    if not folder:
        check_output_file(path, what)
        return
    try:
        mode: Optional[int] = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):
        raise PathError(f"{what} is {'a file' if stat.S_ISREG(mode) else kind_of(mode)}; give a folder")
    check_output_folder(path, what)


# inputs named on the command line: (attribute, what it is); each is checked before any work starts
INPUT_ARGS = (
    ("checkpoint", "checkpoint"),
    ("file", "compressed file"),
    ("recipe", "recipe"),
    ("sensitivity", "sensitivity table"),
    ("reference", "reference model"),
)


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse an input that is a FIFO (its open would block), a device (/dev/zero never ends), a folder
    where a file belongs, or a /proc or /sys file, before anything is read; a missing file is left to the
    reader, whose message says what it expected there."""
    for attr, what in INPUT_ARGS:
        value = getattr(args, attr, None)
        if not value:
            continue
        path = Path(value)
        if attr == "sensitivity" and path.is_dir():
            path = path / "sensitivity.csv"
        if os.path.lexists(path):
            check_input_file(path, f"{what} {path}")


def _report_outputs(flag: str, html: Optional[str]) -> list[Output]:
    """The report page, its Markdown twin and its figures, as outputs for refuse_clobber."""
    if not html:
        return []
    from nncompress.report.page import FIGURES

    md = Path(html).with_suffix(".md")
    files = Path(html).with_name(f"{Path(html).stem}_files")  # write_report's figure folder
    return [
        (f"{flag} {html}", flag, Path(html)),
        (f"{flag} {html} (its Markdown twin {md})", flag, md),
        *[(f"{flag} {html} (its figure {files / name})", flag, files / name) for name in FIGURES],
    ]


def _data_inputs(spec: Optional[str]) -> list[Input]:
    """The IDX files of a --data folder (named data sets live elsewhere)."""
    from nncompress.data.datasets import IDX_FILES

    if not spec or spec in ("digits", "fashion-mnist") or not Path(spec).is_dir():
        return []
    return [(f"the data file {Path(spec) / n}", Path(spec) / n) for name in IDX_FILES for n in (name, f"{name}.gz")]


def _sensitivity_input(path: Optional[str]) -> list[Input]:
    """--sensitivity names the CSV or its folder."""
    if not path:
        return []
    csv = Path(path) / "sensitivity.csv" if Path(path).is_dir() else Path(path)
    return [(f"the sensitivity table {csv}", csv)]


def _run_owned(run_dir: Path) -> list[Input]:
    """What a report must not overwrite in (and around) ``run_dir``; an earlier report may be replaced."""
    from nncompress.report.page import FIGURES

    return run_owned(run_dir, FIGURES)


def _check_report_name(path: str) -> None:
    """Only .html/.htm: the Markdown twin and the figure folder are named after it, and a rerun
    may replace an earlier report only because its name says it is one."""
    if Path(path).suffix.lower() not in (".html", ".htm"):
        raise ConfigError(
            f"{path}: give the HTML page's name ending in .html (e.g. report.html); the Markdown twin goes beside it"
        )
    from nncompress.report.page import FIGURES

    files = Path(path).with_name(f"{Path(path).stem}_files")
    foreign = [files / n for n in FIGURES if (files / n).exists() and not report_figure(files / n, FIGURES)]
    if foreign:
        raise ConfigError(
            f"{path}: its figure folder {files} already holds {foreign[0].name}, and no report "
            f"{path} owns it; pick another report name"
        )
