"""runguard: what a command may overwrite around a run folder, and the folders an unstarted run leaves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nncompress.errors import ConfigError
from nncompress.runguard import PendingRun, first_missing, refuse_clobber, run_owned


def test_an_unstarted_run_takes_the_folders_it_made_with_it(tmp_path: Path) -> None:
    (tmp_path / "keep").mkdir()
    run_dir = tmp_path / "keep" / "a" / "b" / "run"
    top = first_missing(run_dir)
    assert top == tmp_path / "keep" / "a"
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text("seed: 0\n")
    pending = PendingRun(path=run_dir, top=top, resume_dir=run_dir)
    pending.drop_if_unstarted()
    assert not (tmp_path / "keep" / "a").exists() and (tmp_path / "keep").is_dir()
    assert pending.resume_dir is None  # nothing to resume: no hint


def test_a_parent_holding_something_else_stays(tmp_path: Path) -> None:
    run_dir = tmp_path / "a" / "run"
    pending = PendingRun(path=run_dir, top=first_missing(run_dir), resume_dir=run_dir)
    run_dir.mkdir(parents=True)
    (tmp_path / "a" / "other.txt").write_text("x")  # written there since
    pending.drop_if_unstarted()
    assert not run_dir.exists() and (tmp_path / "a" / "other.txt").is_file()


def test_a_started_run_or_a_folder_that_was_there_is_left(tmp_path: Path) -> None:
    started = tmp_path / "started"
    started.mkdir()
    (started / "run.json").write_text("{}")
    pending = PendingRun(path=started, top=started, resume_dir=started)
    pending.drop_if_unstarted()
    assert (started / "run.json").is_file() and pending.resume_dir == started  # it can be resumed

    given = tmp_path / "given"
    given.mkdir()
    pending = PendingRun(path=given, top=None, resume_dir=given)
    pending.drop_if_unstarted()
    assert given.is_dir() and pending.resume_dir is None


def test_an_output_on_an_input_or_an_earlier_output_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(b"x")
    os.link(src, tmp_path / "link.pt")
    with pytest.raises(ConfigError, match=r"--out link.pt would overwrite the checkpoint; pick another --out"):
        refuse_clobber([("--out link.pt", "--out", tmp_path / "link.pt")], [("the checkpoint", src)])
    with pytest.raises(ConfigError, match=r"--report r.html would overwrite --out r.html; pick another --report"):
        refuse_clobber(
            [("--out r.html", "--out", tmp_path / "r.html"), ("--report r.html", "--report", tmp_path / "r.html")],
            [],
        )
    refuse_clobber([("--out new.pt", "--out", tmp_path / "new.pt")], [("the checkpoint", src)])


def test_a_run_owns_its_files_but_not_an_earlier_report(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "page_files").mkdir(parents=True)
    for name in ("page.html", "page.md", "page_files/steps.png", "notes.txt"):
        (run_dir / name).write_text("x")
    (run_dir / "run.json").write_text(json.dumps({"checkpoint": "base.pt", "out": 3}))
    owned = {path for _, path in run_owned(run_dir, ("steps.png",))}
    assert {run_dir / "notes.txt", run_dir / "run.json", run_dir / "summary.json", Path("base.pt")} <= owned
    assert not owned & {run_dir / "page.html", run_dir / "page.md", run_dir / "page_files" / "steps.png"}
