"""What a command may overwrite around a run folder, and what a run that never started leaves.

A typo in --out must not destroy what the command reads, a run's own files or an earlier output;
a run that fails before it writes run.json has nothing to resume, so the folders made for it are
removed again. Under torchrun rank 0 alone removes anything.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Optional, Sequence

from nncompress import distributed
from nncompress.errors import ConfigError
from nncompress.jsonfile import load_json_file
from nncompress.rundir import RUN_FILE, RUN_FILES

#: An output as (what, flag, path): ``what`` names it in messages, ``flag`` is the option to change.
Output = tuple[str, str, Path]
#: An input (or a file that must stay) as (what, path).
Input = tuple[str, Path]


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: by inode where both exist (links too), else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_clobber(outputs: Sequence[Output], inputs: Sequence[Input]) -> None:
    """Refuse, before any work, an output that would overwrite an input or an earlier output:
    a typo in --out must not destroy what the command reads or writes."""
    seen = list(inputs)
    for what, flag, path in outputs:
        for other, src in seen:
            if same_file(path, src):
                raise ConfigError(f"{what} would overwrite {other}; pick another {flag}")
        seen.append((what, path))


def run_files(run_dir: Path) -> list[Input]:
    """The files a run writes in its folder, whether or not they are there yet."""
    return [(f"the run's {name} ({run_dir / name})", run_dir / name) for name in RUN_FILES]


def beside_a_page(path: Path) -> bool:
    """Whether ``path`` has an HTML page of the same stem beside it: then it is that report's twin or figure."""
    return any(path.with_suffix(ext).is_file() for ext in (".html", ".htm"))


def report_figure(path: Path, figures: Collection[str]) -> bool:
    """A figure of an earlier report: NAME_files/FIGURE beside NAME.html (or .htm); ``figures`` are
    the names a report draws."""
    folder = path.parent
    return (
        path.name in figures
        and folder.name.endswith("_files")
        and beside_a_page(folder.with_name(folder.name[: -len("_files")]))
    )


def run_owned(run_dir: Path, figures: Collection[str]) -> list[Input]:
    """What a report must not overwrite: the run's own files (those still to come too), any other file in
    the folder but an earlier report (its page, Markdown twin and ``figures``), and the checkpoint and
    compressed file run.json names."""
    owned = run_files(run_dir)
    if not run_dir.is_dir():
        return owned
    owned += [
        (f"the run's file {p}", p)
        for p in run_dir.rglob("*")
        if p.is_file()
        and p.suffix.lower() not in (".html", ".htm")
        and not report_figure(p, figures)
        and not (p.suffix.lower() == ".md" and beside_a_page(p))
    ]
    try:
        saved = load_json_file(run_dir / RUN_FILE, ConfigError) if (run_dir / RUN_FILE).exists() else None
    except ConfigError:  # a damaged run.json is reported by what reads it for the run
        saved = None
    if isinstance(saved, dict):
        for key, what in (("checkpoint", "checkpoint"), ("out", "compressed file")):
            if isinstance(saved.get(key), str):
                owned.append((f"the run's {what} {saved[key]}", Path(saved[key])))
    return owned


def first_missing(path: Path) -> Optional[Path]:
    """The outermost folder of ``path`` that does not exist yet: what making ``path`` creates."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def remove_if_empty(made: Optional[Path]) -> None:
    """Remove a folder a command made (``first_missing``) if nothing was written into it."""
    if made is not None and distributed.is_main() and made.is_dir() and not any(p.is_file() for p in made.rglob("*")):
        shutil.rmtree(made, ignore_errors=True)


@dataclass
class PendingRun:
    """The run a command is starting: the folder it makes (removed again if the run never starts)
    and the folder a "continue with: ... --resume" hint names while the run can be resumed."""

    #: the run folder this command makes; None when it resumes one
    path: Optional[Path] = None
    #: the outermost folder made for it (``first_missing``); None when the run folder was there before
    top: Optional[Path] = None
    #: the run folder to name in a resume hint; None before the run starts and once it has finished
    resume_dir: Optional[Path] = None

    def drop_if_unstarted(self) -> None:
        """A run that failed before it wrote run.json has nothing to resume: remove the folders it made."""
        if self.resume_dir is None or (self.resume_dir / RUN_FILE).exists() or not distributed.is_main():
            return
        self.resume_dir = None  # no resume hint for a run that never started
        if self.path is None or self.top is None:  # the folder was there before this command: leave it
            return
        shutil.rmtree(self.path, ignore_errors=True)
        for parent in self.path.parents:  # folders made on the way to it, if nothing else went in since
            if not parent.is_relative_to(self.top):
                break
            try:
                parent.rmdir()
            except OSError:
                break
