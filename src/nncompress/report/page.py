"""The run report: one self-contained HTML page and its Markdown twin.

The HTML embeds every figure (data: URIs), its CSS and a small self-check
script, so it opens offline and can be mailed as one file; the Markdown
links PNG files in a folder beside it, for repositories and wikis. Both are
drawn from the run directory alone.

The sections live beside this module: ``summary_sections`` (headline, layer
table), ``run_sections`` (figures, step log, provenance); how a value is shown
is ``fields`` (``format_field``, importable from here as before).
"""

from __future__ import annotations

from pathlib import Path

from nncompress.atomic import atomic_open
from nncompress.errors import ReportError
from nncompress.report.doc import Doc, Inline
from nncompress.report.fields import field
from nncompress.report.rundata import RunData, load_run
from nncompress.report.run_sections import _histograms, _provenance, _sensitivity, _steps
from nncompress.report.summary_sections import _headline, _layers

# Defined beside their kin, imported from here by the tests and the tools.
from nncompress.report.fields import DASH as DASH
from nncompress.report.fields import format_field as format_field

FIGURES = ("histograms.png", "sensitivity.png", "steps.png")


def build(run: RunData, files_dir: str) -> Doc:
    """All sections, in the page's order."""
    name = Path(str(run.summary.get("file", "") or run.path.name)).name
    doc = Doc(f"nncompress report: {name}", files_dir)
    _headline(doc, run.summary)
    _layers(doc, run.summary)
    _histograms(doc, run)
    _sensitivity(doc, run)
    _steps(doc, run)
    _provenance(doc, run)
    return doc


def write_report(run_dir: str | Path, out_html: str | Path) -> tuple[Path, Path]:
    """Write the HTML page ``out_html`` and ``<stem>.md`` with its PNGs in
    ``<stem>_files/``, all beside each other; return (html, markdown)."""
    out_html = Path(out_html)
    if out_html.suffix.lower() == ".md":
        raise ReportError(f"{out_html}: give the HTML page's name (e.g. report.html); the Markdown twin goes beside it")
    run = load_run(run_dir)
    out_md = out_html.with_suffix(".md")
    files = out_html.parent / f"{out_html.stem}_files"
    try:
        doc = build(run, files.name)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ReportError(
            f"{run.path}: a file holds a value of an unexpected type or shape ({exc!r}); "
            "was it written by `nncompress compress --run-dir`?"
        ) from exc
    subtitle: list[Inline] = (
        ["File ", field(run.summary, "file"), f" \u00b7 run directory {run.path}"]
        if "file" in run.summary
        else [f"Run directory {run.path}"]
    )
    for name, png in doc.images.items():
        with atomic_open(files / name, "wb") as handle:
            handle.write(png)
    for stale in FIGURES:  # a figure this run lacks must not linger from an earlier report
        if stale not in doc.images and (files / stale).is_file():
            (files / stale).unlink()
    for path, text in ((out_md, doc.render_markdown(subtitle)), (out_html, doc.render_html(subtitle))):
        with atomic_open(path, "wb") as handle:  # bytes: UTF-8 whatever the locale
            handle.write(text.encode("utf-8"))
    return out_html, out_md
