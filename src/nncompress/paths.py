"""Checks on the files a user names: only regular files are read, written or replaced.

An open() of a FIFO blocks until someone writes to it, /dev/zero never ends,
and ``os.replace`` onto a device node or a FIFO replaces the node itself; /proc
and /sys look writable to root but hold no place for an output. So inputs are
checked (and opened without blocking, then checked again on the open handle)
before they are read, reads are bounded by a size known before reading, and
outputs are checked before any work starts.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Optional

from nncompress.errors import NNCompressError, PathError

PSEUDO_ROOTS = (Path("/proc"), Path("/sys"))
"""Kernel file systems: nothing there is an input or output of ours."""

ErrorType = type[NNCompressError]


def kind_of(mode: int) -> str:
    """What a stat mode names, as a phrase for an error message."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def pseudo_root(path: str | os.PathLike[str]) -> Optional[Path]:
    """The kernel file system (/proc, /sys) ``path`` lies in, after following links; None if none."""
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):  # a link loop: the open that follows reports it
        resolved = Path(os.path.abspath(path))
    for root in PSEUDO_ROOTS:
        if resolved == root or root in resolved.parents:
            return root
    return None


def check_input_file(
    path: str | os.PathLike[str], what: Optional[str] = None, error: ErrorType = PathError
) -> os.stat_result:
    """Refuse, without opening it, an input that is missing or not a regular file. ``what`` names it in
    messages (e.g. "checkpoint x.pt"; default: the path)."""
    what = what or str(path)
    root = pseudo_root(path)
    if root is not None:
        raise error(f"{what} is in {root}, a kernel file system: give a regular file")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} is {kind_of(st.st_mode)}, not a regular file: nncompress reads regular files only")
    return st


def open_input(
    path: str | os.PathLike[str], what: Optional[str] = None, error: ErrorType = PathError, limit: Optional[int] = None
) -> io.BufferedReader:
    """Open a regular file for reading; refuse a FIFO or device (the open cannot block: O_NONBLOCK, and the
    open handle is checked again, so a file swapped after the first check is caught) and, with ``limit``,
    a file larger than ``limit`` bytes."""
    what = what or str(path)
    check_input_file(path, what, error)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} is {kind_of(st.st_mode)}, not a regular file: nncompress reads regular files only")
        if limit is not None and st.st_size > limit:
            raise error(f"{what} is {st.st_size:,} bytes, more than the {limit:,} bytes allowed for it")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(
    path: str | os.PathLike[str], limit: int, what: Optional[str] = None, error: ErrorType = PathError
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (also if it grows while it is read)."""
    what = what or str(path)
    with open_input(path, what, error, limit) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} is more than the {limit:,} bytes allowed for it")
    return data


def check_output_folder(folder: str | os.PathLike[str], what: str, error: ErrorType = PathError) -> None:
    """Refuse ``what`` (a flag and its value, for the message) when ``folder`` cannot hold new files:
    its nearest existing folder is a file, not writable, on a read-only file system or in /proc or /sys."""
    folder = Path(folder)
    root = pseudo_root(folder)
    if root is not None:
        raise error(f"cannot write {what}: {folder} is in {root}, a kernel file system")
    for p in [folder, *folder.parents]:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:  # e.g. a file on the way: ENOTDIR
            raise error(f"cannot write {what}: {p}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            kind = "a file" if stat.S_ISREG(st.st_mode) else kind_of(st.st_mode)
            raise error(f"cannot write {what}: {p} is {kind}, not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise error(f"cannot write {what}: {p} is not writable")
        try:
            read_only = bool(os.statvfs(p).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            read_only = False
        if read_only:
            raise error(f"cannot write {what}: {p} is on a read-only file system")
        return


def check_output_file(path: str | os.PathLike[str], what: Optional[str] = None, error: ErrorType = PathError) -> None:
    """Refuse, before any work, an output file that cannot or must not be written: an existing path that
    is not a regular file (a folder, a device node, a FIFO, a socket, or a link to one: replacing it would
    destroy it), or one whose folder cannot hold it (see ``check_output_folder``)."""
    what = what or str(path)
    root = pseudo_root(path)
    if root is not None:
        raise error(f"cannot write {what}: {path} is in {root}, a kernel file system")
    try:
        st: Optional[os.stat_result] = os.stat(path)
    except OSError:  # missing (or unreachable: the folder check says why)
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise error(f"{what} is a folder; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise error(
            f"{what} is {kind_of(st.st_mode)}, not a regular file: nncompress writes outputs as "
            "regular files only and never replaces a device or pipe"
        )
    check_output_folder(Path(path).parent, what, error)


def refuse_special_target(path: str | os.PathLike[str], error: ErrorType = PathError) -> None:
    """Refuse to replace ``path`` when it is a device node, FIFO, socket or folder (or a link to one)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise error(
            f"{path} is {kind_of(st.st_mode)}, not a regular file: nncompress writes outputs as regular "
            "files only and never replaces a device or pipe"
        )
