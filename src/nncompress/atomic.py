"""Atomic file writes: a crash never leaves a half-written output.

Only regular files are written: a device node, FIFO or folder at the target is
refused before anything is written (``os.replace`` would replace the node). A
write that fails for lack of space (or any other I/O error, also one that a
writer such as ``torch.save`` wraps in its own exception) ends as one
``OutputError`` naming the target, with the temporary file removed.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Optional

from nncompress.errors import OutputError
from nncompress.paths import refuse_special_target

_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_WRITING = [0]  # atomic writes in progress (nested writes count each)
_HELD: list[bool] = [False]  # an interrupt arrived during one: raised when the last ends
_HINTS: dict[Optional[int], str] = {
    errno.ENOSPC: "; free some space and run again",
    errno.EDQUOT: "; free some space and run again",
    errno.EFBIG: "; raise the file-size limit (ulimit -f) and run again",
}


def interrupt_unless_writing() -> None:
    """What the command line's SIGINT/SIGTERM handler does: raise KeyboardInterrupt now, or, during an atomic
    write, when the write has finished. Raised inside ``torch.save``'s writer, it came out as a RuntimeError
    of torch's ("unexpected pos"), and the run ended as a failure instead of an interruption."""
    if _WRITING[0]:
        _HELD[0] = True
        return
    raise KeyboardInterrupt


@contextmanager
def _interrupts_held() -> Iterator[None]:
    _WRITING[0] += 1
    try:
        yield
    finally:
        _WRITING[0] -= 1
        if not _WRITING[0] and _HELD[0]:
            _HELD[0] = False
            raise KeyboardInterrupt


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only
    when the block finishes without an exception."""
    target = Path(path)
    refuse_special_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:  # the error would name a random temp file the user never asked for
        raise _naming(exc, target) from None
    try:
        with _interrupts_held():
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
            with os.fdopen(fd, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        failed = _write_failure(exc) if isinstance(exc, Exception) else None
        if failed is not None:
            hint = _HINTS.get(failed.errno, "")
            raise OutputError(
                f"cannot write {target}: {failed.strerror or failed}{hint} (nothing was written; "
                "an earlier file there is untouched)"
            ) from None
        if isinstance(exc, OSError) and exc.filename == tmp:
            raise _naming(exc, target) from None
        raise


def _write_failure(exc: BaseException) -> Optional[OSError]:
    """The OSError of a failed write behind ``exc``: the exception itself, or one that a writer (torch.save
    raises RuntimeError) caught and replaced. Only space and I/O errors count: others keep their type."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (*_SPACE, errno.EIO):
            return current
        current = current.__cause__ or current.__context__
    return None


def _naming(exc: OSError, target: Path) -> OSError:
    """The same error about ``target``: users know the file they asked for, not our temp name."""
    return type(exc)(exc.errno, exc.strerror, str(target))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)
