"""The run report: histogram records, the HTML page and its Markdown twin.

The fixture is a real (tiny) run directory: a digits MLP trained briefly,
pruned by hand, shared and coded by the pipeline, with a sensitivity scan
and a hand-written step log. The browser test opens the page in headless
Chromium and checks what a person would see against summary.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nncompress.errors import NNCompressError, ReportError
from nncompress.report.histograms import histogram_record
from nncompress.report.metric import Metric
from nncompress.report.page import format_field, write_report

RECIPE = "prune:\n  tolerance: 0.3  # <script>alert('recipe')</script> & \"q\"\nshare:\n  fc_bits: 5\n"
ENVIRONMENT = {"nncompress": "0.1.0", "cpus": 2, "cuda": False, "command": "nncompress compress <b>x</b> | y"}


def _weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    from nncompress.pruning.masks import prunable_layers

    return {n: m.weight.detach().numpy().copy() for n, m in prunable_layers(model).items()}


def _steps() -> list[dict[str, Any]]:
    recs = []
    plan = [
        ("dense", 0, 0, 1.0, 0.95, True),
        ("control", 0, 0, 1.0, 0.955, True),
        ("step", 0, 1, 0.6, 0.95, True),
        ("step", 0, 2, 0.4, 0.94, True),
        ("step", 0, 3, 0.3, 0.90, False),
        ("recover", 0, 3, 0.3, 0.93, False),
        ("consolidate", 1, 0, 0.4, 0.95, True),
        ("step", 1, 1, 0.35, 0.948, True),
        ("final", 1, 0, 0.35, 0.952, True),
    ]
    for stage, group, step, density, acc, ok in plan:
        recs.append(
            {
                "stage": stage,
                "group": group,
                "step": step,
                "q": {"0": 0.5 * step},
                "density": {"0": density},
                "overall_density": density,
                "val_accuracy": acc,
                "drop_points": round((0.95 - acc) * 100, 4),
                "accepted": ok,
                "seconds": 0.5,
            }
        )
    return recs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, digits) -> Path:  # type: ignore[no-untyped-def]
    from nncompress.config import ShareConfig, TrainConfig
    from nncompress.models import build_model
    from nncompress.pipeline import load_model_file, run_compress, save_trained, train_model
    from nncompress.pruning.masks import prunable_layers, std_threshold, threshold_mask
    from nncompress.pruning.sensitivity import sensitivity_scan, to_csv
    from nncompress.train import evaluate

    d = tmp_path_factory.mktemp("run")
    # seeded, so the fixture does not depend on what ran before; at seed 1 the 1-bit codebooks below cost
    # this 3-epoch MLP validation accuracy (at some seeds they gain it), so the bit search has rounds to report
    torch.manual_seed(1)
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    train_model(model, digits, TrainConfig(epochs=3, batch_size=64))
    dense = _weights(model)
    base, rows = sensitivity_scan(
        model.eval(), [0.5, 1.0, 1.5, 2.0], lambda: evaluate(model, digits.val_x, digits.val_y)[1]
    )
    to_csv(base, rows, d / "sensitivity.csv")
    with torch.no_grad():
        for m in prunable_layers(model).values():
            m.weight.mul_(threshold_mask(m.weight, std_threshold(float(m.weight.std()), 1.0)))
    pruned = _weights(model)
    save_trained(model, digits, d / "pruned.pt", {})
    summary = run_compress(
        d / "pruned.pt",
        "digits",
        d / "model.nnc",
        None,
        ShareConfig(batch_size=64, epochs=1, fc_bits=1, tolerance=0.0, max_bits=4),
        splits=digits,
    )
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    shared = _weights(load_model_file(d / "model.nnc")[0])
    (d / "histograms.json").write_text(
        json.dumps(
            {
                "stages": {
                    "dense": histogram_record(dense, nonzero_only=False),
                    "pruned": histogram_record(pruned, nonzero_only=True),
                    "shared": histogram_record(shared, nonzero_only=True),
                }
            }
        )
    )
    (d / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _steps()))
    (d / "recipe.yaml").write_text(RECIPE)
    (d / "environment.json").write_text(json.dumps(ENVIRONMENT))
    return d


@pytest.fixture(scope="module")
def report(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_report(run_dir, tmp_path_factory.mktemp("out") / "report.html")


class _Page(HTMLParser):
    """The page's <img> sources, its <html> attributes and its data-field elements with their text."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.root: dict[str, str] = {}
        self.fields: list[tuple[str, str, str]] = []
        self._open: list[list[str]] = []  # [field, value, text] of data-field elements not yet closed
        self._depth: list[int] = []
        self._level = 0
        self.banner, self.banner_hidden, self._in_banner = "", True, False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.root = a
        if a.get("id") == "image-check":
            self.banner_hidden = "hidden" in a
            self._in_banner = True
        if tag == "img":
            self.images.append(a.get("src", ""))
            return
        self._level += 1
        if "data-field" in a:
            self._open.append([a["data-field"], a["data-value"], ""])
            self._depth.append(self._level)

    def handle_endtag(self, tag: str) -> None:
        if tag == "img":
            return
        self._in_banner = False
        if self._depth and self._depth[-1] == self._level:
            self._depth.pop()
            self.fields.append(tuple(self._open.pop()))  # type: ignore[arg-type]
        self._level -= 1

    def handle_data(self, data: str) -> None:
        if self._in_banner:
            self.banner += data
        for entry in self._open:
            entry[2] += data


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _at(summary: dict[str, Any], key: str) -> Any:
    value: Any = summary
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _check_fields(page: _Page, summary: dict[str, Any]) -> set[str]:
    assert page.fields, "no data-field elements on the page"
    for key, raw, text in page.fields:
        assert json.loads(raw) == _at(summary, key), key
        assert text.strip() == format_field(key, json.loads(raw), Metric.of(summary)), key
    shown = {key: text.strip() for key, _, text in page.fields}
    assert shown["file_bytes"] == f"{summary['file_bytes']:,} B"
    assert shown["ratio"] == f"{summary['ratio']:.1f}\u00d7"
    score = "test_score" if "test_score" in summary else "test_accuracy"  # folders written before *_score
    if summary.get("metric", "accuracy") in ("accuracy", "agreement"):
        assert shown[score] == f"{100 * summary[score]:.2f} %"
    else:
        assert shown[score] == f"{summary[score]:.4f}"
    assert shown["layers.0.bytes"] == f"{summary['layers'][0]['bytes']:,} B"
    return set(shown)


# --- histogram records -------------------------------------------------------------------------


def test_histogram_counts_sum_to_size_or_nonzero() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(30, 20)).astype(np.float32)
    w[np.abs(w) < 0.7] = 0
    weights = {"fc1": w, "empty": np.zeros((4, 4), np.float32)}
    dense = histogram_record(weights, nonzero_only=False, bins=40)
    sparse = histogram_record(weights, nonzero_only=True)
    assert sum(dense["fc1"]["counts"]) == w.size == dense["fc1"]["weights"]
    assert sum(sparse["fc1"]["counts"]) == np.count_nonzero(w) == sparse["fc1"]["nonzero"]
    assert len(dense["fc1"]["edges"]) == 41 and len(sparse["fc1"]["counts"]) == 80
    assert sum(sparse["empty"]["counts"]) == 0 and sparse["empty"]["weights"] == 16
    json.dumps(sparse)  # plain Python numbers only


# --- errors and missing parts ------------------------------------------------------------------


def test_missing_summary_or_run_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"summary\.json.*--run-dir"):
        write_report(tmp_path, tmp_path / "r.html")
    with pytest.raises(NNCompressError, match="does not exist.*nncompress compress"):
        write_report(tmp_path / "nope", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("name", ["summary.json", "histograms.json", "environment.json", "steps.jsonl"])
def test_malformed_json_names_the_file(run_dir: Path, tmp_path: Path, name: str) -> None:
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / name).write_text('{"stages": [1, 2,')
    with pytest.raises(ReportError, match=re.escape(name)):
        write_report(broken, tmp_path / "r.html")


@pytest.mark.parametrize(
    "name,text,words",
    [
        ("histograms.json", '{"stages": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested more than"),
        ("summary.json", '{"layers": ' + "[" * 50 + "]" * 50 + "}", "nested more than 32 levels"),
        ("environment.json", '{"cpus": 1' + "0" * 400 + "}", "out of range"),
        ("environment.json", '{"cpus": 1e400}', "out of range"),
        ("steps.jsonl", '{"val_accuracy": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "nested more than"),
    ],
)
def test_hostile_json_is_one_report_error(run_dir: Path, tmp_path: Path, name: str, text: str, words: str) -> None:
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / name).write_text(text)
    with pytest.raises(ReportError, match=re.escape(name)) as info:
        write_report(broken, tmp_path / "r.html")
    assert words in str(info.value)


def test_a_histogram_count_of_10_to_the_400_is_a_report_error(run_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    text = (run_dir / "histograms.json").read_text()
    data = json.loads(text)
    stage = data["stages"]["dense"]
    layer = next(iter(stage))
    stage[layer]["counts"][0] = 12345678987654321  # replaced by the huge number in the text below
    (broken / "histograms.json").write_text(json.dumps(data).replace("12345678987654321", "1" + "0" * 400))
    with pytest.raises(ReportError, match=r"histograms\.json: malformed JSON \(integer 1000.* is out of range"):
        write_report(broken, tmp_path / "r.html")


def test_optional_parts_are_left_out_with_a_note(run_dir: Path, report: tuple[Path, Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "summary.json", bare / "summary.json")
    out = tmp_path / "out" / "r.html"
    shutil.copytree(report[1].parent / "report_files", out.parent / "r_files")  # stale figures of an earlier report
    html_path, md_path = write_report(bare, out)
    page, md = html_path.read_text(), md_path.read_text()
    for name in ("histograms.json", "sensitivity.csv", "steps.jsonl", "recipe.yaml", "environment.json"):
        assert f"No {name} in this run directory" in page and f"No {name} in this run directory" in md
    assert _parse(page).images == [] and "![" not in md
    assert list((out.parent / "r_files").iterdir()) == []
    _check_fields(_parse(page), json.loads((bare / "summary.json").read_text()))


def test_without_matplotlib_the_figures_are_notes(
    run_dir: Path, report: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """matplotlib is the optional `plots` extra: the page still comes out, each figure a note."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    out = tmp_path / "out" / "r.html"
    shutil.copytree(report[1].parent / "report_files", out.parent / "r_files")  # figures of an earlier report
    html_path, md_path = write_report(run_dir, out)
    page, md = html_path.read_text(), md_path.read_text()
    for figure in ("Weight histograms per layer and stage", "against q per layer", "at every pruning step"):
        for text in (page, md):
            assert re.search(re.escape(figure) + r"[^\n]*figure left out, matplotlib is not installed", text), figure
    assert _parse(page).images == [] and "![" not in md
    assert list((out.parent / "r_files").iterdir()) == []
    _check_fields(_parse(page), json.loads((run_dir / "summary.json").read_text()))


def test_values_of_the_wrong_type_raise_report_error(run_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "run"
    broken.mkdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["layers"][0]["weights"] = "many"
    (broken / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReportError, match="unexpected type"):
        write_report(broken, tmp_path / "r.html")


def test_histogram_figure_copes_with_a_layer_pruned_away() -> None:
    from nncompress.report.figures import histogram_grid

    w = np.linspace(-1, 1, 50).reshape(5, 10)
    stages = {
        "dense": histogram_record({"a": w, "b": w}, nonzero_only=False),
        "pruned": histogram_record({"a": w * (np.abs(w) > 0.5), "b": 0 * w}, nonzero_only=True),
    }
    assert histogram_grid(stages)[:8] == b"\x89PNG\r\n\x1a\n"


# --- the page ----------------------------------------------------------------------------------


def test_page_order_and_fields(run_dir: Path, report: tuple[Path, Path]) -> None:
    page = report[0].read_text()
    ids = [
        page.index(f'id="{i}"')
        for i in ("headline", "layers", "histograms", "sensitivity", "steps", "recipe", "environment")
    ]
    assert ids == sorted(ids)
    parsed = _parse(page)
    assert len(parsed.images) == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    keys = _check_fields(parsed, summary)
    assert {f"layers.{i}.bytes" for i in range(len(summary["layers"]))} <= keys
    assert {"dense_test_score", "test_drop_points", "payload_bytes", "dense_bytes"} <= keys
    rounds = len(summary["bit_search"]["rounds"]) - 1
    assert (
        rounds >= 1
        and {"bit_search.rounds.0.drop", f"bit_search.rounds.{rounds}.drop", "bit_search.met", "config.share.tolerance"}
        <= keys
    )


def test_text_from_files_is_escaped(report: tuple[Path, Path]) -> None:
    page, md = report[0].read_text(), report[1].read_text()
    assert "<script>alert" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(&#x27;recipe&#x27;)&lt;/script&gt; &amp; &quot;q&quot;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert RECIPE.rstrip("\n") in md  # verbatim inside a code fence
    assert "<b>x</b>" not in md and r"&lt;b&gt;x&lt;/b&gt; \| y" in md


def test_page_is_self_contained(report: tuple[Path, Path]) -> None:
    page = report[0].read_text()
    assert not re.search(r"https?:|file:|<link|<iframe|<object|@import|url\(|\bhref\s*=", page, re.I)
    srcs = re.findall(r"""\bsrc\s*=\s*["']?([^"' >]*)""", page, re.I)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "data-images-total" in page and "failed to load" in page  # the self-check script


def test_markdown_links_existing_pngs(report: tuple[Path, Path]) -> None:
    md_path = report[1]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md_path.read_text())
    assert len(links) == 3
    for link in links:
        assert link.startswith("report_files/")
        assert (md_path.parent / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_writes_are_atomic(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nncompress.report.doc import Doc

    out = tmp_path / "r.html"
    write_report(run_dir, out)
    before = out.read_bytes()

    def fail(*_: Any, **__: Any) -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Doc, "render_html", fail)
    with pytest.raises(RuntimeError):
        write_report(run_dir, out)
    assert out.read_bytes() == before
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# --- a real browser ------------------------------------------------------------------------------


def _dump_dom(page: Path, tmp_path: Path) -> _Page:
    """The DOM after load, as headless Chromium built it (scripts run)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (`make browser` installs it)")
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=5000",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    env = {**os.environ, "HOME": str(tmp_path)}  # keep chromium's caches out of the real home
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return _parse(done.stdout)


def test_page_in_headless_chromium(run_dir: Path, report: tuple[Path, Path], tmp_path: Path) -> None:
    page = _dump_dom(report[0], tmp_path)
    assert len(page.images) > 0
    assert page.root.get("data-images-total") == str(len(page.images))
    assert page.root.get("data-images-loaded") == str(len(page.images))
    _check_fields(page, json.loads((run_dir / "summary.json").read_text()))


def test_broken_image_shows_a_banner_in_chromium(report: tuple[Path, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(report[0].read_text().replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1))
    page = _dump_dom(broken, tmp_path)
    total = len(page.images)
    assert page.root.get("data-images-total") == str(total)
    assert page.root.get("data-images-loaded") == str(total - 1)
    assert page.banner == "1 image failed to load" and not page.banner_hidden


@pytest.mark.slow
def test_report_of_a_real_compress_run_in_chromium(tmp_path: Path) -> None:
    """The whole path a user takes: `compress --recipe ... --run-dir ... --report ...`, then the page."""
    from nncompress.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: mlp\ndata: digits\ntrain: {epochs: 3, batch_size: 64}\nsensitivity: {q_max: 1.0}\n"
        "prune: {epochs_per_step: 1, final_epochs: 1, q_max: 1.0, batch_size: 64}\n"
        "share: {epochs: 1, batch_size: 64}\n"
    )
    run, html = tmp_path / "run", tmp_path / "out" / "report.html"
    assert main(["--quiet", "compress", "--recipe", str(recipe), "--run-dir", str(run), "--report", str(html)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["file_bytes"] == (run / "model.nnc").stat().st_size
    page = _dump_dom(html, tmp_path)
    assert len(page.images) == 3  # histograms, sensitivity, steps: every part of a real run is there
    assert page.root.get("data-images-loaded") == "3"
    checked = _check_fields(page, summary)
    assert {"file_bytes", "ratio", "test_score", "finetune.note"} <= checked
    text = html.read_text()
    assert f"{summary['file_bytes']:,}" in text and f"{summary['ratio']:.1f}" in text  # independent of the page code
    assert (html.parent / "report.md").is_file()


# --- runs scored by another metric ----------------------------------------------------------------

LABEL_FREE = '''
import torch
from torch import nn


class Encoder(nn.Module):
    """Token ids in (a dict, as a tokenizer gives), one vector per sequence out."""

    def __init__(self, vocab=40, dim=12):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, 8)

    def forward(self, input_ids):
        return self.fc(self.emb(input_ids).mean(1))


def _batches(n, seed):
    ids = torch.randint(0, 40, (n, 5), generator=torch.Generator().manual_seed(seed))
    return [{"input_ids": ids[i:i + 16]} for i in range(0, n, 16)]


def unlabelled():
    return _batches(64, 0), _batches(48, 1), _batches(48, 2)
'''


class _Text(HTMLParser):
    """The text a reader sees: tag and attribute names left out."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(parser.parts)


@pytest.mark.parametrize("objective,label", [("cosine", "mean cosine"), ("kl", "agreement")])
def test_report_of_a_label_free_run_names_its_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, objective: str, label: str
) -> None:
    """Distilled from the dense model, without labels: the page speaks of the run's metric, not accuracy."""
    import sys

    from nncompress.cli import main
    from nncompress.data import load_data
    from nncompress.pipeline import save_trained

    (tmp_path / "labelfree_report.py").write_text(LABEL_FREE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import labelfree_report

        torch.manual_seed(0)
        save_trained(labelfree_report.Encoder(), load_data("labelfree_report:unlabelled"), tmp_path / "enc.pt", {})
        html = tmp_path / "r.html"
        assert (
            main(
                [
                    "--quiet",
                    "compress",
                    "enc.pt",
                    "--model",
                    "labelfree_report:Encoder",
                    "--data",
                    "labelfree_report:unlabelled",
                    "--objective",
                    objective,
                    "--out",
                    "enc.nnc",
                    "--run-dir",
                    "run",
                    "--report",
                    str(html),
                    "--q0",
                    "1",
                    "--q-max",
                    "1",
                    "--epochs-per-step",
                    "1",
                    "--final-epochs",
                    "1",
                    "--recover-epochs",
                    "0",
                    "--refine-steps",
                    "0",
                    "--no-probe",
                    "--no-control",
                    "--share-epochs",
                    "1",
                ]
            )
            == 0
        )
    finally:
        sys.modules.pop("labelfree_report", None)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "test_accuracy" not in summary and summary["metric"] == Metric.of(summary).name != "accuracy"
    page, md = html.read_text(), html.with_suffix(".md").read_text()
    keys = _check_fields(_parse(page), summary)
    assert {"test_score", "dense_test_score", "test_drop_points", "objective.tolerance"} <= keys
    for text in (_visible_text(page), md):
        assert "accuracy" not in text.lower()
        assert f"Test {label}, dense" in text and f"Validation {label}" in text
        assert summary["objective"]["tolerance"] in text  # the tolerance in the metric's own words
    # agreement counts examples: a 0.3-point tolerance on 48 of them cannot be resolved, and the page says so
    assert bool(summary["warnings"]) == (objective == "kl")
    for i, warning in enumerate(summary["warnings"]):
        assert f"Warning: {warning}" in md and f"warnings.{i}" in keys


def test_report_of_a_run_folder_written_before_scores_were_named(run_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("metric", "dense_test_score", "test_score", "objective", "warnings"):
        summary.pop(key, None)
    (old / "summary.json").write_text(json.dumps(summary))
    page, md = write_report(old, tmp_path / "r.html")
    keys = _check_fields(_parse(page.read_text()), summary)
    assert {"dense_test_accuracy", "test_accuracy"} <= keys
    assert "Test accuracy, file" in md.read_text()
    del summary["test_accuracy"]
    (old / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReportError, match="lacks dense_test_score, test_score"):
        write_report(old, tmp_path / "r.html")
